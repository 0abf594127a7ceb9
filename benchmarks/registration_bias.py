"""Registration bias: the score's :func:`~svrt.registration.estimate_shift` (parabola on the pixel grid, fixed
Hann window) against :func:`~svrt.registration.estimate_shift_dft` (upsampled DFT, window that follows the
content), which ``svrt series`` co-aligns with.

Each pair is two crops of one granulation scene, the second of the scene Fourier-shifted by a random
(dy, dx) with |dy|, |dx| <= ``max_shift`` px: the crop edges are not periodic, as in a real drifting
series, and both crops get ``noise`` (relative to the scene's standard deviation) of white noise. The
error is the distance between the measured and the true shift [px].

Run (a second on one core)::

    python -m svrt.benchmarks.registration_bias             # 20 pairs of 128^2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ESTIMATORS = ("estimate_shift", "estimate_shift_dft")


def drifting_pairs(pairs: int = 20, size: int = 128, max_shift: float = 3.0, noise: float = 0.01,
                   seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    """``pairs`` x ``(moved [size, size], reference [size, size], (dy, dx))``: crops of one scene, the first
    moved by the true ``(dy, dx)`` (content position, :mod:`svrt.registration`'s convention)."""
    from svrt.scenes import make_scene

    rng = np.random.default_rng(seed)
    big = make_scene("granulation", 2 * size, 0.059, 3).astype(np.float64)
    fy = np.fft.fftfreq(big.shape[0])[:, None]
    fx = np.fft.fftfreq(big.shape[1])[None, :]
    spectrum = np.fft.fft2(big)
    lo = size // 2
    crop = (slice(lo, lo + size), slice(lo, lo + size))
    out = []
    for _ in range(pairs):
        dy, dx = rng.uniform(-max_shift, max_shift, 2)
        moved = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real
        sigma = noise * big.std()
        out.append((moved[crop] + sigma * rng.standard_normal((size, size)),
                    big[crop] + sigma * rng.standard_normal((size, size)), (float(dy), float(dx))))
    return out


def shift_errors(pairs) -> dict[str, np.ndarray]:
    """Error [px] of each estimator on each pair: ``{name: [pairs]}``."""
    from svrt import registration

    return {name: np.array([np.hypot(*(np.array(getattr(registration, name)(moved, ref)) - truth))
                            for moved, ref, truth in pairs]) for name in ESTIMATORS}


def main(argv=None) -> dict:
    import torch

    from svrt.benchmarks.gpu_check import write_json

    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.registration_bias",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("-o", "--output", default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    errors = shift_errors(drifting_pairs(args.pairs, args.size, seed=args.seed))
    summary = {name: {"median_px": float(np.median(e)), "max_px": float(np.max(e))} for name, e in errors.items()}
    summary["pairs"], summary["size"] = args.pairs, args.size
    print(json.dumps(summary, indent=1))
    if args.output:
        write_json(Path(args.output), {"summary": summary, "errors_px": {k: v.tolist() for k, v in errors.items()}})
    return summary


if __name__ == "__main__":
    main()
