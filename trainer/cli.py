"""``svrt train``."""

from __future__ import annotations

import shlex
import sys

import click


@click.command("train")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output weights (.safetensors).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the resumable checkpoint (default: <out>.run).")
@click.option("--width", default=16, show_default=True, help="Channels C of the first level (the paper: 64).")
@click.option("--steps", default=20000, show_default=True, help="Optimiser steps (cosine schedule length).")
@click.option("--batch", default=16, show_default=True)
@click.option("--lr-start", default=3e-4, show_default=True)
@click.option("--lr-end", default=6e-5, show_default=True)
@click.option("--val-size", default=256, show_default=True, help="Held-out pairs.")
@click.option("--val-every", default=500, show_default=True)
@click.option("--minutes", type=float, default=None, help="Wall-clock budget: the cosine schedule ends with whichever of --steps and --minutes comes first (best weights kept).")
@click.option("--workers", default=1, show_default=True, help="Data-generation processes.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--seed", default=0, show_default=True)
@click.option("--boundary", type=click.Choice(["reflect", "apodize"]), default="reflect", show_default=True,
              help="Pair targets: convolution of the mirrored image, or the paper's apodise-convolve-crop.")
@click.option("--weak-fraction", default=0.3, show_default=True,
              help="Fraction of wavefronts scaled towards the diffraction limit.")
@click.option("--init-from", default=None, help="Start from these weights (model name or file), not random ones.")
@click.option("--pair-cache", type=click.Path(dir_okay=False), default=None,
              help="HDF5 cache of pairs, made first if missing, then read in shuffled epochs (helps on GPU hosts).")
@click.option("--cache-pairs", default=100_000, show_default=True, help="Pairs in a new --pair-cache.")
@click.option("--instruments", default="crisp6302,crisp8542,chromis3934,hifi6563", show_default=True,
              help="Comma-separated labels: the conditioning order.")
def train_command(out, run_dir, width, steps, batch, lr_start, lr_end, val_size, val_every, minutes, workers,
                  device, seed, boundary, weak_fraction, init_from, pair_cache, cache_pairs, instruments):
    """Train the spatially variant convolution emulator on spatially invariant pairs (paper Sect. 2.3).

    Resumes from the checkpoint in --run-dir if there is one. Writes the best-validation weights.

    \b
    Examples:
      svrt train -o my-c16.safetensors --width 16 --steps 20000          # a CPU model from scratch
      svrt train -o svce-c64.safetensors --width 64 --steps 100000 --batch 32 --device cuda --workers 8 \\
          --pair-cache pairs.h5 --cache-pairs 200000                     # the paper-size model on a GPU
      svrt train -o better.safetensors --init-from svce-c16 --minutes 120   # continue from the shipped weights
    """
    from svrt.trainer.train import TrainConfig, train
    from svrt.instruments import get_instrument

    labels = [get_instrument(s.strip()).label for s in instruments.split(",") if s.strip()]
    cfg = TrainConfig(width=width, steps=steps, batch=batch, lr_start=lr_start, lr_end=lr_end, val_size=val_size,
                      val_every=val_every, minutes=minutes, workers=workers, device=device, seed=seed,
                      instruments=labels, boundary=boundary, weak_fraction=weak_fraction, init_from=init_from,
                      pair_cache=pair_cache, cache_pairs=cache_pairs)
    command = "svrt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    train(cfg, out, run_dir or f"{out}.run", command=command, log=click.echo)
