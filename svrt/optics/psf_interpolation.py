"""Spatially variant convolution by interpolating PSFs between grid nodes (Nagy & O'Leary 1998).

``I(r) = sum_j w_j(r) (O * S_j)(r)``: S_j is the exact PSF (Eqs. 3-5) of the wavefront at coarse-grid
node j and w_j(r) are the bilinear weights with which the per-pixel modes are interpolated from the
grid (``F.interpolate(..., mode="bilinear", align_corners=False)``, so sum_j w_j = 1). Where the
modes vary linearly between nodes this differs from the exact per-pixel convolution of Eq. 1 only by
the curvature of the PSF as a function of the modes, which is small for smooth fields.

Why it is here: it needs no training, it is differentiable (the PSF model is written in torch), and
each node only convolves the patch of the image its weights cover, so it costs about four FFT
convolutions of a (2P + S)^2 patch per node. It is the physics-exact reference forward model of the
solver (``--backend psf-interpolation``) and the classical baseline of the benchmarks.
"""

from __future__ import annotations

import torch

from svrt.errors import SvrtError
from svrt.mode_grid import bilinear_weights
from svrt.optics.overlap_add import fast_length


def _supports(w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """First pixel of each node's support and the longest support."""
    nz = w.t() > 0
    first = nz.float().argmax(dim=1)
    last = w.shape[0] - 1 - nz.flip(1).float().argmax(dim=1)
    return first, int((last - first + 1).max())


def interpolated_psf_convolve(obj: torch.Tensor, coarse_modes: torch.Tensor, psf_model,
                              margin: int = 0) -> torch.Tensor:
    """Spatially variant convolution with PSFs interpolated between grid nodes.

    obj ``[N, Y, X]``; coarse_modes ``[N, M, Yg, Xg]`` (radians; the wavefront of each object's frame);
    psf_model a :class:`svrt.optics.psf.PSFModel` (PSF side S). Returns ``[N, Y, X]``; the object is
    extended with zeros beyond its borders (as ``fft_convolve(boundary="zero")``). Differentiable in
    both arguments. With ``margin`` m > 0 the grid covers only the inner ``[Y - 2m, X - 2m]`` of the
    object and the margin pixels take the weights of the nearest inner pixel (clamped edges).
    """
    n, y, x = obj.shape
    _, m, yg, xg = coarse_modes.shape
    if m != psf_model.n_modes:
        raise SvrtError(f"modes have {m} coefficients; the PSF model expects {psf_model.n_modes}.")
    if yg > y - 2 * margin or xg > x - 2 * margin:
        raise SvrtError(f"a {yg}x{xg} mode grid is finer than the {y - 2 * margin}x{x - 2 * margin} image.")
    s = psf_model.psf_size
    c = s // 2
    before = s - 1 - c
    dtype, dev = obj.dtype, obj.device
    wy, wx = bilinear_weights(y - 2 * margin, yg, dtype, dev), bilinear_weights(x - 2 * margin, xg, dtype, dev)
    if margin:
        wy = torch.cat([wy[:1].expand(margin, -1), wy, wy[-1:].expand(margin, -1)])
        wx = torch.cat([wx[:1].expand(margin, -1), wx, wx[-1:].expand(margin, -1)])
    fy, ly = _supports(wy)
    fx, lx = _supports(wx)
    # patch of the zero-extended object that each node needs: support + PSF margins
    py, px = ly + s - 1, lx + s - 1
    # the FFTs run at a 5-smooth size >= the linear-convolution size: 111 = 3 * 37 costs 4x 112
    fy_n, fx_n = fast_length(py), fast_length(px)
    padded = torch.nn.functional.pad(obj, (before, c + lx, before, c + ly))       # room for the longest support
    rows = fy[:, None] + torch.arange(py, device=dev)[None]                       # [Yg, py] in padded coords
    cols = fx[:, None] + torch.arange(px, device=dev)[None]                       # [Xg, px]
    patches = padded[:, rows][:, :, :, cols]                                      # [N, Yg, py, Xg, px]
    patches = patches.permute(0, 1, 3, 2, 4)                                      # [N, Yg, Xg, py, px]
    psf = psf_model(coarse_modes.permute(0, 2, 3, 1)).to(dtype)                  # [N, Yg, Xg, S, S]
    spec = torch.fft.rfft2(patches, s=(fy_n, fx_n)) * torch.fft.rfft2(psf, s=(fy_n, fx_n))
    conv = torch.fft.irfft2(spec, s=(fy_n, fx_n))[..., s - 1:s - 1 + ly, s - 1:s - 1 + lx]  # [N, Yg, Xg, ly, lx]
    # weights of each node over its support (zero past the end of the support / the image)
    oy = fy[:, None] + torch.arange(ly, device=dev)[None]                         # [Yg, ly] output rows
    ox = fx[:, None] + torch.arange(lx, device=dev)[None]
    wy_s = torch.where(oy < y, wy[oy.clamp(max=y - 1), torch.arange(yg, device=dev)[:, None]], 0)
    wx_s = torch.where(ox < x, wx[ox.clamp(max=x - 1), torch.arange(xg, device=dev)[:, None]], 0)
    weighted = conv * wy_s[None, :, None, :, None] * wx_s[None, None, :, None, :]
    # scatter-add the patches into the image (an extended canvas absorbs rows/cols past the border)
    canvas = torch.zeros(n, y + ly, x + lx, dtype=dtype, device=dev)
    flat_idx = (oy[:, None, :, None] * (x + lx) + ox[None, :, None, :]).reshape(-1)  # [Yg*Xg*ly*lx]
    canvas = canvas.reshape(n, -1).index_add(1, flat_idx, weighted.reshape(n, -1))
    return canvas.reshape(n, y + ly, x + lx)[:, :y, :x]
