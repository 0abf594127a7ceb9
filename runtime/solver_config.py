"""The solver's settings (:class:`SolverConfig`), their validation, and the constants every part of the
solver shares: the smallest image, the tip-tilt modes, the memory rule's overheads, the grid contract
(:func:`grid_shape`, defined in :mod:`svrt.mode_grid`).

Every field of :class:`SolverConfig` is written into the restoration header under its upper-cased name,
so the settings that made a restoration travel with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from svrt.errors import SvrtError
from svrt.mode_grid import grid_shape
from svrt.settings import check_declared, setting

__all__ = ["SolverConfig", "solver_default", "grid_shape", "check_field_size", "fitted_modes", "whole_field_tiles", "MIN_FIT_MODES", "MIN_SIZE", "TIPTILT_MODES", "MAX_ITERATIONS", "CPU_MAX_BATCH",
           "RUNTIME_OVERHEAD_MB", "PRECISIONS"]

MIN_SIZE = 16               # smallest image side the solver accepts (one emulator block)
TIPTILT_MODES = (0, 1)      # KL modes 1 and 2 (0-based): tip and tilt
MIN_FIT_MODES = 5           # the first two radial orders (tip-tilt; defocus and astigmatism): fewer is refused
_WEIGHTS = ("uniform", "noise")
_SCALINGS = ("object", "global")
_APODIZATIONS = ("mirror", "hann", "none")
PRECISIONS = ("auto", "fp32", "fp16")  # engine precision when the solver loads it
_METHODS = ("momfbd", "adam")
_HIGH_ORDERS = ("kolmogorov", "none")
_WAVEFRONT_OPTIMIZERS = ("nesterov", "lbfgs")
_CHECKPOINTINGS = ("auto", "on", "off")
_KERNELS = ("auto", "torch", "triton")
MAX_ITERATIONS = 100_000    # beyond this a setting is a typo, not a restoration
CPU_MAX_BATCH = 2           # on CPU small batches are fastest (256^2: 2.4 s/iteration at B = 1-2, 4.0 s at B = 24)
RUNTIME_OVERHEAD_MB = 64.0  # kept out of the memory bound for the runtime's own workspaces (oneDNN/cuDNN, allocator)


@dataclass
class SolverConfig:
    """Every hyper-parameter of SV-MOMFBD, with its default and unit. Written into the restoration
    header under the upper-cased field name (``lr_objects`` -> ``LR_OBJECTS``)."""

    method: str = setting("momfbd", "momfbd: patch wavefronts, Wiener objects, SV refinement; adam: the paper's "
                                    "joint AdamW on objects and modes", choices=_METHODS)
    iterations: int = setting(30, "AdamW iterations (method adam; paper: 30)", min=1, max=MAX_ITERATIONS, method="adam")
    grid: int = setting(32, "[pixel] P, pixels per coarse-grid node (Yg = ceil(Y/P)); 0: one wavefront per frame "
                            "(invariant MFBD)", min=0, max=65536)
    patch_size: int = setting(64, "[pixel] side of the patch around each node in the wavefront stage (method momfbd)",
                              min=16, max=4096, method="momfbd")
    whole_field_tile: int = setting(256, "[pixel] the whole-field wavefront fit sees a field with a side longer than "
                                         "this as tiles of this side that share each frame's wavefront, so it costs "
                                         "the same per pixel at every size (0: one patch, the largest centred "
                                         "square)", min=0, max=65536, method="momfbd")
    patch_iterations: int = setting(30, "iterations per mode step of the patch wavefront stage (method momfbd; "
                                        "nesterov takes 2 gradient steps per iteration, lbfgs 1 L-BFGS iteration)",
                                    min=0, max=MAX_ITERATIONS, method="momfbd")
    wavefront_optimizer: str = setting("nesterov", "optimizer of the wavefront fits, patch stage and SV refinement: "
                                                   "nesterov (fixed steps from the measured curvature: the result is "
                                                   "a continuous function of the data) or lbfgs (its line search "
                                                   "follows rounding, docs/QUALITY.md)",
                                       choices=_WAVEFRONT_OPTIMIZERS, method="momfbd")
    node_iterations: int | None = setting(0, "iterations of each node's own patch after the whole field "
                                             "(none: patch_iterations; 0: none, the SV refinement moves the nodes)",
                                          min=0, max=MAX_ITERATIONS, method="momfbd")
    coarse_to_fine: bool = setting(True, "start every patch from the whole field's wavefronts (method momfbd)", method="momfbd")
    fit_modes: int | None = setting(35, "fit KL 1..fit_modes in the patch stage, the rest 0 (none: all M), at most "
                                        "what the data support (data_per_mode); 35: the best single value over r0 "
                                        "7-15 cm on 128^2-256^2 fields (benchmarks/PEERS-MATRIX.md)", min=2, max=1000,
                                    method="momfbd")
    data_per_mode: float = setting(400.0, "fit at most K (L-1)/L Y X / data_per_mode modes (method momfbd): small "
                                          "fields and few frames fit fewer modes instead of fitting noise "
                                          "(fitted_modes; 0: fit_modes whatever the field)", min=0, method="momfbd")
    # 0.3 rad also regularises: the marginal likelihood keeps falling as the fit follows the noise, and from 0.3 rad
    # the 30 L-BFGS steps of a mode step end nearer the truth than from 0.1 (NMSE 0.024-0.072 vs 0.036-0.083 on 5 of
    # 5 128^2 bursts; 0.6 rad diverges)
    start_rms: float = setting(0.3, "[rad] RMS of the random start of the modes freed at each step of the patch "
                                    "stage (method momfbd; also regularises: 0.1 fits more noise, 0.6 diverges)",
                               min=0, max=10, method="momfbd")
    mode_prior: float = setting(1.0, "weight of the Kolmogorov prior on the modes the patch stage has fitted: "
                                     "sum alpha_j^2 / (c_j s), s = (D/r0)^(5/3) measured on each radial-order "
                                     "step's modes (method momfbd; 1: the Bayesian weight, MAP; 0: none, the "
                                     "marginal likelihood alone; docs/QUALITY.md, Rounding)", min=0, max=1e+06,
                                method="momfbd")
    object_iterations: int = setting(20, "most conjugate-gradient iterations of each object solve", min=0,
                                     max=MAX_ITERATIONS, method="momfbd")
    refine_rounds: int = setting(2, "rounds of (SV wavefront refinement, object solve) after the first object solve",
                                 min=0, max=MAX_ITERATIONS, method="momfbd")
    refine_iterations: int = setting(10, "iterations of each SV wavefront refinement (0: none; nesterov: 2 "
                                         "gradient steps each)", min=0,
                                     max=MAX_ITERATIONS, method="momfbd")
    refine_above: float = setting(1.25, "refine the node wavefronts only when the first solution's chi^2 per "
                                        "pixel exceeds this (the field is anisoplanatic beyond the noise); 0: always",
                                  min=0, max=1e+06, method="momfbd")
    node_modes: int | None = setting(None, "KL modes 1..node_modes vary from node to node in the SV refinement; the "
                                           "higher ones keep the whole field's value (none: all M)", min=1, max=1000,
                                     method="momfbd")
    prior_scale: float = setting(1.0, "multiplies the Wiener prior 1/P_O (1: the minimum-mean-square-error estimate)",
                                 min=0, max=1e+06, method="momfbd")
    high_order: str = setting("none", "wavefront beyond the fitted modes: none, or kolmogorov (its mean OTF from "
                                      "the fitted r0)", choices=_HIGH_ORDERS)
    tolerance: float = setting(1e-3, "stop an object solve when J falls by less than this (relative) in an iteration",
                               min=0, method="momfbd")
    time_budget: float | None = setting(None, "[s] stop once the restoration has taken this long: momfbd's object "
                                              "solves and refinement rounds, adam's steps (none: no limit)",
                                        above=0, max=1e+07)
    lr_objects: float = setting(10 ** -1.7, "AdamW learning rate of the objects (normalised intensity units; Fig. 9)",
                                above=0, max=100, method="adam")
    lr_modes: float = setting(10 ** -0.5, "AdamW learning rate of the modes (radians; Fig. 9)", above=0, max=100,
                              method="adam")
    weight_decay_objects: float = setting(0.0, "AdamW decoupled weight decay of the objects (0 keeps the photometry)",
                                          min=0, method="adam")
    weight_decay_modes: float = setting(0.01, "AdamW decoupled weight decay of the modes (torch default)", min=0,
                                        method="adam")
    lambda_obj: float = setting(1.0, "lambda_o, Tikhonov weight of <|grad o*|^2> (dimensionless; tuned on "
                                     "simulations, see docs)", min=0, max=1e+06)
    lambda_modes: float = setting(0.01, "lambda_alpha, Tikhonov weight of <|grad alpha|^2> "
                                        "(rad^-2 per node; paper 0.01)", min=0, max=1e+06)
    filter_width: float = setting(1.8, "w of Eq. 16, in units of the diffraction cutoff D/lambda", above=0, max=10)
    filter_sharpness: float = setting(20.0, "n of Eq. 16", above=0, max=10000)
    apodization: str = setting("mirror", "boundary of the Fourier filter: mirror (reflect-pad), hann (window), "
                                         "none (periodic)", choices=_APODIZATIONS)
    apodization_pixels: int = setting(16, "[pixel] mirror margin / width of the hann ramps", min=0, max=1024)
    weights: str = setting("uniform", "gamma_kl: uniform (1) or noise (inverse noise variance, mean 1)",
                           choices=_WEIGHTS)
    scaling: str = setting("object", "photometric normalisation constant: one per object or one global",
                           choices=_SCALINGS)
    tiptilt: bool = setting(True, "remove the mean tip-tilt over the frames (fixes the object's position)")
    margin: int = setting(16, "[pixel] the object extends this far beyond the field (light from outside it)", min=0,
                          max=1024)
    global_modes: bool = setting(True, "modes = per-frame global part + per-node part (faster convergence; "
                                       "same model)", method="adam")
    lr_nodes: float | None = setting(0.1, "learning rate of the per-node part with global_modes (none: lr_modes)",
                                     above=0, max=100, method="adam")
    init_modes_std: float = setting(0.0, "[rad] std of random initial modes (0: zero modes, the paper's start)", min=0,
                                    max=10)
    max_batch: int | None = setting(None, "most (object, frame) pairs per emulator call (none: from memory_mb; "
                                          "CPU: at most 2)", min=1, max=1e+06, group="resources")
    memory_mb: float | None = setting(None, "[MiB] memory bound (none: 80 % of free CUDA memory, 50 % of RAM "
                                            "on CPU)", above=0, max=1e+08, group="resources")
    tile_size: int | None = setting(None, "[pixel] force overlapping tiles of this side (none: tiles only if a "
                                          "frame does not fit)", min=2 * MIN_SIZE, max=65536, group="resources")
    tile_overlap: int = setting(32, "[pixel] overlap of neighbouring tiles (raised-cosine blend)", min=0, max=4096,
                                group="resources")
    checkpointing: str = setting("auto", "gradient checkpointing of the U-Net levels (auto: on CUDA)",
                                 choices=_CHECKPOINTINGS, group="resources")
    precision: str = setting("auto", "engine precision when the solver loads it (auto: fp16 on CUDA, fp32 on CPU)",
                             choices=PRECISIONS, group="resources")
    loss_scale: float | None = setting(None, "FP16 loss scale (none: automatic, 2^16 halved on overflow)", above=0,
                                       group="resources")
    kernels: str = setting("auto", "svrt.kernels implementation", choices=_KERNELS, group="resources")
    seed: int = setting(0, "random seed (init_modes_std)")
    progress: bool = setting(True, "tqdm progress bar on stderr")
    checkpoint: str | None = setting(None, "file the restoration's state is checkpointed to, atomically "
                                           "(svrt.runtime.checkpoint; none: no checkpoints)", group="resources")
    checkpoint_every: int = setting(10, "adam: write the checkpoint every this many iterations (momfbd: after every "
                                        "stage)", min=1, max=MAX_ITERATIONS, group="resources")
    select_frames: float | None = setting(None, "keep the sharpest frames by RMS contrast of object 0: a fraction in "
                                                "(0, 1] (1: all) or a count >= 2 (none: all); the kept frames go in "
                                                "the header", above=0)
    align_channels: bool = setting(False, "register channels 1..K-1 to channel 0 (shift, rotation, scale) before the "
                                          "solve, from the ALIGNk cards or the frame averages")
    strict: bool = setting(False, "a restoration whose quality verdict (runtime/quality.py) is not ok is an error: "
                                  "nothing is written, exit status 2 (default: written with its verdict and a warning)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "SolverConfig":
        """Check every setting: its type, choices and range as its :func:`~svrt.settings.setting` declares them
        (:func:`~svrt.settings.check_declared`), then the rules that tie settings together. One SvrtError
        sentence naming the setting."""
        check_declared(self)
        if self.tile_size is not None and self.tile_overlap >= self.tile_size // 2:
            raise SvrtError(f"tile_overlap ({self.tile_overlap}) must be less than half of tile_size ({self.tile_size}).")
        if self.checkpoint is not None and str(self.checkpoint) == "":
            raise SvrtError(f"checkpoint must be None or a file path; got {self.checkpoint!r}.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def header(self) -> dict:
        """Header cards: every field, upper-cased; None is written as 'auto' ('none' for ``checkpoint``)."""
        out = {}
        for k, v in self.to_dict().items():
            out[k.upper()] = ("none" if k == "checkpoint" else "auto") if v is None else (str(v) if k == "checkpoint" else v)
        return out



def solver_default(name: str):
    """The declared default of the setting ``name`` (:class:`SolverConfig`): the default of an inner function
    (the patch stage's iterations, the object solve's tolerance) that the settings also set, so that a call
    without the argument does what a solve with the default settings does."""
    return SolverConfig.__dataclass_fields__[name].default


def check_field_size(y: int, x: int) -> None:
    """Refuse frames of ``Y x X`` pixels smaller than :data:`MIN_SIZE` on a side, in one sentence."""
    if y < MIN_SIZE or x < MIN_SIZE:
        raise SvrtError(f"frames of {y}x{x} pixels are too small; SV-MOMFBD needs at least {MIN_SIZE}x{MIN_SIZE}.")


def fitted_modes(config: SolverConfig, shape: tuple[int, int, int, int], n_modes: int) -> int:
    """The KL modes the wavefront stage of method momfbd fits for frames of ``shape`` = (K, L, Y, X): the
    defaults adapt to the field here, in one place.

    Each frame's wavefront is fitted to the K Y X pixels of that frame, but one frame's worth of data per
    object goes to the object itself (object-eliminated MFBD: L frames constrain L - 1 independent
    wavefront contrasts), so ``K (L - 1) / L Y X`` data constrain the fitted modes of every frame. With
    too few data per mode the high modes fit noise as aberrations: the MTF comes out too low and the object
    over-restored (the 64^2 x 4-frame x 2-object default fitted 35 modes and gave NMSE_var 1.68 / 2.19 against
    the frame average's 0.55 / 0.77; 14 modes gave 0.07 / 0.18, 15 modes 0.30 / 0.47; docs/QUALITY.md). The cap
    is rounded down to a complete radial order (2, 5, 9, 14, 20, 27, 35, 44 modes: the steps in which the patch
    stage frees them; a partial order is an arbitrary choice among modes of equal variance, and 15 modes did
    4x worse than 14 above). ``data_per_mode = 400`` keeps the configurations the peer matrix validated at 35
    modes (128^2 x 8 frames x 1 object: 14336 data, 35; at 600 they fitted 20-23 and the r0 = 7 cm bursts
    lost up to 24 %) and fits 14 on 64^2 x 4 x 2, 5 on 64^2 x 4 x 1.

    Returns min(fit_modes or M, the largest complete radial order <= K (L-1)/L Y X / data_per_mode);
    ``data_per_mode = 0`` or one frame: ``fit_modes`` as set. SvrtError (one sentence naming the options)
    when the field supports fewer than :data:`MIN_FIT_MODES`."""
    k, n_frames, y, x = shape
    top = n_modes if config.fit_modes is None else min(int(config.fit_modes), n_modes)
    if config.data_per_mode <= 0 or n_frames < 2:
        return top
    supported = int(k * (n_frames - 1) / n_frames * y * x // config.data_per_mode)
    order = 1
    while (order + 1) * (order + 4) // 2 <= supported:     # n (n + 3) / 2 modes end radial order n (no piston)
        order += 1
    if supported < top:
        supported = order * (order + 3) // 2
    if supported < MIN_FIT_MODES:
        raise SvrtError(f"a {y}x{x} field of {n_frames} frames and {k} object(s) supports only {supported} fitted "
                        f"wavefront mode(s) at data_per_mode {config.data_per_mode:g}, too few to restore safely; "
                        "use more frames or a larger field, or set --data-per-mode 0 to fit --fit-modes anyway.")
    return min(top, supported)


def whole_field_tiles(config: SolverConfig, shape: tuple[int, int]) -> tuple[int, int]:
    """``(Yt, Xt)``: the tiles of the whole-field wavefront fit of a ``shape = (Y, X)`` field: ``(1, 1)``, one
    patch (the largest centred square), when ``whole_field_tile`` is 0 or no side is longer than it; otherwise
    enough tiles of that side to cover the field (their wavefront shared, :func:`~svrt.runtime.patch_mfbd.
    patch_wavefronts` with ``shared``). One patch as large as the field costs more per pixel as the field grows
    (its PSFs and OTFs at the field's side: one evaluation 1.6x that of 256^2 per pixel at 1024^2), tiles the
    same or less (the OTFs made once per frame for all tiles: 0.14x); docs/COST.md."""
    tile = int(config.whole_field_tile or 0)
    if 0 < tile < MIN_SIZE:
        raise SvrtError(f"whole_field_tile = {tile} is smaller than the smallest patch ({MIN_SIZE} pixels); use 0 "
                        f"(one patch for the whole field) or at least {MIN_SIZE}.")
    y, x = shape
    if tile == 0 or max(y, x) <= tile:
        return (1, 1)
    return (-(-y // tile), -(-x // tile))
