"""The pieces of the SV-MOMFBD loss (paper Eqs. 16-17) that both methods share.

* :func:`filtered`: the object through the erf filter of Eq. 16, ``o* = F^-1(H F(o))`` per object, with the
  configured boundary treatment (``apodization``): the restoration written to files is ``o*``.
* :func:`centred`: the modes with the mean tip-tilt over the frames removed. Shifting the object and
  every frame's tip-tilt by the same amount leaves the data unchanged; removing the mean fixes the
  object at the mean position of the frames (like the frame average).
* :func:`grad_sq_mean`: ``<|grad x|^2>`` with forward differences (no wrap-around), the Tikhonov terms
  ``lambda_o <|grad o*|^2>`` and ``lambda_alpha <|grad alpha|^2>``; means over pixels (or grid nodes), so
  the lambdas do not depend on the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from svrt.runtime.solver_config import TIPTILT_MODES, SolverConfig
from svrt.windows import flat_top_window

__all__ = ["filtered", "centred", "grad_sq_mean"]


def fourier_filter(x: torch.Tensor, cutoff: float, width: float, sharpness: float, impl: str,
                   apodization: torch.Tensor | None = None) -> torch.Tensor:
    from svrt.kernels import fourier_filter as _kernel

    return _kernel(x, cutoff, width, sharpness, apodization=apodization, impl=impl)


def grad_sq_mean(x: torch.Tensor) -> torch.Tensor:
    """Per leading item: <(dy x)^2> + <(dx x)^2> over the last two axes (forward differences)."""
    total = x.new_zeros(x.shape[:-2])
    if x.shape[-2] > 1:
        total = total + (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(-2, -1))
    if x.shape[-1] > 1:
        total = total + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(-2, -1))
    return total


def filtered(o: torch.Tensor, insts, cfg: SolverConfig, cache: dict) -> torch.Tensor:
    """o* = F^-1(H F(o)) per object ``o [K, Y, X]`` -> ``[K, Y, X]``, H the erf filter of Eq. 16 at each
    object's diffraction cutoff, with the configured boundary treatment: ``mirror`` reflect-pads by
    ``apodization_pixels`` (the filter then sees no jump at the borders), ``hann`` windows the mean-free
    object (``cache`` keeps the window between calls), ``none`` is periodic."""
    outs = []
    y, x = o.shape[-2:]
    for i in range(o.shape[0]):
        cutoff = insts[i].cutoff_cycles_per_pixel
        oi = o[i]
        if cfg.apodization == "mirror" and cfg.apodization_pixels > 0:
            p = min(cfg.apodization_pixels, y - 1, x - 1)
            padded = F.pad(oi[None, None], (p, p, p, p), mode="reflect")[0, 0]
            out = fourier_filter(padded, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels)[p:p + y, p:p + x]
        elif cfg.apodization == "hann" and cfg.apodization_pixels > 0:
            key = ("hann", y, x, cfg.apodization_pixels, str(o.device))
            if key not in cache:
                cache[key] = flat_top_window((y, x), cfg.apodization_pixels, o.device)
            win = cache[key]
            mean = oi.mean()
            out = mean + fourier_filter(oi - mean, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels,
                                        apodization=win)
        else:
            out = fourier_filter(oi, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels)
        outs.append(out)
    return torch.stack(outs)


def centred(a: torch.Tensor, tiptilt: bool) -> torch.Tensor:
    """Modes ``a [L, M, Yg, Xg]`` with the mean tip-tilt over the frames removed (differentiable; the
    gradient is projected the same way). ``tiptilt=False`` returns ``a``."""
    if not tiptilt:
        return a
    tt = [i for i in TIPTILT_MODES if i < a.shape[1]]
    if not tt:
        return a
    sel = torch.zeros(a.shape[1], dtype=a.dtype, device=a.device)
    sel[tt] = 1.0
    return a - a.mean(dim=0, keepdim=True) * sel[None, :, None, None]
