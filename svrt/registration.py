"""Registration of a restoration to a reference: one global shift, or a smooth shift field (destretching).

Why a comparison with the truth needs it: shifting the object and every frame's tip-tilt by the same
amount leaves the data unchanged, so (SV-)MOMFBD fixes the object's position by removing the mean
tip-tilt over the frames. The truth, though, sits where the *true* mean tip-tilt puts it: a
spatially invariant solution is displaced by the burst's mean image motion (often 1-2 px for 6-12
frames), a spatially variant one (tip-tilt removed at every grid node) is warped by the burst's mean
warp. Neither is an error of the restoration, and neither is knowable without a reference; an NMSE
taken without registration measures it anyway. Real pipelines destretch against a reference for the
same reason.

Method (all estimates get the same treatment, frame average included):

* :func:`estimate_shift`: the peak of the cross-correlation of the two mean-subtracted, Hann-windowed
  images, refined to sub-pixel by a parabola through the peak and its neighbours (per axis).
* :func:`destretch`: shifts measured in ``block`` x ``block`` windows on a grid of step ``block / 2``,
  spread to every pixel by bilinear interpolation, the image resampled there (bicubic, mirrored
  borders). The shift field is as smooth as the blocks are wide: it can undo a warp, not a blur.

Shift convention: ``shift = (dy, dx)`` such that ``image(y - dy, x - dx)`` matches the reference,
i.e. the image content sits ``(dy, dx)`` pixels from where it belongs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from svrt.windows import hann

__all__ = ["estimate_shift", "apply_shift_field", "destretch"]


def estimate_shift(image: np.ndarray, reference: np.ndarray, max_shift: float = 8.0) -> tuple[float, float]:
    """``(dy, dx)`` of ``image [Y, X]`` relative to ``reference [Y, X]`` (see the module's convention),
    searched within ``max_shift`` pixels; sub-pixel by parabolic interpolation of the correlation peak."""
    a = np.asarray(image, np.float64)
    b = np.asarray(reference, np.float64)
    w = hann(a.shape).numpy()
    a = (a - a.mean()) * w
    b = (b - b.mean()) * w
    cc = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape)
    cc = np.fft.fftshift(cc)
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    r = int(np.ceil(max_shift))
    win = cc[cy - r:cy + r + 1, cx - r:cx + r + 1]
    py, px = np.unravel_index(int(np.argmax(win)), win.shape)

    def refine(v_minus, v0, v_plus):
        den = v_minus - 2 * v0 + v_plus
        return 0.0 if den >= 0 else 0.5 * (v_minus - v_plus) / den

    dy = dx = 0.0
    if 0 < py < win.shape[0] - 1:
        dy = refine(win[py - 1, px], win[py, px], win[py + 1, px])
    if 0 < px < win.shape[1] - 1:
        dx = refine(win[py, px - 1], win[py, px], win[py, px + 1])
    return float(py - r + dy), float(px - r + dx)


def apply_shift_field(image: np.ndarray, shift_y: np.ndarray, shift_x: np.ndarray) -> np.ndarray:
    """``image [Y, X]`` resampled at ``(y + shift_y, x + shift_x)`` (fields ``[Y, X]`` in pixels): moves
    content that sits ``shift`` pixels away back to where it belongs. Bicubic, mirrored borders."""
    y, x = image.shape
    gy, gx = np.meshgrid(np.arange(y, dtype=np.float64), np.arange(x, dtype=np.float64), indexing="ij")
    sy, sx = gy + shift_y, gx + shift_x
    grid = torch.from_numpy(np.stack([2 * sx / (x - 1) - 1, 2 * sy / (y - 1) - 1], axis=-1))[None]
    img = torch.from_numpy(np.asarray(image, np.float64))[None, None]
    out = F.grid_sample(img, grid, mode="bicubic", padding_mode="reflection", align_corners=True)
    return out[0, 0].numpy()


def destretch(image: np.ndarray, reference: np.ndarray, block: int = 32, max_shift: float = 6.0) -> tuple:
    """Register ``image [Y, X]`` to ``reference [Y, X]``: a global shift, then a smooth shift field from
    ``block``-pixel windows (step ``block // 2``). Returns ``(registered [Y, X], shift_y [Y, X],
    shift_x [Y, X])``. Images smaller than two blocks get the global shift only."""
    img = np.asarray(image, np.float64)
    ref = np.asarray(reference, np.float64)
    y, x = img.shape
    dy0, dx0 = estimate_shift(img, ref, max_shift)
    sy = np.full((y, x), dy0)
    sx = np.full((y, x), dx0)
    shifted = apply_shift_field(img, sy, sx)
    step = block // 2
    if min(y, x) < 2 * block:
        return shifted, sy, sx
    ys = list(range(0, y - block + 1, step))
    xs = list(range(0, x - block + 1, step))
    field = np.zeros((2, len(ys), len(xs)))
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            field[:, i, j] = estimate_shift(shifted[y0:y0 + block, x0:x0 + block], ref[y0:y0 + block, x0:x0 + block],
                                            max_shift=min(max_shift, block / 4))
    # block centres at y0 + block/2: interpolate (edge values held) to every pixel
    centres_y = np.array(ys) + (block - 1) / 2
    centres_x = np.array(xs) + (block - 1) / 2
    py = np.interp(np.arange(y), centres_y, np.arange(len(ys)))
    px = np.interp(np.arange(x), centres_x, np.arange(len(xs)))
    f = torch.from_numpy(field)[None]
    grid = torch.from_numpy(np.stack(np.meshgrid(2 * px / max(len(xs) - 1, 1) - 1, 2 * py / max(len(ys) - 1, 1) - 1,
                                                 indexing="xy"), axis=-1))[None]
    local = F.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=True)[0].numpy()
    sy, sx = sy + local[0], sx + local[1]
    return apply_shift_field(img, sy, sx), sy, sx
