"""The problem SV-MOMFBD solves: a validated burst in the solver's normalised units.

:func:`validate_burst` checks the input (shapes, instruments, engines, pixel scales, masks, weights) and
returns a :class:`ValidatedBurst`; :meth:`Problem.build` applies the photometric scaling, fills masked
pixels and sets the data weights gamma_kl; :func:`initial_state` gives the starting objects and modes.
:class:`SolveContext` is what both methods share for one burst (forward models, plan, weights).

Conventions:

* **Photometry.** Object k's frames are divided by one constant ``c_k`` (the mean of |valid pixels|,
  ``scaling="object"``; or one constant for all objects, ``scaling="global"``) before solving and the
  results multiplied back, so the objects and the model come out in the input's units. The forward model
  is scale-equivariant (``f(c o) = c f(o)``) and the erf filter has ``H(0) = 1``, so this changes nothing
  but the conditioning of the optimisation. ``scaling="object"`` is equivalent to ``gamma_kl ~ 1 / c_k^2``:
  every object's data term is relative.
* **Masked pixels** (``mask`` False, or ``Burst.mask``): weight 0 in the data term and filled with the
  mean of the valid frames at that pixel (the object mean where no frame is valid), so their values
  never influence the result.
* **Weights.** ``gamma_kl`` is 1 (``weights="uniform"``) or the inverse noise variance of frame (k, l)
  estimated beyond the diffraction cutoff, normalised to a mean of 1 (``weights="noise"``).
* **Several instruments.** Coefficients are radians of phase at the wavelength of object 0; object k
  sees ``alpha * lambda_0 / lambda_k`` (``Problem.ratios``). All objects must have the same pixel scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.instruments import get_instrument
from svrt.mode_grid import per_pixel_modes
from svrt.runtime.channel import wavelength_ratios
from svrt.runtime.loss import centred, filtered
from svrt.runtime.solver_config import SolverConfig, check_field_size, grid_shape
from svrt.windows import flat_top_window

if TYPE_CHECKING:
    from svrt.runtime.plan import Plan

__all__ = ["ValidatedBurst", "Problem", "SolveContext", "validate_burst", "initial_state", "noise_variance",
           "noise_variances"]


@dataclass
class ValidatedBurst:
    """The input burst after every check, on the host.

    frames: float32 [K, L, Y, X] as given (NaN/Inf where invalid).
    valid: bool [K, L, Y, X], False on masked or non-finite pixels.
    instruments: the labels given, one per object; labels: as the engines spell them.
    insts: the :class:`~svrt.instruments.Instrument` of each object; engines: the engine of each object.
    gamma: user weights gamma_kl [K, L] or None. header: the Burst's header ({} for arrays).
    diversity: the :class:`~svrt.optics.diversity.DiversitySpec` of the header's DIVERSk/DIVOBJk cards
        (channels that image another channel's object through a known defocus), or None.
    """

    frames: torch.Tensor
    valid: torch.Tensor
    instruments: list
    labels: list
    insts: list
    engines: list
    gamma: torch.Tensor | None
    header: dict
    diversity: Any = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.frames.shape)


def validate_burst(frames, instruments, mask, weights, engine_for: Callable[[str, int], Any], n_modes: int) -> ValidatedBurst:
    """Check a burst (array, tensor or :class:`svrt.fileio.Burst`) against the engines; one-sentence
    :class:`SvrtError` on every fault. ``engine_for(label, k)`` returns the engine of object k."""
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
    check_field_size(y, x)
    if instruments is None:
        raise SvrtError("the instrument of each object is needed (instruments=[...] or a Burst).")
    if isinstance(instruments, str):
        instruments = [instruments] * k
    instruments = [str(s) for s in instruments]
    if len(instruments) != k:
        raise SvrtError(f"{len(instruments)} instruments were given for {k} objects; expected one per object.")
    insts = [get_instrument(s) for s in instruments]
    engines = [engine_for(s, i) for i, s in enumerate(instruments)]
    labels = [e.check(torch.zeros(1, 1, 16, 16), torch.zeros(1, n_modes, 16, 16), s)
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
    from svrt.optics.diversity import read_diversity
    from svrt.runtime.camera_alignment import alignment_cards

    diversity = read_diversity(header, instruments, "the burst's header")
    alignment_cards(header, k, frames_t.shape[-2:])  # checked wherever present, applied with align_channels
    return ValidatedBurst(frames=frames_t, valid=valid, instruments=instruments, labels=labels, insts=insts,
                          engines=engines, gamma=gamma, header=header,
                          diversity=diversity if diversity is not None and diversity.active else None)


@dataclass
class Problem:
    """A validated burst in normalised units, ready for either method.

    burst: the :class:`ValidatedBurst`.
    scale: [K] the photometric constants c_k (input units per normalised unit).
    average: float32 [K, Y, X] the average of the valid frames, input units, host (the initial objects).
    data: [K, L, Y, X] frames / c_k with masked pixels filled (on the device; on the host when tiled).
    average_n: [K, Y, X] average / c_k, beside ``data``.
    pix_w: [K, L, Y, X] 1 on valid pixels, 0 on masked ones, beside ``data``; None when all are valid.
    gamma: [K, L] gamma_kl on the device.
    ratios: [K] lambda_0 / lambda_k (modes are radians at the wavelength of object 0).
    """

    burst: ValidatedBurst
    scale: torch.Tensor
    average: torch.Tensor
    data: torch.Tensor
    average_n: torch.Tensor
    pix_w: torch.Tensor | None
    gamma: torch.Tensor
    ratios: list

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.burst.shape

    @classmethod
    def build(cls, burst: ValidatedBurst, cfg: SolverConfig, device: torch.device, data_device: torch.device) -> "Problem":
        """Photometric scaling, masked pixels filled, gamma_kl (``data_device``: where the frames live;
        tiles keep the burst in host memory and move one tile at a time to ``device``)."""
        frames_t, valid, insts = burst.frames, burst.valid, burst.insts
        k, n_frames = frames_t.shape[:2]
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
        data_n = (filled / scale[:, None, None, None]).to(data_device)
        avg_n = (average / scale[:, None, None]).to(data_device)

        # gamma_kl and pixel weights
        gamma = burst.gamma
        if gamma is None:
            if cfg.weights == "noise":
                # on the filled frames: masked pixels hold the mean of the valid frames there
                var = torch.stack([noise_variance(data_n[i].to(device), insts[i].cutoff_cycles_per_pixel) for i in range(k)])
                inv = 1.0 / var.clamp_min(1e-12)
                gamma = (inv / inv.mean()).cpu()
            else:
                gamma = torch.ones(k, n_frames)
        pix_w = None if bool(valid.all()) else valid.to(data_device).float()
        # wavelength ratios (modes in radians at the wavelength of object 0)
        ratios = wavelength_ratios(insts)
        return cls(burst=burst, scale=scale, average=average, data=data_n, average_n=avg_n, pix_w=pix_w,
                   gamma=gamma.to(device), ratios=ratios)


def initial_state(problem: Problem, io, ia, cfg: SolverConfig, n_modes: int, device: torch.device):
    """The starting objects ``[K, Y, X]`` (normalised, beside ``problem.data``) and modes ``[L, M, Yg, Xg]``
    (device). Default: the frame average and zero modes (or random modes of std ``init_modes_std`` from
    ``seed``); ``io`` replaces the objects (``[K, Y, X]``, input units) and ``ia`` the modes
    (``[L, M, Yg', Xg']``, radians; resampled bilinearly when the grid differs), when not None."""
    k, n_frames, y, x = problem.shape
    yg, xg = grid_shape((y, x), cfg.grid)
    data_dev = problem.data.device
    init_o = problem.average_n.clone()
    init_a = torch.zeros(n_frames, n_modes, yg, xg, device=device)
    if cfg.init_modes_std > 0:
        gen = torch.Generator().manual_seed(cfg.seed)
        init_a = (torch.randn(init_a.shape, generator=gen) * cfg.init_modes_std).to(device)
    if io is not None:
        io = torch.as_tensor(np.asarray(io, dtype=np.float32))
        if io.dim() == 2:
            io = io[None]
        if tuple(io.shape) != (k, y, x):
            raise SvrtError(f"init objects have shape {tuple(io.shape)}; expected [K, Y, X] = {(k, y, x)}.")
        init_o = (io / problem.scale[:, None, None]).to(data_dev)
    if ia is not None:
        ia = torch.as_tensor(np.asarray(ia, dtype=np.float32))
        if ia.dim() != 4 or ia.shape[0] != n_frames or ia.shape[1] != n_modes:
            raise SvrtError(f"init modes have shape {tuple(ia.shape)}; expected [L, M, Yg, Xg] with L = {n_frames} "
                            f"and M = {n_modes} (the engine's number of modes).")
        if tuple(ia.shape[2:]) != (yg, xg):
            ia = per_pixel_modes(ia, (yg, xg))
        init_a = ia.to(device)
    return init_o, init_a


@dataclass
class MethodResult:
    """What a method gives the orchestrator (:class:`~svrt.runtime.solver.SVMOMFBD`): the solution cropped to
    the field, in normalised units, on the device.

    objects: o [K, Y, X], the unknowns before the erf filter; objects_filtered: o* [K, Y, X], the restoration.
    modes: alpha [L, M, Yg, Xg] (radians at the wavelength of object 0); model: f(o*, alpha) [K, L, Y, X].
    history: the loss table, 1-D numpy arrays (iteration, total, data, reg_object, reg_modes, time_s).
    cards: header cards of the method's stages (momfbd: stage figures and the stop reason; empty for adam).
    method_used: the method that ran ('momfbd' or 'adam'; a field solved in tiles runs adam).
    """

    objects: torch.Tensor
    objects_filtered: torch.Tensor
    modes: torch.Tensor
    model: torch.Tensor
    history: dict
    method_used: str
    cards: dict = field(default_factory=dict)


@dataclass
class SolveContext:
    """What both methods share while solving one burst (the tile-independent part).

    config: the settings; device; n_modes: M.
    models: the :class:`~svrt.runtime.forward_model.ForwardModel` of each object.
    insts: the instrument of each object; gamma: gamma_kl [K, L] on the device.
    plan: the :class:`~svrt.runtime.plan.Plan`; callback: called after every iteration (or None).
    cache: buffers kept between calls (the hann window of the object filter).
    checkpoint: the :class:`~svrt.runtime.checkpoint.Checkpointer` of this solve (writes the state,
        holds the state to resume from), or None.
    diversity: the burst's :class:`~svrt.optics.diversity.DiversitySpec`, or None (every channel its own object).
    stop: the :class:`~svrt.runtime.solver_monitor.StoppingRule` of the solve (the time budget from its start), or
        None (no deadline).
    """

    config: SolverConfig
    device: torch.device
    n_modes: int
    models: list
    insts: list
    gamma: torch.Tensor
    plan: "Plan"
    callback: Callable[[dict], Any] | None = None
    cache: dict = field(default_factory=dict)
    checkpoint: Any = None        # a svrt.runtime.checkpoint.Checkpointer, or None (no checkpoints)
    diversity: Any = None         # a svrt.optics.diversity.DiversitySpec (channels tied to one object), or None
    stop: Any = None              # the svrt.runtime.solver_monitor.StoppingRule of the solve (its time budget), or None

    def filtered(self, o: torch.Tensor, insts: list | None = None) -> torch.Tensor:
        """o* = F^-1(H F(o)) of ``o [K, Y, X]`` (instruments ``insts``, default every object's)."""
        return filtered(o, self.insts if insts is None else insts, self.config, self.cache)

    def centred(self, a: torch.Tensor) -> torch.Tensor:
        """The modes with the mean tip-tilt over the frames removed (when ``config.tiptilt``)."""
        return centred(a, self.config.tiptilt)

    @property
    def channels(self) -> list:
        """The :class:`~svrt.runtime.channel.Channel` of each object (its wavelength ratio, its diversity)."""
        return [m.channel for m in self.models]

    @property
    def ratios(self) -> list:
        """lambda_0 / lambda_k of each object (modes are radians at the wavelength of object 0)."""
        return [m.ratio for m in self.models]

    @property
    def fp16(self) -> bool:
        """FP16 engines on CUDA: the adam method scales the loss dynamically."""
        return any(m.fp16 for m in self.models) and self.device.type == "cuda"


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
    win = flat_top_window((y, x), max(y, x) // 8, frames.device)
    spec = torch.fft.fft2((data - mean) * win).abs().pow(2)
    return spec[..., sel].mean(dim=-1) / (win.pow(2).sum())


def noise_variances(data_n: torch.Tensor, insts: list, device: torch.device) -> torch.Tensor:
    """Noise variance per pixel of every frame ``[K, L]`` from its power beyond the diffraction cutoff;
    where the sampling leaves no such frequencies (sub-Nyquist cameras), 1e-4 (1 % noise)."""
    out = []
    for i, inst in enumerate(insts):
        try:
            v = noise_variance(data_n[i].to(device), inst.cutoff_cycles_per_pixel)
        except SvrtError:
            v = torch.full((data_n.shape[1],), 1e-4, device=device)
        out.append(v.clamp_min(1e-10))
    return torch.stack(out)
