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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError

__all__ = ["Alignment", "estimate_alignment", "apply_alignment", "align_burst", "parse_alignment"]


@dataclass(frozen=True)
class Alignment:
    """Similarity transform of a channel relative to the reference (module docstring): pixels, degrees."""

    dy: float = 0.0
    dx: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0

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


def estimate_alignment(image, reference, border: float = 1 / 8, max_shift: float = 16.0,
                       iterations: int = 100) -> Alignment:
    """The :class:`Alignment` of ``image [Y, X]`` (e.g. channel k's frame average) relative to ``reference
    [Y, X]`` (channel 0's): least squares over the inner field of the normalised images."""
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
    dy0, dx0 = estimate_shift(img.numpy(), ref.numpy(), max_shift=max_shift)
    p = torch.tensor([dy0, dx0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)   # dy, dx, t [rad], log s
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        warped = _resample(img[None], _sample_grid((y, x), p[0], p[1], p[2], torch.exp(p[3])))[0]
        loss = (_normalised(warped, inner)[inner] - ref_n).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    dy, dx, t, log_s = (float(v) for v in p.detach())
    return Alignment(dy, dx, math.degrees(t), math.exp(log_s))


def align_burst(burst):
    """The validated burst (:class:`svrt.runtime.problem.ValidatedBurst`) with channels 1..K-1 resampled onto
    channel 0's grid, and the cards ``ALIGNk = 'dy,dx,t,s'`` used (given in the burst's header, or estimated
    from the frame averages). Masked pixels are filled with the frame's mean before the resampling, and a
    pixel of the aligned frame is valid where all its source pixels were."""
    frames, valid = burst.frames.clone(), burst.valid.clone()
    vf = valid.float()
    k = frames.shape[0]
    cards = {}
    fill = (torch.where(valid, frames, torch.zeros(())).sum(dim=(-2, -1)) / vf.sum(dim=(-2, -1)).clamp_min(1))
    clean = torch.where(valid, frames, fill[..., None, None])
    average = clean.mean(dim=1)
    header = {str(key).upper(): v for key, v in burst.header.items()}
    for i in range(1, k):
        key = f"ALIGN{i}"
        a = parse_alignment(header[key], key) if key in header else estimate_alignment(average[i], average[0])
        cards[key] = a.card()
        frames[i] = apply_alignment(clean[i], a)
        valid[i] = apply_alignment(vf[i], a) > 0.999
    return dataclasses.replace(burst, frames=frames, valid=valid), cards
