"""Phase-diversity benchmark: what a defocused channel gains, on simulated bursts with known truth.

For each case (seed, r0) one burst is simulated with full phase screens (``wavefront="screen"``: the
solver's 44-mode model is an approximation, as on real data), CRISP 8542 A, one object and a phase-diversity
channel of the same object defocused by ``waves`` waves peak-to-valley (:func:`svrt.simulate.simulate_burst`,
``diversity=``). The solver (method momfbd, exact optics) restores it twice for each of three settings
(:data:`CONFIGS`: the defaults, which fit KL 1..``SolverConfig.fit_modes`` and ignore the rest; the same with
the Kolmogorov mean OTF of the unfitted modes, ``high_order="kolmogorov"``; all 44 modes fitted, ``fit_modes=44``):

* ``focus``: the focused channel alone (the cards DIVERSk/DIVOBJk and the channel dropped);
* ``diversity``: both channels, tied to one object, the known defocus added to the second one.

Diversity doubles the number of images; the comparison is at the same number of exposures (wavefront
realisations), as an observer with one or two cameras would have.

Figures per solve:

* ``nmse``: :func:`svrt.metrics.score_restoration` of the restored object against TRUTH (the one score);
* ``wavefront_rms_rad``: the RMS over the pupil and the field of the difference between the solved and the
  true wavefronts (the burst's MODES, the KL projection of the screens at its nodes), both upsampled
  bilinearly to every pixel; KL modes are orthonormal over the pupil, so the RMS over the pupil is the
  root sum of squares of the coefficient differences. Tip and tilt are left out (the object's position
  absorbs their mean). ``low`` = KL 3-9 (defocus, astigmatism, coma, trefoil), ``fitted`` = KL 3..fit_modes
  (what the solver fits, ``fit_modes``), ``all`` = KL 3-44.

Run (about two minutes of one CPU core per case)::

    python -m svrt.benchmarks.diversity                      # 3 cases, 128^2 x 4 frames
    python -m svrt.benchmarks.diversity --cases 1:7 --frames 8 -o /tmp/pd.json

writes JSON (every figure, the settings, the machine) and a PNG next to it; with ``--append`` the cases
are added to those already in the JSON (one case per call keeps each call short).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

DEFAULT_CASES = ((1, 7.0), (2, 8.5), (3, 10.0))       # (seed, r0 [cm at 5000 A])
LOW_ORDER = (2, 9)                                      # 0-based KL indices [2, 9): KL 3-9
CONFIGS = {"default": {}, "kolmogorov": {"high_order": "kolmogorov"}, "fit44": {"fit_modes": 44}}


def wavefront_rms(solved: np.ndarray, true: np.ndarray, shape, modes: tuple[int, int]) -> float:
    """RMS (rad) over the pupil and the field of ``solved - true`` on KL indices ``modes`` [lo, hi):
    both ``[L, M, Yg, Xg]`` upsampled bilinearly (align_corners=False, the solver's contract) to ``shape``."""
    from svrt.mode_grid import per_pixel_modes

    lo, hi = modes
    diff = per_pixel_modes(np.asarray(solved)[:, lo:hi], shape) - per_pixel_modes(np.asarray(true)[:, lo:hi], shape)
    return float(diff.pow(2).sum(dim=1).mean().sqrt())


def focused_only(burst):
    """The burst without its diversity channels and cards (the channels that point to another)."""
    from svrt.fileio import Burst
    from svrt.optics.diversity import read_diversity

    spec = read_diversity(burst.header, burst.instruments)
    keep = spec.anchors if spec is not None else list(range(burst.n_objects))
    header = {k: v for k, v in burst.header.items() if not k.startswith(("DIVERS", "DIVOBJ", "DIVMM", "FNUM"))}
    return Burst(frames=burst.frames[keep], instruments=[burst.instruments[i] for i in keep],
                 truth=None if burst.truth is None else burst.truth[keep], modes=burst.modes, header=header)


def run_case(seed: int, r0_cm: float, size: int, frames: int, waves: float, engine, labels=tuple(CONFIGS)) -> dict:
    """Simulate one diversity burst and restore it with and without its diversity channel, per setting."""
    from svrt.runtime.solver import SolverConfig
    from svrt.simulate import simulate_burst

    t0 = time.perf_counter()
    burst = simulate_burst("crisp8542", size=size, n_frames=frames, n_objects=1, seed=seed, r0_cm=r0_cm,
                           wavefront="screen", diversity=waves, progress=False)
    out = {"seed": seed, "r0_cm": r0_cm, "simulate_s": round(time.perf_counter() - t0, 1)}
    for label in labels:
        config = SolverConfig(progress=False, **CONFIGS[label])
        out[label] = {name: solve_and_score(b, burst, engine, config)
                      for name, b in (("focus", focused_only(burst)), ("diversity", burst))}
    return out


def solve_and_score(b, burst, engine, config) -> dict:
    """Restore ``b`` and score its object 0 and wavefronts against ``burst``'s TRUTH 0 and MODES."""
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration
    from svrt.runtime.solver import SVMOMFBD

    size = burst.shape[0]
    cut = get_instrument(burst.instruments[0]).cutoff_cycles_per_pixel
    fit = config.fit_modes or burst.modes.shape[1]
    t0 = time.perf_counter()
    res = SVMOMFBD(engine, config).solve(b)
    score = score_restoration(res.objects[0], burst.truth[0], cut)
    return {
        "nmse": score["nmse_variance"],
        "contrast": score["contrast"],
        "contrast_truth": score["contrast_truth"],
        "power_ratio": score["power_ratio"],
        "wavefront_rms_rad": {
            "low": wavefront_rms(res.modes, burst.modes, (size, size), LOW_ORDER),
            "fitted": wavefront_rms(res.modes, burst.modes, (size, size), (2, fit)),
            "all": wavefront_rms(res.modes, burst.modes, (size, size), (2, burst.modes.shape[1])),
        },
        "true_rms_rad": {"fitted": wavefront_rms(0 * burst.modes, burst.modes, (size, size), (2, fit))},
        "solve_s": round(time.perf_counter() - t0, 1),
    }


def plot(results: dict, path: Path) -> None:
    """Bars, per setting (mean over the cases): NMSE and the wavefront errors, focus alone against diversity."""
    from svrt.pictures import save_png, subplots

    summary = results["summary"]
    labels = list(summary)
    x = np.arange(len(labels))
    fig, axes = subplots(1, 3, figsize=(13, 3.8))
    panels = (("nmse", "restoration NMSE (score_restoration)"), ("wavefront_low", "wavefront RMS error, KL 3-9 [rad]"),
              ("wavefront_fitted", "wavefront RMS error, fitted KL [rad]"))
    for ax, (key, title) in zip(axes, panels):
        for j, (name, colour) in enumerate((("focus", "tab:gray"), ("diversity", "tab:blue"))):
            ax.bar(x + (j - 0.5) * 0.38, [summary[c][name][key] for c in labels], 0.38, label=name, color=colour)
        ax.set_xticks(x, labels)
        ax.set_title(title, fontsize=10)
    axes[0].legend()
    s = results["settings"]
    fig.suptitle(
        f"Phase diversity ({s['waves']:g} waves P-V), {s['instrument']}, {s['size']}^2 x {s['frames']} frames, "
        f"screen wavefronts, mean of {len(results['cases'])} bursts",
        fontsize=11,
    )
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def summarise(cases: list) -> dict:
    """Means over the cases, per setting and method."""
    out = {}
    for label in CONFIGS:
        done = [c[label] for c in cases if label in c]
        if done:
            out[label] = {
                name: {
                    "nmse": float(np.mean([d[name]["nmse"] for d in done])),
                    "wavefront_low": float(np.mean([d[name]["wavefront_rms_rad"]["low"] for d in done])),
                    "wavefront_fitted": float(np.mean([d[name]["wavefront_rms_rad"]["fitted"] for d in done])),
                    "cases": len(done),
                }
                for name in ("focus", "diversity")
            }
    return out


def main(argv=None) -> dict:
    import torch

    from svrt.records import write_json
    from svrt.runtime.solver import load_solver_engine

    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.diversity", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=[f"{s}:{r:g}" for s, r in DEFAULT_CASES],
                   help="seed:r0 pairs (r0 in cm at 5000 A)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--waves", type=float, default=1.0, help="defocus of the diversity channel [waves P-V]")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), help="solver settings to run")
    p.add_argument("--append", action="store_true",
                   help="add the cases (or settings of a case) to those of the output JSON (same burst settings)")
    p.add_argument("-o", "--output", default="benchmarks/results/diversity.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = {"instrument": "crisp8542", "size": args.size, "frames": args.frames, "waves": args.waves,
                "wavefront": "screen", "theta0_arcsec": 2.0, "noise": 0.01,
                "solver": {label: dict(opts) for label, opts in CONFIGS.items()},
                "engine": "psf-interpolation (exact optics)"}
    out = Path(args.output)
    cases = []
    if args.append and out.exists():
        old = json.loads(out.read_text())
        if old["settings"] != settings:
            raise SystemExit(f"{out} holds cases of other settings; choose another --output.")
        cases = old["cases"]
    engine = load_solver_engine(None, backend="psf-interpolation")
    for text in args.cases:
        seed, r0 = text.split(":")
        old = [c for c in cases if (c["seed"], c["r0_cm"]) == (int(seed), float(r0))]
        cases = [c for c in cases if c not in old]
        c = dict(old[0]) if old else {}
        c.update(run_case(int(seed), float(r0), args.size, args.frames, args.waves, engine, args.configs))
        cases.append(c)
        for label in args.configs:
            f, d = c[label]["focus"], c[label]["diversity"]
            print(
                f"seed {c['seed']} r0 {c['r0_cm']:g} {label}: NMSE {f['nmse']:.4f} -> {d['nmse']:.4f}; wavefront error "
                f"KL 3-9 {f['wavefront_rms_rad']['low']:.3f} -> {d['wavefront_rms_rad']['low']:.3f} rad, fitted "
                f"{f['wavefront_rms_rad']['fitted']:.3f} -> {d['wavefront_rms_rad']['fitted']:.3f} rad",
                flush=True,
            )
    results = {"settings": settings, "machine": platform.node(), "cases": cases, "summary": summarise(cases)}
    write_json(out, results)
    png = out.with_suffix(".png")
    plot(results, png)
    print(f"wrote {out} and {png}")
    return results


if __name__ == "__main__":
    main()
