"""Sanity checks of user data before any work is done on it: burst frames and wavefront coefficients.

Each check raises :class:`svrt.errors.SvrtError` (one sentence naming the file, the key and what was
expected) for input that would give a silently wrong result, and emits a :class:`SvrtWarning` for
input that is suspicious but usable. ``svrt`` prints both without a traceback.

- :func:`check_frames`: burst frames ``[K, L, Y, X]`` (numpy or torch). Refuses boolean data and
  0/1-valued data (a mask, not intensities), magnitudes beyond ``FRAME_MAX`` or below ``FRAME_MIN``
  (the solver's float32 sums overflow, as with values near 1e36), and *dead* frames: a frame that is
  constant over its valid pixels (all zero, a saturated or unread frame). A dead frame enters the data
  term as an observation of a flat object and biases the restoration (contrast x0.67 for one dead
  frame in eight); all-zero objects or bursts give a noise "object". Warns for nearly constant frames,
  frames with many exactly-zero pixels, frames whose mean is far from the others' and non-positive
  means. :func:`read_burst <svrt.fileio.read_burst>` calls it; the solver's input stage may too.
- :func:`dead_frames` and :func:`drop_dead_frames`: find dead frames, and leave them out (frames dead
  in every object are dropped, frames dead in some objects get zero weight through the mask).
- :func:`fixed_pattern_fraction` and :func:`check_calibration`: uncalibrated frames. svrt expects dark-
  and flat-corrected frames (calibration is a precondition, done by the observatory's pipeline). A flat
  field that was not divided out (pixel gain, dust, fringes) or a dark not subtracted leaves a pattern that
  is the same in every frame, while the seeing-blurred scene changes from frame to frame and has no power
  beyond the diffraction cutoff D/lambda at all. So beyond the cutoff each frame holds only noise (new in
  every frame) and the fixed pattern (the same): the fraction of that power common to all frames is ~0 for
  calibrated frames and grows with the pattern. :func:`read_burst <svrt.fileio.read_burst>` warns above
  ``FIXED_PATTERN_WARN``. Cameras sampled so coarsely that almost no frequency lies beyond the cutoff
  (fewer than 2 %: a cutoff above ~0.6 cycles per pixel) cannot be checked this way and are not.
- :func:`check_wavefront_units`: KL coefficients given to ``svrt convolve``. The RMS wavefront over
  the pupil at one pixel is ``sqrt(sum_l alpha_l^2)`` radians (the KL modes are orthonormal). It is
  refused above :func:`wavefront_bounds`' physical bound: three times the Kolmogorov RMS of the M
  modes for r0 = 2 cm at 5000 A (seeing worse than any solar observation is taken in) scaled to the
  instrument's wavelength, r0(lambda) = r0 (lambda / 5000 A)^(6/5), over its aperture D. Coefficients
  in nm or in units of 1e-6 m instead of radians exceed it by orders of magnitude. Above twice the
  Kolmogorov RMS at the training's smallest r0 (3 cm at 5000 A unless the model's metadata says
  otherwise) it warns: the emulator extrapolates there.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from svrt.errors import SvrtError

__all__ = [
    "FRAME_MAX",
    "FRAME_MIN",
    "PHYSICAL_R0_MIN_CM",
    "TRAINING_R0_MIN_CM",
    "SvrtWarning",
    "check_calibration",
    "check_frames",
    "check_image",
    "check_wavefront_units",
    "dead_frames",
    "drop_dead_frames",
    "fixed_pattern_fraction",
    "warn",
    "wavefront_bounds",
]

#: largest |intensity| accepted: spectral radiance in SI per metre is ~4e14; float32 sums of ~1e9
#: pixels of this size stay far below float32's 3.4e38.
FRAME_MAX = 1e20
#: smallest nonzero peak |intensity| accepted (squares stay normal float32 numbers).
FRAME_MIN = 1e-15
#: r0 (cm at 5000 A) of the physical bound on wavefronts: worse seeing than any solar observation.
PHYSICAL_R0_MIN_CM = 2.0
#: factor over the Kolmogorov RMS at PHYSICAL_R0_MIN_CM above which coefficients are refused.
PHYSICAL_FACTOR = 3.0
#: the smallest r0 (cm at 5000 A) of the training pairs when the model's metadata does not say.
TRAINING_R0_MIN_CM = 3.0
#: factor over the Kolmogorov RMS at the training's smallest r0 above which svrt warns.
TRAINING_FACTOR = 2.0

# warnings for suspicious frames
_NEAR_CONSTANT = 1e-3    # std below this fraction of the object's median frame std
_ZERO_FRACTION = 0.05    # more than this fraction of exactly-zero pixels (where the others have none)
_MEAN_RATIO = 10.0       # mean further than this factor from the object's median frame mean
_LIST = 6                # frames named in one sentence
#: warn when more than this fraction of the power beyond the diffraction cutoff is common to all frames
FIXED_PATTERN_WARN = 0.1
_PATTERN_BEYOND = 1.1    # frequencies beyond this multiple of the cutoff (clear of the PSF's edge)


class SvrtWarning(UserWarning):
    """Suspicious but usable input; ``svrt`` prints it as ``svrt: warning: ...``."""


def warn(message: str) -> None:
    """Emit ``message`` as a :class:`SvrtWarning`."""
    warnings.warn(SvrtWarning(message), stacklevel=3)


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _4d(a: np.ndarray, source: str, key: str) -> np.ndarray:
    if a.ndim == 4:
        return a
    if a.ndim in (2, 3):
        return a.reshape((1,) * (4 - a.ndim) + a.shape)
    raise SvrtError(f"{key} in {source} has shape {tuple(a.shape)}; expected [K, L, Y, X].")


def _frame_list(pairs) -> str:
    pairs = [tuple(int(v) for v in p) for p in pairs]
    text = ", ".join(f"[{k}, {l}]" for k, l in pairs[:_LIST])
    return text + (f" and {len(pairs) - _LIST} more" if len(pairs) > _LIST else "")


def _frame_stats(a: np.ndarray, valid: np.ndarray | None):
    """Per-frame (min, max, mean, std, count of valid pixels, count of exact zeros), each [K, L] float64.
    One frame at a time, so the temporaries stay the size of one frame whatever the burst's size."""
    k, n = a.shape[:2]
    lo, hi, mean, std = (np.zeros((k, n)) for _ in range(4))
    count = np.zeros((k, n), np.int64)
    zeros = np.zeros((k, n), np.int64)
    for i in range(k):
        for l in range(n):
            f = a[i, l]
            if valid is not None:
                f = f[valid[i, l]]
            count[i, l] = f.size
            if f.size == 0:
                lo[i, l], hi[i, l] = np.inf, -np.inf
                continue
            lo[i, l], hi[i, l] = float(f.min()), float(f.max())
            mean[i, l] = float(f.mean(dtype=np.float64))
            std[i, l] = float(f.std(dtype=np.float64))
            zeros[i, l] = int(np.count_nonzero(f == 0))
    return lo, hi, mean, std, count, zeros


def _level(values: np.ndarray) -> str:
    values = np.unique(values)
    return f"all {float(values[0]):g}" if values.size == 1 else "constant"


def dead_frames(frames: Any, mask: Any = None) -> list[tuple[int, int]]:
    """``[(k, l), ...]`` of the frames that are constant (all zero included) over their valid pixels.

    Frames with no valid pixel (all masked or NaN) are not counted: they already carry no weight."""
    a = _4d(_numpy(frames), "the frames", "frames")
    valid = _valid(a, mask)
    lo, hi, _, _, count, _ = _frame_stats(a.astype(np.float32, copy=False), valid)
    dead = (count > 0) & (hi <= lo)
    return [(int(k), int(l)) for k, l in zip(*np.nonzero(dead))]


def _valid(a: np.ndarray, mask: Any) -> np.ndarray | None:
    finite = None
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if finite.all():
            finite = None
    if mask is None:
        return finite
    m = _numpy(mask).astype(bool)
    m = m.reshape((1,) * (4 - m.ndim) + m.shape) if m.ndim < 4 else m
    if m.shape != a.shape:
        raise SvrtError(f"the mask has shape {tuple(m.shape)}; expected {tuple(a.shape)} like the frames.")
    return m if finite is None else (m & finite)


def check_frames(frames: Any, source: str = "the burst", mask: Any = None, key: str = "FRAMES") -> None:
    """Refuse frames that cannot be intensities or would bias the restoration; warn for odd ones.

    frames: ``[K, L, Y, X]`` (``[L, Y, X]``, ``[Y, X]`` accepted), numpy or torch, any real dtype.
    source: the file (or "the burst") named in the messages. mask: bool like frames, False on pixels
    to ignore (NaN/Inf are always ignored). Raises :class:`SvrtError`; warns with :class:`SvrtWarning`.
    """
    a = _numpy(frames)
    if a.dtype == bool:
        raise SvrtError(f"{key} in {source} holds boolean data (a mask?); expected intensities as float or integer "
                        "numbers.")
    if a.dtype.kind not in "fiu":
        raise SvrtError(f"{key} in {source} holds {a.dtype} data; expected intensities as real numbers.")
    a = _4d(a, source, key)
    if a.size == 0:
        raise SvrtError(f"{key} in {source} is empty (shape {tuple(a.shape)}); expected [K, L, Y, X] frames.")
    if a.dtype.kind != "f":
        a = a.astype(np.float32)
    valid = _valid(a, mask)
    k, n_frames = a.shape[:2]
    lo, hi, mean, std, count, zeros = _frame_stats(a, valid)
    has = count > 0
    if not has.any():
        raise SvrtError(f"{key} in {source} has no valid pixel (all NaN, Inf or masked); expected intensities.")
    peak = np.where(has, np.maximum(np.abs(lo), np.abs(hi)), 0.0)
    worst = np.unravel_index(int(np.argmax(peak)), peak.shape)
    if peak[worst] > FRAME_MAX:
        raise SvrtError(
            f"{key} in {source} reaches {peak[worst]:.3g} (frame [{worst[0]}, {worst[1]}]), above {FRAME_MAX:.0e}: "
            "beyond any intensity unit and too close to the float32 limit (3.4e38) for the solver's sums; "
            "rescale the frames (e.g. to counts or to a mean of 1)."
        )
    dead = has & (hi <= lo)
    if dead[has].all():
        raise SvrtError(f"{key} in {source}: every one of its {k} x {n_frames} frames is {_level(lo[has])}, with no "
                        "image in them; expected observed intensities.")
    for i in range(k):
        if has[i].any() and dead[i][has[i]].all():
            raise SvrtError(f"{key} in {source}: every frame of object {i} is {_level(lo[i][has[i]])}, with no image "
                            f"in them; expected observed intensities for each of the {k} objects.")
    if dead.any():
        pairs = list(zip(*np.nonzero(dead)))
        values = sorted({float(lo[p]) for p in pairs})
        val = f"all {values[0]:g}" if len(values) == 1 else "constant"
        one = len(pairs) == 1
        raise SvrtError(
            f"{key} in {source}: frame{'' if one else 's'} [k, l] = {_frame_list(pairs)} "
            f"{'is' if one else 'are'} {val} (dead: a lost or unread frame), which would bias the restoration; "
            f"remove {'it' if one else 'them'} or leave {'it' if one else 'them'} out with --drop-dead-frames."
        )
    top = float(peak.max())
    if top < FRAME_MIN:
        raise SvrtError(f"{key} in {source} peaks at {top:.3g}, below {FRAME_MIN:.0e}: too small for float32 "
                        "arithmetic in the solver; rescale the frames (e.g. to counts or to a mean of 1).")
    lo_all, hi_all = float(lo[has].min()), float(hi[has].max())
    if lo_all >= 0 and hi_all <= 1:
        flat = a if valid is None else a[valid]
        if np.all((flat == 0) | (flat == 1)):
            raise SvrtError(f"{key} in {source} holds only the values 0 and 1 (a mask or a thresholded image?); "
                            "expected intensities.")
    # suspicious but usable
    for i in range(k):
        sel = has[i]
        if not sel.any():
            continue
        med_std = float(np.median(std[i][sel]))
        med_mean = float(np.median(mean[i][sel]))
        if med_mean <= 0:
            warn(f"{key} in {source}: object {i} has a median frame mean of {med_mean:.3g}; intensities are expected "
                 "to be positive (a dark or sky level subtracted twice?).")
        near = [(i, l) for l in range(n_frames) if sel[l] and std[i, l] < _NEAR_CONSTANT * med_std]
        if near:
            warn(f"{key} in {source}: frame(s) [k, l] = {_frame_list(near)} are nearly constant (contrast below "
                 f"{_NEAR_CONSTANT:g} of the median frame's); check them.")
        frac = zeros[i] / np.maximum(count[i], 1)
        many = [
            (i, l)
            for l in range(n_frames)
            if sel[l] and frac[l] > _ZERO_FRACTION and frac[l] > 10 * float(np.median(frac[sel]))
        ]
        if many:
            warn(f"{key} in {source}: frame(s) [k, l] = {_frame_list(many)} have more than {_ZERO_FRACTION:.0%} of "
                 "their pixels exactly 0 (a partial readout?); check them or mask them.")
        if med_mean > 0:
            odd = [(i, l) for l in range(n_frames)
                   if sel[l] and not (med_mean / _MEAN_RATIO <= mean[i, l] <= med_mean * _MEAN_RATIO)]
            if odd:
                warn(f"{key} in {source}: frame(s) [k, l] = {_frame_list(odd)} have a mean more than {_MEAN_RATIO:g} "
                     "times away from the median frame's; check the exposure.")


def check_image(image: Any, source: str, key: str = "the image") -> None:
    """Refuse an image (an object for ``svrt convolve``) that is boolean or whose magnitude is beyond
    ``FRAME_MAX`` or, nonzero, below ``FRAME_MIN`` (NaN/Inf are ignored here)."""
    a = _numpy(image)
    if a.dtype == bool:
        raise SvrtError(f"{key} in {source} holds boolean data (a mask?); expected intensities.")
    if a.dtype.kind not in "fiu" or a.size == 0:
        raise SvrtError(f"{key} in {source} holds {a.dtype} data of shape {tuple(a.shape)}; expected intensities as "
                        "real numbers.")
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    if peak > FRAME_MAX:
        raise SvrtError(f"{key} in {source} reaches {peak:.3g}, above {FRAME_MAX:.0e}: beyond any intensity unit and "
                        "too close to the float32 limit (3.4e38); rescale it (e.g. to a mean of 1).")
    if 0 < peak < FRAME_MIN:
        raise SvrtError(f"{key} in {source} peaks at {peak:.3g}, below {FRAME_MIN:.0e}: too small for float32 "
                        "arithmetic; rescale it (e.g. to a mean of 1).")


#: nodes closer than this [pixel] are finer than any wavefront the frames constrain (grid P >= 2 in the solver)
MIN_NODE_SPACING = 2.0


def check_mode_grid(grid: tuple[int, int], shape: tuple[int, int], source: str, key: str = "the modes") -> None:
    """Refuse a coarse mode grid ``(Yg, Xg)`` with more nodes than the field ``shape = (Y, X)`` has pixels, and
    warn about one finer than :data:`MIN_NODE_SPACING` pixels per node that is not the per-pixel grid itself:
    bilinear upsampling stretches it over the field (50x50 nodes over 64x64 pixels put nodes 1.28 px apart,
    which is no grid a solve or a simulation makes)."""
    (yg, xg), (y, x) = (int(v) for v in grid), (int(v) for v in shape)
    if yg > y or xg > x:
        raise SvrtError(f"{key} in {source} are on a {yg}x{xg} grid, finer than the {y}x{x} field; expected at most "
                        "one node per pixel.")
    if (yg, xg) != (y, x) and min(y / yg, x / xg) < MIN_NODE_SPACING:
        warn(f"{key} in {source} are on a {yg}x{xg} grid over a {y}x{x} field ({min(y / yg, x / xg):.2f} pixels per "
             f"node): finer than {MIN_NODE_SPACING:g} pixels per node, stretched over the field; check that they "
             "belong to this field.")


def drop_dead_frames(burst, source: str = "the burst"):
    """``(burst, dropped, masked)``: ``burst`` without its dead frames.

    A frame index l dead in every object is removed (from frames, modes and mask); a frame dead in
    only some objects is kept for the others and gets zero weight (mask False) where it is dead.
    ``dropped`` lists the removed frame indices, ``masked`` the (k, l) pairs given zero weight.
    Raises :class:`SvrtError` when no frame would be left."""
    dead = dead_frames(burst.frames, burst.mask)
    if not dead:
        return burst, [], []
    k, n_frames = burst.n_objects, burst.n_frames
    is_dead = np.zeros((k, n_frames), bool)
    for i, l in dead:
        is_dead[i, l] = True
    drop = [l for l in range(n_frames) if is_dead[:, l].all()]
    keep = [l for l in range(n_frames) if l not in drop]
    if not keep:
        raise SvrtError(f"FRAMES in {source}: every frame is dead (constant); nothing is left to restore.")
    masked = [(i, l) for i, l in dead if l not in drop]
    mask = burst.mask
    if masked:
        mask = np.ones(burst.frames.shape, bool) if mask is None else mask.copy()
        for i, l in masked:
            mask[i, l] = False
    frames = burst.frames[:, keep]
    modes = None if burst.modes is None else burst.modes[keep]
    mask = None if mask is None else mask[:, keep]
    # the burst's own class (svrt.fileio.Burst), not imported here: svrt.fileio imports this module
    new = type(burst)(frames=frames, instruments=list(burst.instruments), truth=burst.truth, modes=modes,
                header=dict(burst.header), mask=mask)
    masked = [(i, keep.index(l)) for i, l in masked]
    return new, drop, masked


# ------------------------------------------------------------------------------------------ wavefronts

def _kolmogorov_rms(inst, r0_cm: float, n_modes: int) -> float:
    from svrt.atmosphere import kl_standard_deviations

    return float(np.sqrt(np.sum(kl_standard_deviations(inst, r0_cm, n_modes) ** 2)))


def wavefront_bounds(instrument, n_modes: int, training_r0_cm: float | None = None) -> tuple[float, float]:
    """``(warn_rad, max_rad)``: RMS wavefronts (radians at the instrument's wavelength, over its
    aperture, summed over ``n_modes`` KL modes) above which svrt warns (twice the Kolmogorov RMS at the
    training's smallest r0) and refuses (three times the Kolmogorov RMS at r0 = 2 cm at 5000 A)."""
    from svrt.instruments import get_instrument

    inst = get_instrument(instrument)
    r0_train = TRAINING_R0_MIN_CM if training_r0_cm is None else float(training_r0_cm)
    return (TRAINING_FACTOR * _kolmogorov_rms(inst, r0_train, n_modes),
            PHYSICAL_FACTOR * _kolmogorov_rms(inst, PHYSICAL_R0_MIN_CM, n_modes))


def check_wavefront_units(modes: Any, instrument, source: str, training_r0_cm: float | None = None) -> float:
    """Refuse KL coefficients whose RMS wavefront is beyond physics (wrong units), warn outside the
    training range; returns the largest RMS wavefront found (radians).

    modes: ``[M, Y, X]`` or ``[B, M, Y, X]`` coefficients in radians (numpy or torch)."""
    from svrt.atmosphere import r0_at_wavelength
    from svrt.instruments import get_instrument

    a = _numpy(modes).astype(np.float64, copy=False)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise SvrtError(f"the modes in {source} have shape {tuple(a.shape)}; expected [M, Y, X] or [B, M, Y, X].")
    inst = get_instrument(instrument)
    n_modes = a.shape[1]
    rms = np.sqrt(np.sum(a * a, axis=1))  # [B, Y, X]
    where = np.unravel_index(int(np.argmax(rms)), rms.shape)
    top = float(rms[where])
    soft, hard = wavefront_bounds(inst, n_modes, training_r0_cm)
    lam = inst.wavelength_angstrom
    if not math.isfinite(top) or top > hard:
        r0 = r0_at_wavelength(PHYSICAL_R0_MIN_CM, lam)
        raise SvrtError(
            f"the modes in {source} reach an RMS wavefront of {top:.4g} rad (set {where[0]}, pixel y={where[1]}, "
            f"x={where[2]}), above the physical bound of {hard:.3g} rad for {inst.label} (3 x the Kolmogorov RMS of "
            f"{n_modes} KL modes for r0 = {PHYSICAL_R0_MIN_CM:g} cm at 5000 A, {r0:.2f} cm at {lam:g} A, over D = "
            f"{inst.diameter_cm:g} cm): the coefficients must be radians of phase at {lam:g} A, not nm, microns or "
            "waves."
        )
    if top > soft:
        r0t = TRAINING_R0_MIN_CM if training_r0_cm is None else float(training_r0_cm)
        warn(f"the modes in {source} reach an RMS wavefront of {top:.3g} rad, above the {soft:.3g} rad of the training "
             f"range for {inst.label} (twice the Kolmogorov RMS for r0 = {r0t:g} cm at 5000 A): the emulator "
             "extrapolates there.")
    return top


def fixed_pattern_fraction(frames: Any, cutoff_cycles_per_pixel: float, mask: Any = None) -> float | None:
    """The fraction of the power beyond the diffraction cutoff that is common to all frames of one object,
    ``frames [L, Y, X]``: with ``h_l`` the spectrum of frame l / its mean beyond 1.1 cutoffs (Hann window),
    ``P1 = <sum |h_l|^2>_l`` and ``Pm = sum |<h_l>_l|^2``, independent noise gives ``E Pm = P1 / L`` and a
    pattern in every frame ``Pm = P1``, so ``(L Pm / P1 - 1) / (L - 1)`` is ~0 (std ~ 1 / sqrt(number of
    frequencies)) for calibrated frames and 1 for a pure fixed pattern. None when it cannot be told: fewer than
    3 frames, fewer than 2 % of the frequencies beyond the cutoff, masked pixels, or no power there."""
    a = _numpy(frames).astype(np.float64)
    if a.ndim != 3 or a.shape[0] < 3 or (mask is not None and not np.all(_numpy(mask))) or not np.isfinite(a).all():
        return None
    n, y, x = a.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(y), np.fft.fftfreq(x), indexing="ij")
    beyond = np.hypot(fy, fx) > _PATTERN_BEYOND * float(cutoff_cycles_per_pixel)
    if beyond.mean() < 0.02:
        return None
    mean = a.mean(axis=(1, 2), keepdims=True)
    if np.any(mean == 0):
        return None
    win = np.outer(np.hanning(y), np.hanning(x))
    rel = a / mean                                   # a flat field multiplies the scene: compare relative frames
    spec = np.fft.fft2((rel - rel.mean(axis=(1, 2), keepdims=True)) * win)[:, beyond]
    p_each = float(np.mean(np.sum(np.abs(spec) ** 2, axis=1)))
    p_mean = float(np.sum(np.abs(spec.mean(axis=0)) ** 2))
    if p_each <= 0:
        return None
    return (n * p_mean / p_each - 1.0) / (n - 1.0)


def check_calibration(frames: Any, instruments, source: str = "the burst", mask: Any = None) -> list:
    """Warn (:class:`SvrtWarning`) for every object whose frames share a fixed pattern beyond the diffraction
    cutoff (:func:`fixed_pattern_fraction` above ``FIXED_PATTERN_WARN``): dark and flat not applied.
    ``frames [K, L, Y, X]``; ``instruments`` one label per object. Returns the fractions (None: not checked)."""
    from svrt.instruments import get_instrument

    a = _4d(_numpy(frames), source, "FRAMES")
    m = None if mask is None else _4d(_numpy(mask), source, "mask")
    out = []
    for i in range(a.shape[0]):
        c = fixed_pattern_fraction(a[i], get_instrument(instruments[i]).cutoff_cycles_per_pixel,
                                   None if m is None else m[i])
        out.append(c)
        if c is not None and c > FIXED_PATTERN_WARN:
            warn(f"FRAMES in {source}: {c:.0%} of the power of object {i} beyond the diffraction cutoff is the same in "
                 "every frame, a fixed pattern (flat field, dust or dark not applied?); svrt expects dark- and "
                 "flat-corrected frames: calibrate them first.")
    return out
