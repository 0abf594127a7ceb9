"""Throughput of ``svrt batch``: bursts per hour against Dask workers on this machine, and the plan for
a night of data that follows from it.

    python -m svrt.benchmarks.throughput                      # ~18 min on 2 cores
    python -m svrt.benchmarks.throughput --workers 1,2,4 --bursts 16 --out benchmarks/results/throughput.json

What it does:

1. Simulates one noiseless burst (``--size``, ``--frames``, ``--objects``, crisp8542, seed 1) and
   writes ``--bursts`` copies with independent noise (1 % of the mean): the solver's work per burst
   does not depend on the scene, and simulating each burst would cost more than restoring it.
2. For each worker count: a fresh output folder and :func:`svrt.runtime.batch.run_batch` on a Dask
   LocalCluster of that many processes (one thread each; ``0`` runs in this process without Dask).
   ``wall`` is from the first submission to the last restoration (cluster start-up reported apart);
   ``bursts/hour`` = restored bursts / wall. ``steady s/burst`` is the median time of a burst in its
   worker, leaving out each worker's first burst (which also imports torch and loads the engine);
   ``steady bursts/hour`` = workers x 3600 / that: the rate of a long night, where start-up vanishes.
   ``CPU s/burst``: the worker process's CPU time for a burst (``time.process_time``): when it stays
   put while ``steady s/burst`` grows with the workers, the workers waited for cores (a busy or too
   small machine), not for Dask.
3. Cost against size (unless ``--no-scaling``): one process, one torch thread, the same settings:
   ``size^2``, ``(2 size)^2``, ``(4 size)^2`` bursts of ``frames`` frames and a ``size^2`` burst of
   ``2 frames``, timed in CPU seconds (``time.process_time``: what a core spends, whatever else the
   machine runs). ``p`` (CPU time ~ pixels^p, from the two largest sizes) and ``q`` (~ frames^q), each
   taken as at least 1, extrapolate the cost of a night burst (``--night-size``, ``--night-frames``;
   objects as measured) from the largest measured one:
   ``t_night = t(largest) x (night pixels / its pixels)^p x (night frames / frames)^q``; the night is
   ``night bursts x t_night`` core-hours, i.e. that / N hours on N free cores (one worker per core, as
   the CPU-time column of step 2 supports). The solver's memory plan for the night burst on this
   machine (frames per emulator call, tiles, estimated peak) is recorded too. An extrapolation over
   1.5 decades of pixels: check it with one real burst on the target machine (``svrt deconvolve``
   prints its time).

Settings: the solver's defaults (``SolverConfig()``) with ``--grid`` (32: P pixels per node) and the
bundled model ``--model``. The load average of the machine is recorded: on a shared host other
processes take cores from the workers, and the figures say so.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from svrt.records import write_json
from svrt.runtime.solver_config import SolverConfig


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def make_bursts(folder: Path, n: int, size: int, n_frames: int, n_objects: int, seed: int = 1) -> list[Path]:
    """``n`` burst files of one simulated scene and atmosphere with independent noise (1 %)."""
    import numpy as np

    from svrt.fileio import Burst, write_burst
    from svrt.simulate import add_noise, simulate_burst

    base = simulate_burst("crisp8542", size=size, n_frames=n_frames, n_objects=n_objects, seed=seed, noise=0.0,
                          progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        frames = add_noise(base.frames, 0.01, None, np.random.default_rng([seed, 100 + i]))
        header = {**base.header, "DATE-OBS": f"2024-06-01T08:{30 + i // 60:02d}:{i % 60:02d}", "NOISE": 0.01}
        p = folder / f"burst_{i:04d}.fits"
        write_burst(p, Burst(frames=frames, instruments=base.instruments, truth=base.truth, modes=base.modes,
                             header=header), overwrite=True)
        paths.append(p)
    return paths


def measure_workers(paths: list[Path], workers: int, out_dir: Path, spec, config) -> dict:
    """One batch on ``workers`` Dask workers (0: this process); the figures of the module doc."""
    from svrt.runtime.batch import plan_jobs, run_batch

    shutil.rmtree(out_dir, ignore_errors=True)
    jobs = plan_jobs(paths, out_dir)
    info: dict = {}
    load0 = _load()
    t0 = time.perf_counter()
    outcomes = run_batch(jobs, spec, config, workers=workers, threads=1, cluster_info=info)
    total = time.perf_counter() - t0
    wall = total - info.get("start_s", 0.0)
    done = [o for o in outcomes if o.status == "done"]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise SystemExit(f"benchmark burst failed: {failed[0].message}")
    firsts, later = set(), []
    by_worker: dict = {}
    for o in done:
        by_worker.setdefault(o.worker, []).append(o)
    for group in by_worker.values():
        group.sort(key=lambda o: o.extra.get("t_start", 0.0))
        later.extend(o.seconds for o in group[1:])
        firsts.update(o.name for o in group[:1])
    steady = statistics.median(later) if later else statistics.median(o.seconds for o in done)
    cpu = [o.extra.get("cpu_s") for o in done if o.name not in firsts and o.extra.get("cpu_s") is not None]
    n_workers = max(1, workers or 1)
    return {
        "workers": workers,
        "cluster": info.get("kind", "in-process"),
        "cluster_start_s": round(info.get("start_s", 0.0), 2),
        "bursts": len(done),
        "wall_s": round(wall, 2),
        "bursts_per_hour": round(3600 * len(done) / wall, 1),
        "first_burst_s": round(statistics.mean(o.seconds for o in done if o.name in firsts), 2),
        "steady_s_per_burst": round(steady, 2),
        "steady_bursts_per_hour": round(n_workers * 3600 / steady, 1),
        "solve_s_median": round(statistics.median(o.solve_seconds for o in done), 2),
        "steady_cpu_s_per_burst": round(statistics.median(cpu), 2) if cpu else None,
        "workers_used": len(by_worker),
        "load_before": load0,
        "load_after": _load(),
    }


def measure_scaling(size: int, n_frames: int, n_objects: int, model: str, config, steps: int = 3,
                    night: dict | None = None) -> dict:
    """Seconds of one solve (one process, one torch thread) at size^2, (2 size)^2, ... (``steps`` sizes)
    with ``n_frames`` frames, and at size^2 with 2 n_frames; the exponents p (pixels, from the two
    largest sizes) and q (frames); with ``night``, the solver's memory plan for the night burst."""
    import torch

    from svrt.runtime.solver import RUNTIME_OVERHEAD_MB, SVMOMFBD, load_solver_engine
    from svrt.simulate import simulate_burst

    torch.set_num_threads(1)
    solver = SVMOMFBD(load_solver_engine(model), config)
    cases = [(size * 2 ** i, n_frames) for i in range(steps)] + [(size, 2 * n_frames)]
    out: dict = {"cases": []}
    for i, (s, frames) in enumerate(cases):
        burst = simulate_burst("crisp8542", size=s, n_frames=frames, n_objects=n_objects, seed=2, progress=False)
        if i == 0:
            solver.solve(burst)  # first-call costs out of the figures
        t0, c0 = time.perf_counter(), time.process_time()
        result = solver.solve(burst)
        out["cases"].append(
            {
                "size": s,
                "frames": frames,
                "objects": n_objects,
                "seconds": round(time.perf_counter() - t0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
                "iterations": len(result.loss["total"]),
                "load": _load(),
            }
        )
        print(f"  {s}^2 x {frames}: {out['cases'][-1]}", flush=True)
    t = [c["cpu_s"] for c in out["cases"]]
    out["p_pixels"] = round(math.log(t[steps - 1] / t[steps - 2]) / math.log(4.0), 3)
    out["q_frames"] = round(math.log(t[steps] / t[0]) / math.log(2.0), 3)
    if night is not None:
        plan = solver.plan(night["objects"], night["frames"], (night["size"], night["size"]))
        out["night_memory_plan"] = {
            "per_frame_sample_mib": round(plan.bytes_per_sample / 2 ** 20, 1), "batch": plan.batch,
            "tiles": len(plan.tiles), "bound_mib": round(plan.bound_bytes / 2 ** 20),
            "estimate_mib": round(plan.batch * plan.bytes_per_sample / 2 ** 20 + RUNTIME_OVERHEAD_MB)}
    return out


def night_plan(scaling: dict, rows: list[dict], night: dict) -> dict:
    """Cost of one night burst, extrapolated from the largest measured size (CPU seconds, one thread)
    with time ~ pixels^p x frames^q (p, q measured, never below 1), and the night in core-hours and in
    wall hours on N free cores (module doc)."""
    cases = scaling["cases"]
    base = max((c for c in cases if c["frames"] == cases[0]["frames"]), key=lambda c: c["size"])
    p, q = max(scaling["p_pixels"], 1.0), max(scaling["q_frames"], 1.0)  # never below linear: no free lunch
    t_night = base["cpu_s"] * (night["size"] ** 2 / base["size"] ** 2) ** p * (night["frames"] / base["frames"]) ** q
    core_hours = night["bursts"] * t_night / 3600
    return {"base_case": f"{base['size']}^2 x {base['frames']} x {base['objects']}", "base_cpu_s": base["cpu_s"],
            "exponent_pixels": p, "exponent_frames": q, "t_night_burst_cpu_s": round(t_night),
            "core_hours": round(core_hours), "wall_hours_on_free_cores": {str(n): round(core_hours / n, 1)
                                                                         for n in (16, 64, 256, 1024, 4096)}}


def _table(rows: list[dict]) -> str:
    head = ("| workers | cluster | bursts | wall [s] | bursts/hour | first burst [s] | steady s/burst | "
            "CPU s/burst | steady bursts/hour | speed-up | load |")
    lines = [head, "|" + "---|" * 11]
    one = next((r for r in rows if r["workers"] == 1), rows[0])
    for r in rows:
        speed = r["steady_bursts_per_hour"] / one["steady_bursts_per_hour"]
        lines.append(f"| {r['workers']} | {r['cluster']} | {r['bursts']} | {r['wall_s']:.1f} | "
                     f"{r['bursts_per_hour']:.0f} | {r['first_burst_s']:.1f} | {r['steady_s_per_burst']:.1f} | "
                     f"{r.get('steady_cpu_s_per_burst') or float('nan'):.1f} | "
                     f"{r['steady_bursts_per_hour']:.0f} | {speed:.2f}x | {r['load_before']}->{r['load_after']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svrt.benchmarks.throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="Y = X of the benchmark bursts [pixel].")
    ap.add_argument("--frames", type=int, default=4, help="L, frames per object.")
    ap.add_argument("--objects", type=int, default=2, help="K, objects.")
    ap.add_argument("--bursts", type=int, default=8, help="Bursts per worker count.")
    ap.add_argument("--workers", default="1,2", help="Comma-separated worker counts (0: this process, no Dask).")
    ap.add_argument("--model", default="svce-c16", help="Bundled model or engine file.")
    ap.add_argument("--grid", type=int, default=SolverConfig.grid, help="P, pixels per node of the mode grid.")
    ap.add_argument("--no-scaling", action="store_true", help="Skip the cost-against-size runs (and the night plan).")
    ap.add_argument("--scaling-steps", type=int, default=3, help="Sizes of the scaling runs: size, 2 size, 4 size, ...")
    ap.add_argument("--night-bursts", type=int, default=20000)
    ap.add_argument("--night-size", type=int, default=1024)
    ap.add_argument("--night-frames", type=int, default=12)
    ap.add_argument("--out", default=None, help="JSON file for every figure.")
    args = ap.parse_args(argv)

    from svrt.benchmarks.machine import machine_info
    from svrt.runtime.batch import EngineSpec

    config = SolverConfig(grid=args.grid, progress=False)
    spec = EngineSpec(paths=(args.model,), device="cpu") if Path(args.model).exists() else EngineSpec(model=args.model)
    counts = [int(w) for w in args.workers.split(",")]
    record: dict = {
        "machine": machine_info("cpu"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "burst": {"size": args.size, "frames": args.frames, "objects": args.objects, "instrument": "crisp8542"},
        "config": {k: v for k, v in config.to_dict().items() if k != "progress"},
        "model": args.model,
    }
    tmp = Path(tempfile.mkdtemp(prefix="svrt-throughput-"))
    try:
        t0 = time.perf_counter()
        paths = make_bursts(tmp / "bursts", args.bursts, args.size, args.frames, args.objects)
        print(f"{len(paths)} bursts of {args.objects}x{args.frames}x{args.size}^2 simulated in "
              f"{time.perf_counter() - t0:.1f} s")
        rows = []
        for w in counts:
            rows.append(measure_workers(paths, w, tmp / f"out-{w}", spec, config))
            print(f"workers {w}: {rows[-1]}", flush=True)
        record["throughput"] = rows
        print(_table(rows))
        if not args.no_scaling:
            night = {"bursts": args.night_bursts, "size": args.night_size, "frames": args.night_frames,
                     "objects": args.objects}
            scaling = measure_scaling(
                args.size, args.frames, args.objects, args.model, config, args.scaling_steps, night
            )
            record["scaling"] = scaling
            print(f"scaling: p = {scaling['p_pixels']}, q = {scaling['q_frames']}; memory plan "
                  f"{scaling.get('night_memory_plan')}")
            record["night"] = {**night, **night_plan(scaling, rows, night)}
            print(f"night: {record['night']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
