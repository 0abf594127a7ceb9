"""The PyTorch back end: the model itself, on CPU or CUDA, eager or compiled (``torch.compile``)."""

from __future__ import annotations

from pathlib import Path

import torch

from svrt.emulator import load_model
from svrt.runtime.engine import Engine, EngineIdentity


def _training_extra(meta: dict) -> dict:
    """What the metadata says about the training that the engine's checks use: the instruments'
    physics (``instrument_physics``, label -> fields) and the smallest r0 of the training pairs."""
    extra = {}
    if isinstance(meta.get("instrument_physics"), dict):
        extra["instrument_physics"] = meta["instrument_physics"]
    r0 = (meta.get("pairs") or {}).get("r0_cm_at_5000A") if isinstance(meta.get("pairs"), dict) else None
    if isinstance(r0, (list, tuple)) and r0 and isinstance(r0[0], (int, float)) and r0[0] > 0:
        extra["training_r0_cm"] = float(r0[0])
    return extra


class TorchEngine(Engine):
    """Runs :class:`svrt.emulator.SVCE` in PyTorch. ``precision="fp16"`` uses autocast on CUDA."""

    def __init__(self, model, meta: dict, device: str = "cpu", precision: str = "fp32", compiled: bool = False,
                 path: str = ""):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.precision = precision
        self.net = torch.compile(self.model, dynamic=True) if compiled else self.model
        self.identity = EngineIdentity(
            backend="torch-compiled" if compiled else "torch",
            device=str(torch.device(device)),
            precision=precision,
            instruments=list(model.config.instruments),
            n_modes=model.config.n_modes,
            model=meta.get("name", Path(path).stem if path else "model"),
            model_hash=meta.get("sha256", ""),
            path=str(path),
            extra=_training_extra(meta),
        )

    @classmethod
    def load(cls, path=None, device: str = "cpu", precision: str = "fp32", compiled: bool = False, **_):
        from svrt.emulator import resolve_model_path

        resolved = resolve_model_path(path)
        model, meta = load_model(resolved, device=device)
        meta.setdefault("name", resolved.stem)
        return cls(model, meta, device=device, precision=precision, compiled=compiled, path=str(resolved))

    def _run(self, obj, modes, instrument):
        cond = self.model.one_hot(instrument, obj.shape[0], device=obj.device)
        dev = obj.device.type
        with torch.autocast(dev, dtype=torch.float16, enabled=self.precision == "fp16" and dev == "cuda"):
            return self.net(obj, modes, cond).float()

    def _forward(self, obj, modes, instrument):
        return self._run(obj, modes, instrument)

    def _vjp(self, obj, modes, instrument, grad_out):
        o, m = obj.detach().requires_grad_(True), modes.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self._run(o, m, instrument)
            return torch.autograd.grad(out, (o, m), grad_out)

    def apply(self, obj, modes, instrument):
        """Native autograd (no extra forward in the backward pass)."""
        from svrt.emulator import padding_for
        from svrt.runtime.engine import _crop, _pad

        instrument = self.check(obj, modes, instrument)
        pad = padding_for(*obj.shape[-2:])
        return _crop(self._run(_pad(obj, pad), _pad(modes, pad), instrument), pad, obj.shape[-2:])
