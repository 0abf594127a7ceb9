"""The recipe of the PSF-basis emulator (:class:`PSFBasisTrainConfig`, ``svrt train-psf-basis``): every setting
with its default, help and range, declared once. No torch import, so ``--help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from svrt.mode_grid import N_MODES
from svrt.settings import check_declared, setting

__all__ = ["PSFBasisTrainConfig"]


@dataclass
class PSFBasisTrainConfig:
    """The recipe of a PSF-basis emulator; written into the weights' JSON metadata (``recipe``)."""

    instrument: str = setting("crisp8542", "the instrument whose optics the PSFs are (one per model)")
    n_modes: int = setting(N_MODES, "M, KL modes of the wavefronts", min=3)
    psf_size: int = setting(48, "[px] S, side of the PSFs (the exact-optics back end's)", min=8)
    work_size: int = setting(64, "[px] W >= S, side of the basis before the tilt's shift and the crop", min=8)
    n_basis: int = setting(48, "K, principal components of the centred PSFs besides their mean", min=1)
    hidden: int = setting(512, "width of the network's hidden layers", min=8)
    depth: int = setting(3, "hidden layers of the network", min=1)
    n_train: int = setting(120_000, "training wavefronts (their exact PSFs are made once, in the run folder)",
                           min=1000)
    n_val: int = setting(1000, "held-out validation wavefronts (their own seed stream)", min=10)
    val_grids: int = setting(8, "spatially variant fits per regime whose mode gradients are validated", min=1)
    steps: int = setting(12000, "optimiser steps (the cosine schedule's length)", min=1)
    batch: int = setting(512, "wavefronts per optimiser step", min=1)
    lr: float = setting(2e-3, "Adam learning rate at the top of the schedule", min=0)
    jacobian_weight: float = setting(1.0, "weight of the mode-derivative term of the loss (0: values only)", min=0)
    r0_min_cm: float = setting(5.0, "[cm] smallest Fried radius of the wavefronts, at 5000 A", min=0.5)
    r0_max_cm: float = setting(20.0, "[cm] largest Fried radius of the wavefronts, at 5000 A", min=0.5)
    checkpoint_every: int = setting(500, "steps between resumable checkpoints in the run folder", min=1)
    seed: int = setting(0, "random seed of the weights and the wavefronts", min=0)
    minutes: float | None = setting(None, "[min] wall-clock budget: training stops at whichever of steps and "
                                          "minutes comes first (none: no budget)", min=0)

    def __post_init__(self) -> None:
        check_declared(self)
        if self.work_size < self.psf_size:
            from svrt.errors import SvrtError

            raise SvrtError(f"work_size must be >= psf_size ({self.psf_size}); got {self.work_size}.")
        if self.r0_max_cm < self.r0_min_cm:
            from svrt.errors import SvrtError

            raise SvrtError(f"r0_max_cm must be >= r0_min_cm ({self.r0_min_cm}); got {self.r0_max_cm}.")
