"""Edge windows and tilings: every taper, apodisation and overlapping-tile layout in svrt.

All edges are the same raised-cosine ramp, ``sin^2(pi/2 * (k + 0.5) / r)`` for ``k = 0 .. r-1``
(:func:`edge_ramp`, rising from ~0 to ~1 over ``r`` pixels). Three kinds of window are built from it,
and they are genuinely different things:

* **flat-top windows** (:func:`flat_top`, :func:`flat_top_window`, :func:`modified_hann`): 1 inside,
  ramps of ``r`` pixels at the borders. Used to apodise an image before an FFT while keeping most
  pixels at full weight: the solver's object filter (``apodization="hann"``) and its noise estimate,
  the patches of the object-eliminated MOMFBD (MOMFBD's "modified Hann", ramps over 1/8 of the side),
  the emulator's training objects (``svrt train --boundary apodize``).
* **the Hann window** (:func:`hann`): ``0.5 - 0.5 cos(2 pi k / (n - 1))`` over the whole side, no flat
  part (``numpy.hanning``). Used where only the spectrum matters and leakage must be smallest:
  power spectra (:mod:`svrt.metrics`) and the cross-correlation of the registration.
* **tilings** of a field into overlapping tiles, two of them:

  - :func:`tiles` + :func:`blend_weights`: the solver's memory tiles. Each tile is solved on its own;
    the results are blended with flat-top weights that ramp only on the sides inside the field and
    then *divided by the summed weights* (the weights need not add up to 1).
  - :func:`axis_tiling` / :func:`tile_weights`: the overlap-add convolution's tiles
    (:mod:`svrt.optics.overlap_add`). A *partition of unity*: the weights add up to exactly 1 at
    every pixel, so blending convolutions with them is linear and needs no division.

Partition of unity. Along an axis of ``n`` pixels with ``T`` tiles, the boundaries between tiles sit at
``b_i = i n / T`` (i = 1 .. T-1). Across a boundary the weight of the tile after it rises as
``r_i(x) = sin^2(pi/2 * clip((x + 1/2 - b_i) / w + 1/2, 0, 1))`` over a transition of ``w`` pixels
(``w = min(overlap, n / T)``) and the weight of the tile before it falls as ``1 - r_i(x)``.
Tile i has the weight ``r_i (1 - r_{i+1})`` with ``r_0 = 1`` and ``r_T = 0``; since two transitions
never overlap, the weights of neighbouring tiles add up to ``cos^2 + sin^2 = 1``. The 2-D weight of
tile (i, j) is the product of its row and column weights, hence again a partition of unity. A tile
reaches ``n / T + w`` pixels, about ``patch`` with ``T = round(n / (patch - overlap))``. Edge tiles keep
weight 1 up to the image border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from svrt.errors import SvrtError

__all__ = ["edge_ramp", "flat_top", "flat_top_window", "modified_hann", "hann", "tiles", "blend_weights",
           "TileAxis", "n_tiles", "axis_tiling", "tile_weights"]


def edge_ramp(r: int) -> torch.Tensor:
    """``[r]`` float64: the raised-cosine ramp ``sin^2(pi/2 * (k + 0.5) / r)``, rising from ~0 to ~1.

    >>> edge_ramp(2)
    tensor([0.1464, 0.8536], dtype=torch.float64)
    """
    t = (torch.arange(int(r), dtype=torch.float64) + 0.5) / r
    return torch.sin(0.5 * math.pi * t) ** 2


def flat_top(n: int, ramp: int, rise: bool = True, fall: bool = True, dtype=torch.float64,
             device=None) -> torch.Tensor:
    """``[n]``: 1 inside, :func:`edge_ramp` of ``min(ramp, n // 2)`` pixels at the start (``rise``) and
    the end (``fall``).

    >>> flat_top(6, 2)
    tensor([0.1464, 0.8536, 1.0000, 1.0000, 0.8536, 0.1464], dtype=torch.float64)
    """
    w = torch.ones(int(n), dtype=torch.float64)
    r = min(int(ramp), int(n) // 2)
    if r > 0:
        edge = edge_ramp(r)
        if rise:
            w[:r] = edge
        if fall:
            w[n - r:] = edge.flip(0)
    return w.to(dtype=dtype, device=device)


def flat_top_window(shape: tuple[int, int], ramp: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[Y, X]``: the outer product of two :func:`flat_top` (ramps of ``ramp`` pixels at the four borders)."""
    wy = flat_top(shape[0], ramp, dtype=dtype, device=device)
    wx = flat_top(shape[1], ramp, dtype=dtype, device=device)
    return wy[:, None] * wx[None, :]


def shifted_flat_top_window(shape: tuple[int, int], ramp: int, shift: tuple[float, float] = (0.0, 0.0),
                            dtype=torch.float64) -> torch.Tensor:
    """``[Y, X]``: :func:`flat_top_window` moved by a sub-pixel ``shift = (dy, dx)`` (evaluated at ``y - dy``,
    ``x - dx``; zero where it leaves the frame). At ``shift = (0, 0)`` it is :func:`flat_top_window`.

    Why: a window fixed to the frame pulls a measured shift towards zero lag, because it weights the two
    images' content differently; a window that moves with the content does not
    (:func:`svrt.registration.estimate_shift_dft`).

    >>> bool(torch.allclose(shifted_flat_top_window((6, 5), 2), flat_top_window((6, 5), 2, dtype=torch.float64)))
    True
    """
    def axis(n: int, d: float) -> torch.Tensor:
        r = max(min(int(ramp), n // 2), 1)
        u = torch.arange(int(n), dtype=torch.float64) - float(d)
        rise = ((u + 0.5) / r).clamp(0, 1)
        fall = ((n - 0.5 - u) / r).clamp(0, 1)
        return torch.sin(0.5 * math.pi * rise) ** 2 * torch.sin(0.5 * math.pi * fall) ** 2

    return (axis(shape[0], shift[0])[:, None] * axis(shape[1], shift[1])[None, :]).to(dtype)


def modified_hann(n: int, ramp_fraction: float = 0.125, device=None) -> torch.Tensor:
    """``[n, n]`` float32: MOMFBD's modified Hann window, a :func:`flat_top_window` whose ramps cover
    ``ramp_fraction`` of the side (at least one pixel), so most of the patch keeps full weight."""
    return flat_top_window((n, n), max(1, int(round(ramp_fraction * n))), device=device)


def hann(shape: tuple[int, int], dtype=torch.float64) -> torch.Tensor:
    """``[Y, X]``: the 2-D Hann window over the whole image (``numpy.hanning`` per axis, no flat part).

    >>> hann((1, 3))
    tensor([[0., 1., 0.]], dtype=torch.float64)
    """
    wy = torch.hann_window(int(shape[0]), periodic=False, dtype=torch.float64)
    wx = torch.hann_window(int(shape[1]), periodic=False, dtype=torch.float64)
    return torch.outer(wy, wx).to(dtype)


# ----------------------------------------------------------------------------------------------
# the solver's memory tiles: blended, then divided by the summed weights
# ----------------------------------------------------------------------------------------------

def tiles(shape: tuple[int, int], tile: int, overlap: int) -> list:
    """Overlapping tiles ``[(y0, x0, ty, tx)]`` of side ``min(tile, Y or X)`` covering the field, evenly spaced.

    >>> tiles((100, 40), 64, 16)
    [(0, 0, 64, 40), (36, 0, 64, 40)]
    """
    def starts(length: int) -> tuple[list, int]:
        size = min(tile, length)
        if size >= length:
            return [0], length
        n = math.ceil((length - overlap) / (size - overlap))
        n = max(n, 2)
        return [int(round(i * (length - size) / (n - 1))) for i in range(n)], size

    (ys, ty), (xs, tx) = starts(shape[0]), starts(shape[1])
    return [(a, b, ty, tx) for a in ys for b in xs]


def blend_weights(length: int, start: int, size: int, ramp: int, dtype=np.float64) -> np.ndarray:
    """1-D blend weights ``[size]`` of a tile [start, start + size) along an axis of ``length``: a
    :func:`flat_top` with ramps of ``ramp`` pixels on the sides that are inside the field, flat at the
    field's borders (the blend divides by the summed weights)."""
    return flat_top(size, ramp, rise=start > 0, fall=start + size < length).numpy().astype(dtype)


# ----------------------------------------------------------------------------------------------
# the overlap-add convolution's tiles: a partition of unity
# ----------------------------------------------------------------------------------------------

@dataclass
class TileAxis:
    """The tiling of one axis: ``weights [T, L]`` of each tile over its ``L`` pixels from ``starts[t]``,
    the tile centres (pixel coordinates, pixel x covers [x, x+1)) and the transition width used."""

    n: int
    starts: list
    length: int
    weights: torch.Tensor
    centres: list
    transition: float

    @property
    def count(self) -> int:
        return len(self.starts)

    def full_weights(self) -> torch.Tensor:
        """``[T, n]``: each tile's weight over the whole axis (zero outside its extent)."""
        out = torch.zeros(self.count, self.n, dtype=self.weights.dtype)
        for t, s in enumerate(self.starts):
            out[t, s:s + self.length] = self.weights[t]
        return out


def n_tiles(n: int, patch: int, overlap: float) -> int:
    """Number of tiles along an axis of ``n`` pixels for tiles of about ``patch`` pixels.

    >>> n_tiles(256, 64, 8)
    5
    """
    return max(1, int(round(n / max(patch - overlap, 1e-9))))


def axis_tiling(n: int, patch: int, overlap: float, dtype=torch.float64) -> TileAxis:
    """Raised-cosine partition of unity of an axis of ``n`` pixels (see the module docstring)."""
    if patch < 1 or n < 1:
        raise SvrtError(f"overlap-add needs a patch of at least 1 pixel and a non-empty image; got patch {patch}, size "
                        f"{n}.")
    if overlap < 0 or overlap > patch / 2:
        raise SvrtError(f"overlap must lie between 0 and half the patch ({patch / 2:g} px); got {overlap}.")
    count = n_tiles(n, patch, overlap)
    spacing = n / count
    w = min(float(overlap), spacing)
    x = torch.arange(n, dtype=torch.float64) + 0.5
    rises = [torch.ones(n, dtype=torch.float64)]
    for i in range(1, count):
        b = i * spacing
        if w > 0:
            t = ((x - b) / w + 0.5).clamp(0.0, 1.0)
            rises.append(torch.sin(0.5 * math.pi * t) ** 2)
        else:
            rises.append((x >= b).to(torch.float64))
    rises.append(torch.zeros(n, dtype=torch.float64))
    full = torch.stack([rises[i] * (1.0 - rises[i + 1]) for i in range(count)])   # [T, n]
    nz = [torch.nonzero(row > 0).flatten() for row in full]
    lo = [int(z[0]) for z in nz]
    hi = [int(z[-1]) + 1 for z in nz]
    length = max(h - lo_t for lo_t, h in zip(lo, hi))
    starts = [min(lo_t, n - length) for lo_t in lo]
    weights = torch.stack([full[t, s:s + length] for t, s in enumerate(starts)]).to(dtype)
    centres = [(i + 0.5) * spacing for i in range(count)]
    return TileAxis(n=n, starts=starts, length=length, weights=weights, centres=centres, transition=w)


def tile_weights(shape, patch: int, overlap: float) -> torch.Tensor:
    """``[Ty, Tx, Y, X]``: the 2-D weight of every tile over the whole image (a partition of unity)."""
    ay, ax = axis_tiling(shape[0], patch, overlap), axis_tiling(shape[1], patch, overlap)
    return ay.full_weights()[:, None, :, None] * ax.full_weights()[None, :, None, :]
