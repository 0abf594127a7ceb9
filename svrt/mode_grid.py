"""The coarse wavefront grid: where its nodes sit and how every pixel gets its modes.

One contract shared by the simulation, the emulator's training and export inputs, the solver, the
exact-optics forward model and the CUDA/Triton kernels:

* ``grid`` = P pixels per node: ``(Yg, Xg) = (ceil(Y / P), ceil(X / P))``; P = 0 is one node
  (one wavefront per frame, the spatially invariant MFBD) -- :func:`grid_shape`.
* Node ``i`` of ``ng`` along an axis of ``n`` pixels sits at pixel ``(i + 0.5) n / ng - 0.5``
  (the centre of its block of ``n / ng`` pixels) -- :func:`node_positions`.
* The per-pixel modes are the bilinear upsampling of the coarse grid,
  ``F.interpolate(coarse, size=(Y, X), mode="bilinear", align_corners=False)`` (edge values held
  beyond the outermost nodes) -- :func:`per_pixel_modes`; the same map as a matrix per axis is
  :func:`bilinear_weights`, and evaluated at fractional pixel positions it is :func:`sample_coarse`.

The fast implementations of the upsampling and its adjoint (Triton) are in :mod:`svrt.kernels` and
are tested against :func:`per_pixel_modes`. torch is imported inside the functions that need it, so
:func:`grid_shape` and :func:`node_positions` are cheap to import (the command line uses them).
"""

from __future__ import annotations

import math

import numpy as np

from svrt.errors import SvrtError

#: M, the number of KL wavefront modes (KL 1..M, Noll 2..M+1 rotated) of the paper and of every default: the
#: coarse grid holds [L, M, Yg, Xg]; an engine or a file that names its own M overrides it
N_MODES = 44

__all__ = ["N_MODES", "grid_shape", "node_positions", "per_pixel_modes", "bilinear_weights", "sample_coarse"]


def grid_shape(shape: tuple[int, int], grid: int) -> tuple[int, int]:
    """(Yg, Xg) = (ceil(Y / P), ceil(X / P)); P = 0 gives (1, 1). Raises for P larger than the image.

    >>> grid_shape((100, 64), 32)
    (4, 2)
    >>> grid_shape((100, 64), 0)
    (1, 1)
    """
    y, x = (int(v) for v in shape)
    if grid == 0:
        return 1, 1
    if grid > max(y, x):
        raise SvrtError(f"the grid factor P = {grid} is larger than the image ({y}x{x} pixels); "
                        f"use P <= {max(y, x)}, or grid 0 for one wavefront per frame.")
    return math.ceil(y / grid), math.ceil(x / grid)


def node_positions(n: int, n_grid: int) -> np.ndarray:
    """Pixel coordinates ``[n_grid]`` (float64) of the nodes along an axis of ``n`` pixels: node ``i`` at
    ``(i + 0.5) n / n_grid - 0.5``, the points where the bilinear upsampling reproduces the node's value.

    >>> node_positions(8, 2)
    array([1.5, 5.5])
    """
    return (np.arange(int(n_grid)) + 0.5) * int(n) / int(n_grid) - 0.5


def per_pixel_modes(coarse, shape):
    """Per-pixel modes ``[..., M, Y, X]`` of the coarse grid ``[..., M, Yg, Xg]`` (3-D or 4-D).

    Exactly ``F.interpolate(coarse, size=shape, mode="bilinear", align_corners=False)``. A tensor keeps
    its dtype, device and autograd graph; anything else (a numpy array) becomes a float32 tensor.

    >>> import torch
    >>> per_pixel_modes(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    tensor([[[0.0000, 0.2500, 0.7500, 1.0000]]])
    """
    import torch
    import torch.nn.functional as F

    c = coarse if isinstance(coarse, torch.Tensor) else torch.as_tensor(np.asarray(coarse, dtype=np.float32))
    squeeze = c.dim() == 3
    if squeeze:
        c = c[None]
    out = F.interpolate(c, size=tuple(int(v) for v in shape), mode="bilinear", align_corners=False)
    return out[0] if squeeze else out


def bilinear_weights(n: int, n_grid: int, dtype=None, device=None):
    """``[n, n_grid]``: the weights with which :func:`per_pixel_modes` maps ``n_grid`` nodes onto ``n``
    pixels along one axis (rows sum to 1); float32 unless ``dtype`` is given.

    >>> bilinear_weights(4, 2)
    tensor([[1.0000, 0.0000],
            [0.7500, 0.2500],
            [0.2500, 0.7500],
            [0.0000, 1.0000]])
    """
    import torch

    src = ((torch.arange(n, dtype=torch.float64) + 0.5) * n_grid / n - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_grid - 1)
    i1 = (i0 + 1).clamp(max=n_grid - 1)
    lam = src - i0
    w = torch.zeros(n, n_grid, dtype=torch.float64)
    w[torch.arange(n), i0] += 1 - lam
    w[torch.arange(n), i1] += lam
    return w.to(dtype=dtype or torch.float32, device=device)


def sample_coarse(coarse, ys, xs, shape: tuple[int, int]):
    """:func:`per_pixel_modes` of ``coarse [L, M, Yg, Xg]`` for an image of ``shape``, evaluated at the
    (fractional) pixel coordinates ``ys [n]`` x ``xs [m]`` (edges held): ``[L, M, n, m]``.

    >>> import torch
    >>> sample_coarse(torch.tensor([[[[0.0, 1.0]]]]), torch.zeros(1), torch.tensor([1.5]), (1, 4))
    tensor([[[[0.5000]]]])
    """
    import torch
    import torch.nn.functional as F

    y, x = shape
    gy = ((2.0 * ys.double() + 1.0) / y - 1.0).float()
    gx = ((2.0 * xs.double() + 1.0) / x - 1.0).float()
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)          # [n, m, 2] as (x, y)
    grid = grid.to(coarse.device, coarse.dtype)[None].expand(coarse.shape[0], -1, -1, -1)
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=False)
