"""Calibration of the quality verdict (:mod:`svrt.runtime.quality`) on simulated bursts where the truth is
known: every case is restored, scored with the one score (:func:`svrt.benchmarks.metrics.score_restoration`)
and its verdict set against the truth's: is the restoration worse than the frame average (NMSE_var of any
object above the frame average's)? One JSON line per case; ``--table`` prints the confusion table of a
file of them.

Example (one thread, a few minutes on a laptop core)::

    python -m svrt.benchmarks.quality_calibration -o quality.jsonl --case 64,4,1,10 --case 64,4,1,10,dpm0
    python -m svrt.benchmarks.quality_calibration --table quality.jsonl

A case is ``size,frames,seed,r0[,screen][,dpm0]``: ``screen`` simulates full phase screens with 1e4 photons
per pixel (``--wavefront screen --photons 1e4``) instead of the solver's own KL model; ``dpm0`` restores
with ``data_per_mode = 0`` (``fit_modes`` whatever the field: the defaults before the field adapted them),
which makes the over-restored cases the verdict has to catch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

__all__ = ["run_case", "confusion_table"]


def run_case(spec: str) -> dict:
    """Restore the case ``spec`` (module doc) with the defaults; its figures, verdict and scores."""
    from svrt.benchmarks.metrics import score_restoration
    from svrt.instruments import get_instrument
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    from svrt.simulate import simulate_burst

    parts = spec.split(",")
    size, frames, seed, r0 = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
    screen, dpm0 = "screen" in parts[4:], "dpm0" in parts[4:]
    burst = simulate_burst(size=size, n_frames=frames, n_objects=2, seed=seed, r0_cm=r0, progress=False,
                           wavefront="screen" if screen else "kl", photons=1e4 if screen else None)
    engine = load_solver_engine(method="momfbd")   # the default forward model (exact optics)
    config = SolverConfig(progress=False, **({"data_per_mode": 0.0} if dpm0 else {}))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = SVMOMFBD(engine, config).solve(burst)
    cut = [get_instrument(s).cutoff_cycles_per_pixel for s in burst.instruments]
    nmse = [score_restoration(result.objects[k], burst.truth[k], cut[k])["nmse_variance"] for k in range(2)]
    avg = [score_restoration(result.frame_average[k], burst.truth[k], cut[k])["nmse_variance"] for k in range(2)]
    q = result.quality
    return {"case": spec, "seconds": round(time.perf_counter() - t0, 1), "fit_modes": result.header["FIT_MODES_USED"],
            "nmse": [round(v, 4) for v in nmse], "nmse_average": [round(v, 4) for v in avg],
            "worse": any(r > a for r, a in zip(nmse, avg)), "verdict": q.label, **q.cards()}


def confusion_table(rows: list[dict]) -> str:
    """Verdict (rows) against the truth (columns: worse than the frame average or not), as Markdown."""
    labels = ("ok", "over-restored", "worse-than-average", "not-converged")
    lines = ["| verdict | truly worse than average | not worse |", "| --- | --- | --- |"]
    for label in labels:
        n_worse = sum(1 for r in rows if r["verdict"] == label and r["worse"])
        n_fine = sum(1 for r in rows if r["verdict"] == label and not r["worse"])
        if n_worse or n_fine or label in labels[:2]:
            lines.append(f"| {label} | {n_worse} | {n_fine} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=[], help="size,frames,seed,r0[,screen][,dpm0]")
    parser.add_argument("-o", "--output", help="append one JSON line per case to this file")
    parser.add_argument("--table", help="print the confusion table of this JSON-lines file")
    args = parser.parse_args(argv)
    for spec in args.case:
        row = run_case(spec)
        print(json.dumps(row), flush=True)
        if args.output:
            with open(args.output, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    if args.table:
        with open(args.table, encoding="utf-8") as f:
            print(confusion_table([json.loads(line) for line in f if line.strip()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
