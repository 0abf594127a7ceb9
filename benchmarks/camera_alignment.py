"""Camera-alignment benchmark: random known misalignments of a seeing-blurred granulation field (the frame
average of a channel), recovered by :func:`svrt.runtime.camera_alignment.estimate_alignment`.

Each trial draws a shift (|dy|, |dx| <= 5 px), a rotation (|t| <= 2 deg) and a scale (0.98-1.02), makes the
second channel by resampling the scene through the inverse transform (so that channel(q(p)) = reference(p)),
adds 1 % noise to both 128^2 images and reports the errors and the worst displacement over the inner field
(|d error| + R |t error| + R |s error|, R = the half-side of the inner field).

Run (a few seconds per trial)::

    python -m svrt.benchmarks.camera_alignment              # 10 trials
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def trial(seed: int, size: int = 128, noise: float = 0.01) -> dict:
    from svrt.runtime.camera_alignment import Alignment, apply_alignment, estimate_alignment
    from svrt.scenes import make_objects

    rng = np.random.default_rng(seed)
    big = make_objects("granulation", 1, (size + 64, size + 64), 0.059, seed)[0]
    y, x = big.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(y), np.fft.fftfreq(x), indexing="ij")
    big = np.fft.ifft2(np.fft.fft2(big) * np.exp(-2 * (np.pi * 1.5) ** 2 * (fx ** 2 + fy ** 2))).real
    truth = Alignment(rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-2, 2), rng.uniform(0.98, 1.02))
    crop = (slice(32, 32 + size), slice(32, 32 + size))
    ref = big[crop] + noise * big.std() * rng.standard_normal((size, size))
    img = apply_alignment(big, truth.inverse()).numpy()[crop] + noise * big.std() * rng.standard_normal((size, size))
    got = estimate_alignment(img, ref)
    r = size * (0.5 - 1 / 8)
    err = {"dy": got.dy - truth.dy, "dx": got.dx - truth.dx, "rotation_deg": got.rotation_deg - truth.rotation_deg,
           "scale": got.scale - truth.scale}
    worst = math.hypot(err["dy"], err["dx"]) + r * abs(math.radians(err["rotation_deg"])) + r * abs(err["scale"])
    return {"seed": seed, "truth": truth.card(), "estimate": got.card(), "error": err, "worst_displacement_px": worst}


def main(argv=None) -> dict:
    import torch

    from svrt.records import write_json

    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.camera_alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("-o", "--output", default="benchmarks/results/camera_alignment.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    trials = [trial(seed) for seed in range(args.trials)]
    summary = {"max_shift_error_px": max(math.hypot(t["error"]["dy"], t["error"]["dx"]) for t in trials),
               "max_rotation_error_deg": max(abs(t["error"]["rotation_deg"]) for t in trials),
               "max_scale_error": max(abs(t["error"]["scale"]) for t in trials),
               "max_worst_displacement_px": max(t["worst_displacement_px"] for t in trials)}
    print(json.dumps(summary, indent=1))
    out = Path(args.output)
    write_json(out, {"summary": summary, "trials": trials})
    return summary


if __name__ == "__main__":
    main()
