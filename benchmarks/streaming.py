"""Latency per burst of the streaming restorer and what the warm start gains, on short time series of
simulated bursts.

    python -m svrt.benchmarks.streaming                        # ~10 min on 2 cores
    python -m svrt.benchmarks.streaming --size 64 --frames 4 --bursts 5 --out benchmarks/results/streaming.json

Two series of ``--bursts`` bursts (crisp8542, K objects x L frames of size^2, 1 % noise), because a
simulated slowly evolving atmosphere is not available (``svrt.simulate`` draws each burst's
wavefronts afresh from its seed):

- ``frozen``: one scene and one atmosphere (seed 3), new noise in each burst. Frame l of burst n+1 has
  exactly the wavefront of frame l of burst n: the most a warm start of the modes can gain (an upper
  bound; real bursts of SST are seconds apart, far longer than the ~10 ms in which the seeing
  decorrelates).
- ``seeing``: one scene (the scene of seed 3) seen through a new atmosphere in each burst (seeds 10,
  11, ...): the realistic case, where only the objects carry over from burst to burst.

Each series is restored three times through :class:`svrt.runtime.streaming.Restorer` (``stream``,
one warm-up burst first so that first-call costs are out): ``warm_start="off"`` (frame average, zero
modes), ``"objects"`` (the previous objects, zero modes) and ``"all"`` (``init=previous result``:
objects and each frame's modes). Per burst: ``latency_s`` (submission to
result, queue wait included, bursts fed as fast as the queue takes them), ``solve_s``, the solver's
work (``PATCH_EVALS``: loss evaluations of the patch wavefront stage; ``OBJ_ITERS``: conjugate-gradient
iterations of the object solves; ``iterations``: rows of the loss table) and the restoration's score
against the truth (:func:`svrt.metrics.score_restoration`, object 0; the frame average's too,
for scale). The summary compares bursts 2..N (burst 1 starts cold in every run): mean solve time,
mean work, mean NMSE, each warm start over "off".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from svrt.records import write_json
from svrt.runtime.solver_config import SolverConfig


def frozen_series(n: int, size: int, n_frames: int, n_objects: int, seed: int = 3) -> list:
    import numpy as np

    from svrt.fileio import Burst
    from svrt.simulate import add_noise, simulate_burst

    base = simulate_burst("crisp8542", size=size, n_frames=n_frames, n_objects=n_objects, seed=seed, noise=0.0,
                          progress=False)
    return [Burst(frames=add_noise(base.frames, 0.01, None, np.random.default_rng([seed, 50 + i])),
                  instruments=base.instruments, truth=base.truth, modes=base.modes, header=dict(base.header))
            for i in range(n)]


def seeing_series(n: int, size: int, n_frames: int, n_objects: int, scene_seed: int = 3, first_seed: int = 10) -> list:
    """One scene (that of ``scene_seed``) through the atmospheres of seeds first_seed, first_seed + 1, ..."""
    import svrt.scenes as scenes
    from svrt.simulate import simulate_burst

    make_objects = scenes.make_objects
    scenes.make_objects = lambda scene, k, shape, pixel, seed: make_objects(scene, k, shape, pixel, scene_seed)
    try:
        first = simulate_burst("crisp8542", size=size, n_frames=n_frames, n_objects=n_objects, seed=first_seed,
                               noise=0.01, progress=False)
        psf = int(first.header["PSFSIZE"])  # one PSF box: the scene is cut the same way from every burst
        return [first] + [simulate_burst("crisp8542", size=size, n_frames=n_frames, n_objects=n_objects,
                                         seed=first_seed + i, noise=0.01, progress=False, psf_size=psf)
                          for i in range(1, n)]
    finally:
        scenes.make_objects = make_objects


def run_series(bursts: list, engine, config, warm: str) -> list[dict]:
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration
    from svrt.runtime.streaming import Restorer

    cut = get_instrument(bursts[0].instruments[0]).cutoff_cycles_per_pixel
    restorer = Restorer(engine, config, warm_start=warm, max_pending=1)
    restorer.warmup(bursts[0])
    rows = []
    with restorer:
        for item in restorer.stream(bursts):
            if item.error:
                raise SystemExit(f"burst {item.name} failed: {item.error}")
            h = item.result.header
            score = score_restoration(item.result.objects[0], bursts[item.index].truth[0], cut)
            average = score_restoration(item.result.frame_average[0], bursts[item.index].truth[0], cut)
            rows.append({"burst": item.index, "warm": item.warm, "latency_s": round(item.latency_s, 3),
                         "wait_s": round(item.wait_s, 3), "solve_s": round(item.solve_s, 3),
                         "patch_evals": h.get("PATCH_EVALS"), "obj_iters": h.get("OBJ_ITERS"),
                         "iterations": item.iterations, "t_patch_s": h.get("T_PATCH"),
                         "nmse_variance": round(float(score["nmse_variance"]), 5),
                         "nmse_variance_frame_average": round(float(average["nmse_variance"]), 5)})
    return rows


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Mean of bursts 2..N of each run, and each run over the cold one."""
    def mean(rows, key):
        values = [r[key] for r in rows[1:] if r.get(key) is not None]
        return round(statistics.mean(values), 4) if values else None

    out = {}
    for key in ("solve_s", "latency_s", "patch_evals", "obj_iters", "iterations", "nmse_variance",
                "nmse_variance_frame_average"):
        cold = mean(runs["off"], key)
        out[key] = {mode: mean(rows, key) for mode, rows in runs.items()}
        for mode in runs:
            if mode != "off" and cold and out[key][mode] is not None:
                out[key][f"{mode}_over_off"] = round(out[key][mode] / cold, 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svrt.benchmarks.streaming", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--model", default="svce-c16")
    ap.add_argument("--grid", type=int, default=SolverConfig.grid, help="P, pixels per node of the mode grid.")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from svrt.benchmarks.machine import machine_info
    from svrt.runtime.solver import load_solver_engine

    torch.set_num_threads(args.threads)
    config = SolverConfig(grid=args.grid, progress=False)
    engine = load_solver_engine(args.model)
    record = {
        "machine": machine_info("cpu"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "burst": {"size": args.size, "frames": args.frames, "objects": args.objects, "instrument": "crisp8542"},
        "config": {k: v for k, v in config.to_dict().items() if k != "progress"},
        "model": args.model,
        "series": {},
    }
    for name, make in (("frozen", frozen_series), ("seeing", seeing_series)):
        t0 = time.perf_counter()
        bursts = make(args.bursts, args.size, args.frames, args.objects)
        print(f"{name}: {len(bursts)} bursts simulated in {time.perf_counter() - t0:.1f} s", flush=True)
        runs = {mode: run_series(bursts, engine, config, warm=mode) for mode in ("off", "objects", "all")}
        summary = summarize(runs)
        record["series"][name] = {**runs, "summary": summary}
        print(f"{name}: " + json.dumps(summary), flush=True)
    if args.out:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
