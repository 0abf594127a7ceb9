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
* :func:`estimate_shift_dft`: the cross-correlation's peak found on a grid ``upsample`` times finer
  than the pixels by a matrix-multiply DFT of a 1.5-pixel neighbourhood (Guizar-Sicairos, Thurman &
  Fienup 2008, Opt. Lett. 33, 156), refined by a parabola on that grid, with a flat-top window that
  moves with the content. Unbiased for a pure shift (< 0.002 px): it co-aligns time series
  (:mod:`svrt.runtime.series`). :func:`estimate_shift` (biased by a few hundredths of a pixel: its
  parabola on the pixel grid and its fixed Hann window) stays the score's registration, unchanged.
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

__all__ = ["estimate_shift", "estimate_shift_dft", "apply_shift_field", "destretch"]


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


def _upsampled_dft(spectrum: np.ndarray, size: int, upsample: int, offsets: tuple[float, float]) -> np.ndarray:
    """``[size, size]``: the inverse DFT of ``spectrum [Y, X]`` evaluated on a grid of step ``1 / upsample``
    pixels whose sample ``offsets`` (in upsampled samples) is lag 0, by two matrix products (no zero padding:
    cost ``O(size * Y * X)``, not ``O(upsample^2 Y X)``)."""
    out = spectrum
    for axis in (1, 0):   # x first, then y: each tensordot replaces the last axis by the upsampled one
        n = spectrum.shape[axis]
        lags = (np.arange(size) - offsets[axis])[:, None]
        kernel = np.exp(2j * np.pi * lags * np.fft.fftfreq(n, upsample)[None, :])
        out = np.tensordot(kernel, out, axes=(1, -1))
    return out


def _parabola_offset(v_minus: float, v0: float, v_plus: float) -> float:
    """Vertex of the parabola through three equally spaced samples, in samples from the middle one."""
    den = v_minus - 2 * v0 + v_plus
    return 0.0 if den >= 0 else float(np.clip(0.5 * (v_minus - v_plus) / den, -0.5, 0.5))


def _dft_peak(a: np.ndarray, b: np.ndarray, upsample: int, max_shift: float | None) -> tuple[float, float]:
    """The cross-correlation peak of ``a [Y, X]`` against ``b [Y, X]`` (as given: no mean removed, no
    window) to ``1 / upsample`` pixel, refined by a parabola on the upsampled grid."""
    product = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
    cc = np.fft.ifft2(product).real
    if max_shift is not None:   # lags beyond max_shift (periodic distance) are not candidates
        ly = np.abs(np.fft.fftfreq(a.shape[0], 1 / a.shape[0]))[:, None]
        lx = np.abs(np.fft.fftfreq(a.shape[1], 1 / a.shape[1]))[None, :]
        cc = np.where((ly <= max_shift) & (lx <= max_shift), cc, -np.inf)
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    size = np.array(a.shape, dtype=np.float64)
    wrap = peak > np.fix(size / 2)
    peak[wrap] -= size[wrap]   # lags in [-N/2, N/2)
    if upsample == 1:
        return float(peak[0]), float(peak[1])
    region = int(np.ceil(1.5 * upsample))
    centre = np.fix(region / 2)
    fine = _upsampled_dft(product, region, upsample, (centre - peak[0] * upsample, centre - peak[1] * upsample)).real
    iy, ix = np.unravel_index(int(np.argmax(fine)), fine.shape)
    fy = fx = 0.0
    if 0 < iy < region - 1:
        fy = _parabola_offset(fine[iy - 1, ix], fine[iy, ix], fine[iy + 1, ix])
    if 0 < ix < region - 1:
        fx = _parabola_offset(fine[iy, ix - 1], fine[iy, ix], fine[iy, ix + 1])
    return float(peak[0] + (iy + fy - centre) / upsample), float(peak[1] + (ix + fx - centre) / upsample)


def estimate_shift_dft(image: np.ndarray, reference: np.ndarray, upsample: int = 100, ramp_fraction: float = 0.125,
                       iterations: int = 4, max_shift: float | None = None) -> tuple[float, float]:
    """``(dy, dx)`` of ``image [Y, X]`` relative to ``reference [Y, X]`` (the module's convention), by the
    upsampled-DFT cross-correlation of Guizar-Sicairos et al. (2008).

    Both images are apodised by a flat-top window (raised-cosine ramps over ``ramp_fraction`` of each
    side) so that the frame edges, which do not move with the content, do not correlate; the image's
    window then follows the content: it is moved by the shift just measured and the shift measured again
    (at most ``iterations`` times, until it changes by < 1e-4 px). A window fixed to the frame biases the
    shift towards zero (measured 0.04 px median for 128^2 granulation crops drifting by up to 3 px, 20
    pairs); the moving one leaves 0.0006 px. The peak is found to ``1 / upsample`` pixel over +-0.75 px
    around the coarse one (within ``max_shift`` pixels when given), then by a parabola on that fine grid,
    so that the result is not quantised to it.

    >>> import numpy as np
    >>> ref = np.random.default_rng(0).normal(size=(32, 32))
    >>> moved = np.roll(ref, (3, -2), axis=(0, 1))
    >>> [round(v, 2) for v in estimate_shift_dft(moved, ref, ramp_fraction=0)]
    [3.0, -2.0]
    """
    from svrt.windows import shifted_flat_top_window

    img = np.asarray(image, np.float64)
    ref = np.asarray(reference, np.float64)
    if img.ndim != 2 or img.shape != ref.shape:
        raise ValueError(f"estimate_shift_dft needs two [Y, X] images of one shape; got {img.shape} and {ref.shape}")
    upsample = max(int(upsample), 1)
    ramp = int(round(ramp_fraction * min(img.shape)))
    if ramp < 1:   # no window: the images are taken as periodic (e.g. exact Fourier shifts)
        return _dft_peak(img - img.mean(), ref - ref.mean(), upsample, max_shift)

    def apodised(x: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
        w = shifted_flat_top_window(x.shape, ramp, shift).numpy()
        return (x - (x * w).sum() / w.sum()) * w   # the weighted mean: no step left at the window's edge

    b = apodised(ref, (0.0, 0.0))
    shift = (0.0, 0.0)
    for _ in range(max(int(iterations), 1)):
        new = _dft_peak(apodised(img, shift), b, upsample, max_shift)
        done = max(abs(new[0] - shift[0]), abs(new[1] - shift[1])) < 1e-4
        shift = new
        if done:
            break
    return shift


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
