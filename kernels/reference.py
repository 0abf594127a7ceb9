"""Pure-PyTorch references for the custom kernels; the CPU path and the tests use them.

Two operators of the SV-MOMFBD solver:

* :func:`upsample_modes` -- the per-pixel wavefront modes as the bilinear upsampling of the coarse
  grid, ``modes [B, M, Yg, Xg] -> [B, M, Y, X]``. The contract (``docs/ARCHITECTURE.md``) is
  ``F.interpolate(coarse, size=(Y, X), mode="bilinear", align_corners=False)``; its adjoint
  :func:`upsample_modes_adjoint` is what autograd gives for it.
* :func:`fourier_filter` -- ``irfft2(H * rfft2(w * obj))`` with the erf filter H of Eq. 16 taken
  from :func:`svrt.optics.filters.erf_filter` (the canonical definition) and an optional
  apodisation window ``w``.

Both are linear; autograd differentiates them exactly (the filter's vector-Jacobian product is
``w * irfft2(H * rfft2(g))`` because H is real and even in frequency).
"""

from __future__ import annotations

import torch

from svrt.errors import SvrtError, require
from svrt.mode_grid import per_pixel_modes
from svrt.optics.filters import erf_filter

__all__ = ["upsample_modes", "upsample_modes_adjoint", "fourier_filter", "compute_dtype"]


def _check_size(size, name: str = "size") -> tuple[int, int]:
    try:
        y, x = (int(s) for s in size)
    except (TypeError, ValueError):
        raise SvrtError(f"{name} must be a pair of positive integers (Y, X), got {size!r}.") from None
    require(y > 0 and x > 0, f"{name} must be a pair of positive integers (Y, X), got {size!r}.")
    return y, x


def _check_modes(t: torch.Tensor, what: str) -> None:
    require(isinstance(t, torch.Tensor) and t.dim() == 4,
            f"{what} must be a 4-D tensor [B, M, Y, X], got shape {tuple(getattr(t, 'shape', ()))}.")
    require(t.is_floating_point(), f"{what} must be a real floating-point tensor, got {t.dtype}.")


def upsample_modes(coarse: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of the coarse mode grid: ``[B, M, Yg, Xg] -> [B, M, Y, X]``.

    Exactly ``F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)``: the fine
    pixel ``y`` samples the coarse grid at ``max((y + 0.5) * Yg / Y - 0.5, 0)``, neighbours clamped
    at the edge.
    """
    _check_modes(coarse, "coarse modes")
    size = _check_size(size)
    return per_pixel_modes(coarse, size)


def upsample_modes_adjoint(grad_fine: torch.Tensor, coarse_size) -> torch.Tensor:
    """Adjoint of :func:`upsample_modes`: ``[B, M, Y, X] -> [B, M, Yg, Xg]``.

    The vector-Jacobian product autograd computes for ``F.interpolate(..., align_corners=False)``
    (each coarse node sums its bilinear weights times the fine values it touches). Differentiable
    itself (its derivative is the upsampling).
    """
    _check_modes(grad_fine, "fine gradient")
    yg, xg = _check_size(coarse_size, "coarse_size")
    b, m, y, x = grad_fine.shape
    return torch.ops.aten.upsample_bilinear2d_backward(
        grad_fine, [y, x], [b, m, yg, xg], False, None, None)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Real dtype the Fourier filter computes in: float64 stays, everything else goes to float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_filter_args(obj, cutoff, apodization) -> tuple[int, int]:
    require(isinstance(obj, torch.Tensor) and obj.dim() >= 2,
            f"the object must be a tensor [..., Y, X], got shape {tuple(getattr(obj, 'shape', ()))}.")
    require(obj.is_floating_point(), f"the object must be a real floating-point tensor, got {obj.dtype}.")
    require(float(cutoff) > 0, f"the cutoff must be a positive number of cycles per pixel, got {cutoff!r}.")
    y, x = obj.shape[-2:]
    if apodization is not None:
        require(isinstance(apodization, torch.Tensor) and tuple(apodization.shape) == (y, x),
                f"the apodisation window must have the object's image shape {(y, x)}, "
                f"got {tuple(getattr(apodization, 'shape', ()))}.")
    return y, x


def fourier_filter(obj: torch.Tensor, cutoff_cycles_per_pixel: float, width: float = 1.8,
                   sharpness: float = 20.0, apodization: torch.Tensor | None = None) -> torch.Tensor:
    """``irfft2(H * rfft2(w * obj), s=(Y, X))`` with H the erf filter of Eq. 16.

    ``obj`` is ``[..., Y, X]`` real; ``apodization`` (optional) is a ``[Y, X]`` window multiplied
    first; ``cutoff_cycles_per_pixel`` is D/lambda in cycles per pixel. H comes from
    :func:`svrt.optics.filters.erf_filter` (``real=True``). Float16/bfloat16 inputs are computed in
    float32 and returned in their own dtype; float64 stays float64.
    """
    y, x = _check_filter_args(obj, cutoff_cycles_per_pixel, apodization)
    cdt = compute_dtype(obj.dtype)
    xf = obj.to(cdt)
    if apodization is not None:
        xf = xf * apodization.to(device=obj.device, dtype=cdt)
    h = erf_filter((y, x), float(cutoff_cycles_per_pixel), float(width), float(sharpness),
                   real=True, dtype=cdt, device=obj.device)
    out = torch.fft.irfft2(h * torch.fft.rfft2(xf), s=(y, x))
    return out.to(obj.dtype)
