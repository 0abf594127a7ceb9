"""A restoration checks itself: a quality verdict from the data alone (no truth).

Three figures, each computed from the frames, the solver's noise estimate and the restoration:

* **chi^2 per pixel** (:func:`chi2_per_pixel`) of the model frames against the observed frames with the
  noise variance of each frame (:func:`svrt.runtime.problem.noise_variances`): ~1 where the model explains
  the data down to the noise. Beside it the chi^2 of *doing nothing*: every frame modelled by the frame
  average. A restoration whose model explains the frames no better than the frame average does has
  learnt nothing from them (``worse-than-average``).
* **power beyond the noise level** (:func:`noise_power_fraction`): the fraction of the restoration's power
  (inside the diffraction cutoff, above the lowest rings) that lies at frequencies where the frame
  average's own signal-to-noise ratio is below 1. A linear deconvolution filter multiplies signal and
  noise of a ring alike, so the noise share of a ring's restored power is the frame average's; a
  restoration that puts its power where the frames hold only noise has amplified the noise.
* **gain over the frame average** (:func:`restoration_gain`): the RMS amplitude of the restoration over
  that of the frame average in a band of the cutoff (0.3-0.6 D/lambda by default, where over-restoration
  shows first). A deconvolution raises it; far more than seeing can take away is the sign of
  wavefronts fitted too strong (noise fitted as aberration), the usual failure of small fields.

:func:`verdict` combines them into ``ok``, ``over-restored``, ``worse-than-average`` or ``not-converged``
(the time budget cut the object solve: at a budget shorter than the wavefront stage the "restoration" is the
frame average).
The thresholds (:data:`THRESHOLDS`) were calibrated on simulated bursts where the truth is known
(docs/QUALITY.md has the confusion table and the command that makes it).

Shapes: frames and model ``[K, L, Y, X]``, noise variances ``[K, L]`` (per pixel, the frames' units),
objects and frame averages ``[K, Y, X]``, cutoffs one per object in cycles per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Quality", "THRESHOLDS", "chi2_per_pixel", "noise_power_fraction", "restoration_gain", "verdict",
           "assess"]

#: verdict thresholds (calibrated on simulated bursts, docs/QUALITY.md)
THRESHOLDS = {
    "excess": 0.45,        # [rad^2] wavefront_excess above this: the high modes fitted noise (docs/QUALITY.md)
    "noise": 0.4,          # share of the restored power where the frame average's SNR < 1 above this (good <= 0.33)
    "gain": 30.0,          # restored / frame-average RMS amplitude in GAIN_BAND above this (good restorations 8-21)
    "chi2_ratio": 1.0,     # chi^2(restoration model) / chi^2(frame average) at or above this: worse than the average,
    "chi2_floor": 1.5,     # ... unless the model explains the frames to the noise (chi^2 below this: nothing to judge)
}
GAIN_BAND = (0.3, 0.6)      # in units of the diffraction cutoff
NOISE_BAND = (0.05, 1.0)    # the rings of the restored power the noise share is taken over
VERDICTS = ("ok", "over-restored", "worse-than-average", "not-converged")


def chi2_per_pixel(frames: np.ndarray, model: np.ndarray, noise_var: np.ndarray,
                   valid: np.ndarray | None = None) -> float:
    """``sum (frames - model)^2 / s_kl^2 / n`` over the valid pixels; frames, model ``[K, L, Y, X]``,
    noise_var ``[K, L]`` per pixel, valid bool ``[K, L, Y, X]`` (None: all). ~1 for a model that
    explains the frames down to the noise."""
    frames = np.asarray(frames, dtype=np.float64)
    r2 = (frames - np.asarray(model, dtype=np.float64)) ** 2 / np.asarray(noise_var, dtype=np.float64)[:, :, None, None]
    if valid is None:
        valid = np.isfinite(r2)
    else:
        valid = np.asarray(valid, dtype=bool) & np.isfinite(r2)
    return float(r2[valid].sum() / max(1, int(valid.sum())))


def _ring_power(images: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Power of ``images [..., Y, X]`` (mean removed, flat-top window of 1/8 of the side) summed in rings
    of width 1/min(Y, X) cycles per pixel. Returns (power [..., R], ring centres in units of the cutoff [R],
    the expected power of unit white noise in each ring [R]: its pixels times the window's sum of squares)."""
    from svrt.windows import flat_top_window

    y, x = images.shape[-2:]
    win = flat_top_window((y, x), max(y, x) // 8).numpy().astype(np.float64)
    data = np.asarray(images, dtype=np.float64)
    data = data - data.mean(axis=(-2, -1), keepdims=True)
    spec = np.abs(np.fft.fft2(data * win)) ** 2
    fy = np.fft.fftfreq(y)[:, None]
    fx = np.fft.fftfreq(x)[None, :]
    nu = np.hypot(fy, fx)
    side = min(y, x)
    ring = np.round(nu * side).astype(int)
    n_rings = int(ring.max()) + 1
    counts = np.bincount(ring.ravel(), minlength=n_rings).astype(np.float64)
    flat = spec.reshape(-1, y * x)
    power = np.stack([np.bincount(ring.ravel(), weights=row, minlength=n_rings) for row in flat])
    centres = np.arange(n_rings) / side / cutoff
    return power.reshape(*spec.shape[:-2], n_rings), centres, counts * float((win ** 2).sum())


def restoration_gain(restored: np.ndarray, average: np.ndarray, cutoff: float, band=GAIN_BAND) -> float:
    """RMS amplitude of ``restored [Y, X]`` over that of ``average [Y, X]`` in ``band`` (units of the
    diffraction cutoff ``cutoff``, cycles per pixel): 1 for no restoration."""
    p, nu, _ = _ring_power(np.stack([restored, average]), cutoff)
    sel = (nu >= band[0]) & (nu <= band[1])
    if not sel.any() or p[1, sel].sum() <= 0:
        return float("nan")
    return float(math.sqrt(p[0, sel].sum() / p[1, sel].sum()))


def noise_power_fraction(restored: np.ndarray, average: np.ndarray, average_noise_var: float, cutoff: float,
                         band=NOISE_BAND) -> float:
    """Share of the power of ``restored [Y, X]`` in ``band`` (units of the cutoff) that lies in rings where
    the frame average ``[Y, X]`` (white noise of ``average_noise_var`` per pixel) has a signal-to-noise
    ratio below 1: 0 for a restoration that stays where the frames have signal, near 1 for amplified noise."""
    p, nu, unit_noise = _ring_power(np.stack([restored, average]), cutoff)
    noise = average_noise_var * unit_noise
    sel = (nu >= band[0]) & (nu <= band[1])
    total = p[0, sel].sum()
    if total <= 0:
        return float("nan")
    low_snr = sel & ((p[1] - noise) < noise)
    return float(p[0, low_snr].sum() / total)


def wavefront_excess(modes: np.ndarray, n_fit: int) -> float:
    """Phase variance [rad^2] of the upper half of the fitted KL modes beyond Kolmogorov's continuation of
    the lower half (tip and tilt left out): ``sum_j (<a_j^2> - c_j (D/r0)^(5/3))`` over the upper modes,
    with ``(D/r0)^(5/3)`` from the lower ones and ``c_j`` the Kolmogorov variances
    (:func:`svrt.optics.kl.kl_basis`); ``modes [L, M, Yg, Xg]`` radians, ``n_fit`` the modes fitted. ~0 for
    Kolmogorov wavefronts; noise fitted as aberration adds its variance, which lowers the model's MTF by about
    ``exp(-excess)`` and so raises the restored power by ``exp(excess)``: over-restoration. NaN when fewer
    than 6 modes were fitted."""
    from svrt.optics.kl import kl_basis

    modes = np.asarray(modes, dtype=np.float64)
    n_fit = min(int(n_fit), modes.shape[1])
    if n_fit < 6:
        return float("nan")
    c = np.asarray(kl_basis(modes.shape[1]).variances, dtype=np.float64)[:n_fit]
    ms = (modes[:, :n_fit] ** 2).mean(axis=tuple(i for i in range(modes.ndim) if i != 1))      # [n_fit]
    half = max(3, n_fit // 2)
    d53 = ms[2:half].sum() / c[2:half].sum()
    return float(max(0.0, (ms[half:] - c[half:] * d53).sum()))


@dataclass
class Quality:
    """The verdict of one restoration and the figures behind it (the worst object's where K > 1)."""

    label: str
    chi2: float                 # chi^2 per pixel of the restoration's model
    chi2_average: float         # chi^2 per pixel of the frame average as the model of every frame
    noise: float                # share of restored power where the frame average's SNR < 1 (worst object)
    gain: float                 # restored / frame-average RMS amplitude in GAIN_BAND (largest over objects)
    excess: float = float("nan")  # [rad^2] high-mode variance beyond Kolmogorov's continuation (wavefront_excess)
    reasons: list = field(default_factory=list)

    def cards(self) -> dict:
        """Header cards (FITS values <= 68 characters): QUALITY, QCHI2, QCHI2AVG, QNOISE, QGAIN, QWFEXC."""
        def r(v):
            return round(float(v), 4) if math.isfinite(v) else "nan"
        return {"QUALITY": self.label, "QCHI2": r(self.chi2), "QCHI2AVG": r(self.chi2_average),
                "QNOISE": r(self.noise), "QGAIN": r(self.gain), "QWFEXC": r(self.excess)}

    def summary(self) -> str:
        """``quality ok (chi2 1.02 vs 8.35 for the frame average, noise share 0.15, gain 9.5, wavefront excess
        0.17 rad^2)``: for the summary line of ``svrt deconvolve``."""
        return (f"quality {self.label} (chi2 {self.chi2:.3g} vs {self.chi2_average:.3g} for the frame average, "
                f"noise share {self.noise:.2f}, gain {self.gain:.2g}, wavefront excess {self.excess:.2g} rad^2)")

    def warning(self) -> str | None:
        """One sentence naming the option that helps, or None for ``ok``."""
        if self.label == "ok":
            return None
        if self.label == "not-converged":
            return ("the time budget ran out before the object solve converged: the restoration is (close to) the "
                    "frame average; raise --time-budget or leave it unset.")
        if self.label == "worse-than-average":
            return (f"the restoration's model explains the frames no better than the frame average (chi^2 per pixel "
                    f"{self.chi2:.3g} against {self.chi2_average:.3g}), so it is likely worse than the frame average; "
                    "try fewer modes (--fit-modes) or more frames.")
        return (f"the restoration looks over-restored ({'; '.join(self.reasons)}), likely worse than the frame "
                "average; lower --fit-modes or raise --prior-scale.")


def verdict(chi2: float, chi2_average: float, noise: float, gain: float, object_solved: bool = True,
            thresholds: dict | None = None, excess: float = float("nan")) -> Quality:
    """The verdict from the figures (see the module doc): ``not-converged`` when the object solve never ran,
    else ``worse-than-average`` when the model explains the frames no better than the frame average (and not
    to the noise either: frames that hardly differ are explained by their average as well), else
    ``over-restored`` when the gain or the noise share exceeds its threshold, else ``ok``."""
    t = {**THRESHOLDS, **(thresholds or {})}
    q = Quality("ok", chi2, chi2_average, noise, gain, excess)
    if not object_solved:
        q.label = "not-converged"
        return q
    if (math.isfinite(chi2) and math.isfinite(chi2_average) and chi2 >= t["chi2_ratio"] * chi2_average
            and chi2 > t["chi2_floor"]):
        q.label = "worse-than-average"
        return q
    if math.isfinite(gain) and gain > t["gain"]:
        q.reasons.append(f"amplitude {gain:.2g}x the frame average's at {GAIN_BAND[0]}-{GAIN_BAND[1]} D/lambda")
    if math.isfinite(excess) and excess > t["excess"]:
        q.reasons.append(f"high-order wavefronts {excess:.2g} rad^2 beyond Kolmogorov's continuation of the low ones")
    if math.isfinite(noise) and noise > t["noise"]:
        q.reasons.append(f"{noise:.0%} of its power where the frames hold only noise")
    if q.reasons:
        q.label = "over-restored"
    return q


def assess(frames: np.ndarray, valid: np.ndarray | None, model: np.ndarray, objects: np.ndarray,
           average: np.ndarray, noise_var: np.ndarray, cutoffs, object_solved: bool = True,
           thresholds: dict | None = None, modes: np.ndarray | None = None, n_fit: int | None = None) -> Quality:
    """The verdict of a restoration: frames, valid, model ``[K, L, Y, X]`` (the frames' units; valid may be
    None), objects and average ``[K, Y, X]``, noise_var ``[K, L]`` per pixel, cutoffs one per object
    (cycles per pixel), modes ``[L, M, Yg, Xg]`` and the number fitted (None: no wavefront figure).
    Objects seen several times (phase diversity) are simply assessed in every row."""
    frames = np.asarray(frames, dtype=np.float64)
    noise_var = np.asarray(noise_var, dtype=np.float64)
    chi2 = chi2_per_pixel(frames, model, noise_var, valid)
    chi2_avg = chi2_per_pixel(frames, np.broadcast_to(np.asarray(average)[:, None], frames.shape), noise_var, valid)
    n_frames = frames.shape[1]
    noise, gain = [], []
    for k, cutoff in enumerate(cutoffs):
        noise.append(noise_power_fraction(objects[k], average[k], float(noise_var[k].mean()) / n_frames, cutoff))
        gain.append(restoration_gain(objects[k], average[k], cutoff))
    excess = wavefront_excess(modes, n_fit or modes.shape[1]) if modes is not None else float("nan")
    return verdict(chi2, chi2_avg, _worst(noise), _worst(gain), object_solved, thresholds, excess)


def _worst(values: list) -> float:
    """The largest finite value (NaN when none is)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(v)) if np.isfinite(v).any() else float("nan")


def check_result(result, problem, config) -> Quality:
    """The end of every solve (:meth:`svrt.runtime.solver.SVMOMFBD.solve`): the verdict of ``result`` (a
    :class:`~svrt.runtime.solver.SolveResult`) on ``problem`` (its :class:`~svrt.runtime.problem.Problem`)
    into the result's header (:meth:`Quality.cards`) and ``result.quality``; a warning
    (``svrt: warning: ...``) when it is not ``ok``, or with ``config.strict`` an SvrtError, so that no
    output is written."""
    import torch

    from svrt.checks import warn
    from svrt.errors import SvrtError
    from svrt.runtime.problem import noise_variances

    burst = problem.burst
    scale = problem.scale.detach().cpu().double().numpy()
    # the solver's own noise estimate (normalised frames), back in the input's units
    nvar = noise_variances(problem.data.detach().cpu(), burst.insts, torch.device("cpu")).double().numpy()
    nvar = nvar * scale[:, None] ** 2
    # momfbd's object solve cut by the time budget (at the deadline it returns its start, the frame average)
    solved = result.header.get("OBJ_STOP") != "time budget"
    q = assess(burst.frames.numpy(), burst.valid.numpy(), result.model, result.objects, result.frame_average, nvar,
               [inst.cutoff_cycles_per_pixel for inst in burst.insts], solved, modes=result.modes,
               n_fit=_fitted_modes(result.header, result.modes.shape[1]))
    result.header.update(q.cards())
    result.quality = q
    message = q.warning()
    if message is not None:
        if getattr(config, "strict", False):
            raise SvrtError(f"--strict: {message[0].lower()}{message[1:-1]}; nothing was written.")
        warn(message)
    return q


def _fitted_modes(header: dict, n_modes: int) -> int:
    """The KL modes the solve fitted: FIT_MODES_USED (method momfbd), else all M (method adam fits every mode)."""
    v = header.get("FIT_MODES_USED")
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return min(int(v), n_modes)
    return n_modes
