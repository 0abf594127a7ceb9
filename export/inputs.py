"""Inputs used to compare exported graphs and back ends with PyTorch: random, and solar-like
(a granulation scene with Kolmogorov KL coefficients that vary smoothly across the field)."""

from __future__ import annotations

import numpy as np
import torch

from svrt.mode_grid import per_pixel_modes


def random_inputs(batch: int, n_modes: int, size, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``obj [B,1,Y,X]`` uniform in [0.5, 1.5) and ``modes [B,M,Y,X]`` standard normal (radians)."""
    y, x = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    obj = torch.rand(batch, 1, y, x, generator=g) + 0.5
    modes = torch.randn(batch, n_modes, y, x, generator=g)
    return obj, modes


def solar_inputs(instrument: str, batch: int, n_modes: int, size, seed: int = 0, r0_cm: float = 10.0,
                 grid: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A granulation scene at the instrument's pixel scale (``svrt.scenes.make_scene``) and KL
    coefficients of Kolmogorov statistics for ``r0_cm`` (at 5000 A) on a coarse ``grid x grid`` mesh,
    upsampled bilinearly to every pixel (the convention of ``docs/ARCHITECTURE.md``)."""
    from svrt.atmosphere import kl_standard_deviations
    from svrt.instruments import get_instrument
    from svrt.scenes import make_scene

    y, x = (size, size) if isinstance(size, int) else size
    inst = get_instrument(instrument)
    objs = [make_scene("granulation", (y, x), inst.pixel_arcsec, seed + b) for b in range(batch)]
    obj = torch.from_numpy(np.stack(objs)[:, None].astype(np.float32))
    sd = torch.from_numpy(kl_standard_deviations(inst, r0_cm, n_modes).astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, n_modes, grid, grid, generator=g) * sd.view(1, -1, 1, 1)
    modes = per_pixel_modes(coarse, (y, x))
    return obj.contiguous(), modes.contiguous()
