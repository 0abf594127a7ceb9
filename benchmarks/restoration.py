"""Restoration benchmark: time per SV-MOMFBD iteration and peak memory, per back end.

Each case runs :class:`svrt.runtime.solver.SVMOMFBD` for a few iterations on a synthetic burst (the
cost of an iteration does not depend on the data: K x L emulator calls forward and backward, the
erf filter, the regularisation and one AdamW step). The time per iteration is the median of the
intervals between consecutive iteration callbacks (the device is synchronised in the callback),
so the first iteration, which includes the setup and the first-call costs, is left out. Its work
is put next to the machine's peak through ``emulator_flops_per_iteration`` = 2 x K x L x the FLOPs
of one emulator forward pass (one forward and one input-gradient pass per object and frame; the
weights are frozen, so the backward pass of each convolution costs about one forward): a lower
bound on the work, since the filter, the regularisation and the optimiser are left out and a back
end whose gradient graph recomputes the forward (ONNX Runtime, TensorRT) does a third pass.

Peak memory, honestly labelled in every record (``memory_kind``):

* CUDA: ``torch.cuda.max_memory_allocated`` over the solve (statistics reset before it): tensors
  allocated by torch only. Memory of ONNX Runtime's or TensorRT's own allocators is not in it;
  ``cuda_used_delta_mb`` adds the change of the device's used memory (``cudaMemGetInfo``) across the
  solve for those back ends, which misses what was freed before the end.
* CPU: the resident set of the whole process (``VmHWM`` in /proc/self/status, the peak resident set,
  reset through ``/proc/self/clear_refs`` just before the solve). ``peak_mb`` is that peak; ``growth_mb``
  is the peak minus the resident set just before the solve, i.e. what the solve added (torch tensors,
  ONNX Runtime arenas, Python objects and allocator caching alike). Where the peak cannot be reset,
  ``ru_maxrss`` is used and the growth is only a lower bound (``memory_kind`` says which).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from svrt.benchmarks.timing import synchronize

#: (size, frames, objects, grid nodes per side): the paper's case is 512^2, 12 frames, 2 objects, 64x64 modes
PAPER_CASE = (512, 12, 2, 64)
QUICK_CASES = ((128, 4, 2, 16),)
FULL_CASES = ((128, 4, 2, 16), (256, 12, 2, 32), PAPER_CASE)


@dataclass
class RestorationCase:
    size: int
    frames: int
    objects: int
    grid_nodes: int

    @property
    def grid(self) -> int:
        """P, pixels per node."""
        return max(1, self.size // self.grid_nodes)

    @property
    def label(self) -> str:
        return (
            f"{self.size}^2 x {self.frames} frames x {self.objects} objects, {self.grid_nodes}x{self.grid_nodes} modes"
        )


def solver_available() -> tuple[bool, str]:
    try:
        import svrt.runtime.solver  # noqa: F401
    except ImportError as exc:
        return False, f"the SV-MOMFBD solver module is not available ({exc})"
    return True, ""


def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


def synthetic_burst(case: RestorationCase, seed: int = 0) -> np.ndarray:
    """Frames ``[K, L, Y, X]``: a smooth positive texture plus noise (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    y = x = case.size
    base = rng.standard_normal((case.objects, 1, y // 8, x // 8)).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(base), size=(y, x), mode="bicubic", align_corners=False)
    frames = 1.0 + 0.1 * t.numpy() + 0.01 * rng.standard_normal((case.objects, case.frames, y, x)).astype(np.float32)
    return frames.astype(np.float32)


def run_restoration_case(entry, case: RestorationCase, iterations: int, device, instrument: str) -> dict:
    """One solve of ``iterations`` iterations with one engine; the record of its timing and memory."""
    from svrt.runtime.solver import SVMOMFBD, SolverConfig

    dev = torch.device(device)
    frames = synthetic_burst(case)
    kwargs = {}
    if getattr(entry.engine, "max_batch", None):
        kwargs["max_batch"] = int(entry.engine.max_batch)
    config = SolverConfig(method="adam", iterations=iterations, grid=case.grid, progress=False, **kwargs)
    solver = SVMOMFBD(entry.engine, config)
    stamps = []

    def callback(_terms):
        synchronize(dev)
        stamps.append(time.perf_counter())

    synchronize(dev)
    used0 = None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        free, total = torch.cuda.mem_get_info(dev)
        used0 = total - free
        before_mb = torch.cuda.memory_allocated(dev) / 2 ** 20
        kind = "cuda: torch.cuda.max_memory_allocated during the solve (torch tensors only)"
    else:
        reset = _reset_peak_rss()
        before_mb = (_status_kb("VmRSS") or 0.0) / 1024.0
        maxrss0 = _maxrss_mb()
        kind = ("cpu: peak resident set of the process during the solve (VmHWM after clear_refs)" if reset else
                "cpu: ru_maxrss (peak since the process started); growth is a lower bound")
    t0 = time.perf_counter()
    result = solver.solve(frames, instruments=[instrument] * case.objects, callback=callback)
    synchronize(dev)
    total_s = time.perf_counter() - t0
    rec = {"kind": "restoration", "method": "sv-momfbd", "backend": entry.backend, "precision": entry.precision,
           "device": str(dev), "size": case.size, "frames": case.frames, "objects": case.objects,
           "grid_nodes": case.grid_nodes, "grid_P": case.grid, "iterations": iterations, "total_s": total_s,
           "batch": int(result.header.get("BATCH", 0)), "tiles": int(result.header.get("NTILES", 1)),
           "memory_kind": kind}
    intervals = list(np.diff(stamps)) if len(stamps) > 1 else []
    if intervals:
        rec["per_iteration_s"] = float(statistics.median(intervals))
        rec["iteration_times_s"] = [float(v) for v in intervals]
        rec["timed_iterations"] = len(intervals)
    else:  # one iteration: it includes the setup
        rec["per_iteration_s"] = float(result.header.get("T_ITER", total_s))
        rec["timed_iterations"] = 1
        rec["note"] = "one iteration only: its time includes first-call costs"
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        free, total = torch.cuda.mem_get_info(dev)
        rec.update(
            {"peak_mb": peak, "growth_mb": peak - before_mb, "cuda_used_delta_mb": (total - free - used0) / 2**20}
        )
    else:
        if reset:
            peak = (_status_kb("VmHWM") or 0.0) / 1024.0
            rec.update({"peak_mb": peak, "growth_mb": max(0.0, peak - before_mb), "rss_before_mb": before_mb})
        else:
            peak = _maxrss_mb()
            rec.update({"peak_mb": peak, "growth_mb": max(0.0, peak - maxrss0), "rss_before_mb": before_mb})
    return rec
