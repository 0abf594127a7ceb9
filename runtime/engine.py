"""One interface for every back end that runs the emulator.

An :class:`Engine` knows which instruments and how many modes it was built for, runs the emulator
forward on batches, and gives the vector-Jacobian product (the gradient of a scalar loss with respect
to the object and the modes, for a given upstream gradient). :meth:`Engine.apply` wraps both in a
``torch.autograd.Function`` so that the solver and the benchmarks use any back end the same way,
through ordinary PyTorch autograd.

Shapes: ``obj [B, 1, Y, X]``, ``modes [B, M, Y, X]`` (radians), output ``[B, 1, Y, X]``. Any Y, X:
sizes that are not multiples of 16 are reflect-padded here, so back ends only see multiples of 16.

Back ends live in :mod:`svrt.runtime.backends` (``torch_backend``, ``onnxruntime_backend``,
``tensorrt_backend``, ``psf_interpolation_backend``, ``psf_basis_backend``); each is imported only when
chosen. :func:`load_engine` picks one from the file: ``.safetensors`` (or a bundled model name) -> torch
(the U-Net) or psf-basis (a PSF-basis emulator, by its metadata), ``.onnx`` -> onnxruntime, ``.plan`` ->
tensorrt.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from svrt.emulator import padding_for
from svrt.errors import SvrtError


@dataclass
class EngineIdentity:
    """What an engine is: written into every restoration header and benchmark record."""

    backend: str                 # "torch", "torch-compiled", "onnxruntime", "tensorrt"
    device: str                  # "cpu", "cuda:0", ...
    precision: str               # "fp32", "fp16"
    instruments: list            # the instruments it can emulate (one for exported graphs)
    n_modes: int
    model: str                   # model name
    model_hash: str              # sha256 prefix of the weights
    path: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_export(cls, backend: str, device, meta: dict, path, extra: dict) -> "EngineIdentity":
        """The identity of an exported graph or plan (one instrument) from the metadata ``svrt export``
        wrote into it; the model name defaults to the file's stem."""
        p = Path(path)
        return cls(backend=backend, device=str(device), precision=meta["precision"], instruments=[meta["instrument"]],
                   n_modes=int(meta["n_modes"]), model=meta.get("model", p.stem), model_hash=meta.get("model_hash", ""),
                   path=str(p), extra=extra)


class Engine(ABC):
    """Base class of all back ends. Subclasses implement :meth:`_forward` and :meth:`_vjp` on sizes that
    are multiples of 16; padding, checks and autograd live here."""

    identity: EngineIdentity
    # declared capabilities, read by the solver's forward model (svrt.runtime.forward_model):
    wants_coarse_modes: bool = False   # True: takes the coarse mode grid itself (apply_coarse), e.g. exact optics
    linear_in_object: bool = False     # True: f(o1 + o2) = f(o1) + f(o2) (a convolution); an emulator is not
    # why this engine drives a restoration when no one named it (svrt.runtime.forward_choice; the FWDWHY card)
    chosen_because: str | None = None

    @property
    def n_modes(self) -> int:
        return self.identity.n_modes

    @property
    def instruments(self) -> list:
        return self.identity.instruments

    @property
    def device(self) -> torch.device:
        return torch.device(self.identity.device)

    # --- what back ends implement -------------------------------------------------------------
    @abstractmethod
    def _forward(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str) -> torch.Tensor:
        """Emulated convolution, no autograd; sizes multiples of 16."""

    @abstractmethod
    def _vjp(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str,
             grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d<grad_out, f>/d obj, d<grad_out, f>/d modes); sizes multiples of 16."""

    def close(self) -> None:  # noqa: B027  (optional: most engines hold nothing to release)
        """Release device resources (optional)."""

    # --- the public interface ------------------------------------------------------------------
    def check(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str) -> str:
        """Validate shapes and the instrument; returns the instrument label as the engine spells it."""
        if obj.dim() != 4 or obj.shape[1] != 1:
            raise SvrtError(f"object must be [B, 1, Y, X]; got {tuple(obj.shape)}.")
        if modes.dim() != 4 or modes.shape[0] != obj.shape[0] or modes.shape[-2:] != obj.shape[-2:]:
            raise SvrtError(f"modes must be [B, M, Y, X] matching the object {tuple(obj.shape)}; got "
                            f"{tuple(modes.shape)}.")
        if modes.shape[1] != self.n_modes:
            raise SvrtError(f"the engine {self.identity.model} ({self.identity.backend}) was built for {self.n_modes} "
                            f"modes; got {modes.shape[1]}.")
        return self.instrument_label(instrument)

    def instrument_label(self, instrument: str) -> str:
        """The instrument label as the engine spells it, its physics checked (:meth:`check_physics`), or one
        sentence naming the instruments the engine was built for."""
        for label in self.instruments:
            if label.lower() == str(instrument).lower():
                self.check_physics(label)
                return label
        raise SvrtError(f"the engine {self.identity.model} ({self.identity.backend}) was built for "
                        f"{', '.join(self.instruments)}, not '{instrument}'.")

    def check_physics(self, label: str) -> None:
        """Refuse an instrument whose physics (the registry now, ``$SVRT_INSTRUMENTS`` included) differ
        from those the model was trained on (``identity.extra['instrument_physics']`` when its metadata
        records them, else the built-in table): an emulator is conditioned on the label only. Back ends
        that compute the optics from the registry (psf-interpolation) have nothing to check. Cached
        per label and ``$SVRT_INSTRUMENTS``."""
        if self.identity.backend == "psf-interpolation":
            return
        import os

        from svrt.instruments import check_emulated_physics

        key = (label.lower(), os.environ.get("SVRT_INSTRUMENTS"))
        checked = self.__dict__.setdefault("_physics_checked", set())
        if key in checked:
            return
        check_emulated_physics(label, self.identity.model, (self.identity.extra or {}).get("instrument_physics"))
        checked.add(key)

    def forward(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str) -> torch.Tensor:
        """Emulated spatially variant convolution ``[B, 1, Y, X]`` (no autograd)."""
        instrument = self.check(obj, modes, instrument)
        with torch.no_grad():
            pad = padding_for(*obj.shape[-2:])
            out = self._forward(_pad(obj, pad), _pad(modes, pad), instrument)
            return _crop(out, pad, obj.shape[-2:])

    def vjp(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str,
            grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of ``sum(grad_out * f(obj, modes))`` w.r.t. ``obj`` and ``modes`` (same shapes)."""
        instrument = self.check(obj, modes, instrument)
        o, m = obj.detach().requires_grad_(True), modes.detach().requires_grad_(True)
        with torch.enable_grad():
            # padding is differentiable: pad inside autograd and let torch fold the adjoint of the padding
            pad = padding_for(*obj.shape[-2:])
            po, pm = _pad(o, pad), _pad(m, pad)
            go = torch.zeros(po.shape, dtype=grad_out.dtype, device=grad_out.device)
            go[..., pad[2]:pad[2] + obj.shape[-2], pad[0]:pad[0] + obj.shape[-1]] = grad_out
            g_obj, g_modes = self._vjp(po.detach(), pm.detach(), instrument, go)
            torch.autograd.backward([po, pm], [g_obj.to(po.dtype), g_modes.to(pm.dtype)])
        return o.grad, m.grad

    def mse_gradient(
        self,
        obj: torch.Tensor,
        modes: torch.Tensor,
        instrument: str,
        observed: torch.Tensor,
        weights: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``loss = sum(weights * (f(obj, modes) - observed)^2)`` with its gradients:
        returns (loss, model output, d loss/d obj, d loss/d modes)."""
        out = self.forward(obj, modes, instrument)
        resid = out - observed
        g_obj, g_modes = self.vjp(obj, modes, instrument, 2 * weights * resid)
        return (weights * resid * resid).sum(), out, g_obj, g_modes

    def apply(self, obj: torch.Tensor, modes: torch.Tensor, instrument: str) -> torch.Tensor:
        """Differentiable emulation: use it inside any PyTorch graph (the solver does)."""
        self.check(obj, modes, instrument)
        return _EngineFunction.apply(obj, modes, self, instrument)

    def __repr__(self) -> str:
        i = self.identity
        return f"<{type(self).__name__} {i.model} {i.backend} {i.device} {i.precision} {','.join(i.instruments)}>"


class _EngineFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, obj, modes, engine, instrument):
        ctx.engine, ctx.instrument = engine, instrument
        ctx.save_for_backward(obj, modes)
        return engine.forward(obj.detach(), modes.detach(), instrument)

    @staticmethod
    def backward(ctx, grad_out):
        obj, modes = ctx.saved_tensors
        g_obj, g_modes = ctx.engine.vjp(obj, modes, ctx.instrument, grad_out.contiguous())
        return g_obj, g_modes, None, None


def _pad(x: torch.Tensor, pad: tuple) -> torch.Tensor:
    if not any(pad):
        return x
    mode = "reflect" if min(x.shape[-2:]) > max(pad) else "replicate"
    return F.pad(x, pad, mode=mode)


def _crop(x: torch.Tensor, pad: tuple, size) -> torch.Tensor:
    if not any(pad):
        return x
    return x[..., pad[2]:pad[2] + size[0], pad[0]:pad[0] + size[1]]


# --------------------------------------------------------------------------- loading

BACKENDS = {
    "torch": "svrt.runtime.backends.torch_backend:TorchEngine",
    "onnxruntime": "svrt.runtime.backends.onnxruntime_backend:OnnxRuntimeEngine",
    "tensorrt": "svrt.runtime.backends.tensorrt_backend:TensorRTEngine",
    "psf-interpolation": "svrt.runtime.backends.psf_interpolation_backend:PSFInterpolationEngine",
    "psf-basis": "svrt.runtime.backends.psf_basis_backend:PSFBasisEngine",
}

SUFFIX_BACKEND = {".safetensors": "torch", ".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt"}


def backend_for(path: str | Path | None) -> str:
    """The default back end for a file: by its suffix, and for weights (``.safetensors`` or a bundled model
    name) by the kind their metadata records: the U-Net runs on torch, a PSF-basis emulator on psf-basis."""
    if path is None:
        return "torch"
    backend = SUFFIX_BACKEND.get(Path(str(path)).suffix.lower(), "torch")
    if backend == "torch":
        from svrt.emulator import model_kind

        try:
            return "psf-basis" if model_kind(path) == "psf-basis" else "torch"
        except SvrtError:
            return "torch"   # an unknown name or a missing file: the torch back end's loader says which
    return backend


def load_engine(path: str | Path | None = None, backend: str | None = None, device: str = "cpu",
                **options) -> Engine:
    """Load an engine: weights (.safetensors or a bundled model name; default the shipped model),
    an ONNX graph (.onnx) or a TensorRT plan (.plan). ``backend`` overrides the choice by suffix
    (e.g. ``onnxruntime`` on a .onnx with ``device="cuda"`` uses its CUDA execution provider)."""
    from svrt.emulator import check_device

    backend = backend or backend_for(path)
    if backend not in BACKENDS:
        raise SvrtError(f"unknown back end '{backend}'; expected one of {', '.join(BACKENDS)}.")
    check_device(device, available=False)  # each back end checks that its device exists
    module, name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module), name)
    _refuse_unknown_options(backend, cls.load, options)
    return cls.load(path, device=device, **options)


def _refuse_unknown_options(backend: str, load, options: dict) -> None:
    """One sentence for an option the back end's ``load`` does not name (its ``**_`` would swallow it: a typo or
    an option of another back end, e.g. ``threads`` for torch, would otherwise be ignored without a word)."""
    import inspect

    params = inspect.signature(load).parameters.values()
    fixed = ("path", "device")   # every back end's: given by load_engine itself
    named = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in fixed]
    unknown = sorted(set(options) - set(named))
    if unknown:
        raise SvrtError(f"the {backend} back end takes no option {', '.join(unknown)}; its options are "
                        f"{', '.join(named) or 'none'}.")
