"""The PSF-basis emulator as a forward model (:mod:`svrt.psf_emulator`): a learned PSF inside an exact spatially
variant convolution, so the model is linear in the object and its mode gradient is the network's Jacobian.

- Given per-pixel modes (the :class:`Engine` interface): the per-pixel convolution of Eq. 1 with emulated PSFs.
- Given the solver's coarse mode grid (:meth:`apply_coarse`): emulated PSFs at the grid nodes, interpolated
  between them as the exact-optics back end interpolates exact ones
  (:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`).

Loaded from a ``.safetensors`` file whose metadata says ``kind = "psf-basis"`` (or a bundled name):
``svrt deconvolve --model psfb-crisp8542``; :func:`svrt.runtime.engine.backend_for` picks this back end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from svrt.optics.psf_interpolation import interpolated_psf_convolve
from svrt.psf_emulator import load_psf_emulator
from svrt.runtime.engine import Engine, EngineIdentity


class PSFBasisEngine(Engine):
    wants_coarse_modes = True      # apply_coarse: emulated PSFs interpolated between the grid nodes
    linear_in_object = True        # a (spatially variant) convolution with PSFs that do not see the object

    def __init__(self, model, meta: dict, device: str = "cpu", path: str = ""):
        self.model = model.to(device)
        cfg = model.config
        self.identity = EngineIdentity(backend="psf-basis", device=str(torch.device(device)), precision="fp32",
                                       instruments=[cfg.instrument], n_modes=cfg.n_modes,
                                       model=meta.get("name", Path(path).stem if path else "psf-basis"),
                                       model_hash=meta.get("sha256", ""), path=str(path),
                                       extra={"psf_size": cfg.psf_size, "n_basis": cfg.n_basis,
                                              "validation": meta.get("validation", {})})

    @classmethod
    def load(cls, path=None, device: str = "cpu"):
        from svrt.emulator import resolve_model_path

        resolved = resolve_model_path(path)
        model, meta = load_psf_emulator(resolved, device=device)
        meta.setdefault("name", resolved.stem)
        return cls(model, meta, device=device, path=str(resolved))

    def _forward(self, obj, modes, instrument):
        return self.model.convolve(obj[:, 0], modes)[:, None]

    def _vjp(self, obj, modes, instrument, grad_out):
        o, m = obj.detach().requires_grad_(True), modes.detach().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad(self._forward(o, m, instrument), (o, m), grad_out)

    def apply_coarse(self, obj: torch.Tensor, coarse: torch.Tensor, instrument: str, margin: int = 0) -> torch.Tensor:
        """``obj [B, 1, Y + 2m, X + 2m]``, ``coarse [B, M, Yg, Xg]`` (grid over the inner Y x X) ->
        ``[B, 1, Y + 2m, X + 2m]``, differentiable."""
        self.instrument_label(instrument)
        return interpolated_psf_convolve(obj[:, 0], coarse, self.model, margin=margin)[:, None]
