"""The solver's settings (:class:`SolverConfig`), their validation, and the constants every part of the
solver shares: the smallest image, the tip-tilt modes, the memory rule's overheads, the grid contract
(:func:`grid_shape`, defined in :mod:`svrt.mode_grid`).

Every field of :class:`SolverConfig` is written into the restoration header under its upper-cased name,
so the settings that made a restoration travel with it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from svrt.errors import SvrtError
from svrt.mode_grid import grid_shape
from svrt.settings import check_ranges, setting

__all__ = ["SolverConfig", "grid_shape", "check_field_size", "fitted_modes", "MIN_FIT_MODES", "MIN_SIZE", "TIPTILT_MODES", "MAX_ITERATIONS", "CPU_MAX_BATCH",
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
    iterations: int = setting(30, "AdamW iterations (method adam; paper: 30)", method="adam")
    grid: int = setting(32, "[pixel] P, pixels per coarse-grid node (Yg = ceil(Y/P)); 0: one wavefront per frame "
                            "(invariant MFBD)", min=0, max=65536)
    patch_size: int = setting(64, "[pixel] side of the patch around each node in the wavefront stage (method momfbd)", min=16, max=4096, method="momfbd")
    patch_iterations: int = setting(30, "L-BFGS iterations per mode step of the patch wavefront stage (method momfbd)", method="momfbd")
    node_iterations: int | None = setting(0, "L-BFGS iterations of each node's own patch after the whole field "
                                             "(none: patch_iterations; 0: none, the SV refinement moves the nodes)", method="momfbd")
    coarse_to_fine: bool = setting(True, "start every patch from the whole field's wavefronts (method momfbd)", method="momfbd")
    fit_modes: int | None = setting(35, "fit KL 1..fit_modes in the patch stage, the rest 0 (none: all M), at most "
                                        "what the data support (data_per_mode); 35: the best single value over r0 "
                                        "7-15 cm on 128^2-256^2 fields (benchmarks/PEERS-MATRIX.md)", min=2, max=1000,
                                    method="momfbd")
    data_per_mode: float = setting(400.0, "fit at most K (L-1)/L Y X / data_per_mode modes (method momfbd): small "
                                          "fields and few frames fit fewer modes instead of fitting noise "
                                          "(fitted_modes; 0: fit_modes whatever the field)", min=0, method="momfbd")
    start_rms: float = setting(0.3, "[rad] RMS of the random start of the modes freed at each step of the patch "
                                    "stage (method momfbd; also regularises: 0.1 fits more noise, 0.6 diverges)", min=0, max=10, method="momfbd")
    object_iterations: int = setting(20, "most conjugate-gradient iterations of each object solve", method="momfbd")
    refine_rounds: int = setting(2, "rounds of (SV wavefront refinement, object solve) after the first object solve", method="momfbd")
    refine_iterations: int = setting(10, "L-BFGS iterations of each SV wavefront refinement (0: none)", method="momfbd")
    refine_above: float = setting(1.25, "refine the node wavefronts only when the first solution's chi^2 per "
                                        "pixel exceeds this (the field is anisoplanatic beyond the noise); 0: always", min=0, max=1e+06, method="momfbd")
    node_modes: int | None = setting(None, "KL modes 1..node_modes vary from node to node in the SV refinement; the "
                                           "higher ones keep the whole field's value (none: all M)", min=1, max=1000, method="momfbd")
    prior_scale: float = setting(1.0, "multiplies the Wiener prior 1/P_O (1: the minimum-mean-square-error estimate)", min=0, max=1e+06, method="momfbd")
    high_order: str = setting("none", "wavefront beyond the fitted modes: none, or kolmogorov (its mean OTF from "
                                      "the fitted r0)", choices=_HIGH_ORDERS)
    tolerance: float = setting(1e-3, "stop an object solve when J falls by less than this (relative) in an iteration", method="momfbd")
    time_budget: float | None = setting(None, "[s] stop refining once the restoration has taken this long "
                                              "(none: no limit)", max=1e+07)
    lr_objects: float = setting(10 ** -1.7, "AdamW learning rate of the objects (normalised intensity units; Fig. 9)", max=100, method="adam")
    lr_modes: float = setting(10 ** -0.5, "AdamW learning rate of the modes (radians; Fig. 9)", max=100, method="adam")
    weight_decay_objects: float = setting(0.0, "AdamW decoupled weight decay of the objects (0 keeps the photometry)", method="adam")
    weight_decay_modes: float = setting(0.01, "AdamW decoupled weight decay of the modes (torch default)", method="adam")
    lambda_obj: float = setting(1.0, "lambda_o, Tikhonov weight of <|grad o*|^2> (dimensionless; tuned on "
                                     "simulations, see docs)", min=0, max=1e+06)
    lambda_modes: float = setting(0.01, "lambda_alpha, Tikhonov weight of <|grad alpha|^2> "
                                        "(rad^-2 per node; paper 0.01)", min=0, max=1e+06)
    filter_width: float = setting(1.8, "w of Eq. 16, in units of the diffraction cutoff D/lambda", max=10)
    filter_sharpness: float = setting(20.0, "n of Eq. 16", max=10000)
    apodization: str = setting("mirror", "boundary of the Fourier filter: mirror (reflect-pad), hann (window), "
                                         "none (periodic)", choices=_APODIZATIONS)
    apodization_pixels: int = setting(16, "[pixel] mirror margin / width of the hann ramps", min=0, max=1024)
    weights: str = setting("uniform", "gamma_kl: uniform (1) or noise (inverse noise variance, mean 1)",
                           choices=_WEIGHTS)
    scaling: str = setting("object", "photometric normalisation constant: one per object or one global",
                           choices=_SCALINGS)
    tiptilt: bool = setting(True, "remove the mean tip-tilt over the frames (fixes the object's position)")
    margin: int = setting(16, "[pixel] the object extends this far beyond the field (light from outside it)", min=0, max=1024)
    global_modes: bool = setting(True, "modes = per-frame global part + per-node part (faster convergence; "
                                       "same model)", method="adam")
    lr_nodes: float | None = setting(0.1, "learning rate of the per-node part with global_modes (none: lr_modes)", max=100, method="adam")
    init_modes_std: float = setting(0.0, "[rad] std of random initial modes (0: zero modes, the paper's start)", min=0, max=10)
    max_batch: int | None = setting(None, "most (object, frame) pairs per emulator call (none: from memory_mb; "
                                          "CPU: at most 2)", min=1, max=1e+06)
    memory_mb: float | None = setting(None, "[MiB] memory bound (none: 80 % of free CUDA memory, 50 % of RAM "
                                            "on CPU)", max=1e+08)
    tile_size: int | None = setting(None, "[pixel] force overlapping tiles of this side (none: tiles only if a "
                                          "frame does not fit)", max=65536)
    tile_overlap: int = setting(32, "[pixel] overlap of neighbouring tiles (raised-cosine blend)", min=0, max=4096)
    checkpointing: str = setting("auto", "gradient checkpointing of the U-Net levels (auto: on CUDA)",
                                 choices=_CHECKPOINTINGS)
    precision: str = setting("auto", "engine precision when the solver loads it (auto: fp16 on CUDA, fp32 on CPU)",
                             choices=PRECISIONS)
    loss_scale: float | None = setting(None, "FP16 loss scale (none: automatic, 2^16 halved on overflow)")
    kernels: str = setting("auto", "svrt.kernels implementation", choices=_KERNELS)
    seed: int = setting(0, "random seed (init_modes_std)")
    progress: bool = setting(True, "tqdm progress bar on stderr")
    checkpoint: str | None = setting(None, "file the restoration's state is checkpointed to, atomically "
                                           "(svrt.runtime.checkpoint; none: no checkpoints)")
    checkpoint_every: int = setting(10, "adam: write the checkpoint every this many iterations (momfbd: after every "
                                        "stage)")
    select_frames: float | None = setting(None, "keep the sharpest frames by RMS contrast of object 0: a fraction in "
                                                "(0, 1] (1: all) or a count >= 2 (none: all); the kept frames go in the header")
    align_channels: bool = setting(False, "register channels 1..K-1 to channel 0 (shift, rotation, scale) before the "
                                          "solve, from the ALIGNk cards or the frame averages")
    strict: bool = setting(False, "a restoration whose quality verdict (runtime/quality.py) is not ok is an error: "
                                  "nothing is written, exit status 2 (default: written with its verdict and a warning)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "SolverConfig":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise SvrtError(msg)

        need(self.method in _METHODS, f"method must be one of {', '.join(_METHODS)}; got {self.method!r}.")
        need(self.high_order in _HIGH_ORDERS, f"high_order must be one of {', '.join(_HIGH_ORDERS)}; got {self.high_order!r}.")
        need(isinstance(self.iterations, int) and 1 <= self.iterations <= MAX_ITERATIONS,
             f"iterations must be an integer in 1..{MAX_ITERATIONS}; got {self.iterations!r}.")
        for name in ("patch_iterations", "object_iterations", "refine_iterations", "refine_rounds"):
            v = getattr(self, name)
            need(isinstance(v, int) and 0 <= v <= MAX_ITERATIONS, f"{name} must be an integer in 0..{MAX_ITERATIONS}; got {v!r}.")
        need(self.node_iterations is None or (isinstance(self.node_iterations, int) and 0 <= self.node_iterations <= MAX_ITERATIONS),
             f"node_iterations must be None or an integer in 0..{MAX_ITERATIONS}; got {self.node_iterations!r}.")
        need(isinstance(self.coarse_to_fine, bool), f"coarse_to_fine must be True or False; got {self.coarse_to_fine!r}.")
        need(self.fit_modes is None or (isinstance(self.fit_modes, int) and self.fit_modes >= 2),
             f"fit_modes must be None or an integer >= 2; got {self.fit_modes!r}.")
        need(self.node_modes is None or (isinstance(self.node_modes, int) and self.node_modes >= 1),
             f"node_modes must be None or an integer >= 1; got {self.node_modes!r}.")
        need(isinstance(self.patch_size, int) and self.patch_size >= 16, f"patch_size must be an integer >= 16 pixels; got {self.patch_size!r}.")
        for name in ("prior_scale", "tolerance", "refine_above", "start_rms", "data_per_mode"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{name} must be a number >= 0; got {v!r}.")
        need(self.time_budget is None or (isinstance(self.time_budget, (int, float)) and self.time_budget > 0),
             f"time_budget must be None or a positive number of seconds; got {self.time_budget!r}.")
        need(isinstance(self.grid, int) and self.grid >= 0, f"grid (P, pixels per node) must be an integer >= 0; got {self.grid!r}.")
        for name in ("lr_objects", "lr_modes"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{name} must be a positive number; got {v!r}.")
        for name in ("weight_decay_objects", "weight_decay_modes", "lambda_obj", "lambda_modes", "init_modes_std"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{name} must be a number >= 0; got {v!r}.")
        need(self.lr_nodes is None or (isinstance(self.lr_nodes, (int, float)) and math.isfinite(self.lr_nodes) and self.lr_nodes > 0),
             f"lr_nodes must be None or a positive number; got {self.lr_nodes!r}.")
        need(self.filter_width > 0 and self.filter_sharpness > 0,
             f"filter_width and filter_sharpness must be positive; got {self.filter_width!r} and {self.filter_sharpness!r}.")
        need(self.apodization in _APODIZATIONS, f"apodization must be one of {', '.join(_APODIZATIONS)}; got {self.apodization!r}.")
        need(isinstance(self.margin, int) and self.margin >= 0, f"margin must be an integer >= 0 pixels; got {self.margin!r}.")
        need(isinstance(self.apodization_pixels, int) and self.apodization_pixels >= 0,
             f"apodization_pixels must be an integer >= 0; got {self.apodization_pixels!r}.")
        need(self.weights in _WEIGHTS, f"weights must be one of {', '.join(_WEIGHTS)}; got {self.weights!r}.")
        need(self.scaling in _SCALINGS, f"scaling must be one of {', '.join(_SCALINGS)}; got {self.scaling!r}.")
        need(self.max_batch is None or (isinstance(self.max_batch, int) and self.max_batch >= 1),
             f"max_batch must be None or an integer >= 1; got {self.max_batch!r}.")
        need(self.memory_mb is None or (isinstance(self.memory_mb, (int, float)) and self.memory_mb > 0),
             f"memory_mb must be None or a positive number of MiB; got {self.memory_mb!r}.")
        need(self.tile_size is None or (isinstance(self.tile_size, int) and self.tile_size >= 2 * MIN_SIZE),
             f"tile_size must be None or an integer >= {2 * MIN_SIZE} pixels; got {self.tile_size!r}.")
        need(isinstance(self.tile_overlap, int) and self.tile_overlap >= 0,
             f"tile_overlap must be an integer >= 0 pixels; got {self.tile_overlap!r}.")
        need(self.tile_size is None or self.tile_overlap < self.tile_size // 2,
             f"tile_overlap ({self.tile_overlap}) must be less than half of tile_size ({self.tile_size}).")
        need(self.checkpointing in _CHECKPOINTINGS, f"checkpointing must be one of {', '.join(_CHECKPOINTINGS)}; got {self.checkpointing!r}.")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}.")
        need(self.loss_scale is None or (isinstance(self.loss_scale, (int, float)) and self.loss_scale > 0),
             f"loss_scale must be None or positive; got {self.loss_scale!r}.")
        need(self.checkpoint is None or (isinstance(self.checkpoint, (str, os.PathLike)) and str(self.checkpoint) != ""),
             f"checkpoint must be None or a file path; got {self.checkpoint!r}.")
        need(isinstance(self.checkpoint_every, int) and 1 <= self.checkpoint_every <= MAX_ITERATIONS,
             f"checkpoint_every must be an integer in 1..{MAX_ITERATIONS}; got {self.checkpoint_every!r}.")
        need(self.select_frames is None or (isinstance(self.select_frames, (int, float)) and not isinstance(self.select_frames, bool)
                                            and math.isfinite(self.select_frames) and self.select_frames > 0),
             f"select_frames must be None, a fraction in (0, 1] or a number of frames >= 2; got {self.select_frames!r}.")
        need(isinstance(self.align_channels, bool), f"align_channels must be True or False; got {self.align_channels!r}.")
        need(isinstance(self.strict, bool), f"strict must be True or False; got {self.strict!r}.")
        need(self.kernels in _KERNELS, f"kernels must be one of {', '.join(_KERNELS)}; got {self.kernels!r}.")
        check_ranges(self)  # the ranges each setting(...) declares, e.g. patch_size <= 4096
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def header(self) -> dict:
        """Header cards: every field, upper-cased; None is written as 'auto' ('none' for ``checkpoint``)."""
        out = {}
        for k, v in self.to_dict().items():
            out[k.upper()] = ("none" if k == "checkpoint" else "auto") if v is None else (str(v) if k == "checkpoint" else v)
        return out



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
