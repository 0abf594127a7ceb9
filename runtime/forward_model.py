"""The solver's forward model: ``f(o*_k, s_k alpha_l)``, the frame l of object k predicted from the
filtered object and the coarse wavefront grid, for any engine.

One interface, :class:`ForwardModel` (one per channel: its engine, its instrument label, its
:class:`~svrt.runtime.channel.Channel`),
with the engine's declared capabilities instead of probes at every call:

* ``coarse_modes`` (:attr:`svrt.runtime.engine.Engine.wants_coarse_modes`): the engine takes the coarse
  grid ``[B, M, Yg, Xg]`` itself (exact optics: PSFs interpolated between the nodes,
  ``psf-interpolation``); otherwise the modes are upsampled bilinearly to every pixel
  (:func:`svrt.kernels.upsample_modes`) and the engine (an emulator) sees ``[B, M, Y, X]``.
* ``linear_in_object`` (:attr:`svrt.runtime.engine.Engine.linear_in_object`): ``f`` is a convolution,
  linear in the object (exact optics); an emulator is not.
* ``checkpointable``: a torch engine whose U-Net levels can be recomputed in the backward pass
  (gradient checkpointing on CUDA, ``Plan.checkpointing``).

Coefficients are radians at the wavelength of object 0; object k sees ``alpha * lambda_0 / lambda_k`` plus
its known diversity (:meth:`svrt.runtime.channel.Channel.wavefront`, the one home of that rule). The object
covers the field plus a margin m on every side; the per-pixel modes of the margin are those of the
nearest field pixel (the bilinear field with clamped edges) and the output is cropped to the field.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from svrt.runtime.channel import Channel

__all__ = ["ForwardModel", "emulate", "upsample", "bytes_per_pixel_sample", "level_checkpointing",
           "EXACT_OPTICS_BYTES_PER_PIXEL"]


def upsample(coarse: torch.Tensor, size, impl: str) -> torch.Tensor:
    """Per-pixel modes ``[..., Y, X]`` of the coarse grid ``[..., Yg, Xg]`` (bilinear, align_corners=False)."""
    from svrt.kernels import upsample_modes

    if coarse.shape[-2] == 1 and coarse.shape[-1] == 1:
        # one node: the bilinear upsampling is the constant; expand (its adjoint is a sum) is much faster
        return coarse.expand(*coarse.shape[:-2], int(size[0]), int(size[1]))
    return upsample_modes(coarse, size, impl=impl)


def _checkpointable(engine) -> bool:
    """Whether the engine is a plain (not compiled) torch U-Net whose levels can be checkpointed."""
    model = getattr(engine, "model", None)
    net = getattr(engine, "net", model)
    return model is not None and net is model and hasattr(model, "encoder") and hasattr(model, "decoder")


@contextlib.contextmanager
def level_checkpointing(engine, enabled: bool):
    """Gradient checkpointing of the U-Net levels of a torch engine: each encoder and decoder level
    keeps only its inputs and recomputes its activations in the backward pass. No-op for other back
    ends (their vector-Jacobian product runs inside the back end) and for compiled models.

    The levels' ``forward`` is wrapped for the duration of the call only (the U-Net itself has no
    checkpointing switch) and restored on exit, also on errors."""
    if not enabled or not _checkpointable(engine):
        yield False
        return
    from torch.utils.checkpoint import checkpoint

    model = engine.model
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


#: [byte] peak bytes per pixel (field plus margin) of one (object, frame) call of exact optics
#: (:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`, 16-pixel margin, 32-pixel grid, 48-pixel PSFs)
#: with its backward pass: ru_maxrss growth of one call of 2 frames measured 607 at 256^2 and 756 at 512^2 (CPU)
EXACT_OPTICS_BYTES_PER_PIXEL = 800.0


def bytes_per_pixel_sample(engine, n_modes: int, checkpointing: bool = False) -> float:
    """Estimated peak bytes per pixel of one (object, frame) emulator call with its backward pass.

    Measured on CPU (peak RSS of one forward + backward at 256^2, widths C = 4, 16, 32, M = 44):
    ``25 C + 4.4 (M + 1)`` floats per pixel. The estimate is ``1.25 (A C + 5 (M + 1))`` floats of 4
    bytes with A = 25, or A = 12 with checkpointing on CUDA (on CPU the allocator keeps the peak of
    the recomputation, measured equal); activations count 2 bytes in FP16. Engines without a U-Net
    width count as width 64 (``identity.extra['width']`` when they record one).

    Exact optics (engines that take the coarse mode grid, PSFs interpolated between the nodes) hold no U-Net
    activations: :data:`EXACT_OPTICS_BYTES_PER_PIXEL` (the width-64 rule gave 9.1 kB, 12x too much, and tiled
    a 1024^2 field that fits)."""
    if getattr(engine, "wants_coarse_modes", False):
        return EXACT_OPTICS_BYTES_PER_PIXEL
    model = getattr(engine, "model", None)
    width = getattr(getattr(model, "config", None), "width", None) or int(engine.identity.extra.get("width", 64))
    per_c = 12.0 if (checkpointing and engine.device.type == "cuda") else 25.0
    act_bytes = 2.0 if engine.identity.precision == "fp16" else 4.0
    return 1.25 * (per_c * width * act_bytes + 5.0 * (n_modes + 1) * 4.0)


class ForwardModel:
    """``f(o*_k, s_k alpha_l)`` of one object k through its engine (see the module docstring).

    engine: an :class:`svrt.runtime.engine.Engine` that covers ``instrument``.
    instrument: the label as the engine spells it.
    channel: the :class:`~svrt.runtime.channel.Channel` (wavelength ratio to object 0, known diversity) whose
        wavefront the engine sees; a number is the ratio ``lambda_0 / lambda_k`` of a channel without diversity.
    kernels: the :mod:`svrt.kernels` implementation of the upsampling (auto, torch, triton).
    checkpointing: recompute the U-Net levels in the backward pass (when the engine allows it).
    """

    def __init__(self, engine, instrument: str, channel: Channel | float, kernels: str = "auto",
                 checkpointing: bool = False):
        self.engine = engine
        self.instrument = instrument
        self.channel = channel if isinstance(channel, Channel) else Channel(None, float(channel))
        self.kernels = kernels
        self.checkpointing = checkpointing
        # declared capabilities (Engine class attributes; getattr only for duck-typed engines from outside svrt)
        self.coarse_modes = bool(getattr(engine, "wants_coarse_modes", False))
        self.linear_in_object = bool(getattr(engine, "linear_in_object", False))
        self.checkpointable = _checkpointable(engine)

    @property
    def ratio(self) -> float:
        """``lambda_0 / lambda_k`` of this channel."""
        return self.channel.ratio

    def _modes(self, a_eff: torch.Tensor, frames_idx) -> torch.Tensor:
        """The modes this channel sees, ``[B, M, Yg, Xg]``: scaled to its wavelength, plus its known diversity."""
        return self.channel.wavefront(a_eff[frames_idx], dim=1)

    @property
    def fp16(self) -> bool:
        return self.engine.identity.precision == "fp16"

    def predict(self, o_star_k: torch.Tensor, a_eff: torch.Tensor, frames_idx, size) -> torch.Tensor:
        """f(o*_k, s_k alpha_l) for the frames ``frames_idx``: [B, Y, X]. ``o_star_k [Y + 2m, X + 2m]``
        covers the field plus the margin m on every side; ``a_eff [L, M, Yg, Xg]`` are the (centred)
        modes of every frame in radians at the reference wavelength; the output is cropped to the field
        ``size = (Y, X)``. Differentiable in both."""
        b = len(frames_idx)
        y, x = size
        m = (o_star_k.shape[-2] - y) // 2
        obj = o_star_k[None, None].expand(b, 1, *o_star_k.shape[-2:]).contiguous()
        if self.coarse_modes:
            # exact optics with PSFs interpolated between the grid nodes (psf-interpolation back end)
            out = self.engine.apply_coarse(obj, self._modes(a_eff, frames_idx), self.instrument, margin=m)
            return out[:, 0, m:m + y, m:m + x].float()
        modes = upsample(self._modes(a_eff, frames_idx), size, self.kernels)
        if m > 0:
            modes = F.pad(modes, (m, m, m, m), mode="replicate")
        with level_checkpointing(self.engine, self.checkpointing and self.checkpointable):
            out = self.engine.apply(obj, modes, self.instrument)
        return out[:, 0, m:m + y, m:m + x].float()


def emulate(models: list, o_star: torch.Tensor, a_eff: torch.Tensor, batches: list, size) -> torch.Tensor:
    """The model frames ``[K, L, Y, X]`` (no gradients) of ``o_star [K, Y + 2m, X + 2m]`` (field plus
    margin) and the centred modes ``a_eff [L, M, Yg, Xg]``, one engine call per (object, frames) batch."""
    k = o_star.shape[0]
    y, x = size
    n_frames = a_eff.shape[0]
    out = torch.empty(k, n_frames, y, x, device=o_star.device)
    with torch.no_grad():
        for kk, idx in batches:
            out[kk, idx] = models[kk].predict(o_star[kk], a_eff, idx, (y, x))
    return out
