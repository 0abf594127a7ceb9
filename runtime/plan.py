"""How a burst is processed under the memory bound: frames per engine call (:class:`Plan`), the
memory estimate, the (object, frames) batches and, when even one frame of the field does not fit,
overlapping tiles blended with raised-cosine weights (both from :mod:`svrt.windows`).

The K x L engine calls are batched (``max_batch`` frames per call, or as many as the memory bound
``memory_mb`` allows) and gradients accumulated batch by batch, so the memory does not grow with L.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from svrt.errors import SvrtError
from svrt.runtime.forward_model import bytes_per_pixel_sample
from svrt.runtime.solver_config import CPU_MAX_BATCH, MIN_SIZE, RUNTIME_OVERHEAD_MB, SolverConfig, grid_shape
from svrt.windows import tiles

__all__ = ["Plan", "make_plan", "batches", "default_batch_cap"]


@dataclass
class Plan:
    """How a burst is processed: frames per emulator call, tiles, and the memory estimate."""

    batch: int
    tiles: list = field(default_factory=list)    # [(y0, x0, ty, tx)], empty: whole field
    bytes_per_sample: float = 0.0                 # estimated peak bytes of one (object, frame) of the field
    bound_bytes: float = 0.0
    checkpointing: bool = False
    overlap: int = 0                              # [pixel] tile overlap actually used

    @property
    def tiled(self) -> bool:
        return bool(self.tiles)


def available_bytes(device: torch.device) -> float:
    """The default memory bound: 80 % of the free CUDA memory, or 50 % of the RAM on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.8 * free
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30


def default_batch_cap(device: torch.device) -> int:
    """Frames per emulator call when ``max_batch`` is None: as many as fit on CUDA, CPU_MAX_BATCH on CPU
    (bigger batches only thrash the caches there)."""
    return 10 ** 9 if device.type == "cuda" else CPU_MAX_BATCH


def make_plan(cfg: SolverConfig, engines: list, n_modes: int, device: torch.device,
              n_objects: int, n_frames: int, shape: tuple[int, int]) -> Plan:
    """Frames per emulator call and tiles for a burst of this size under the memory bound."""
    from svrt.emulator import padding_for

    y, x = shape
    ckpt = cfg.checkpointing == "on" or (cfg.checkpointing == "auto" and device.type == "cuda")
    bound = cfg.memory_mb * 2 ** 20 if cfg.memory_mb is not None else available_bytes(device)
    m2 = 2 * cfg.margin
    pad = padding_for(y + m2, x + m2)
    bpp = max(bytes_per_pixel_sample(e, n_modes, ckpt) for e in engines)
    per_sample = bpp * (y + m2 + pad[2] + pad[3]) * (x + m2 + pad[0] + pad[1])
    yg, xg = grid_shape(shape, cfg.grid)
    # frames, weights, model; objects with their Adam states and filter buffers; modes with Adam states
    fixed = 4.0 * (n_objects * n_frames * y * x * 3 + n_objects * y * x * 8 + n_frames * n_modes * yg * xg * 4)
    work = bound - RUNTIME_OVERHEAD_MB * 2 ** 20 - fixed
    total = n_objects * n_frames
    cap = cfg.max_batch if cfg.max_batch is not None else default_batch_cap(device)
    if cfg.tile_size is not None and (cfg.tile_size < y or cfg.tile_size < x):
        tile = cfg.tile_size
    elif per_sample <= work:
        batch = int(max(1, min(total, work // per_sample)))
        return Plan(batch=min(batch, cap), bytes_per_sample=per_sample, bound_bytes=bound, checkpointing=ckpt)
    else:
        # the largest tile (a multiple of 16) of which one frame fits, leaving 20 % for the tile's own buffers
        room = bound - RUNTIME_OVERHEAD_MB * 2 ** 20
        side = math.sqrt(max(0.8 * room, 0.0) / bpp) - m2
        tile = int(max(side, 0) // 16) * 16
        if tile < 2 * MIN_SIZE:
            raise SvrtError(f"the memory bound of {bound / 2 ** 20:.0f} MiB cannot hold one "
                            f"{2 * MIN_SIZE}x{2 * MIN_SIZE} tile of one frame besides {RUNTIME_OVERHEAD_MB:.0f} MiB of "
                            "runtime overhead; raise memory_mb (--memory-mb).")
    overlap = min(cfg.tile_overlap, tile // 4)
    field_tiles = tiles(shape, tile, overlap)
    ty, tx = field_tiles[0][2], field_tiles[0][3]
    tpad = padding_for(ty + m2, tx + m2)
    per_tile = bpp * (ty + m2 + tpad[2] + tpad[3]) * (tx + m2 + tpad[0] + tpad[1])
    room = bound - RUNTIME_OVERHEAD_MB * 2 ** 20 - fixed
    batch = int(max(1, min(total, (0.8 * room) // per_tile)))
    return Plan(batch=min(batch, cap), tiles=field_tiles, bytes_per_sample=per_tile, bound_bytes=bound,
                checkpointing=ckpt, overlap=overlap)


def batches(n_objects: int, n_frames: int, batch: int) -> list:
    """The engine calls of one pass over the burst: [(k, [frame indices])], at most ``batch`` frames each,
    object by object (each call uses one object's engine and instrument)."""
    out = []
    for kk in range(n_objects):
        for s in range(0, n_frames, batch):
            out.append((kk, list(range(s, min(n_frames, s + batch)))))
    return out
