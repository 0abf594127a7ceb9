"""Frame-selection benchmark: the NMSE of a restoration of a burst whose seeing changes between frames,
with every frame and with the sharpest half by RMS contrast (``SolverConfig(select_frames=0.5)``).

Each case is one burst of ``2 n`` frames (CRISP 8542 A, 128^2, full phase screens, 1 % noise): n frames
simulated at a good r0 and n at a bad r0 with the same seed (the same scene and PSF box; the screens of the
bad frames are those of the good ones with r0 scaled, so the two halves differ by the seeing only),
interleaved (good frames at even indices). Restored by the default solver (momfbd, exact optics) with all
frames and with ``select_frames=0.5``; scored by :func:`svrt.metrics.score_restoration`.

Run (about two minutes of one CPU core per case)::

    python -m svrt.benchmarks.frame_selection                    # seeds 1 and 2, r0 10 and 5 cm
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np


def mixed_seeing_burst(seed: int, n: int, good_r0: float, bad_r0: float, size: int = 128, psf_size: int = 96):
    """A burst of 2n frames: n at ``good_r0`` (even indices) and n at ``bad_r0`` (odd), same scene."""
    from svrt.fileio import Burst
    from svrt.simulate import simulate_burst

    kw = dict(size=size, n_frames=n, n_objects=1, seed=seed, wavefront="screen", psf_size=psf_size, progress=False)
    good = simulate_burst("crisp8542", r0_cm=good_r0, **kw)
    bad = simulate_burst("crisp8542", r0_cm=bad_r0, **kw)
    frames = np.empty((1, 2 * n, size, size), np.float32)
    frames[:, 0::2], frames[:, 1::2] = good.frames, bad.frames
    header = dict(good.header, R0=f"{good_r0:g} (even frames), {bad_r0:g} (odd frames)")
    return Burst(frames=frames, instruments=good.instruments, truth=good.truth, header=header)


def run_case(seed: int, n: int, good_r0: float, bad_r0: float, engine) -> dict:
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration
    from svrt.runtime.solver import SVMOMFBD, SolverConfig

    t0 = time.perf_counter()
    burst = mixed_seeing_burst(seed, n, good_r0, bad_r0)
    out = {"seed": seed, "frames": 2 * n, "good_r0_cm": good_r0, "bad_r0_cm": bad_r0,
           "simulate_s": round(time.perf_counter() - t0, 1)}
    cut = get_instrument("crisp8542").cutoff_cycles_per_pixel
    for label, select in (("all", None), ("best_half", 0.5)):
        t0 = time.perf_counter()
        res = SVMOMFBD(engine, SolverConfig(progress=False, select_frames=select)).solve(burst)
        out[label] = {"nmse": score_restoration(res.objects[0], burst.truth[0], cut)["nmse_variance"],
                      "kept": res.header.get("FRSEL_KEPT", ",".join(map(str, range(2 * n)))),
                      "solve_s": round(time.perf_counter() - t0, 1)}
        if select is not None:
            out["contrast"] = [float(v) for v in res.header["FRSEL_CONTRAST"].split(",")]
    return out


def main(argv=None) -> dict:
    import torch

    from svrt.records import write_json
    from svrt.runtime.solver import load_solver_engine

    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.frame_selection", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--frames", type=int, default=4, help="n: frames per seeing (the burst has 2n)")
    p.add_argument("--good-r0", type=float, default=10.0)
    p.add_argument("--bad-r0", type=float, default=5.0)
    p.add_argument("-o", "--output", default="benchmarks/results/frame_selection.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    engine = load_solver_engine(None, backend="psf-interpolation")
    cases = []
    for seed in args.seeds:
        c = run_case(seed, args.frames, args.good_r0, args.bad_r0, engine)
        cases.append(c)
        print(
            f"seed {seed}: NMSE all {2 * args.frames} frames {c['all']['nmse']:.4f}, "
            f"best half {c['best_half']['nmse']:.4f} "
            f"(kept {c['best_half']['kept']}; good frames are the even ones)",
            flush=True,
        )
    results = {"settings": {"instrument": "crisp8542", "size": 128, "wavefront": "screen", "noise": 0.01,
                            "solver": "SolverConfig() defaults, psf-interpolation engine"},
               "machine": platform.node(), "cases": cases}
    out = Path(args.output)
    write_json(out, results)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
