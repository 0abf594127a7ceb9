"""Uncalibrated-frames check: the fraction of the power beyond the diffraction cutoff common to all frames
(:func:`svrt.checks.fixed_pattern_fraction`) for clean simulated bursts and for the same bursts multiplied by
a synthetic flat field (pixel gain of RMS ``g`` and six 10 %-deep dust shadows) that was not divided out.

Run (a few seconds per burst)::

    python -m svrt.benchmarks.calibration_check
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GAINS = (0.0, 0.001, 0.003, 0.01, 0.03)      # RMS pixel gain of the flat left in (0: clean)


def synthetic_flat(shape, gain_rms: float, seed: int = 0, dust: int = 6) -> np.ndarray:
    """Pixel gain of RMS ``gain_rms`` and ``dust`` Gaussian shadows (10 % deep, sigma 2 px); all 1 for gain 0."""
    if gain_rms == 0:
        return np.ones(shape)
    rng = np.random.default_rng(seed)
    flat = 1 + gain_rms * rng.standard_normal(shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in rng.uniform(8, min(shape) - 8, size=(dust, 2)):
        flat *= 1 - 0.1 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
    return flat


def main(argv=None) -> dict:
    import torch

    from svrt.checks import FIXED_PATTERN_WARN, fixed_pattern_fraction
    from svrt.instruments import get_instrument
    from svrt.records import write_json
    from svrt.simulate import simulate_burst

    p = argparse.ArgumentParser(
        prog="python -m svrt.benchmarks.calibration_check", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--instruments", nargs="*", default=["crisp8542", "chromis3934"])
    p.add_argument("-o", "--output", default="benchmarks/results/calibration_check.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for label in args.instruments:
        cut = get_instrument(label).cutoff_cycles_per_pixel
        for seed in args.seeds:
            b = simulate_burst(label, size=96, n_frames=6, n_objects=1, seed=seed, r0_cm=8.0, noise=0.01,
                               progress=False, psf_size=64)
            for g in GAINS:
                c = fixed_pattern_fraction(b.frames[0] * synthetic_flat(b.shape, g, seed), cut)
                rows.append({"instrument": label, "seed": seed, "gain_rms": g, "fraction": c,
                             "warns": bool(c is not None and c > FIXED_PATTERN_WARN)})
                print(f"{label} seed {seed} flat gain {g:g}: common fraction {c:.3f}", flush=True)
    out = Path(args.output)
    write_json(out, {"threshold": FIXED_PATTERN_WARN, "noise": 0.01, "frames": 6, "rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
