"""Camera alignment: register every channel of a burst to channel 0 by a shift, a rotation and a scale
before the joint solve (wide-band and narrow-band cameras are never perfectly co-aligned: SST/CRISP
pipelines align them with pinhole-grid calibrations, the same similarity transform per camera).

The transform maps a pixel ``p = (y, x)`` of the reference (channel 0) to the pixel ``q`` of channel k
where the same point of the sky was recorded, about the image centre ``c = ((Y - 1) / 2, (X - 1) / 2)``::

    q_y = c_y + s (cos t (p_y - c_y) - sin t (p_x - c_x)) + dy
    q_x = c_x + s (sin t (p_y - c_y) + cos t (p_x - c_x)) + dx

(``t`` in degrees in the cards, positive from +y towards +x; ``s`` the scale of channel k's pixels in
reference pixels). The aligned channel is channel k resampled at ``q(p)`` (bicubic, mirrored borders), so
it lies on the reference's grid. ``dy, dx`` follow :mod:`svrt.registration`'s convention (the
content sits ``(dy, dx)`` pixels from where it belongs).

Estimated from the data (:func:`estimate_alignment`): the frame averages of the two channels, each
normalised to zero mean and unit variance inside a border of 1/8 of the side, are matched by least squares
over (dy, dx, t, log s) with L-BFGS, started from the cross-correlation shift. Or given as a map: the
burst card ``ALIGNk = 'dy,dx,t,s'`` for channel k (then nothing is estimated for it).

An estimate cannot go silently wrong. Three nested models are fitted: the identity, the shift alone and the
whole similarity; a richer one is kept only when it removes at least :data:`MIN_GAIN` of the misfit left by
the simpler one (a defocused phase-diversity channel or another band never matches the reference exactly, and
a rotation or scale fitted to that difference is noise, not geometry), and only when it is plausible: a shift
of at most :data:`MAX_SHIFT_FRACTION` of the field, ``|rotation| <=`` :data:`MAX_ROTATION_DEG`, ``|scale - 1|
<=`` :data:`MAX_SCALE_CHANGE` (larger transforms are declared with ALIGNk cards). When the chosen model still
correlates the channels less than :data:`MIN_CORRELATION` (a narrow-band line-core image against a
continuum: no geometry can be read from it), the identity is applied with a warning. The correlation after
the transform is reported (:attr:`Alignment.correlation`, the card ``ALIGNCk``).

Cards are checked wherever they are present (:func:`alignment_cards`, called when a burst is validated):
a malformed card, a card for a channel the burst lacks, a shift beyond the field, a scale outside
[1/2, 2] are refused; ``ALIGN0`` (the reference itself) is refused unless it is the identity; a rotation
beyond 90 degrees (a camera mounted upside down, or a sign error) is warned about.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError

__all__ = ["Alignment", "estimate_alignment", "apply_alignment", "align_burst", "parse_alignment", "alignment_cards",
           "MAX_SHIFT_FRACTION", "MAX_ROTATION_DEG", "MAX_SCALE_CHANGE", "MIN_CORRELATION", "MIN_GAIN"]

#: an estimated shift beyond this fraction of the field's smaller side is not a camera misalignment
MAX_SHIFT_FRACTION = 1 / 8
#: [deg] an estimated rotation beyond this is implausible for cameras behind one telescope (declare it in ALIGNk)
MAX_ROTATION_DEG = 5.0
#: an estimated |scale - 1| beyond this is implausible (declare it in ALIGNk)
MAX_SCALE_CHANGE = 0.05
#: below this correlation of the normalised frame averages the channels do not show one scene alike enough
MIN_CORRELATION = 0.5
#: a richer model (shift over identity, similarity over shift) must remove this fraction of the misfit 1 - rho
MIN_GAIN = 0.25
#: a given card's scale outside [1 / MAX_CARD_SCALE, MAX_CARD_SCALE] is no camera (a typo or other units)
MAX_CARD_SCALE = 2.0


@dataclass(frozen=True)
class Alignment:
    """Similarity transform of a channel relative to the reference (module docstring): pixels, degrees.
    ``correlation``: of the normalised images once aligned (estimates only; not part of the transform);
    ``note``: why an estimate was replaced by a simpler transform ('' when it was not)."""

    dy: float = 0.0
    dx: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    correlation: float | None = dataclasses.field(default=None, compare=False)
    note: str = dataclasses.field(default="", compare=False)

    def card(self) -> str:
        return f"{self.dy:.4f},{self.dx:.4f},{self.rotation_deg:.5f},{self.scale:.6f}"

    def inverse(self) -> "Alignment":
        """The transform q -> p: ``p = c + R(-t) (q - c - d) / s`` (how to make a misaligned channel from a
        reference)."""
        t = math.radians(self.rotation_deg)
        dy = -(math.cos(t) * self.dy + math.sin(t) * self.dx) / self.scale
        dx = -(-math.sin(t) * self.dy + math.cos(t) * self.dx) / self.scale
        return Alignment(dy, dx, -self.rotation_deg, 1.0 / self.scale)


def parse_alignment(text, key: str) -> Alignment:
    """An :class:`Alignment` from the card text ``'dy,dx,t,s'``; one SvrtError sentence otherwise."""
    try:
        dy, dx, t, s = (float(v) for v in str(text).split(","))
    except ValueError:
        dy = dx = t = s = float("nan")
    if not all(math.isfinite(v) for v in (dy, dx, t, s)) or s <= 0:
        raise SvrtError(f"{key} must be 'dy,dx,rotation_deg,scale' (pixels, degrees, scale > 0); got {text!r}.")
    return Alignment(dy, dx, t, s)


def _sample_grid(shape, dy, dx, theta_rad, scale) -> torch.Tensor:
    """grid_sample grid ``[1, Y, X, 2]`` (align_corners=True) of the points q(p) of every reference pixel p."""
    y, x = shape
    cy, cx = (y - 1) / 2.0, (x - 1) / 2.0
    py, px = torch.meshgrid(torch.arange(y, dtype=torch.float64), torch.arange(x, dtype=torch.float64), indexing="ij")
    cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
    qy = cy + scale * (cos * (py - cy) - sin * (px - cx)) + dy
    qx = cx + scale * (sin * (py - cy) + cos * (px - cx)) + dx
    return torch.stack([2 * qx / (x - 1) - 1, 2 * qy / (y - 1) - 1], dim=-1)[None]


def _resample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``images [N, Y, X]`` (float64) sampled on ``grid`` (bicubic, mirrored borders)."""
    out = F.grid_sample(images[:, None], grid.expand(images.shape[0], -1, -1, -1), mode="bicubic",
                        padding_mode="reflection", align_corners=True)
    return out[:, 0]


def apply_alignment(frames, alignment: Alignment) -> torch.Tensor:
    """Frames ``[..., Y, X]`` of a channel resampled onto the reference's grid (float32)."""
    f = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames).double()
    shape = f.shape
    flat = f.reshape(-1, *shape[-2:])
    a = alignment
    grid = _sample_grid(shape[-2:], torch.tensor(a.dy, dtype=torch.float64), torch.tensor(a.dx, dtype=torch.float64),
                        torch.tensor(math.radians(a.rotation_deg), dtype=torch.float64),
                        torch.tensor(a.scale, dtype=torch.float64))
    return _resample(flat, grid).reshape(shape).float()


def _normalised(image: torch.Tensor, inner) -> torch.Tensor:
    v = image[inner]
    return (image - v.mean()) / v.std().clamp_min(1e-30)


def _misfit(img: torch.Tensor, ref_n: torch.Tensor, inner, params: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the normalised images, ``2 (1 - rho)``, with ``img`` warped by ``params`` =
    (dy, dx, t [rad], log s)."""
    warped = _resample(img[None], _sample_grid(img.shape, params[0], params[1], params[2], torch.exp(params[3])))[0]
    return (_normalised(warped, inner)[inner] - ref_n).pow(2).mean()


def _fit(img, ref_n, inner, start, free: int, iterations: int) -> tuple[torch.Tensor, float]:
    """L-BFGS over the first ``free`` parameters (2: the shift, 4: the similarity) from ``start``; the
    parameters and the correlation they reach."""
    p = torch.tensor(start[:free], dtype=torch.float64, requires_grad=True)
    rest = torch.tensor(start[free:], dtype=torch.float64)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = _misfit(img, ref_n, inner, torch.cat([p, rest]))
        loss.backward()
        return loss

    opt.step(closure)
    params = torch.cat([p.detach(), rest])
    with torch.no_grad():
        return params, 1.0 - 0.5 * float(_misfit(img, ref_n, inner, params))


def _alignment(params: torch.Tensor, correlation: float, note: str = "") -> Alignment:
    dy, dx, t, log_s = (float(v) for v in params)
    return Alignment(dy, dx, math.degrees(t), math.exp(log_s), correlation, note)


def _implausible(a: Alignment, shape, max_shift: float) -> str:
    """Why ``a`` is no plausible estimate of a camera misalignment ('' when it is)."""
    why = []
    if math.hypot(a.dy, a.dx) > max_shift:
        why.append(f"a shift of {math.hypot(a.dy, a.dx):.1f} px (at most {max_shift:.1f}: 1/8 of the field)")
    if abs(a.rotation_deg) > MAX_ROTATION_DEG:
        why.append(f"a rotation of {a.rotation_deg:.1f} deg (at most {MAX_ROTATION_DEG:g})")
    if abs(a.scale - 1) > MAX_SCALE_CHANGE:
        why.append(f"a scale of {a.scale:.3f} (within {MAX_SCALE_CHANGE:g} of 1)")
    return " and ".join(why)


def estimate_alignment(image, reference, border: float = 1 / 8, max_shift: float = 16.0,
                       iterations: int = 100) -> Alignment:
    """The :class:`Alignment` of ``image [Y, X]`` (e.g. channel k's frame average) relative to ``reference
    [Y, X]`` (channel 0's): least squares over the inner field of the normalised images, the simplest of
    identity, shift and similarity that the data ask for and that is plausible (module docstring), with
    its :attr:`~Alignment.correlation`. ``max_shift`` [pixel] bounds the cross-correlation search, and the
    plausible shift with :data:`MAX_SHIFT_FRACTION` of the field. Never raises for what the data show:
    :func:`align_burst` warns when the result is the identity for want of a match."""
    from svrt.registration import estimate_shift

    img = torch.as_tensor(np.asarray(image, dtype=np.float64))
    ref = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    if img.shape != ref.shape or img.dim() != 2:
        raise SvrtError(
            f"camera alignment needs two images of one shape; got {tuple(img.shape)} and {tuple(ref.shape)}."
        )
    y, x = ref.shape
    b = int(round(border * min(y, x)))
    inner = (slice(b, y - b), slice(b, x - b))
    ref_n = _normalised(ref, inner)[inner]
    limit = min(max_shift, MAX_SHIFT_FRACTION * min(y, x))
    identity = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        best = _alignment(identity, 1.0 - 0.5 * float(_misfit(img, ref_n, inner, identity)))
    dy0, dx0 = estimate_shift(img.numpy(), ref.numpy(), max_shift=max_shift)
    shift, rho_shift = _fit(img, ref_n, inner, [dy0, dx0, 0.0, 0.0], 2, iterations)
    full, rho_full = _fit(img, ref_n, inner, shift.tolist(), 4, iterations)
    notes = []
    for params, rho in ((shift, rho_shift), (full, rho_full)):
        candidate = _alignment(params, rho)
        if (1 - rho) > (1 - MIN_GAIN) * (1 - best.correlation):
            continue  # explains too little more of the misfit: it fits noise or the band difference, not geometry
        why = _implausible(candidate, (y, x), limit)
        if why:
            notes.append(f"the fit found {why}")
            break
        best = candidate
    return dataclasses.replace(best, note="; ".join(notes))


def alignment_cards(header, k: int, shape, where: str = "the burst's header") -> dict[int, Alignment]:
    """The transforms that the ``ALIGNk`` cards of ``header`` declare for a burst of ``k`` channels of
    ``shape = (Y, X)`` pixels, checked (module docstring): {channel: Alignment}; one SvrtError sentence for
    a card that cannot be right, a warning for one that is odd but possible."""
    from svrt.checks import warn

    y, x = (int(v) for v in shape)
    out: dict[int, Alignment] = {}
    for raw, value in dict(header or {}).items():
        key = str(raw).strip().upper()
        if not (key.startswith("ALIGN") and key[5:].isdigit()):
            continue
        i = int(key[5:])
        a = parse_alignment(value, f"{key} in {where}")
        if i == 0:
            if (a.dy, a.dx, a.rotation_deg % 360, a.scale) != (0.0, 0.0, 0.0, 1.0):
                raise SvrtError(f"{key} = {value!r} in {where} moves channel 0, the reference every ALIGNk maps to; "
                                "expected no ALIGN0 (cards are numbered by channel, k = 1..K-1).")
            continue
        if i >= k:
            raise SvrtError(f"{key} in {where} is for channel {i} but the burst has {k} channel(s) (0..{k - 1}).")
        if max(abs(a.dy), abs(a.dx)) > max(y, x):
            raise SvrtError(f"{key} = {value!r} in {where} shifts channel {i} by ({a.dy:g}, {a.dx:g}) pixels, beyond "
                            f"the {y}x{x} field; expected 'dy,dx,rotation_deg,scale' in pixels of channel 0.")
        if not 1 / MAX_CARD_SCALE <= a.scale <= MAX_CARD_SCALE:
            raise SvrtError(f"{key} = {value!r} in {where} scales channel {i} by {a.scale:g}; expected a scale between "
                            f"{1 / MAX_CARD_SCALE:g} and {MAX_CARD_SCALE:g} (channel k's pixel in channel 0's pixels).")
        turn = (a.rotation_deg + 180.0) % 360.0 - 180.0
        if abs(turn) > 90.0:
            warn(f"{key} in {where} rotates channel {i} by {a.rotation_deg:g} deg: a camera mounted upside down or "
                 "a sign error? Applied as given.")
        out[i] = a
    return out


def align_burst(burst):
    """The validated burst (:class:`svrt.runtime.problem.ValidatedBurst`) with channels 1..K-1 resampled onto
    channel 0's grid, and the cards ``ALIGNk = 'dy,dx,t,s'`` used (given in the burst's header, or estimated
    from the frame averages), with ``ALIGNCk``, the correlation of an estimate. Masked pixels are filled
    with the frame's mean before the resampling, and a pixel of the aligned frame is valid where all its
    source pixels were. An estimate that is the identity for want of a plausible match is warned about."""
    from svrt.checks import warn

    frames, valid = burst.frames.clone(), burst.valid.clone()
    vf = valid.float()
    k = frames.shape[0]
    cards = {}
    fill = (torch.where(valid, frames, torch.zeros(())).sum(dim=(-2, -1)) / vf.sum(dim=(-2, -1)).clamp_min(1))
    clean = torch.where(valid, frames, fill[..., None, None])
    average = clean.mean(dim=1)
    given = alignment_cards(burst.header, k, frames.shape[-2:])
    for i in range(1, k):
        a = given.get(i)
        if a is None:
            a = estimate_alignment(average[i], average[0])
            cards[f"ALIGNC{i}"] = round(float(a.correlation), 4)
            if a.correlation < MIN_CORRELATION:
                warn(f"channel {i} correlates with channel 0 at {a.correlation:.2f} only (another band or line core?): "
                     f"its alignment cannot be read from the data, so none is applied; give ALIGN{i} in the header"
                     + (f" ({a.note})." if a.note else "."))
                a = Alignment(correlation=a.correlation)
            elif a.note:
                warn(f"channel {i}: {a.note}, implausible for cameras behind one telescope; applied {a.card()} "
                     f"instead (correlation {a.correlation:.2f}); declare a larger transform with ALIGN{i}.")
        cards[f"ALIGN{i}"] = a.card()
        if (a.dy, a.dx, a.rotation_deg, a.scale) == (0.0, 0.0, 0.0, 1.0):
            continue  # the identity: resampling would only smooth the frames
        frames[i] = apply_alignment(clean[i], a)
        valid[i] = apply_alignment(vf[i], a) > 0.999
    return dataclasses.replace(burst, frames=frames, valid=valid), cards
