"""The cost per pixel of one fixed amount of solver work at several field sizes: how each stage's arithmetic scales.

The cost curve (:mod:`svrt.benchmarks.cost_curve`) times whole default restorations, so its time per pixel mixes
two things: what one iteration of each stage costs, and how many iterations the data make the solver take
(L-BFGS line searches, conjugate-gradient stops). This benchmark fixes the second: every size runs the same
few iterations of every stage (``FIXED``: two L-BFGS iterations per mode step up to 9 modes, three object
iterations with no tolerance stop, one refinement round of two iterations, always refined), on frames of
random texture, in one process and one thread, timed in CPU time (``time.process_time``: other work on a
shared machine stretches the wall time, not this), so the time per pixel and frame at each size against
``REFERENCE_SIZE`` is the scaling of the arithmetic itself (FFT sizes, PSF interpolation, memory traffic).
The whole-field wavefront fit is also timed on its own, one evaluation of its metric and gradient
(:func:`whole_field_evaluation`), since it is the one stage whose patch can grow with the field (one patch as
large as the field with ``--whole-field-tile 0``; tiles of a fixed side by default) where every other stage
works on fixed-size patches. (The rows' ``whole_field_us_per_pixel_frame_evaluation`` divides that stage's
whole CPU time, set-up included, by its few evaluations: a rough figure beside the clean one.)

Usage::

    OMP_NUM_THREADS=1 python -m svrt.benchmarks.stage_scaling --sizes 256,512,1024 --out docs/cost/stage-scaling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

__all__ = ["FIXED", "REFERENCE_SIZE", "measure", "whole_field_evaluation", "main"]

REFERENCE_SIZE = 256
FIXED = dict(patch_iterations=2, fit_modes=9, object_iterations=3, tolerance=0.0, refine_rounds=1,
             refine_iterations=2, refine_above=0.0)


def measure(size: int, frames: int = 12, engine=None, seed: int = 0, **settings) -> dict:
    """One restoration of a ``[1, frames, size, size]`` burst of random texture with the :data:`FIXED`
    iterations (and ``settings``, other solver settings): wall and CPU time [s], the whole-field stage's CPU
    time and metric evaluations, and the CPU time per pixel and frame [us]."""
    import torch

    from svrt.fileio import Burst
    from svrt.runtime import patch_mfbd
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

    engine = engine if engine is not None else load_solver_engine()
    rng = np.random.default_rng(seed)
    burst = Burst(frames=(1 + 0.1 * rng.standard_normal((1, frames, size, size))).astype(np.float32),
                  instruments=["crisp8542"])
    whole = {}
    original = patch_mfbd.patch_wavefronts

    # method_momfbd imports patch_wavefronts when it runs, so this stand-in is the one it calls; the whole-field
    # call is the one without a start
    def timed(*args, **kwargs):
        c = time.process_time()
        out = original(*args, **kwargs)
        if kwargs.get("init") is None:
            whole.update(seconds=time.process_time() - c, evaluations=out[1]["evaluations"])
        return out

    patch_mfbd.patch_wavefronts = timed
    try:
        t, c = time.perf_counter(), time.process_time()
        result = SVMOMFBD(engine, SolverConfig(progress=False, **FIXED, **settings)).solve(burst)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        patch_mfbd.patch_wavefronts = original
    samples = size * size * frames
    return {"size": size, "frames": frames, "threads": torch.get_num_threads(), "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "patch_stage_wall_s": result.header.get("T_PATCH"),
            "whole_field_cpu_s": round(whole.get("seconds", float("nan")), 3),
            "whole_field_evaluations": whole.get("evaluations"), "object_iterations": result.header.get("OBJ_ITERS"),
            "us_per_pixel_frame": round(1e6 * cpu / samples, 3),
            "whole_field_us_per_pixel_frame_evaluation":
                round(1e6 * whole.get("seconds", float("nan")) / (whole.get("evaluations") or 1) / samples, 4)}


def whole_field_evaluation(size: int, frames: int = 12, whole_field_tile: int | None = None, repeats: int = 3,
                           seed: int = 0) -> dict:
    """CPU time of one evaluation (metric and gradient) of the whole-field wavefront fit of a ``[1, frames, size,
    size]`` field, the evaluation a default solve repeats a few hundred times (30 L-BFGS iterations per step of
    freed modes): one patch the size of the field, or tiles of ``whole_field_tile`` sharing the wavefront
    (:func:`~svrt.runtime.solver_config.whole_field_tiles`). Returns the tiles, the patch side and the CPU
    microseconds per pixel and frame, the median of ``repeats``."""
    import torch

    from svrt.instruments import get_instrument
    from svrt.runtime.patch_mfbd import PatchProblem, patch_layout
    from svrt.runtime.solver_config import SolverConfig, whole_field_tiles

    config = SolverConfig(**({} if whole_field_tile is None else {"whole_field_tile": whole_field_tile}))
    tiles = whole_field_tiles(config, (size, size))
    layout = patch_layout((size, size), tiles, config.whole_field_tile or config.patch_size)
    gen = torch.Generator().manual_seed(seed)
    data = 1 + 0.1 * torch.randn(1, frames, size, size, generator=gen)
    problem = PatchProblem(data, [get_instrument("crisp8542")], 44, layout, torch.tensor([1e-4]))
    alpha = (0.3 * torch.randn(frames, 1, 1, 44, generator=gen)).requires_grad_(True)
    problem.refit_object_power(alpha.detach())
    times = []
    for _ in range(repeats):
        c = time.process_time()
        problem.metric(alpha).backward()
        times.append(time.process_time() - c)
    return {"size": size, "tiles": list(tiles), "patch_side": layout.size,
            "us_per_pixel_frame": round(1e6 * float(np.median(times)) / (size * size * frames), 4)}


def main(argv=None) -> int:
    import torch

    from svrt.benchmarks.machine import machine_info
    from svrt.records import write_json

    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.stage_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512,1024", help="field sides [pixel], comma-separated")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--whole-field-tile", type=int, default=None,
                   help="the solver setting whole_field_tile (default: its default; 0: one patch for the whole field)")
    p.add_argument("--out", default=None, help="JSON file of the rows")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if REFERENCE_SIZE not in sizes:
        sizes.insert(0, REFERENCE_SIZE)
    extra = {} if args.whole_field_tile is None else {"whole_field_tile": args.whole_field_tile}
    rows = []
    for size in sizes:
        rows.append(measure(size, args.frames, **extra))
        print(json.dumps(rows[-1]), flush=True)
    ref = next(r for r in rows if r["size"] == REFERENCE_SIZE)
    print(f"| field | wall [s] | CPU [s] | CPU us per pixel and frame | vs {REFERENCE_SIZE}^2 | whole-field stage, "
          "CPU us per pixel, frame and evaluation |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        r["vs_reference"] = round(r["us_per_pixel_frame"] / ref["us_per_pixel_frame"], 3)
        print(f"| {r['size']}^2 x {r['frames']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['us_per_pixel_frame']:.2f} | "
              f"{r['vs_reference']:.2f} | {r['whole_field_us_per_pixel_frame_evaluation']:.3f} |")
    evaluations = [whole_field_evaluation(size, args.frames, args.whole_field_tile) for size in sizes]
    ref_eval = next(e for e in evaluations if e["size"] == REFERENCE_SIZE)
    print("\nOne evaluation of the whole-field wavefront fit (metric and gradient):\n"
          f"| field | tiles | patch side | CPU us per pixel and frame | vs {REFERENCE_SIZE}^2 |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for e in evaluations:
        e["vs_reference"] = round(e["us_per_pixel_frame"] / ref_eval["us_per_pixel_frame"], 3)
        print(f"| {e['size']}^2 x {args.frames} | {e['tiles'][0]} x {e['tiles'][1]} | {e['patch_side']} | "
              f"{e['us_per_pixel_frame']:.3f} | {e['vs_reference']:.2f} |")
    if args.out:
        write_json(args.out, {"command": "python -m svrt.benchmarks.stage_scaling " + " ".join(argv),
                              "fixed_settings": FIXED, "whole_field_tile": args.whole_field_tile, "rows": rows,
                              "whole_field_evaluation": evaluations, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
