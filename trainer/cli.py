"""``svrt train``: its options are generated from :class:`~svrt.trainer.train_config.TrainConfig` (one
option per setting, the same defaults), and ``--config FILE`` reads the ``[train]`` table of a settings
file (:mod:`svrt.settings_cli`)."""

from __future__ import annotations

import shlex
import sys

import click

from svrt.settings_cli import config_file_option, resolve, setting_options, with_options
from svrt.trainer.psf_basis_config import PSFBasisTrainConfig
from svrt.trainer.train_config import TrainConfig


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output weights (.safetensors).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the resumable checkpoint (default: <out>.run).")
@config_file_option("train")
@with_options(setting_options(TrainConfig))
def train_command(out, run_dir, config_file, **train_kw):
    """Train the spatially variant convolution emulator on spatially invariant pairs (paper Sect. 2.3).

    Resumes from the checkpoint in --run-dir if there is one. Writes the best-validation weights.

    \b
    Examples:
      svrt train -o my-c16.safetensors --width 16 --steps 20000          # a CPU model from scratch
      svrt train -o svce-c64.safetensors --width 64 --steps 100000 --batch 32 --device cuda --workers 8 \\
          --pair-cache pairs.h5 --cache-pairs 200000                     # the paper-size model on a GPU
      svrt train -o better.safetensors --init-from svce-c16 --minutes 120   # continue from the shipped weights
      svrt config --train > train.toml; svrt train -o my.safetensors --config train.toml
    """
    import dataclasses

    from svrt.instruments import get_instrument

    cfg = resolve("train", train_kw, config_file)
    cfg = dataclasses.replace(cfg, instruments=[get_instrument(s).label for s in cfg.instruments])
    from svrt.trainer.train import train

    command = "svrt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    train(cfg, out, run_dir or f"{out}.run", command=command, log=click.echo)


@click.command("train-psf-basis", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output weights (.safetensors).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the training set and the resumable checkpoint (default: <out>.run).")
@with_options(setting_options(PSFBasisTrainConfig))
def train_psf_basis_command(out, run_dir, **kw):
    """Train a PSF-basis emulator (svrt.psf_emulator): exact centred PSFs of wavefronts in the solver's regime,
    their principal components, and a network from the KL coefficients to the components' weights and their
    derivatives. Resumes from --run-dir. Validates against exact optics and records it in the metadata.

    \b
    Examples:
      svrt train-psf-basis -o psfb-crisp8542.safetensors                  # the shipped recipe (CPU)
      svrt train-psf-basis -o quick.safetensors --n-train 5000 --steps 500 --hidden 64
    """
    from svrt.trainer.psf_basis import train_psf_basis

    cfg = PSFBasisTrainConfig(**{k: v for k, v in kw.items() if v is not None or k == "minutes"})
    command = "svrt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = train_psf_basis(cfg, out, run_dir or f"{out}.run", command=command, log=click.echo)
    for regime, v in meta["validation"].items():
        click.echo(f"{regime}: PSF error {v['psf_relative_error_median']:.1e} (p95 {v['psf_relative_error_p95']:.1e}), "
                   f"NMSE_power {v['nmse_power_median']:.1e} (p95 {v['nmse_power_p95']:.1e}), gradient cosine "
                   f"min {v['gradient_cosine_min']:.4f}")
