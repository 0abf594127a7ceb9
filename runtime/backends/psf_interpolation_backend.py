"""A physics back end with no network: the exact optics of Eqs. 3-5 instead of the emulator.

- Given per-pixel modes (the :class:`Engine` interface), it computes the exact per-pixel convolution
  of Eq. 1 (:func:`svrt.optics.convolution.spatially_variant_convolve`): slow (one PSF per pixel), the
  ground truth.
- Given the solver's coarse mode grid (:meth:`apply_coarse`), it interpolates exact PSFs between the
  grid nodes (:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`): fast and close to Eq. 1
  for smooth fields.

Both are differentiable through PyTorch, so the solver can use this back end as a reference forward
model (``svrt deconvolve --backend psf-interpolation``), e.g. to separate the emulator's errors from
the solver's.
"""

from __future__ import annotations

import torch

from svrt.instruments import get_instrument, load_instruments
from svrt.mode_grid import N_MODES
from svrt.optics.convolution import spatially_variant_convolve
from svrt.optics.psf import PSFModel
from svrt.optics.psf_interpolation import interpolated_psf_convolve
from svrt.runtime.engine import Engine, EngineIdentity


class PSFInterpolationEngine(Engine):
    wants_coarse_modes = True      # apply_coarse: PSFs interpolated between the grid nodes
    linear_in_object = True        # a (spatially variant) convolution

    def __init__(self, n_modes: int = N_MODES, psf_size: int = 48, device: str = "cpu", instruments=None):
        self.psf_size = psf_size
        labels = list(instruments or load_instruments())
        self._models: dict[str, PSFModel] = {}
        self.identity = EngineIdentity(backend="psf-interpolation", device=str(torch.device(device)), precision="fp32",
                                       instruments=labels, n_modes=n_modes, model="exact-optics", model_hash="",
                                       extra={"psf_size": psf_size})

    @classmethod
    def load(cls, path=None, device: str = "cpu", psf_size: int = 48, **_):
        return cls(psf_size=psf_size, device=device)

    def psf_model(self, instrument: str) -> PSFModel:
        if instrument not in self._models:
            inst = get_instrument(instrument)
            self._models[instrument] = PSFModel(inst, self.n_modes, psf_size=self.psf_size, device=self.device)
        return self._models[instrument]

    def _forward(self, obj, modes, instrument):
        pm = self.psf_model(instrument)
        return torch.stack([spatially_variant_convolve(o, a, pm) for o, a in zip(obj, modes)])

    def _vjp(self, obj, modes, instrument, grad_out):
        o, m = obj.detach().requires_grad_(True), modes.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self._forward(o, m, instrument)
            return torch.autograd.grad(out, (o, m), grad_out)

    def apply_coarse(self, obj: torch.Tensor, coarse: torch.Tensor, instrument: str, margin: int = 0) -> torch.Tensor:
        """``obj [B, 1, Y + 2m, X + 2m]``, ``coarse [B, M, Yg, Xg]`` (grid over the inner Y x X) ->
        ``[B, 1, Y + 2m, X + 2m]``, differentiable."""
        instrument = self.check_instrument(instrument)
        out = interpolated_psf_convolve(obj[:, 0], coarse, self.psf_model(instrument), margin=margin)
        return out[:, None]

    def check_instrument(self, instrument: str) -> str:
        for label in self.instruments:
            if label.lower() == str(instrument).lower():
                return label
        return get_instrument(instrument).label
