"""SV-MOMFBD: spatially variant multi-object multi-frame blind deconvolution (paper Sect. 3, Eqs. 13-17).

Two methods share the problem set-up below (photometry, tip-tilt, masks, margins, several instruments):

* ``method="momfbd"`` (the default), in three stages, each a well-posed problem:

  1. wavefronts at the nodes of the grid from an object-eliminated MOMFBD of the patch around each node
     (:mod:`svrt.runtime.patch_mfbd`: the log marginal likelihood of the wavefronts, L-BFGS, modes freed by
     radial order up to ``fit_modes``; fitting more modes than the noise supports over-restores);
  2. the whole-field objects given those wavefronts with the spatially variant forward model of the
     engine (per-pixel wavefronts, no mosaic), by Wiener-preconditioned conjugate gradients
     (:mod:`svrt.runtime.object_solve`) under the Wiener prior ``1 / P_O`` fitted to the burst
     (:mod:`svrt.runtime.object_prior`): the regularisation follows the noise, no hand-tuned lambda_o;
     it stops when the loss falls by less than ``tolerance`` per iteration or at ``time_budget``;
  3. optionally (``refine_rounds``) rounds of SV wavefront refinement with the objects fixed and
     object solves.

  With no engine named, it uses exact optics (``psf-interpolation``), which restored better than the
  shipped width-16 emulator on every burst measured (:func:`default_backend`).

* ``method="adam"``: the paper's joint AdamW on objects and modes for ``iterations`` steps, the loss
  below; the emulator is its default forward model.

Unknowns: the objects ``o_k [K, Y, X]`` and the KL wavefront coefficients ``alpha_l [L, M, Yg, Xg]``
on a coarse grid, upsampled bilinearly to every pixel (:func:`svrt.kernels.upsample_modes`). The
forward model is the emulator behind an :class:`svrt.runtime.engine.Engine` (any back end), so every
term below is differentiated by torch autograd. The loss (Eq. 17) is ::

    L = sum_{k,l} < gamma_kl w_klxy (i_kl - f(o*_k, s_k alpha_l))^2 >_xy       (data)
        + lambda_o     sum_k < |grad o*_k|^2 >_xy                                (reg_object)
        + lambda_alpha sum_l sum_m < |grad alpha_lm|^2 >_nodes                   (reg_modes)

with ``< >`` a mean over pixels (or grid nodes), so the lambdas do not depend on the image size,
while the data term grows with the number of frames as in Eq. 17. ``o* = F^-1(H F(o))`` is the object
through the erf filter H of Eq. 16 (``filter_width`` w, ``filter_sharpness`` n, nu in units of the
object's diffraction cutoff); ``grad`` are forward differences (no wrap-around); ``w_klxy`` is 0 on
masked pixels and 1 elsewhere; ``gamma_kl`` is 1 (``weights="uniform"``) or the inverse noise
variance of frame (k, l) estimated beyond the diffraction cutoff, normalised to a mean of 1
(``weights="noise"``). The restoration written to files is ``o*`` (the filtered object).

Conventions and the degeneracies the solver handles:

* **Grid.** ``grid`` = P pixels per node: ``Yg = ceil(Y / P)``, ``Xg = ceil(X / P)``; node (i, j) sits
  at pixel ``((i + 0.5) Y / Yg - 0.5, (j + 0.5) X / Xg - 0.5)`` (bilinear, ``align_corners=False``).
  ``grid = 0`` (or P >= max(Y, X)) gives a 1 x 1 grid: one wavefront per frame, the spatially
  invariant MFBD, the baseline.
* **Photometry.** Object k's frames are divided by one constant ``c_k`` (the mean of |valid pixels|,
  ``scaling="object"``; or one constant for all objects, ``scaling="global"``) before solving and the
  results multiplied back, so the objects and the model come out in the input's units. The emulator
  is scale-equivariant (``f(c o) = c f(o)``: it divides by the object's mean |o| internally) and the
  erf filter has ``H(0) = 1``, so this changes nothing but the conditioning of the optimisation.
  ``scaling="object"`` is equivalent to ``gamma_kl ~ 1 / c_k^2``: every object's data term is relative.
* **Tip-tilt.** Shifting the object and every frame's tip-tilt by the same amount leaves the data
  unchanged. The solver removes the mean over the frames of the tip and tilt coefficients (KL modes 1
  and 2, indices ``tiptilt_modes``) at every grid node: the modes enter the model through
  ``alpha - mean_l(alpha)`` on those indices (so the gradient is projected) and the parameters are
  re-centred after each step. The object therefore sits at the mean position of the frames, like the
  frame average. With one frame the tip-tilt is zero.
* **Several instruments.** Objects observed simultaneously share the wavefront, i.e. the optical path
  difference. Coefficients are radians of phase at the wavelength of object 0 (the reference,
  header ``MODES_WAVELNTH``); object k sees ``alpha * lambda_0 / lambda_k``. All objects must have
  the same pixel scale. Each object may have its own engine (a mapping instrument -> engine) or share
  one conditioned engine.
* **Masked pixels** (``mask`` False, or ``Burst.mask``): weight 0 in the data term and filled with the
  mean of the valid frames at that pixel (the object mean where no frame is valid), so their values
  never influence the result.
* **Field edges.** The frames hold light from outside the field. The unknown object therefore extends
  ``margin`` pixels beyond the field on every side (initialised by mirroring the frame average, its
  per-pixel modes those of the nearest field pixel); the emulated frames are cropped to the field
  before the comparison, and the restoration is the field part of o*. Without it (``margin=0``) the
  object absorbs the mismatch at the edges as ringing.
* **Two-scale modes** (``global_modes``): ``alpha_l(node) = g_l + a_l(node)``, a wavefront common to
  the frame plus a per-node part, with learning rates ``lr_modes`` (g, the paper's 10^-0.5) and
  ``lr_nodes`` (a). The model is the same (the sum is what the emulator sees and what is written);
  only the optimisation is better conditioned: Adam moves every parameter by about its learning rate per
  step whatever the size of its gradient, so per-node parameters alone jitter from node to node, while
  g follows the gradient of the whole field.

Defaults (``SolverConfig``) were chosen on simulated CRISP 8542 bursts (``svrt.simulate``, r0 = 10 cm at
5000 A, theta0 = 2", 1 % noise) with the trained ``svce-c16``: the paper's learning rates, lambda_alpha =
0.01, and lambda_o = 1 rather than the paper's 0.1 because our norms are means over pixels and the
frames are normalised to a mean of 1 (the paper does not state either).

Scale: the K x L emulator calls are batched (``max_batch`` frames per call, or as many as the memory
bound ``memory_mb`` allows) and gradients accumulated batch by batch, so the memory does not grow with
L. On CUDA: gradient checkpointing of the U-Net levels (``checkpointing``), FP16 (through the engine's
precision: ``load_solver_engine(..., precision="fp16")``) with a dynamic loss scale. When even one
frame of the field does not fit the bound, the field is solved in overlapping tiles blended with
raised-cosine weights (``tile_size``, ``tile_overlap``).

Python API::

    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    engine = load_solver_engine("svce-c16", device="cpu")
    solver = SVMOMFBD(engine, SolverConfig(iterations=30, grid=8))
    for burst in bursts:                       # the engine and buffers are reused
        result = solver.solve(burst)
        write_restoration(path, result.to_restoration(burst.header))
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.instruments import get_instrument

__all__ = ["SolverConfig", "SVMOMFBD", "SolveResult", "Plan", "load_solver_engine", "default_backend", "grid_shape",
           "MIN_SIZE", "TIPTILT_MODES"]

MIN_SIZE = 16               # smallest image side the solver accepts (one emulator block)
TIPTILT_MODES = (0, 1)      # KL modes 1 and 2 (0-based): tip and tilt
_WEIGHTS = ("uniform", "noise")
_SCALINGS = ("object", "global")
_APODIZATIONS = ("mirror", "hann", "none")
_PRECISIONS = ("auto", "fp32", "fp16")
_METHODS = ("momfbd", "adam")
_HIGH_ORDERS = ("kolmogorov", "none")
MAX_ITERATIONS = 100_000    # beyond this a setting is a typo, not a restoration
CPU_MAX_BATCH = 2           # on CPU small batches are fastest (256^2: 2.4 s/iteration at B = 1-2, 4.0 s at B = 24)
RUNTIME_OVERHEAD_MB = 64.0  # kept out of the memory bound for the runtime's own workspaces (oneDNN/cuDNN, allocator)


@dataclass
class SolverConfig:
    """Every hyper-parameter of SV-MOMFBD, with its default and unit. Written into the restoration
    header under the upper-cased field name (``lr_objects`` -> ``LR_OBJECTS``)."""

    method: str = "momfbd"               # momfbd: patch wavefronts, Wiener objects, SV refinement; adam: the paper's joint AdamW
    iterations: int = 30                 # AdamW iterations (method adam; paper: 30)
    grid: int = 32                       # P, pixels per coarse-grid node; 0: one wavefront per frame (invariant MFBD)
    patch_size: int = 64                 # [pixel] side of the patch around each node in the wavefront stage (method momfbd)
    patch_iterations: int = 30           # L-BFGS iterations per mode step of the patch wavefront stage
    node_iterations: int | None = 0      # L-BFGS iterations of each node's own patch after the whole field (None: patch_iterations; 0: none, the SV refinement moves the nodes)
    coarse_to_fine: bool = True          # start every patch from the whole field's wavefronts (method momfbd)
    fit_modes: int | None = 20           # fit KL 1..fit_modes in the patch stage, the rest 0 (None: all M); more modes fit the noise
    object_iterations: int = 40          # most conjugate-gradient iterations of each object solve
    refine_rounds: int = 2               # rounds of (SV wavefront refinement, object solve) after the first object solve
    refine_iterations: int = 10          # L-BFGS iterations of each SV wavefront refinement (0: none)
    prior_scale: float = 1.0             # multiplies the Wiener prior 1/P_O (1: the minimum-mean-square-error estimate)
    high_order: str = "none"             # wavefront beyond the fitted modes: none, or kolmogorov (its mean OTF from the fitted r0)
    tolerance: float = 1e-4              # stop an object solve when J falls by less than this (relative) in an iteration
    time_budget: float | None = None     # [s] stop refining once the restoration has taken this long (None: no limit)
    lr_objects: float = 10 ** -1.7       # AdamW learning rate of the objects (normalised intensity units; Fig. 9)
    lr_modes: float = 10 ** -0.5         # AdamW learning rate of the modes (radians; Fig. 9)
    weight_decay_objects: float = 0.0    # AdamW decoupled weight decay of the objects (0 keeps the photometry)
    weight_decay_modes: float = 0.01     # AdamW decoupled weight decay of the modes (torch default)
    lambda_obj: float = 1.0              # lambda_o, Tikhonov weight of <|grad o*|^2> (dimensionless; tuned on simulations, see docs)
    lambda_modes: float = 0.01           # lambda_alpha, Tikhonov weight of <|grad alpha|^2> (rad^-2 per node; paper 0.01)
    filter_width: float = 1.8            # w of Eq. 16, in units of the diffraction cutoff D/lambda
    filter_sharpness: float = 20.0       # n of Eq. 16
    apodization: str = "mirror"          # boundary of the Fourier filter: mirror (reflect-pad), hann (window), none (periodic)
    apodization_pixels: int = 16         # [pixel] mirror margin / width of the hann ramps
    weights: str = "uniform"             # gamma_kl: uniform (1) or noise (inverse noise variance, mean 1)
    scaling: str = "object"              # photometric normalisation constant: one per object or one global
    tiptilt: bool = True                 # remove the mean tip-tilt over the frames (fixes the object's position)
    margin: int = 16                     # [pixel] the object extends this far beyond the field (light from outside it)
    global_modes: bool = True            # modes = per-frame global part + per-node part (faster convergence; same model)
    lr_nodes: float | None = 0.1         # learning rate of the per-node part with global_modes (None: lr_modes)
    init_modes_std: float = 0.0          # [rad] std of random initial modes (0: zero modes, the paper's start)
    max_batch: int | None = None         # most (object, frame) pairs per emulator call; None: from memory_mb (CPU: at most 2)
    memory_mb: float | None = None       # memory bound [MiB]; None: 80 % of free CUDA memory, or 50 % of RAM on CPU
    tile_size: int | None = None         # [pixel] force overlapping tiles of this side; None: tiles only if a frame does not fit
    tile_overlap: int = 32               # [pixel] overlap of neighbouring tiles (raised-cosine blend)
    checkpointing: str = "auto"          # gradient checkpointing of the U-Net levels: auto (on CUDA), on, off
    precision: str = "auto"              # engine precision when the solver loads it: auto (fp16 on CUDA), fp32, fp16
    loss_scale: float | None = None      # FP16 loss scale; None: automatic (2^16, halved on overflow)
    kernels: str = "auto"                # svrt.kernels implementation: auto, torch, triton
    seed: int = 0                        # random seed (init_modes_std)
    progress: bool = True                # tqdm progress bar on stderr

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
        need(isinstance(self.patch_size, int) and self.patch_size >= 16, f"patch_size must be an integer >= 16 pixels; got {self.patch_size!r}.")
        for name in ("prior_scale", "tolerance"):
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
             f"tile_overlap ({self.tile_overlap}) must be less than half the tile size ({self.tile_size}).")
        need(self.checkpointing in ("auto", "on", "off"), f"checkpointing must be auto, on or off; got {self.checkpointing!r}.")
        need(self.precision in _PRECISIONS, f"precision must be one of {', '.join(_PRECISIONS)}; got {self.precision!r}.")
        need(self.loss_scale is None or (isinstance(self.loss_scale, (int, float)) and self.loss_scale > 0),
             f"loss_scale must be None or positive; got {self.loss_scale!r}.")
        need(self.kernels in ("auto", "torch", "triton"), f"kernels must be auto, torch or triton; got {self.kernels!r}.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def header(self) -> dict:
        """Header cards: every field, upper-cased; None is written as 'auto'."""
        out = {}
        for k, v in self.to_dict().items():
            out[k.upper()] = "auto" if v is None else v
        return out


def grid_shape(shape: tuple[int, int], grid: int) -> tuple[int, int]:
    """(Yg, Xg) = (ceil(Y / P), ceil(X / P)); P = 0 gives (1, 1). Raises for P larger than the image."""
    y, x = (int(v) for v in shape)
    if grid == 0:
        return 1, 1
    if grid > max(y, x):
        raise SvrtError(f"the grid factor P = {grid} is larger than the image ({y}x{x} pixels); "
                        f"use P <= {max(y, x)}, or grid 0 for one wavefront per frame.")
    return math.ceil(y / grid), math.ceil(x / grid)


# --------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------

def load_solver_engine(path_or_name: str | os.PathLike | None = None, backend: str | None = None,
                       device: str = "cpu", precision: str = "auto", **options):
    """:func:`svrt.runtime.engine.load_engine` with the solver's precision rule: ``auto`` is FP16 on
    CUDA and FP32 on CPU (FP16 autocast is a torch back-end option; others keep their own precision)."""
    from svrt.runtime.engine import backend_for, load_engine

    if precision not in _PRECISIONS:
        raise SvrtError(f"precision must be one of {', '.join(_PRECISIONS)}; got {precision!r}.")
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvrtError(f"device '{device}' was asked for but no CUDA GPU is visible to torch here; use --device cpu.")
    chosen = backend or backend_for(path_or_name)
    if chosen == "torch":
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        options.setdefault("precision", precision)
    return load_engine(path_or_name, backend=chosen, device=device, **options)


def default_backend(method: str) -> str | None:
    """The forward model a method uses when none is named: exact optics (PSFs interpolated between the
    nodes) for momfbd, where it restored better than the shipped width-16 emulator on every burst
    measured (the emulator's high-frequency error is amplified by the deconvolution; README, "Restoration
    quality"), and the emulator (the default model) for the paper's adam method."""
    return "psf-interpolation" if method == "momfbd" else None


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """How a burst is processed: frames per emulator call, tiles, and the memory estimate."""

    batch: int
    tiles: list = field(default_factory=list)    # [(y0, x0, ty, tx)], empty: whole field
    bytes_per_sample: float = 0.0                 # estimated peak bytes of one (object, frame) of the field
    bound_bytes: float = 0.0
    checkpointing: bool = False
    overlap: int = 0                              # [pixel] tile overlap actually used

    @property
    def tiled(self) -> bool:
        return bool(self.tiles)


@dataclass
class SolveResult:
    """Result of :meth:`SVMOMFBD.solve`, in the input's units.

    objects: float32 [K, Y, X] the restored objects o* (after the erf filter).
    objects_unfiltered: float32 [K, Y, X] the unknowns o before the filter.
    modes: float32 [L, M, Yg, Xg] KL coefficients, radians at the wavelength of object 0.
    model: float32 [K, L, Y, X] emulated frames f(o*_k, alpha_l).
    frame_average: float32 [K, Y, X] the average of the valid frames (the initial objects).
    loss: dict of 1-D arrays: iteration, total, data, reg_object, reg_modes, time_s.
    header: every setting, the engine identity, timings, scale constants.
    """

    objects: np.ndarray
    objects_unfiltered: np.ndarray
    modes: np.ndarray
    model: np.ndarray
    frame_average: np.ndarray
    loss: dict
    instruments: list
    header: dict
    plan: Plan | None = None

    @property
    def time_per_iteration(self) -> float:
        return float(self.header.get("T_ITER", float("nan")))

    def to_restoration(self, extra_header: Mapping[str, Any] | None = None):
        """A :class:`svrt.fileio.Restoration` (OBJECT, MODES, MODEL, LOSS); ``extra_header`` (e.g. the
        burst's header: DATE-OBS, TELESCOP, CDELT1/2) is kept, the solver's cards win on conflicts."""
        from svrt.fileio import Restoration

        import re

        header = {}
        for key, value in dict(extra_header or {}).items():
            up = str(key).upper()
            if up in ("SVRTFILE", "NOBJ", "NFRAMES") or re.match(r"^INSTR\d+$", up):
                continue
            header[up] = value
        header.update(self.header)
        return Restoration(objects=self.objects, modes=self.modes, model=self.model, loss=self.loss,
                           header=header, instruments=list(self.instruments))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _upsample(coarse: torch.Tensor, size, impl: str) -> torch.Tensor:
    from svrt.kernels import upsample_modes

    if coarse.shape[-2] == 1 and coarse.shape[-1] == 1:
        # one node: the bilinear upsampling is the constant; expand (its adjoint is a sum) is much faster
        return coarse.expand(*coarse.shape[:-2], int(size[0]), int(size[1]))
    return upsample_modes(coarse, size, impl=impl)


def _fourier_filter(x: torch.Tensor, cutoff: float, width: float, sharpness: float, impl: str,
                    apodization: torch.Tensor | None = None) -> torch.Tensor:
    from svrt.kernels import fourier_filter

    return fourier_filter(x, cutoff, width, sharpness, apodization=apodization, impl=impl)


def _hann_window(shape: tuple[int, int], ramp: int, device, dtype=torch.float32) -> torch.Tensor:
    """[Y, X] window: 1 inside, raised-cosine ramps of ``ramp`` pixels at the four borders."""
    def ramp1d(n: int) -> torch.Tensor:
        w = torch.ones(n, dtype=dtype, device=device)
        r = min(ramp, n // 2)
        if r > 0:
            t = (torch.arange(r, dtype=dtype, device=device) + 0.5) / r
            edge = torch.sin(0.5 * math.pi * t) ** 2
            w[:r] = edge
            w[n - r:] = edge.flip(0)
        return w

    return ramp1d(shape[0])[:, None] * ramp1d(shape[1])[None, :]


def _blend_weights(length: int, start: int, size: int, ramp: int, dtype=np.float64) -> np.ndarray:
    """1-D raised-cosine blend weights of a tile [start, start + size) along an axis of ``length``:
    ramps of ``ramp`` pixels on the sides that are inside the field, flat at the field's borders."""
    w = np.ones(size, dtype=dtype)
    r = min(ramp, size // 2)
    if r > 0:
        t = (np.arange(r) + 0.5) / r
        edge = np.sin(0.5 * np.pi * t) ** 2
        if start > 0:
            w[:r] = edge
        if start + size < length:
            w[size - r:] = edge[::-1]
    return w


class _Progress:
    """A tqdm bar whose description names the stage (wavefronts, objects, refinement)."""

    def __init__(self, enabled: bool, desc: str):
        self.bar = None
        self.desc = desc
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc=desc, unit="stage", leave=False, dynamic_ncols=True, file=sys.stderr)

    def stage(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: {name}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _grad_sq_mean(x: torch.Tensor) -> torch.Tensor:
    """Per leading item: <(dy x)^2> + <(dx x)^2> over the last two axes (forward differences)."""
    total = x.new_zeros(x.shape[:-2])
    if x.shape[-2] > 1:
        total = total + (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(-2, -1))
    if x.shape[-1] > 1:
        total = total + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(-2, -1))
    return total


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); Linux reports ru_maxrss in KiB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


def _available_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.8 * free
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30


def noise_variance(frames: torch.Tensor, cutoff: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Noise variance of each image ``[..., Y, X]`` from its power beyond the diffraction cutoff
    (where the signal of a diffraction-limited telescope is zero): white noise of variance s^2 has
    ``E |FFT|^2 = Y X s^2``. Uses frequencies with ``|f| > 1.05 cutoff``; raises when the sampling
    leaves fewer than 2 % of the frequencies there."""
    from svrt.optics.filters import frequency_radius

    y, x = frames.shape[-2:]
    f = frequency_radius((y, x), real=False, device=frames.device)
    sel = f > 1.05 * cutoff
    if sel.float().mean() < 0.02:
        raise SvrtError(f"weights='noise' needs frequencies beyond the diffraction cutoff ({cutoff:.3f} cycles/pixel); "
                        "this sampling leaves too few, use weights='uniform'.")
    data = frames if mask is None else torch.where(mask, frames, frames.new_zeros(()))
    mean = data.mean(dim=(-2, -1), keepdim=True)
    win = _hann_window((y, x), max(y, x) // 8, frames.device)
    spec = torch.fft.fft2((data - mean) * win).abs().pow(2)
    return spec[..., sel].mean(dim=-1) / (win.pow(2).sum())


@contextlib.contextmanager
def _level_checkpointing(engine, enabled: bool):
    """Gradient checkpointing of the U-Net levels of a torch engine: each encoder and decoder level
    keeps only its inputs and recomputes its activations in the backward pass. No-op for other back
    ends (their vector-Jacobian product runs inside the back end) and for compiled models."""
    model = getattr(engine, "model", None)
    net = getattr(engine, "net", model)
    if not enabled or model is None or net is not model or not hasattr(model, "encoder") or not hasattr(model, "decoder"):
        yield False
        return
    from torch.utils.checkpoint import checkpoint

    patched = []
    try:
        for mod in list(model.encoder) + list(model.decoder):
            orig = mod.forward

            def fwd(*args, _orig=orig):
                if torch.is_grad_enabled():
                    return checkpoint(_orig, *args, use_reentrant=False)
                return _orig(*args)

            mod.forward = fwd
            patched.append(mod)
        yield True
    finally:
        for mod in patched:
            with contextlib.suppress(AttributeError):
                del mod.forward


# --------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------

class SVMOMFBD:
    """The SV-MOMFBD solver. Build it once (engines loaded), then :meth:`solve` bursts one after another.

    ``engines``: one :class:`~svrt.runtime.engine.Engine` (conditioned on every object's instrument),
    a sequence of engines (the first that covers an object's instrument is used) or a mapping
    ``instrument label -> Engine``. All must have the same number of modes and live on one device.
    """

    def __init__(self, engines, config: SolverConfig | None = None):
        self.config = (config or SolverConfig()).validate()
        if isinstance(engines, Mapping):
            self._by_label = {str(k).lower(): e for k, e in engines.items()}
            self.engines = list(dict.fromkeys(engines.values()))
        elif isinstance(engines, (list, tuple)):
            self._by_label = {}
            self.engines = list(engines)
        else:
            self._by_label = {}
            self.engines = [engines]
        if not self.engines:
            raise SvrtError("SV-MOMFBD needs at least one engine.")
        for e in self.engines:
            if not hasattr(e, "apply") or not hasattr(e, "identity"):
                raise SvrtError(f"expected an svrt Engine (svrt.runtime.engine.load_engine); got a {type(e).__name__}.")
        n_modes = {e.n_modes for e in self.engines}
        if len(n_modes) > 1:
            raise SvrtError(f"the engines were built for different numbers of modes ({', '.join(map(str, sorted(n_modes)))}); "
                            "SV-MOMFBD needs one wavefront description shared by all objects.")
        self.n_modes = n_modes.pop()
        devices = {str(e.device) for e in self.engines}
        if len(devices) > 1:
            raise SvrtError(f"the engines live on different devices ({', '.join(sorted(devices))}); load them on one.")
        self.device = self.engines[0].device
        self._cache: dict = {}

    # ---------------------------------------------------------------- engines and instruments
    def engine_for(self, instrument: str, k: int | None = None):
        """The engine that emulates ``instrument`` (SvrtError if none does)."""
        label = str(instrument).lower()
        if self._by_label:
            if label in self._by_label:
                e = self._by_label[label]
                if label in [s.lower() for s in e.instruments]:
                    return e
        else:
            for e in self.engines:
                if label in [s.lower() for s in e.instruments]:
                    return e
        covered = sorted({s for e in self.engines for s in e.instruments})
        who = f"object {k} " if k is not None else ""
        raise SvrtError(f"{who}was observed with instrument '{instrument}' but the engine(s) emulate "
                        f"{', '.join(covered)}; load an engine for '{instrument}' (svrt engines, --model/--engine).")

    # ---------------------------------------------------------------- input
    def _prepare(self, frames, instruments, mask, weights):
        from svrt.fileio import Burst

        header: dict = {}
        if isinstance(frames, Burst):
            burst = frames
            if instruments is None:
                instruments = burst.instruments
            if mask is None:
                mask = burst.mask
            header = dict(burst.header)
            frames = burst.frames
        if isinstance(frames, np.ndarray):
            frames_t = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        elif isinstance(frames, torch.Tensor):
            frames_t = frames.detach().to(dtype=torch.float32, device="cpu")
        else:
            raise SvrtError(f"frames must be a [K, L, Y, X] array, tensor or Burst; got a {type(frames).__name__}.")
        if frames_t.dim() == 3:
            frames_t = frames_t[None]
        if frames_t.dim() != 4:
            raise SvrtError(f"frames must be [K, L, Y, X] (or [L, Y, X] for one object); got shape {tuple(frames_t.shape)}.")
        k, n_frames, y, x = frames_t.shape
        if k < 1 or n_frames < 1:
            raise SvrtError(f"frames must hold at least one object and one frame; got shape {tuple(frames_t.shape)}.")
        if y < MIN_SIZE or x < MIN_SIZE:
            raise SvrtError(f"frames of {y}x{x} pixels are too small; SV-MOMFBD needs at least {MIN_SIZE}x{MIN_SIZE}.")
        if instruments is None:
            raise SvrtError("the instrument of each object is needed (instruments=[...] or a Burst).")
        if isinstance(instruments, str):
            instruments = [instruments] * k
        instruments = [str(s) for s in instruments]
        if len(instruments) != k:
            raise SvrtError(f"{len(instruments)} instruments were given for {k} objects; expected one per object.")
        insts = [get_instrument(s) for s in instruments]
        engines = [self.engine_for(s, i) for i, s in enumerate(instruments)]
        labels = [e.check(torch.zeros(1, 1, 16, 16), torch.zeros(1, self.n_modes, 16, 16), s)
                  for e, s in zip(engines, instruments)]
        pix0 = insts[0].pixel_arcsec
        for i, inst in enumerate(insts[1:], 1):
            if abs(inst.pixel_arcsec - pix0) > 0.01 * pix0:
                raise SvrtError(f"object {i} ({inst.label}, {inst.pixel_arcsec}\"/pixel) and object 0 ({insts[0].label}, "
                                f"{pix0}\"/pixel) have different pixel scales; resample them to one grid first.")
        finite = torch.isfinite(frames_t)
        if mask is None:
            bad = int((~finite).sum())
            if bad:
                raise SvrtError(f"the frames hold {bad} NaN or Inf pixels; pass a mask (read_burst(..., allow_nonfinite=True), "
                                "--allow-nonfinite) to give them zero weight.")
            valid = finite
        else:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to("cpu").bool()
            while m.dim() < 4:
                m = m[None]
            if tuple(m.shape) != tuple(frames_t.shape):
                raise SvrtError(f"the mask has shape {tuple(m.shape)}; expected {tuple(frames_t.shape)} like the frames.")
            valid = m & finite
        for i in range(k):
            if not bool(valid[i].any()):
                raise SvrtError(f"object {i} has no valid pixel (all masked or NaN/Inf).")
        gamma = None
        if weights is not None:
            g = torch.as_tensor(np.asarray(weights, dtype=np.float32))
            if g.dim() == 0:
                g = g.expand(k, n_frames)
            if tuple(g.shape) != (k, n_frames) or not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
                raise SvrtError(f"weights must be finite, >= 0 and of shape [K, L] = {(k, n_frames)}; got {tuple(g.shape)}.")
            gamma = g.clone()
        return frames_t, valid, instruments, labels, insts, engines, gamma, header

    # ---------------------------------------------------------------- planning
    def bytes_per_pixel_sample(self, engine=None, checkpointing: bool = False) -> float:
        """Estimated peak bytes per pixel of one (object, frame) emulator call with its backward pass.

        Measured on CPU (peak RSS of one forward + backward at 256^2, widths C = 4, 16, 32, M = 44):
        ``25 C + 4.4 (M + 1)`` floats per pixel. The estimate is ``1.25 (A C + 5 (M + 1))`` floats of 4
        bytes with A = 25, or A = 12 with checkpointing on CUDA (on CPU the allocator keeps the peak of
        the recomputation, measured equal); activations count 2 bytes in FP16."""
        engine = engine or self.engines[0]
        model = getattr(engine, "model", None)
        width = getattr(getattr(model, "config", None), "width", None) or int(engine.identity.extra.get("width", 64))
        per_c = 12.0 if (checkpointing and engine.device.type == "cuda") else 25.0
        act_bytes = 2.0 if engine.identity.precision == "fp16" else 4.0
        return 1.25 * (per_c * width * act_bytes + 5.0 * (self.n_modes + 1) * 4.0)

    def plan(self, n_objects: int, n_frames: int, shape: tuple[int, int]) -> Plan:
        """Frames per emulator call and tiles for a burst of this size under the memory bound."""
        from svrt.emulator import padding_for

        cfg = self.config
        y, x = shape
        ckpt = cfg.checkpointing == "on" or (cfg.checkpointing == "auto" and self.device.type == "cuda")
        bound = cfg.memory_mb * 2 ** 20 if cfg.memory_mb is not None else _available_bytes(self.device)
        m2 = 2 * cfg.margin
        pad = padding_for(y + m2, x + m2)
        bpp = max(self.bytes_per_pixel_sample(e, ckpt) for e in self.engines)
        per_sample = bpp * (y + m2 + pad[2] + pad[3]) * (x + m2 + pad[0] + pad[1])
        yg, xg = grid_shape(shape, cfg.grid)
        # frames, weights, model; objects with their Adam states and filter buffers; modes with Adam states
        fixed = 4.0 * (n_objects * n_frames * y * x * 3 + n_objects * y * x * 8 + n_frames * self.n_modes * yg * xg * 4)
        work = bound - RUNTIME_OVERHEAD_MB * 2 ** 20 - fixed
        total = n_objects * n_frames
        if cfg.tile_size is not None and (cfg.tile_size < y or cfg.tile_size < x):
            tile = cfg.tile_size
        elif per_sample <= work:
            batch = int(max(1, min(total, work // per_sample)))
            batch = min(batch, cfg.max_batch if cfg.max_batch is not None else self._default_batch_cap())
            return Plan(batch=batch, bytes_per_sample=per_sample, bound_bytes=bound, checkpointing=ckpt)
        else:
            # the largest tile (a multiple of 16) of which one frame fits, leaving 20 % for the tile's own buffers
            room = bound - RUNTIME_OVERHEAD_MB * 2 ** 20
            side = math.sqrt(max(0.8 * room, 0.0) / bpp) - m2
            tile = int(max(side, 0) // 16) * 16
            if tile < 2 * MIN_SIZE:
                raise SvrtError(f"the memory bound of {bound / 2 ** 20:.0f} MiB cannot hold one {2 * MIN_SIZE}x{2 * MIN_SIZE} tile "
                                f"of one frame besides {RUNTIME_OVERHEAD_MB:.0f} MiB of runtime overhead; raise memory_mb (--memory-mb).")
        overlap = min(cfg.tile_overlap, tile // 4)
        tiles = self._tiles(shape, tile, overlap)
        ty, tx = tiles[0][2], tiles[0][3]
        tpad = padding_for(ty + m2, tx + m2)
        per_tile = bpp * (ty + m2 + tpad[2] + tpad[3]) * (tx + m2 + tpad[0] + tpad[1])
        room = bound - RUNTIME_OVERHEAD_MB * 2 ** 20 - fixed
        batch = int(max(1, min(total, (0.8 * room) // per_tile)))
        batch = min(batch, cfg.max_batch if cfg.max_batch is not None else self._default_batch_cap())
        return Plan(batch=batch, tiles=tiles, bytes_per_sample=per_tile, bound_bytes=bound, checkpointing=ckpt,
                    overlap=overlap)

    def _default_batch_cap(self) -> int:
        """Frames per emulator call when ``max_batch`` is None: as many as fit on CUDA, CPU_MAX_BATCH on CPU
        (bigger batches only thrash the caches there)."""
        return 10 ** 9 if self.device.type == "cuda" else CPU_MAX_BATCH

    @staticmethod
    def _tiles(shape: tuple[int, int], tile: int, overlap: int) -> list:
        """Overlapping tiles [(y0, x0, ty, tx)] covering the field, evenly spaced."""
        def starts(length: int) -> tuple[list, int]:
            size = min(tile, length)
            if size >= length:
                return [0], length
            n = math.ceil((length - overlap) / (size - overlap))
            n = max(n, 2)
            return [int(round(i * (length - size) / (n - 1))) for i in range(n)], size

        (ys, ty), (xs, tx) = starts(shape[0]), starts(shape[1])
        return [(a, b, ty, tx) for a in ys for b in xs]

    # ---------------------------------------------------------------- the public entry point
    def solve(self, frames, instruments: Sequence[str] | str | None = None, mask=None, init=None,
              weights=None, callback: Callable[[dict], Any] | None = None) -> SolveResult:
        """Restore a burst.

        frames: [K, L, Y, X] (numpy or torch; [L, Y, X] for one object) or a :class:`svrt.fileio.Burst`.
        instruments: one label per object (taken from the Burst when omitted).
        mask: bool [K, L, Y, X], False on bad pixels (the Burst's mask when omitted); without a mask
            NaN/Inf frames are an error.
        init: a :class:`SolveResult` or dict with ``objects [K, Y, X]`` (input units) and/or ``modes
            [L, M, Yg, Xg]`` (radians) to start from; default the frame average and zero modes.
        weights: gamma_kl [K, L] (overrides ``config.weights``).
        callback: called after every iteration with a dict (iteration, total, data, reg_object,
            reg_modes, time_s, tile).
        """
        cfg = self.config
        t_start = time.perf_counter()
        frames_t, valid, instruments, labels, insts, engines, gamma, header_in = self._prepare(frames, instruments, mask, weights)
        k, n_frames, y, x = frames_t.shape
        yg, xg = grid_shape((y, x), cfg.grid)
        dev = self.device

        # photometric normalisation (single constants) and masked pixels
        vf = valid.float()
        absmean = (frames_t.abs() * vf).nan_to_num(0.0).sum(dim=(1, 2, 3)) / vf.sum(dim=(1, 2, 3))
        if cfg.scaling == "global":
            tot = (frames_t.abs() * vf).nan_to_num(0.0).sum() / vf.sum()
            scale = tot.expand(k).clone()
        else:
            scale = absmean.clone()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        clean = torch.where(valid, frames_t, torch.zeros(()))
        count = vf.sum(dim=1)                                                   # [K, Y, X]
        obj_mean = clean.sum(dim=(1, 2, 3)) / vf.sum(dim=(1, 2, 3))             # [K]
        average = torch.where(count > 0, clean.sum(dim=1) / count.clamp_min(1), obj_mean[:, None, None])
        filled = torch.where(valid, frames_t, average[:, None].expand_as(frames_t))
        plan = self.plan(k, n_frames, (y, x))
        # tiles keep the burst in host memory and move one tile at a time to the device
        data_dev = torch.device("cpu") if plan.tiled else dev
        data_n = (filled / scale[:, None, None, None]).to(data_dev)
        avg_n = (average / scale[:, None, None]).to(data_dev)

        # gamma_kl and pixel weights
        if gamma is None:
            if cfg.weights == "noise":
                # on the filled frames: masked pixels hold the mean of the valid frames there
                var = torch.stack([noise_variance(data_n[i].to(dev), insts[i].cutoff_cycles_per_pixel) for i in range(k)])
                inv = 1.0 / var.clamp_min(1e-12)
                gamma = (inv / inv.mean()).cpu()
            else:
                gamma = torch.ones(k, n_frames)
        pix_w = None if bool(valid.all()) else valid.to(data_dev).float()
        gamma_d = gamma.to(dev)

        # wavelength ratios (modes in radians at the wavelength of object 0)
        ratios = [insts[0].wavelength_angstrom / inst.wavelength_angstrom for inst in insts]

        # initial state
        init_o = avg_n.clone()
        init_a = torch.zeros(n_frames, self.n_modes, yg, xg, device=dev)
        if cfg.init_modes_std > 0:
            gen = torch.Generator().manual_seed(cfg.seed)
            init_a = (torch.randn(init_a.shape, generator=gen) * cfg.init_modes_std).to(dev)
        if init is not None:
            io, ia = (init.objects_unfiltered, init.modes) if isinstance(init, SolveResult) else (
                init.get("objects"), init.get("modes"))
            if io is not None:
                io = torch.as_tensor(np.asarray(io, dtype=np.float32))
                if io.dim() == 2:
                    io = io[None]
                if tuple(io.shape) != (k, y, x):
                    raise SvrtError(f"init objects have shape {tuple(io.shape)}; expected [K, Y, X] = {(k, y, x)}.")
                init_o = (io / scale[:, None, None]).to(data_dev)
            if ia is not None:
                ia = torch.as_tensor(np.asarray(ia, dtype=np.float32))
                if ia.dim() != 4 or ia.shape[0] != n_frames or ia.shape[1] != self.n_modes:
                    raise SvrtError(f"init modes have shape {tuple(ia.shape)}; expected [L, M, Yg, Xg] with L = {n_frames} "
                                    f"and M = {self.n_modes} (the engine's number of modes).")
                if tuple(ia.shape[2:]) != (yg, xg):
                    ia = F.interpolate(ia, size=(yg, xg), mode="bilinear", align_corners=False)
                init_a = ia.to(dev)

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        ctx = dict(instruments=labels, insts=insts, engines=engines, ratios=ratios, gamma=gamma_d, plan=plan,
                   callback=callback)
        stage_info: dict = {}
        if cfg.method == "momfbd" and not plan.tiled:
            init_given = init is not None and (init.modes if isinstance(init, SolveResult) else init.get("modes")) is not None
            o, o_star, a, model, history, stage_info = self._solve_momfbd(
                data_n, pix_w, init_o, init_a if init_given else None, ctx, t_start)
        elif not plan.tiled:
            o, o_star, a, model, history = self._solve_field(data_n, pix_w, init_o, init_a, ctx, tile_label="")
        else:
            o, o_star, a, model, history = self._solve_tiled(data_n, pix_w, init_o, init_a, ctx)

        t_total = time.perf_counter() - t_start
        sc = scale.to(dev)
        objects = (o_star * sc[:, None, None]).cpu().numpy()
        objects_raw = (o.detach() * sc[:, None, None]).cpu().numpy()
        model_np = (model * sc[:, None, None, None]).cpu().numpy()
        modes_np = a.detach().cpu().numpy()
        if dev.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(dev) / 2 ** 20
            peak_kind = "cuda"
        else:
            peak_mb = _peak_rss_mb()
            peak_kind = "rss"
        t_iter = float(np.mean(history["time_s"])) if len(history["time_s"]) else float("nan")

        header = self.config.header()
        header.update(self._engine_header(engines))
        import svrt

        header.update({
            "SVRT_VERSION": getattr(svrt, "__version__", "unknown"),
            "DATE": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "SOLVER": "SV-MOMFBD (Asensio Ramos, Eqs. 13-17)",
            "GRID_Y": yg, "GRID_X": xg,
            "MODES_WAVELNTH": float(insts[0].wavelength_angstrom),
            "BATCH": plan.batch,
            "NTILES": len(plan.tiles) if plan.tiled else 1,
            "TILE_Y": plan.tiles[0][2] if plan.tiled else y,
            "TILE_X": plan.tiles[0][3] if plan.tiled else x,
            "TILE_OVERLAP_USED": plan.overlap,
            "CKPT_USED": bool(plan.checkpointing),
            "MEM_BOUND_MB": round(plan.bound_bytes / 2 ** 20, 1),
            "MEM_EST_MB": round(plan.batch * plan.bytes_per_sample / 2 ** 20 + RUNTIME_OVERHEAD_MB, 1),
            "PEAK_MB": round(float(peak_mb), 1),
            "PEAK_KIND": peak_kind,
            "T_ITER": round(t_iter, 5),
            "T_TOTAL": round(t_total, 3),
            "NMASKED": int((~valid).sum()),
            "LOSS_FINAL": float(history["total"][-1]),
            "METHOD_USED": "adam" if (cfg.method == "adam" or plan.tiled) else "momfbd",
        })
        header.update(stage_info)
        for i in range(k):
            header[f"SCALE{i}"] = float(scale[i])
        return SolveResult(objects=objects.astype(np.float32), objects_unfiltered=objects_raw.astype(np.float32),
                           modes=modes_np.astype(np.float32), model=model_np.astype(np.float32),
                           frame_average=average.numpy().astype(np.float32),
                           loss={key: np.asarray(v) for key, v in history.items()},
                           instruments=labels, header=header, plan=plan)

    @staticmethod
    def _engine_header(engines) -> dict:
        e0 = engines[0].identity
        out = {
            "ENGINE_BACKEND": e0.backend, "ENGINE_DEVICE": e0.device, "ENGINE_PRECISION": e0.precision,
            "ENGINE_MODEL": e0.model, "ENGINE_HASH": e0.model_hash, "ENGINE_NMODES": int(e0.n_modes),
            "ENGINE_INSTRUMENTS": ",".join(e0.instruments), "ENGINE_FILE": Path(e0.path).name if e0.path else "",
        }
        distinct = list(dict.fromkeys(engines))
        if len(distinct) > 1:
            for i, e in enumerate(engines):
                out[f"OBJ{i}_ENGINE"] = f"{e.identity.model}:{e.identity.model_hash}:{e.identity.backend}"
        return out

    # ---------------------------------------------------------------- method momfbd
    def _solve_momfbd(self, data_n, pix_w, init_o, init_a, ctx, t_start):
        """Patch wavefronts (object eliminated) -> Wiener objects with the SV forward model -> rounds of
        SV wavefront refinement and object solves. Everything in normalised units on the device.
        Returns (o, o*, alpha, model, history, header cards) cropped to the field."""
        from svrt.optics.filters import erf_filter, frequency_radius
        from svrt.optics.residual import estimate_d_over_r0, fitting_error_otf, fitting_error_variance
        from svrt.runtime.object_solve import solve_objects
        from svrt.runtime.patch_mfbd import patch_wavefronts

        cfg = self.config
        dev = self.device
        k, n_frames, y, x = data_n.shape
        insts = ctx["insts"]
        m = cfg.margin
        yg, xg = grid_shape((y, x), cfg.grid)
        deadline = None if cfg.time_budget is None else t_start + float(cfg.time_budget)
        history = {key: [] for key in ("iteration", "total", "data", "reg_object", "reg_modes", "time_s")}
        info: dict = {}
        t_stage = time.perf_counter()
        bar = _Progress(cfg.progress, "SV-MOMFBD")

        # noise of every frame, and the data weights 1 / s_kl^2 (times gamma_kl and the pixel mask)
        nvar = self._noise_variances(data_n, insts)                                       # [K, L]
        w_kl = ctx["gamma"].to(dev) / nvar
        weights = w_kl[:, :, None, None] * (pix_w if pix_w is not None else 1.0)

        # 1. wavefronts at the nodes: object-eliminated MOMFBD of each node's patch
        bar.stage("wavefronts per patch")
        if init_a is None and (yg, xg) != (1, 1) and cfg.coarse_to_fine:
            # coarse to fine: one wavefront per frame from the whole field (the most data, no patch edges),
            # then every node's patch starts from it
            glob, _ = patch_wavefronts(data_n, insts, self.n_modes, (1, 1), nvar.mean(dim=1), cfg.patch_size,
                                       cfg.patch_iterations, tiptilt=cfg.tiptilt, fit_modes=cfg.fit_modes)
            init_a = glob.expand(-1, -1, yg, xg).contiguous()
        node_iterations = cfg.patch_iterations if (cfg.node_iterations is None or init_a is None) else cfg.node_iterations
        alpha, pinfo = patch_wavefronts(data_n, insts, self.n_modes, (yg, xg), nvar.mean(dim=1), cfg.patch_size,
                                        max(1, node_iterations), tiptilt=cfg.tiptilt, init=init_a, fit_modes=cfg.fit_modes)
        if init_a is not None and (yg, xg) != (1, 1) and node_iterations == 0:
            alpha = init_a                     # the nodes keep the start; the SV refinement moves them
        problem = pinfo["problem"]
        info["PATCH_SIZE_USED"] = pinfo["patch_size"]
        info["PATCH_METRIC0"] = round(pinfo["metric_start"], 6)
        info["PATCH_METRIC"] = round(pinfo["metric_end"], 6)
        info["PATCH_EVALS"] = pinfo["evaluations"]
        info["T_PATCH"] = round(time.perf_counter() - t_stage, 3)

        # the wavefront beyond the M modes: its mean OTF, from the r0 of the fitted modes
        attenuation = [None] * k
        if cfg.high_order == "kolmogorov":
            n_fit = min(self.n_modes, cfg.fit_modes or self.n_modes)
            d_r0 = estimate_d_over_r0(alpha[:, :n_fit])
            info["D_OVER_R0"] = round(d_r0, 3)
            info["FIT_ERR_RAD2"] = round(fitting_error_variance(d_r0, n_fit), 4)
            for i, inst in enumerate(insts):
                ratio = ctx["ratios"][i]                      # D / r0 scales as lambda^(-6/5); phase as 1/lambda
                nu = frequency_radius((y + 2 * m, x + 2 * m), real=False, device=dev) / inst.cutoff_cycles_per_pixel
                attenuation[i] = fitting_error_otf(nu, d_r0 * ratio ** 1.2, n_fit)

        # the Wiener prior 1 / P_O of every object, refitted on the patches with the high-order OTF
        alpha_p = alpha.permute(0, 2, 3, 1)
        shape_p = (y + 2 * m, x + 2 * m)
        nu_p = frequency_radius(shape_p, real=False, device=dev)
        if attenuation[0] is not None:
            nu_s = frequency_radius((problem.layout.size,) * 2, real=True, device=dev)
            problem.attenuation = [fitting_error_otf(nu_s / inst.cutoff_cycles_per_pixel,
                                                     float(info["D_OVER_R0"]) * ctx["ratios"][i] ** 1.2, n_fit)
                                   for i, inst in enumerate(insts)]
            problem.refit_object_power(alpha_p)
        prior = torch.empty(k, *shape_p, device=dev)
        for i in range(k):
            law = problem.powers[i]
            info[f"POWER_SLOPE{i}"] = round(law.slope, 3)
            r = cfg.prior_scale / law(nu_p)
            r[0, 0] = 0.0
            prior[i] = r

        def attenuate(o_k, i):
            if attenuation[i] is None:
                return o_k
            return torch.fft.ifft2(torch.fft.fft2(o_k) * attenuation[i]).real

        batches = self._batches(k, n_frames, ctx["plan"].batch)

        def data_value_and_grad(o, a_eff):
            grad = torch.zeros_like(o)
            model = torch.empty(k, n_frames, y, x, device=dev)
            total = 0.0
            for kk, idx in batches:
                ok = o[kk].detach().requires_grad_(True)
                with torch.enable_grad():
                    pred = self._predict(attenuate(ok, kk), a_eff, kk, idx, ctx, (y, x))
                    term = (weights[kk, idx] * (pred - data_n[kk, idx]).pow(2)).sum()
                    (g,) = torch.autograd.grad(term, ok)
                grad[kk] += g
                model[kk, idx] = pred.detach()
                total += float(term.detach())
            return total, grad, model

        def emulate(o, a_eff):
            out = torch.empty(k, n_frames, y, x, device=dev)
            with torch.no_grad():
                for kk, idx in batches:
                    out[kk, idx] = self._predict(attenuate(o[kk], kk), a_eff, kk, idx, ctx, (y, x))
            return out

        def weighted_sq(r):
            return float((weights * r.pow(2)).sum())

        def denominator(a_eff):
            """2 (sum_l w_kl |S_kl|^2 + R_k) with S_kl the OTF of frame l's field-mean wavefront."""
            from svrt.optics.psf import PSFModel

            s = min(64, *shape_p)
            s -= s % 2
            mean_a = a_eff.mean(dim=(-2, -1))                                                     # [L, M]
            out = torch.empty(k, *shape_p, device=dev)
            for i, inst in enumerate(insts):
                psf = PSFModel(inst, self.n_modes, psf_size=s, device=dev)(mean_a * ctx["ratios"][i])  # [L, s, s]
                big = torch.zeros(n_frames, *shape_p, device=dev)
                big[:, :s, :s] = psf
                t = torch.fft.fft2(torch.roll(big, shifts=(-(s // 2), -(s // 2)), dims=(-2, -1)))
                if attenuation[i] is not None:
                    t = t * attenuation[i]
                mean_w = w_kl[i] * (float(pix_w[i].mean()) if pix_w is not None else 1.0)
                out[i] = 2.0 * ((mean_w[:, None, None] * t.abs().pow(2)).sum(dim=0) + prior[i])
            return out.clamp_min(1e-12 * float(out.max()))

        def record(j_total, j_data, j_prior, j_modes, dt):
            history["iteration"].append(len(history["iteration"]) + 1)
            for key, v in (("total", j_total), ("data", j_data), ("reg_object", j_prior), ("reg_modes", j_modes),
                           ("time_s", dt)):
                history[key].append(float(v))

        def object_stage(o, a_eff):
            t0 = time.perf_counter()
            res = solve_objects(lambda oo: data_value_and_grad(oo, a_eff), lambda oo: emulate(oo, a_eff), o, prior,
                                denominator(a_eff), weighted_sq, cfg.object_iterations, cfg.tolerance, deadline)
            dt = (time.perf_counter() - t0) / max(1, len(res.history))
            for j, j_data, j_prior in res.history:
                record(j, j_data, j_prior, 0.0, dt)
            info["OBJ_STOP"] = res.stop_reason
            info["OBJ_ITERS"] = info.get("OBJ_ITERS", 0) + res.iterations
            return res.objects

        # 2. the objects with the SV forward model, started from the frame average (field + mirrored margin)
        bar.stage("objects")
        o = init_o.detach().to(dev)
        if m > 0:
            o = F.pad(o[:, None], (m, m, m, m), mode="reflect" if m < min(y, x) else "replicate")[:, 0]
        a = self._centred(alpha.to(dev))
        o = object_stage(o, a)

        # 3. rounds of SV wavefront refinement (objects fixed) and object solves
        rounds_done = 0
        # with one wavefront per frame the whole-field object-eliminated solve is the refined solution already;
        # refining it against fixed objects only degraded it on every burst measured (benchmarks/PEERS.md)
        n_rounds = cfg.refine_rounds if (cfg.refine_iterations > 0 and (yg, xg) != (1, 1)) else 0
        for rnd in range(n_rounds):
            if deadline is not None and time.perf_counter() > deadline:
                info["STOP"] = "time budget"
                break
            bar.stage(f"refine {rnd + 1}/{cfg.refine_rounds}")
            a = self._refine_modes(o, a, data_n, weights, attenuate, ctx, (y, x), record)
            o = object_stage(o, a)
            rounds_done += 1
        info["ROUNDS"] = rounds_done
        info.setdefault("STOP", info.get("OBJ_STOP", ""))
        bar.close()

        # the restoration: o through the erf filter of Eq. 16 (o is already band-limited by the prior)
        o_star = self._filtered(o, insts)
        with torch.no_grad():
            model = emulate(o, a)
        history["iteration"] = np.asarray(history["iteration"], dtype=np.int64)
        for key in ("total", "data", "reg_object", "reg_modes", "time_s"):
            history[key] = np.asarray(history[key], dtype=np.float64)
        crop = (slice(None), slice(m, m + y), slice(m, m + x))
        return o[crop], o_star[crop], a, model, history, info

    def _refine_modes(self, o, a, data_n, weights, attenuate, ctx, size, record):
        """L-BFGS on the node wavefronts with the objects fixed: the data term of the SV forward model plus
        lambda_alpha <|grad alpha|^2> (the wavefront varies smoothly across the field)."""
        cfg = self.config
        k, n_frames = data_n.shape[:2]
        batches = self._batches(k, n_frames, ctx["plan"].batch)
        o_in = [attenuate(o[kk], kk).detach() for kk in range(k)]
        p = a.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([p], lr=1.0, max_iter=cfg.refine_iterations, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-12)
        scale = [None]

        def closure():
            opt.zero_grad()
            t0 = time.perf_counter()
            total = 0.0
            for kk, idx in batches:
                pred = self._predict(o_in[kk], self._centred(p), kk, idx, ctx, size)
                term = (weights[kk, idx] * (pred - data_n[kk, idx]).pow(2)).sum()
                term.backward()
                total += float(term.detach())
            if scale[0] is None:
                scale[0] = total / max(1, n_frames)       # lambda_alpha relative to one frame's data term
            reg = cfg.lambda_modes * scale[0] * _grad_sq_mean(self._centred(p)).sum()
            if reg.requires_grad:
                reg.backward()
            record(total + float(reg), total, float("nan"), float(reg), time.perf_counter() - t0)
            return torch.as_tensor(total + float(reg))

        opt.step(closure)
        return self._centred(p.detach())

    def _noise_variances(self, data_n, insts) -> torch.Tensor:
        """Noise variance per pixel of every frame ``[K, L]`` from its power beyond the diffraction cutoff;
        where the sampling leaves no such frequencies (sub-Nyquist cameras), 1e-4 (1 % noise)."""
        out = []
        for i, inst in enumerate(insts):
            try:
                v = noise_variance(data_n[i].to(self.device), inst.cutoff_cycles_per_pixel)
            except SvrtError:
                v = torch.full((data_n.shape[1],), 1e-4, device=self.device)
            out.append(v.clamp_min(1e-10))
        return torch.stack(out)

    # ---------------------------------------------------------------- pieces of the loss
    def _filtered(self, o: torch.Tensor, insts) -> torch.Tensor:
        """o* = F^-1(H F(o)) per object, with the configured boundary treatment. [K, Y, X]."""
        cfg = self.config
        outs = []
        y, x = o.shape[-2:]
        for i in range(o.shape[0]):
            cutoff = insts[i].cutoff_cycles_per_pixel
            oi = o[i]
            if cfg.apodization == "mirror" and cfg.apodization_pixels > 0:
                p = min(cfg.apodization_pixels, y - 1, x - 1)
                padded = F.pad(oi[None, None], (p, p, p, p), mode="reflect")[0, 0]
                out = _fourier_filter(padded, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels)[p:p + y, p:p + x]
            elif cfg.apodization == "hann" and cfg.apodization_pixels > 0:
                key = ("hann", y, x, cfg.apodization_pixels, str(o.device))
                if key not in self._cache:
                    self._cache[key] = _hann_window((y, x), cfg.apodization_pixels, o.device)
                win = self._cache[key]
                mean = oi.mean()
                out = mean + _fourier_filter(oi - mean, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels,
                                             apodization=win)
            else:
                out = _fourier_filter(oi, cutoff, cfg.filter_width, cfg.filter_sharpness, cfg.kernels)
            outs.append(out)
        return torch.stack(outs)

    def _centred(self, a: torch.Tensor) -> torch.Tensor:
        """Modes with the mean tip-tilt over the frames removed (differentiable)."""
        if not self.config.tiptilt:
            return a
        tt = [i for i in TIPTILT_MODES if i < a.shape[1]]
        if not tt:
            return a
        sel = torch.zeros(a.shape[1], dtype=a.dtype, device=a.device)
        sel[tt] = 1.0
        return a - a.mean(dim=0, keepdim=True) * sel[None, :, None, None]

    def _batches(self, n_objects: int, n_frames: int, batch: int) -> list:
        out = []
        for kk in range(n_objects):
            for s in range(0, n_frames, batch):
                out.append((kk, list(range(s, min(n_frames, s + batch)))))
        return out

    def _predict(self, o_star_k: torch.Tensor, a_eff: torch.Tensor, kk: int, frames_idx, ctx, size) -> torch.Tensor:
        """f(o*_k, s_k alpha_l) for the frames ``frames_idx``: [B, Y, X]. ``o_star_k`` covers the field
        plus the margin m on every side; the per-pixel modes of the margin are those of the nearest
        field pixel (the bilinear field with clamped edges); the output is cropped to the field."""
        b = len(frames_idx)
        y, x = size
        m = (o_star_k.shape[-2] - y) // 2
        engine = ctx["engines"][kk]
        obj = o_star_k[None, None].expand(b, 1, *o_star_k.shape[-2:]).contiguous()
        if getattr(engine, "wants_coarse_modes", False):
            # exact optics with PSFs interpolated between the grid nodes (psf-interpolation back end)
            out = engine.apply_coarse(obj, a_eff[frames_idx] * ctx["ratios"][kk], ctx["instruments"][kk], margin=m)
            return out[:, 0, m:m + y, m:m + x].float()
        modes = _upsample(a_eff[frames_idx] * ctx["ratios"][kk], size, self.config.kernels)
        if m > 0:
            modes = F.pad(modes, (m, m, m, m), mode="replicate")
        with _level_checkpointing(engine, ctx["plan"].checkpointing):
            out = engine.apply(obj, modes, ctx["instruments"][kk])
        return out[:, 0, m:m + y, m:m + x].float()

    def _emulate(self, o_star: torch.Tensor, a: torch.Tensor, ctx, size) -> torch.Tensor:
        """The model frames [K, L, Y, X] (no gradients) of ``o_star`` (field plus margin)."""
        k = o_star.shape[0]
        y, x = size
        n_frames = a.shape[0]
        out = torch.empty(k, n_frames, y, x, device=o_star.device)
        a_eff = self._centred(a)
        with torch.no_grad():
            for kk, idx in self._batches(k, n_frames, ctx["plan"].batch):
                out[kk, idx] = self._predict(o_star[kk], a_eff, kk, idx, ctx, (y, x))
        return out

    def _solve_field(self, data_n, pix_w, init_o, init_a, ctx, tile_label: str):
        """Optimise one field (the whole image or a tile); everything in normalised units on the device.

        The unknown object covers the field plus ``margin`` pixels on every side (initialised by mirroring
        ``init_o``), so that light from outside the field has somewhere to come from; only the field is
        compared with the frames. Returns (o, o*, alpha, model, history) cropped to the field."""
        cfg = self.config
        k, n_frames, y, x = data_n.shape
        insts, gamma, plan = ctx["insts"], ctx["gamma"], ctx["plan"]
        m = cfg.margin
        o0 = init_o.detach()
        if m > 0:
            mode = "reflect" if m < min(y, x) else "replicate"
            o0 = F.pad(o0[:, None], (m, m, m, m), mode=mode)[:, 0]
        o = o0.clone().requires_grad_(True)
        a = self._centred(init_a.detach()).clone().requires_grad_(True)
        mode_params = [a]
        groups = [{"params": [o], "lr": cfg.lr_objects, "weight_decay": cfg.weight_decay_objects}]
        g = None
        if cfg.global_modes and a.shape[-2] * a.shape[-1] > 1:
            # alpha_l(node) = g_l + a_l(node): Adam moves the frame's common wavefront g_l with the gradient
            # of the whole field, the nodes only refine it (the same model, better conditioned steps)
            g = torch.zeros(a.shape[0], a.shape[1], 1, 1, device=a.device, dtype=a.dtype, requires_grad=True)
            mode_params.append(g)
            groups.append({"params": [g], "lr": cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})
            groups.append({"params": [a], "lr": cfg.lr_nodes or cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})
        else:
            groups.append({"params": [a], "lr": cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})

        def modes_now():
            return self._centred(a if g is None else a + g)

        opt = torch.optim.AdamW(groups)
        fp16 = any(e.identity.precision == "fp16" for e in ctx["engines"]) and self.device.type == "cuda"
        loss_scale = float(cfg.loss_scale) if cfg.loss_scale is not None else (2.0 ** 16 if fp16 else 1.0)
        batches = self._batches(k, n_frames, plan.batch)
        history: dict = {key: [] for key in ("iteration", "total", "data", "reg_object", "reg_modes", "time_s")}
        npix = float(y * x)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            desc = "SV-MOMFBD" + (f" {tile_label}" if tile_label else "")
            bar = tqdm(total=cfg.iterations, desc=desc, unit="it", leave=False, dynamic_ncols=True, file=sys.stderr)
        try:
            for it in range(1, cfg.iterations + 1):
                t0 = time.perf_counter()
                for _attempt in range(8):
                    opt.zero_grad(set_to_none=True)
                    data_total = 0.0
                    # data term, batch by batch (gradients accumulate into o and a)
                    for kk, idx in batches:
                        o_star_k = self._filtered(o[kk:kk + 1], [insts[kk]])[0]
                        a_eff = modes_now()
                        pred = self._predict(o_star_k, a_eff, kk, idx, ctx, (y, x))
                        resid = pred - data_n[kk, idx]
                        w = gamma[kk, idx][:, None, None]
                        if pix_w is not None:
                            w = w * pix_w[kk, idx]
                        term = (w * resid.pow(2)).sum() / npix
                        (term * loss_scale).backward()
                        data_total += float(term.detach())
                    # regularisation
                    o_star = self._filtered(o, insts)
                    reg_o = cfg.lambda_obj * _grad_sq_mean(o_star).sum()
                    reg_a = cfg.lambda_modes * _grad_sq_mean(modes_now()).sum()
                    reg = reg_o + reg_a
                    if reg.requires_grad:
                        (reg * loss_scale).backward()
                    grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in [o] + mode_params)
                    if grads_ok and math.isfinite(data_total):
                        break
                    if not fp16:
                        raise SvrtError("the loss or its gradient became NaN/Inf; lower the learning rates "
                                        "(lr_objects, lr_modes) or check the input frames.")
                    loss_scale /= 2.0
                else:
                    raise SvrtError("FP16 gradients overflow even at a small loss scale; use precision fp32.")
                if loss_scale != 1.0:
                    for p in [o] + mode_params:
                        if p.grad is not None:
                            p.grad.div_(loss_scale)
                opt.step()
                with torch.no_grad():
                    a.copy_(self._centred(a))
                    if g is not None:
                        g.copy_(self._centred(g))
                dt = time.perf_counter() - t0
                terms = {"iteration": it, "data": data_total, "reg_object": float(reg_o.detach()),
                         "reg_modes": float(reg_a.detach())}
                terms["total"] = terms["data"] + terms["reg_object"] + terms["reg_modes"]
                terms["time_s"] = dt
                for key in history:
                    history[key].append(terms[key])
                if bar is not None:
                    bar.set_postfix(total=f"{terms['total']:.3e}", data=f"{terms['data']:.3e}",
                                    reg_o=f"{terms['reg_object']:.2e}", reg_m=f"{terms['reg_modes']:.2e}",
                                    refresh=False)
                    bar.update(1)
                if ctx.get("callback") is not None:
                    ctx["callback"](dict(terms, tile=tile_label))
        finally:
            if bar is not None:
                bar.close()
        history["iteration"] = np.asarray(history["iteration"], dtype=np.int64)
        for key in ("total", "data", "reg_object", "reg_modes", "time_s"):
            history[key] = np.asarray(history[key], dtype=np.float64)
        with torch.no_grad():
            a = modes_now().detach()
            o_star = self._filtered(o.detach(), insts)
            model = self._emulate(o_star, a, ctx, (y, x))
        crop = (slice(None), slice(m, m + y), slice(m, m + x))
        return o.detach()[crop], o_star[crop], a, model, history

    def _solve_tiled(self, data_n, pix_w, init_o, init_a, ctx):
        """Solve overlapping tiles one after another and blend them with raised-cosine weights (ramps over
        the overlap on the sides inside the field). The burst stays in host memory; only one tile's frames
        are on the device at a time. Objects and model are blended per pixel; the modes of the global grid
        are the blend of every tile's bilinear mode field sampled at the global nodes' positions."""
        cfg = self.config
        k, n_frames, y, x = data_n.shape
        dev = self.device
        yg, xg = grid_shape((y, x), cfg.grid)
        tiles = ctx["plan"].tiles
        ramp = ctx["plan"].overlap
        acc_o = torch.zeros(k, y, x)
        acc_os = torch.zeros(k, y, x)
        acc_m = torch.zeros(k, n_frames, y, x)
        acc_w = torch.zeros(y, x)
        acc_a = torch.zeros(n_frames, self.n_modes, yg, xg)
        acc_aw = torch.zeros(yg, xg)
        # pixel coordinates of the global nodes (bilinear, align_corners=False)
        py = (torch.arange(yg, dtype=torch.float64) + 0.5) * y / yg - 0.5
        px = (torch.arange(xg, dtype=torch.float64) + 0.5) * x / xg - 0.5
        init_a = init_a.detach().to("cpu")
        history = None
        for t, (y0, x0, ty, tx) in enumerate(tiles):
            sl = (slice(y0, y0 + ty), slice(x0, x0 + tx))
            tyg, txg = (math.ceil(ty / cfg.grid), math.ceil(tx / cfg.grid)) if cfg.grid else (1, 1)
            # the tile's initial modes: the global field sampled at the tile's node positions
            ty_n = y0 + (torch.arange(tyg, dtype=torch.float64) + 0.5) * ty / tyg - 0.5
            tx_n = x0 + (torch.arange(txg, dtype=torch.float64) + 0.5) * tx / txg - 0.5
            ia = _sample_coarse(init_a, ty_n, tx_n, (y, x)).to(dev)
            pw = None if pix_w is None else pix_w[..., sl[0], sl[1]].contiguous().to(dev)
            o, o_star, a, model, hist = self._solve_field(data_n[..., sl[0], sl[1]].contiguous().to(dev), pw,
                                                          init_o[:, sl[0], sl[1]].contiguous().to(dev), ia, ctx,
                                                          tile_label=f"tile {t + 1}/{len(tiles)}")
            wy = torch.as_tensor(_blend_weights(y, y0, ty, ramp), dtype=torch.float32)
            wx = torch.as_tensor(_blend_weights(x, x0, tx, ramp), dtype=torch.float32)
            w = wy[:, None] * wx[None, :]
            acc_o[:, sl[0], sl[1]] += w * o.cpu()
            acc_os[:, sl[0], sl[1]] += w * o_star.cpu()
            acc_m[:, :, sl[0], sl[1]] += w * model.cpu()
            acc_w[sl[0], sl[1]] += w
            # global nodes inside this tile (a contiguous range along each axis)
            iy = torch.nonzero((py >= y0 - 0.5) & (py <= y0 + ty - 0.5)).flatten()
            ix = torch.nonzero((px >= x0 - 0.5) & (px <= x0 + tx - 0.5)).flatten()
            if iy.numel() and ix.numel():
                sampled = _sample_coarse(a.detach().cpu(), py[iy] - y0, px[ix] - x0, (ty, tx))
                wny = torch.as_tensor(np.interp(py[iy].numpy() - y0, np.arange(ty), wy.numpy()), dtype=torch.float32)
                wnx = torch.as_tensor(np.interp(px[ix].numpy() - x0, np.arange(tx), wx.numpy()), dtype=torch.float32)
                wn = wny[:, None] * wnx[None, :]
                ys, xs = slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)
                acc_a[:, :, ys, xs] += wn * sampled
                acc_aw[ys, xs] += wn
            area = ty * tx / float(y * x)
            if history is None:
                history = {key: (v.copy() if key == "iteration" else v * (area if key != "time_s" else 1.0))
                           for key, v in hist.items()}
            else:
                for key, v in hist.items():
                    if key != "iteration":
                        history[key] = history[key] + (v * area if key != "time_s" else v)
        acc_w = acc_w.clamp_min(1e-12)
        o = (acc_o / acc_w).to(dev)
        o_star = (acc_os / acc_w).to(dev)
        model = (acc_m / acc_w).to(dev)
        a = self._centred(acc_a / acc_aw.clamp_min(1e-12)).to(dev)
        return o, o_star, a, model, history


def _sample_coarse(coarse: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The bilinear upsampling of ``coarse [L, M, Yg, Xg]`` to an image of ``shape`` (align_corners=False,
    edges clamped), evaluated at the (fractional) pixel coordinates ``ys [n]`` x ``xs [m]``: ``[L, M, n, m]``."""
    y, x = shape
    gy = ((2.0 * ys.double() + 1.0) / y - 1.0).float()
    gx = ((2.0 * xs.double() + 1.0) / x - 1.0).float()
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)          # [n, m, 2] as (x, y)
    grid = grid.to(coarse.device, coarse.dtype)[None].expand(coarse.shape[0], -1, -1, -1)
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=False)
