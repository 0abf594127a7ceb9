"""Overlap-add spatially variant convolution with spatially invariant patches (the MOMFBD way).

The field is cut into overlapping tiles. Inside a tile the PSF is taken as invariant: the PSF of
the wavefront at the tile's centre. Each tile is convolved by FFT and the tiles are blended with
apodising weights that form a partition of unity (they sum to exactly 1 at every pixel), so a
field with the same PSF everywhere gives back the ordinary convolution.

Weights: the raised-cosine partition of unity of :func:`svrt.windows.axis_tiling` (its docstring
says how the tiles and their transitions are laid out).

Two ways to blend (``blend``):

``"output"`` (default): ``I(r) = sum_t W_t(r) (S_t * O)(r)``. The PSF belongs to the output pixel,
as in Eq. 1, so when the tiles shrink to one pixel this *is* the exact per-pixel convolution of
:func:`svrt.optics.convolution.spatially_variant_convolve`; each tile needs the object over the
tile plus the PSF's reach (computed on that region only, not on the whole image).

``"object"``: ``I = sum_t S_t * (W_t O)``, the classical overlap-add of apodised object patches
(Nagy & O'Leary 1998). It blends the PSFs in the object plane, i.e. the PSF belongs to the input
pixel; it is the adjoint structure of Eq. 1 and agrees with it only to first order in the PSF's
variation. Only ``boundary="zero"``.

Cost: one PSF per tile (instead of one per pixel) plus, per tile and object, FFTs of side
``L + S - 1`` (rounded up to a fast length), with L the tile's extent and S the PSF size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.windows import TileAxis, axis_tiling


def fast_length(n: int) -> int:
    """Smallest 2-3-5-smooth integer >= n (a length pocketfft and cuFFT handle fast)."""
    try:
        from scipy.fft import next_fast_len
        return int(next_fast_len(int(n), real=True))
    except ImportError:  # pragma: no cover - scipy is a dependency
        return int(n)


def tile_centre_coefficients(coefficients: torch.Tensor, ay: TileAxis, ax: TileAxis) -> torch.Tensor:
    """``[Ty, Tx, M]``: the per-pixel coefficients ``[M, Y, X]`` taken at the pixel holding each tile centre."""
    iy = torch.tensor([min(ay.n - 1, int(math.floor(c))) for c in ay.centres])
    ix = torch.tensor([min(ax.n - 1, int(math.floor(c))) for c in ax.centres])
    return coefficients[:, iy][:, :, ix].permute(1, 2, 0)


def overlap_add_convolve(obj: torch.Tensor, coefficients: torch.Tensor, psf_model, *, patch: int = 64,
                         overlap: float | None = None, blend: str = "output", boundary: str = "zero",
                         max_bytes: int = 256 * 2 ** 20) -> torch.Tensor:
    """Spatially variant convolution by overlap-add of spatially invariant tiles.

    obj ``[K, Y, X]`` (or ``[Y, X]``): objects sharing the wavefront; coefficients ``[M, Y, X]``
    (radians, per pixel as for the exact method; each tile uses the value at its centre);
    psf_model: :class:`svrt.optics.psf.PSFModel` (PSF size S); patch: tile size in pixels (about);
    overlap: width of the raised-cosine transitions (default ``patch / 2``, at most ``patch / 2``);
    blend: ``"output"`` (weights on the convolved tiles, the PSF of Eq. 1 belongs to the output
    pixel) or ``"object"`` (weights on the object, classical OLA); boundary: ``"zero"`` or
    ``"reflect"`` (output blend only). ``max_bytes`` bounds the FFT work arrays (tiles are
    processed in chunks). Returns ``[K, Y, X]`` (or ``[Y, X]``) on the PSF model's device.
    """
    squeeze = obj.dim() == 2
    if squeeze:
        obj = obj[None]
    m, y, x = coefficients.shape
    if m != psf_model.n_modes:
        raise SvrtError(f"coefficients have {m} modes; the PSF model expects {psf_model.n_modes}.")
    if obj.shape[-2:] != (y, x):
        raise SvrtError(f"object is {tuple(obj.shape[-2:])} but coefficients are {y}x{x}.")
    if blend not in ("output", "object"):
        raise SvrtError(f"unknown blend '{blend}'; expected 'output' or 'object'.")
    if boundary not in ("zero", "reflect"):
        raise SvrtError(f"unknown boundary '{boundary}'; expected 'zero' or 'reflect'.")
    if blend == "object" and boundary != "zero":
        raise SvrtError("blend='object' supports only boundary='zero'.")
    overlap = patch / 2 if overlap is None else overlap
    device, dtype = psf_model.device, psf_model.dtype
    obj = obj.to(device=device, dtype=dtype)
    k = obj.shape[0]
    ay, ax = axis_tiling(y, patch, overlap, dtype), axis_tiling(x, patch, overlap, dtype)
    wy, wx = ay.weights.to(device), ax.weights.to(device)
    psfs = psf_model(tile_centre_coefficients(coefficients, ay, ax).to(device))   # [Ty, Tx, S, S]
    s = psf_model.psf_size
    c = s // 2
    ly, lx = ay.length, ax.length
    ry, rx = fast_length(ly + s - 1), fast_length(lx + s - 1)
    tiles = [(i, j) for i in range(ay.count) for j in range(ax.count)]
    per_tile = (k + 1) * ry * (rx // 2 + 1) * 8 * 3 + k * ry * rx * dtype.itemsize * 2
    chunk = max(1, int(max_bytes // max(per_tile, 1)))

    if blend == "output":
        before, after = s - 1 - c, c
        mode = "constant" if boundary == "zero" else "reflect"
        if mode == "reflect" and max(before, after) >= min(y, x):
            raise SvrtError(f"boundary='reflect' needs an image larger than the PSF's half size ({max(before, after)} "
                            "px).")
        padded = F.pad(obj[None], (before, after, before, after), mode=mode)[0]
        out = torch.zeros(k, y, x, dtype=dtype, device=device)
        for t0 in range(0, len(tiles), chunk):
            part = tiles[t0:t0 + chunk]
            region = torch.stack(
                [
                    padded[:, ay.starts[i] : ay.starts[i] + ly + s - 1, ax.starts[j] : ax.starts[j] + lx + s - 1]
                    for i, j in part
                ]
            )                                    # [T, K, ly+S-1, lx+S-1]
            kern = torch.stack([psfs[i, j] for i, j in part])[:, None]                  # [T, 1, S, S]
            spec = torch.fft.rfft2(region, s=(ry, rx)) * torch.fft.rfft2(kern, s=(ry, rx))
            conv = torch.fft.irfft2(spec, s=(ry, rx))[..., s - 1:s - 1 + ly, s - 1:s - 1 + lx]   # [T, K, ly, lx]
            for n, (i, j) in enumerate(part):
                w2 = wy[i][:, None] * wx[j][None, :]
                out[:, ay.starts[i]:ay.starts[i] + ly, ax.starts[j]:ax.starts[j] + lx] += w2 * conv[n]
    else:
        canvas = torch.zeros(
            k, y + s - 1 + (ry - ly - s + 1), x + s - 1 + (rx - lx - s + 1), dtype=dtype, device=device
        )
        for t0 in range(0, len(tiles), chunk):
            part = tiles[t0:t0 + chunk]
            pieces = torch.stack([obj[:, ay.starts[i]:ay.starts[i] + ly, ax.starts[j]:ax.starts[j] + lx]
                                  * (wy[i][:, None] * wx[j][None, :]) for i, j in part])          # [T, K, ly, lx]
            kern = torch.stack([psfs[i, j] for i, j in part])[:, None]
            full = torch.fft.irfft2(torch.fft.rfft2(pieces, s=(ry, rx)) * torch.fft.rfft2(kern, s=(ry, rx)), s=(ry, rx))
            for n, (i, j) in enumerate(part):
                canvas[:, ay.starts[i]:ay.starts[i] + ry, ax.starts[j]:ax.starts[j] + rx] += full[n]
        out = canvas[:, c:c + y, c:c + x].contiguous()
    return out[0] if squeeze else out


def overlap_add_flops(shape, k: int, psf_model, patch: int = 64, overlap: float | None = None) -> dict:
    """Analytic floating-point operation count of :func:`overlap_add_convolve` for one ``[K, Y, X]``
    call (FFTs at 5 N log2 N for complex and 2.5 N log2 N for real transforms, products and sums;
    transcendental functions not counted). Returns ``{"flops", "psfs", "tiles", "fft_side"}``."""
    overlap = patch / 2 if overlap is None else overlap
    ay, ax = axis_tiling(shape[0], patch, overlap), axis_tiling(shape[1], patch, overlap)
    s = psf_model.psf_size
    ry, rx = fast_length(ay.length + s - 1), fast_length(ax.length + s - 1)
    tiles = ay.count * ax.count
    npts = ry * rx
    fft = 2.5 * npts * math.log2(npts)
    per_tile = (2 * k + 1) * fft + 6 * k * ry * (rx // 2 + 1) + 3 * k * ay.length * ax.length
    return {"flops": tiles * (per_tile + psf_flops(psf_model)), "psfs": tiles, "tiles": tiles, "fft_side": [ry, rx]}


def psf_flops(psf_model) -> float:
    """Floating-point operations to compute one PSF with :class:`svrt.optics.psf.PSFModel`: the phase
    (M x nb^2 multiply-adds), the pruned 2-D FFT (nb rows then N columns of length N), |E|^2 and the
    normalisation. Transcendental functions (exp i phi) are not counted."""
    n, nb, m = psf_model.n_fft, psf_model.box, psf_model.n_modes
    fft1 = 5 * n * math.log2(n)
    return 2 * m * nb * nb + nb * fft1 + n * fft1 + 3 * n * n + 2 * psf_model.psf_size ** 2


def exact_flops_per_pixel(psf_model, k: int = 1) -> float:
    """Floating-point operations per output pixel of the exact per-pixel method (one PSF + the
    S^2 multiply-adds for each of the ``k`` objects)."""
    return psf_flops(psf_model) + 2 * k * psf_model.psf_size ** 2
