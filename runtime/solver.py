"""SV-MOMFBD: spatially variant multi-object multi-frame blind deconvolution (paper Sect. 3, Eqs. 13-17).

Two methods share the problem set-up below (photometry, tip-tilt, masks, margins, several instruments):

* ``method="momfbd"`` (the default): whole-field wavefronts with the object eliminated, SV refinement of the
  node wavefronts, Wiener-prior objects by preconditioned conjugate gradients; its stages are described in
  :mod:`svrt.runtime.method_momfbd`.

* ``method="adam"``: the paper's joint AdamW on objects and modes for ``iterations`` steps, the loss
  below.

With no engine named, both methods use the default forward model of
:func:`svrt.runtime.forward_choice.default_forward_model` (exact optics, by measurement); every
restoration header says which model drove it and why (FWDMODEL, FWDWHY).

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
  invariant MFBD, the baseline. The contract is :mod:`svrt.mode_grid`.
* **Photometry.** Object k's frames are divided by one constant ``c_k`` (the mean of |valid pixels|,
  ``scaling="object"``; or one constant for all objects, ``scaling="global"``) before solving and the
  results multiplied back, so the objects and the model come out in the input's units. The emulator
  is affine-equivariant (``f(a o + b) = a f(o) + b``: it removes the object's mean and divides by the
  8-norm of the rest, :func:`svrt.emulator.normalize_input`) and the erf filter has ``H(0) = 1``, so
  this changes nothing but the conditioning of the optimisation.
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

Where each part lives (this module is the orchestrator and keeps the public names):

* :mod:`svrt.runtime.solver_config`: :class:`SolverConfig`, its validation, the shared constants;
* :mod:`svrt.mode_grid`: the grid contract (:func:`grid_shape`, node positions, per-pixel modes);
* :mod:`svrt.runtime.problem`: the validated burst, photometric scaling, masks, gamma_kl, noise variances;
* :mod:`svrt.runtime.loss`: the erf filter o*, tip-tilt centring, the Tikhonov terms;
* :mod:`svrt.runtime.forward_model`: f(o*_k, s_k alpha_l) through any engine, with its declared capabilities;
* :mod:`svrt.runtime.plan`: batches, the memory estimate, tiles and their blending;
* :mod:`svrt.runtime.method_momfbd` and :mod:`svrt.runtime.method_adam`: the two methods.

Python API::

    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    engine = load_solver_engine(device="cpu")   # the default forward model; or "svce-c16", "crisp8542.onnx"
    solver = SVMOMFBD(engine, SolverConfig(iterations=30, grid=8))
    for burst in bursts:                       # the engine and buffers are reused
        result = solver.solve(burst)
        write_restoration(path, result.to_restoration(burst.header))
"""

from __future__ import annotations

import datetime
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.runtime.channel import burst_channels
from svrt.runtime.forward_choice import default_forward_model, forward_cards
from svrt.runtime.forward_model import ForwardModel, bytes_per_pixel_sample
from svrt.runtime.method_adam import solve_field, solve_tiled
from svrt.runtime.method_momfbd import solve_momfbd
from svrt.runtime.plan import Plan, make_plan
from svrt.runtime.problem import MethodResult, Problem, SolveContext, initial_state, noise_variance, validate_burst
from svrt.runtime.solver_config import (  # noqa: F401  (re-exported)
    CPU_MAX_BATCH,
    MAX_ITERATIONS,
    MIN_SIZE,
    PRECISIONS,
    RUNTIME_OVERHEAD_MB,
    TIPTILT_MODES,
    SolverConfig,
    grid_shape,
)
from svrt.runtime.solver_monitor import StoppingRule

__all__ = ["SolverConfig", "SVMOMFBD", "SolveResult", "Plan", "load_solver_engine", "grid_shape",
           "MIN_SIZE", "TIPTILT_MODES", "noise_variance", "RUNTIME_OVERHEAD_MB"]


# --------------------------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------------------------

def load_solver_engine(path_or_name: str | os.PathLike | None = None, backend: str | None = None,
                       device: str = "cpu", precision: str = "auto", method: str | None = None, **options):
    """:func:`svrt.runtime.engine.load_engine` with the solver's rules. With neither ``path_or_name`` nor
    ``backend`` the forward model is the default of :func:`svrt.runtime.forward_choice.default_forward_model`
    for ``method`` and ``device`` (exact optics today), and the engine remembers why (``chosen_because``, the
    FWDWHY card of the restoration). Precision: ``auto`` is FP16 on CUDA and FP32 on CPU (FP16 autocast is a
    torch back-end option; others keep their own precision)."""
    from svrt.runtime.engine import backend_for, load_engine

    if precision not in PRECISIONS:
        raise SvrtError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvrtError(f"device '{device}' was asked for but no CUDA GPU is visible to torch here; use --device cpu.")
    reason = None
    if path_or_name is None and backend is None:
        backend, reason = default_forward_model(method, device)
    chosen = backend or backend_for(path_or_name)
    if chosen == "torch":
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        options.setdefault("precision", precision)
    engine = load_engine(path_or_name, backend=chosen, device=device, **options)
    engine.chosen_because = reason
    return engine


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclass
class SolveResult:
    """Result of :meth:`SVMOMFBD.solve`, in the input's units.

    objects: float32 [K, Y, X] the restored objects o* (after the erf filter).
    objects_unfiltered: float32 [K, Y, X] the unknowns o before the filter.
    modes: float32 [L, M, Yg, Xg] KL coefficients, radians at the wavelength of object 0.
    model: float32 [K, L, Y, X] emulated frames f(o*_k, alpha_l).
    frame_average: float32 [K, Y, X] the average of the valid frames (the initial objects).
    loss: dict of 1-D arrays: iteration, total, data, reg_object, reg_modes, time_s.
    header: every setting, the engine identity, timings, scale constants, the quality cards (QUALITY, ...).
    quality: the verdict from the data alone (:class:`svrt.runtime.quality.Quality`).
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
    quality: Any = None          # the verdict (svrt.runtime.quality.Quality), set at the end of the solve

    @property
    def time_per_iteration(self) -> float:
        return float(self.header.get("T_ITER", float("nan")))

    def to_restoration(self, extra_header: Mapping[str, Any] | None = None):
        """A :class:`svrt.fileio.Restoration` (OBJECT, MODES, MODEL, LOSS); ``extra_header`` (e.g. the
        burst's header: DATE-OBS, TELESCOP, CDELT1/2) is kept, the solver's cards win on conflicts."""
        import re

        from svrt.fileio import Restoration

        header = {}
        for key, value in dict(extra_header or {}).items():
            up = str(key).upper()
            if up in ("SVRTFILE", "NOBJ", "NFRAMES") or re.match(r"^INSTR\d+$", up):
                continue
            header[up] = value
        header.update(self.header)
        return Restoration(objects=self.objects, modes=self.modes, model=self.model, loss=self.loss,
                           header=header, instruments=list(self.instruments))



def _check_diversity_supported(cfg: SolverConfig, plan: Plan) -> None:
    """One SvrtError sentence where the solve cannot honour a burst's phase diversity (method adam, tiles)."""
    if cfg.method != "momfbd" or plan.tiled:
        why = "method adam" if cfg.method != "momfbd" else f"a solve in {len(plan.tiles)} tiles"
        raise SvrtError(f"the burst declares phase diversity (DIVERSk/DIVOBJk cards), which {why} does not support; "
                        "use method momfbd on a field that fits in memory (raise memory_mb, unset tile_size).")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); Linux reports ru_maxrss in KiB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


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
            raise SvrtError("the engines were built for different numbers of modes "
                            f"({', '.join(map(str, sorted(n_modes)))}); "
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

    # ---------------------------------------------------------------- planning
    def bytes_per_pixel_sample(self, engine=None, checkpointing: bool = False) -> float:
        """Estimated peak bytes per pixel of one (object, frame) emulator call with its backward pass
        (:func:`svrt.runtime.forward_model.bytes_per_pixel_sample`; default the first engine)."""
        return bytes_per_pixel_sample(engine or self.engines[0], self.n_modes, checkpointing)

    def plan(self, n_objects: int, n_frames: int, shape: tuple[int, int]) -> Plan:
        """Frames per emulator call and tiles for a burst of this size under the memory bound
        (:func:`svrt.runtime.plan.make_plan`)."""
        return make_plan(self.config, self.engines, self.n_modes, self.device, n_objects, n_frames, shape)

    # ---------------------------------------------------------------- the public entry point
    def solve(self, frames, instruments: Sequence[str] | str | None = None, mask=None, init=None,
              weights=None, callback: Callable[[dict], Any] | None = None,
              resume: str | os.PathLike | None = None) -> SolveResult:
        """Restore a burst.

        frames: [K, L, Y, X] (numpy or torch; [L, Y, X] for one object) or a :class:`svrt.fileio.Burst`.
        instruments: one label per object (taken from the Burst when omitted).
        mask: bool [K, L, Y, X], False on bad pixels (the Burst's mask when omitted); without a mask
            NaN/Inf frames are an error.
        init: a :class:`SolveResult` or dict with ``objects [K, Y, X]`` (input units) and/or ``modes
            [L, M, Yg, Xg]`` (radians) to start from; default the frame average and zero modes.
        weights: gamma_kl [K, L] (overrides ``config.weights``).
        callback: called as every row of the loss table is recorded (every iteration of both methods: momfbd's
            object-solve and refinement iterations, adam's steps) with a dict (iteration, total, data,
            reg_object, reg_modes, time_s, tile).
        resume: a checkpoint (``config.checkpoint`` of an earlier, killed solve) to continue from; it must
            belong to this burst and these settings (one-sentence SvrtError otherwise). The result equals
            an uninterrupted solve's (:mod:`svrt.runtime.checkpoint`). Later checkpoints go to
            ``config.checkpoint``, or to ``resume`` when that is None.
        """
        cfg = self.config
        t_start = time.perf_counter()
        burst = validate_burst(frames, instruments, mask, weights, self.engine_for, self.n_modes)
        selection: dict = {}
        if cfg.select_frames is not None:
            # the sharpest frames only (svrt.runtime.frame_selection); the modes and model keep their order
            from svrt.runtime.frame_selection import select_frames

            burst, selection = select_frames(burst, cfg.select_frames)
        if cfg.align_channels and burst.shape[0] > 1:
            # channels 1..K-1 onto channel 0's grid: shift, rotation, scale (svrt.runtime.camera_alignment)
            from svrt.runtime.camera_alignment import align_burst

            burst, cards = align_burst(burst)
            selection.update(cards)
        elif any(str(key).upper().startswith("ALIGN") and str(key)[5:].isdigit() for key in burst.header):
            from svrt.checks import warn

            warn("the burst's header declares ALIGNk camera alignment cards, applied only with align_channels "
                 "(--align-channels); the channels are solved as recorded.")
        k, n_frames, y, x = burst.shape
        dev = self.device
        plan = self.plan(k, n_frames, (y, x))
        # tiles keep the burst in host memory and move one tile at a time to the device
        problem = Problem.build(burst, cfg, dev, data_device=torch.device("cpu") if plan.tiled else dev)
        io, ia = (init.objects_unfiltered, init.modes) if isinstance(init, SolveResult) else (
            (init.get("objects"), init.get("modes")) if init is not None else (None, None))
        init_o, init_a = initial_state(problem, io, ia, cfg, self.n_modes, dev)

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        if burst.diversity is not None:
            _check_diversity_supported(cfg, plan)
        # each channel's wavefront (wavelength ratio, known defocus) and PSFs: svrt.runtime.channel
        channels = burst_channels(burst.insts, burst.diversity, self.n_modes)
        models = [ForwardModel(e, label, channel, kernels=cfg.kernels, checkpointing=plan.checkpointing)
                  for e, label, channel in zip(burst.engines, burst.labels, channels)]
        ctx = SolveContext(config=cfg, device=dev, n_modes=self.n_modes, models=models, insts=burst.insts,
                           gamma=problem.gamma, plan=plan, callback=callback, cache=self._cache,
                           checkpoint=self._checkpointer(burst, plan, resume), diversity=burst.diversity,
                           stop=StoppingRule.of(cfg, t_start))
        data_n, pix_w = problem.data, problem.pix_w
        if plan.tiled:
            if cfg.method == "momfbd":
                # momfbd eliminates the object over the whole field at once: a field that must be cut into tiles
                # is solved by adam, tile by tile; say so rather than write METHOD_USED = adam without a word
                from svrt.checks import warn

                warn(f"the {y}x{x} field is solved in {len(plan.tiles)} tiles (the memory bound or tile_size), "
                     "which method momfbd does not support: each tile is solved with method adam (METHOD_USED); "
                     "raise memory_mb or unset tile_size to restore with momfbd.")
            solved = solve_tiled(ctx, data_n, pix_w, init_o, init_a)
        elif cfg.method == "momfbd":
            solved = solve_momfbd(ctx, data_n, pix_w, init_o, init_a if ia is not None else None, t_start)
        else:
            solved = solve_field(ctx, data_n, pix_w, init_o, init_a, tile_label="")
        solved.cards.update(selection)
        result = self._result(problem, plan, solved, time.perf_counter() - t_start)
        # the verdict from the data alone: header cards, a warning, or with strict an error (runtime/quality.py)
        from svrt.runtime.quality import check_result

        check_result(result, problem, cfg)
        return result

    def _checkpointer(self, burst, plan: Plan, resume):
        """The :class:`~svrt.runtime.checkpoint.Checkpointer` of this solve (None without checkpoints);
        reads and checks the ``resume`` checkpoint before any work."""
        from svrt.runtime.checkpoint import Checkpointer, fingerprint, load_checkpoint

        cfg = self.config
        if cfg.checkpoint is None and resume is None:
            return None
        if plan.tiled:
            raise SvrtError(f"checkpoints are not supported for a solve in {len(plan.tiles)} tiles; "
                            "raise memory_mb (or unset tile_size) or run without a checkpoint.")
        fp = fingerprint(burst, cfg, burst.engines, self.n_modes)
        state = load_checkpoint(resume, fp, cfg.method) if resume is not None else None
        return Checkpointer(cfg.checkpoint if cfg.checkpoint is not None else resume, fp, cfg.method, state)

    def _result(self, problem: Problem, plan: Plan, solved: MethodResult, t_total: float) -> SolveResult:
        """The solution in the input's units with its header: every setting, the engine identity, the
        plan, timings, memory, the stage cards of the method and the scale constants."""
        cfg = self.config
        dev = self.device
        k, n_frames, y, x = problem.shape
        yg, xg = grid_shape((y, x), cfg.grid)
        insts, scale = problem.burst.insts, problem.scale
        sc = scale.to(dev)
        history = solved.history
        objects = (solved.objects_filtered * sc[:, None, None]).cpu().numpy()
        objects_raw = (solved.objects.detach() * sc[:, None, None]).cpu().numpy()
        model_np = (solved.model * sc[:, None, None, None]).cpu().numpy()
        modes_np = solved.modes.detach().cpu().numpy()
        if dev.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(dev) / 2 ** 20
            peak_kind = "cuda"
        else:
            peak_mb = _peak_rss_mb()
            peak_kind = "rss"
        t_iter = float(np.mean(history["time_s"])) if len(history["time_s"]) else float("nan")

        header = self.config.header()
        header.update(self._engine_header(problem.burst.engines))
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
            "NMASKED": int((~problem.burst.valid).sum()),
            "LOSS_FINAL": float(history["total"][-1]),
            "METHOD_USED": solved.method_used,
        })
        header.update(solved.cards)
        for i in range(k):
            header[f"SCALE{i}"] = float(scale[i])
        return SolveResult(objects=objects.astype(np.float32), objects_unfiltered=objects_raw.astype(np.float32),
                           modes=modes_np.astype(np.float32), model=model_np.astype(np.float32),
                           frame_average=problem.average.numpy().astype(np.float32),
                           loss={key: np.asarray(v) for key, v in history.items()},
                           instruments=problem.burst.labels, header=header, plan=plan)

    @staticmethod
    def _engine_header(engines) -> dict:
        e0 = engines[0].identity
        out = {
            "ENGINE_BACKEND": e0.backend, "ENGINE_DEVICE": e0.device, "ENGINE_PRECISION": e0.precision,
            "ENGINE_MODEL": e0.model, "ENGINE_HASH": e0.model_hash, "ENGINE_NMODES": int(e0.n_modes),
            "ENGINE_INSTRUMENTS": ",".join(e0.instruments), "ENGINE_FILE": Path(e0.path).name if e0.path else "",
        }
        out.update(forward_cards(engines[0]))
        distinct = list(dict.fromkeys(engines))
        if len(distinct) > 1:
            for i, e in enumerate(engines):
                out[f"OBJ{i}_ENGINE"] = f"{e.identity.model}:{e.identity.model_hash}:{e.identity.backend}"
        return out

