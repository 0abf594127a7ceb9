"""How a burst is processed under the memory bound: frames per engine call (:class:`Plan`), the
memory estimate, the (object, frames) batches and, when even one frame of the field does not fit,
overlapping tiles blended with raised-cosine weights (both from :mod:`svrt.windows`); and the plan line
``svrt deconvolve`` prints before the work (:func:`estimate`, :func:`describe`, :func:`check_fits`).

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
from svrt.runtime.solver_config import (
    CPU_MAX_BATCH,
    MIN_SIZE,
    RUNTIME_OVERHEAD_MB,
    SolverConfig,
    check_field_size,
    grid_shape,
)
from svrt.windows import tiles

__all__ = ["Plan", "make_plan", "batches", "default_batch_cap", "Estimate", "estimate", "describe",
           "check_fits", "plan_summary", "PROCESS_BASE_MB", "PATCH_BYTES_PER_SAMPLE", "SECONDS_PER_SAMPLE",
           "SECONDS_FIXED"]


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
    fixed = _fixed_bytes(n_objects, n_frames, shape, n_modes, grid_shape(shape, cfg.grid))
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


def _fixed_bytes(n_objects: int, n_frames: int, shape: tuple[int, int], n_modes: int, grid) -> float:
    """Bytes of the arrays of the whole burst: frames, weights, model; objects with their optimiser states and
    filter buffers; modes with their optimiser states."""
    (y, x), (yg, xg) = shape, grid
    return 4.0 * (n_objects * n_frames * y * x * 3 + n_objects * y * x * 8 + n_frames * n_modes * yg * xg * 4)


def batches(n_objects: int, n_frames: int, batch: int) -> list:
    """The engine calls of one pass over the burst: [(k, [frame indices])], at most ``batch`` frames each,
    object by object (each call uses one object's engine and instrument)."""
    out = []
    for kk in range(n_objects):
        for s in range(0, n_frames, batch):
            out.append((kk, list(range(s, min(n_frames, s + batch)))))
    return out


# The whole-restoration model of :func:`estimate`, from ru_maxrss and the wall time of default momfbd
# restorations with exact optics on the 2-core reference CPU (docs/COST.md): 256^2, 512^2 and 1024^2 x 12
# frames. Peak = PROCESS_BASE_MB + the fixed arrays of make_plan + one engine batch + PATCH_BYTES_PER_SAMPLE
# per pixel and (object, frame) for the patch stage's spectra and OTFs of the whole field.
PROCESS_BASE_MB = 700.0         # [MiB] torch, svrt, astropy and the PSF models before the solve's arrays (CPU)
PATCH_BYTES_PER_SAMPLE = 34.0   # [byte] per pixel and (object, frame): 1024^2 x 12 x 1 peaked at 3.1 GB
SECONDS_PER_SAMPLE = 38e-6      # [s] per pixel and (object, frame) on the reference CPU: 256^2 and 512^2 x 12
SECONDS_FIXED = 10.0            # [s] start-up, reading and writing: 128^2 x 3 frames took 18 s, 12 s of it solving


@dataclass
class Estimate:
    """The cost of one restoration: ``peak_bytes`` the process's peak (resident memory on CPU, device memory on
    CUDA), ``solver_bytes`` the part the memory bound governs, ``seconds`` the wall time (None off the CPU)."""

    peak_bytes: float
    solver_bytes: float
    seconds: float | None


def estimate(plan: Plan, n_objects: int, n_frames: int, shape: tuple[int, int], n_modes: int, grid,
             device: torch.device) -> Estimate:
    """Peak memory and time of restoring a ``[K, L, Y, X]`` burst (``n_objects``, ``n_frames``, ``shape``) with
    ``plan`` and ``grid`` = (Yg, Xg) nodes. A tiled plan counts one tile's batch on top of the whole burst's
    arrays. The time is the reference CPU's per-sample cost and ignores the thread count."""
    y, x = shape
    samples = n_objects * n_frames * y * x
    solver = (_fixed_bytes(n_objects, n_frames, shape, n_modes, grid) + plan.batch * plan.bytes_per_sample
              + PATCH_BYTES_PER_SAMPLE * samples)
    base = PROCESS_BASE_MB if device.type == "cpu" else RUNTIME_OVERHEAD_MB
    seconds = SECONDS_FIXED + SECONDS_PER_SAMPLE * samples if device.type == "cpu" else None
    return Estimate(peak_bytes=solver + base * 2 ** 20, solver_bytes=solver, seconds=seconds)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else (f"{seconds / 60:.0f} min" if seconds < 7200
                                                   else f"{seconds / 3600:.1f} h")


def describe(plan: Plan, est: Estimate, n_objects: int, n_frames: int, shape: tuple[int, int]) -> str:
    """The plan line ``svrt deconvolve`` prints before the solve: the burst, how it is cut, the estimated peak
    memory against the bound and the estimated time."""
    y, x = shape
    how = (f"{len(plan.tiles)} tiles of {plan.tiles[0][2]}x{plan.tiles[0][3]}" if plan.tiled else "whole field")
    when = ("time not modelled off the CPU" if est.seconds is None else
            f"about {_duration(est.seconds)} on a 2-core CPU ({SECONDS_PER_SAMPLE * 1e6:.0f} us per pixel and frame)")
    return (f"plan: {n_objects} object(s) x {n_frames} frames of {y}x{x}, {how}, {plan.batch} frame(s) per engine "
            f"call; estimated peak memory {est.peak_bytes / 2 ** 30:.2f} GiB (bound {plan.bound_bytes / 2 ** 30:.1f} "
            f"GiB), {when}")


def check_fits(plan: Plan, est: Estimate, shape: tuple[int, int], source: str) -> None:
    """Refuse, in one sentence, a burst whose estimated memory exceeds the bound even after tiling: the whole
    burst's arrays and the patch stage do not shrink with tiles."""
    if est.solver_bytes > plan.bound_bytes:
        y, x = shape
        raise SvrtError(f"{source}: restoring the {y}x{x} burst needs an estimated "
                        f"{est.solver_bytes / 2 ** 30:.2f} GiB, above the memory bound of "
                        f"{plan.bound_bytes / 2 ** 30:.2f} GiB; raise memory_mb (--memory-mb) or restore fewer "
                        "frames or a smaller field.")


def plan_summary(solver, frames_shape: tuple, source: str) -> str:
    """The plan line of restoring frames ``[K, L, Y, X]`` with ``solver`` (an
    :class:`~svrt.runtime.solver.SVMOMFBD`); SvrtError (naming ``source``) when it does not fit the bound."""
    k, n_frames, y, x = frames_shape
    check_field_size(y, x)      # the solver's own refusal first: a plan of a field it refuses would mislead
    plan = solver.plan(k, n_frames, (y, x))
    est = estimate(plan, k, n_frames, (y, x), solver.n_modes, grid_shape((y, x), solver.config.grid), solver.device)
    check_fits(plan, est, (y, x), source)
    return describe(plan, est, k, n_frames, (y, x))
