"""The training recipe (:class:`TrainConfig`): every setting of ``svrt train`` with its default, help and
allowed values, declared once (:func:`svrt.settings.setting`): the command line and the ``[train]``
table of a settings file are generated from it. No torch import, so ``svrt train --help`` and
``svrt config --train`` stay fast."""

from __future__ import annotations

import math
from dataclasses import dataclass

from svrt.errors import require
from svrt.instruments import default_conditioning
from svrt.mode_grid import N_MODES
from svrt.settings import setting

__all__ = ["TrainConfig", "WEAK_FRACTION", "BOUNDARIES"]

WEAK_FRACTION = 0.3     # wavefronts scaled towards the diffraction limit
BOUNDARIES = ("reflect", "apodize")  # pair targets (trainer/pairs.py)


@dataclass
class TrainConfig:
    """The recipe of a training run; written into the weights' JSON metadata (``recipe``)."""

    width: int = setting(16, "channels C of the first U-Net level (the paper: 64)")
    n_modes: int = setting(N_MODES, "M, KL modes of the wavefronts (Noll 2..M+1; the paper: 44)")
    instruments: list[str] = setting(help="instrument labels, the conditioning order (svrt instruments)",
                                     default_factory=default_conditioning)
    steps: int = setting(20000, "optimiser steps (the cosine schedule's length)")
    batch: int = setting(16, "pairs per optimiser step")
    lr_start: float = setting(3e-4, "Adam learning rate at the start of the cosine decay")
    lr_end: float = setting(6e-5, "Adam learning rate at the end of the cosine decay")
    val_size: int = setting(256, "held-out validation pairs (their own seed stream)")
    val_every: int = setting(500, "steps between validations (the best-validation weights are kept)")
    checkpoint_every: int = setting(200, "steps between resumable checkpoints in the run folder")
    seed: int = setting(0, "random seed of the weights and the pairs")
    workers: int = setting(1, "data-generation processes (0: in the training process)")
    minutes: float | None = setting(None, "[min] wall-clock budget: the cosine schedule ends with whichever of "
                                          "steps and minutes comes first, best weights kept (none: no budget)")
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...")
    normalize: bool = setting(True, "normalise the U-Net's input (svrt.emulator)")
    normalization: str = setting("centred-p8", "the input normalisation (svrt.emulator.NORMALIZATIONS)")
    residual: bool = setting(True, "the U-Net predicts a correction to its input")
    boundary: str = setting("reflect", "pair targets: convolution of the mirrored image (reflect), or the paper's "
                                       "apodise-convolve-crop (apodize)", choices=BOUNDARIES)
    weak_fraction: float = setting(WEAK_FRACTION, "fraction of wavefronts scaled towards the diffraction limit")
    init_from: str | None = setting(None, "start from these weights (a model name or file) instead of random ones "
                                          "(none: random)")
    pair_cache: str | None = setting(None, "HDF5 cache of pairs, made first if missing, then read in shuffled "
                                           "epochs (helps on GPU hosts; none: pairs made on the fly)")
    cache_pairs: int = setting(100_000, "pairs in a new pair cache")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "TrainConfig":
        """One sentence naming the setting for a value no run can use."""
        for name, low in (("width", 1), ("n_modes", 1), ("steps", 1), ("batch", 1), ("val_size", 1),
                          ("val_every", 1), ("checkpoint_every", 1), ("seed", 0), ("workers", 0), ("cache_pairs", 1)):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= low,
                    f"{name} must be an integer >= {low}; got {v!r}.")
        for name in ("lr_start", "lr_end"):
            v = getattr(self, name)
            require(_number(v) and v > 0, f"{name} must be a positive number; got {v!r}.")
        require(self.minutes is None or (_number(self.minutes) and self.minutes > 0),
                f"minutes must be none or a positive number of minutes; got {self.minutes!r}.")
        require(_number(self.weak_fraction) and 0 <= self.weak_fraction <= 1,
                f"weak_fraction must be a number in 0..1; got {self.weak_fraction!r}.")
        require(self.boundary in BOUNDARIES, f"boundary must be one of {', '.join(BOUNDARIES)}; got {self.boundary!r}.")
        require(len(self.instruments) >= 1 and all(isinstance(s, str) and s for s in self.instruments),
                f"instruments must be a list of one or more instrument labels; got {self.instruments!r}.")
        return self


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
