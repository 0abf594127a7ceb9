"""A PSF-basis emulator exported to ONNX (:mod:`svrt.export.psf_basis_graphs`), run by ONNX Runtime.

The graphs give PSFs of KL coefficients and their vector-Jacobian product; the spatially variant convolution
around them is the same exact arithmetic as the torch back end's (:mod:`svrt.runtime.backends.psf_basis_backend`):
PSFs at the solver's grid nodes, interpolated between them. :func:`svrt.runtime.backends.onnxruntime_backend.
OnnxRuntimeEngine.load` hands a graph whose metadata says ``kind = "psf-basis"`` to this class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svrt.optics.convolution import spatially_variant_convolve
from svrt.optics.psf_interpolation import interpolated_psf_convolve
from svrt.runtime.backends.gradient_companion import CompanionPair, missing_vjp
from svrt.runtime.engine import Engine, EngineIdentity


class _OnnxPSF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coefficients, model):
        ctx.model = model
        ctx.save_for_backward(coefficients)
        return model.run(model.owner.session, coefficients)

    @staticmethod
    def backward(ctx, grad_psf):
        (coefficients,) = ctx.saved_tensors
        owner = ctx.model.owner
        if owner.vjp_session is None:
            raise missing_vjp(owner.path, "graph", "onnxruntime", "export it again with 'svrt export'")
        grad = ctx.model.run(owner.vjp_session, coefficients, grad_psf)
        return grad, None


class OnnxPSFModel:
    """The PSF-model interface (``n_modes``, ``psf_size``, ``dtype``, ``__call__(a [..., M]) -> [..., S, S]``)
    over the two sessions, differentiable through :class:`_OnnxPSF`."""

    dtype = torch.float32

    def __init__(self, owner, n_modes: int, psf_size: int):
        self.owner, self.n_modes, self.psf_size = owner, n_modes, psf_size

    def run(self, session, coefficients: torch.Tensor, grad_psf: torch.Tensor | None = None) -> torch.Tensor:
        """The forward graph (``grad_psf`` None): ``[..., M] -> [..., S, S]``; the VJP graph: ``[..., M]`` and
        ``[..., S, S] -> [..., M]``."""
        m, s = self.n_modes, self.psf_size
        lead = coefficients.shape[:-1]

        def host(t, *shape):
            return np.ascontiguousarray(t.detach().reshape(-1, *shape).to("cpu", torch.float32).numpy())

        feeds = {"coefficients": host(coefficients, m)}
        if grad_psf is not None:
            feeds["grad_psf"] = host(grad_psf, s, s)
        out = torch.from_numpy(session.run(None, feeds)[0]).to(coefficients.device)
        return out.reshape(*lead, s, s) if grad_psf is None else out.reshape(*lead, m)

    def __call__(self, coefficients: torch.Tensor) -> torch.Tensor:
        return _OnnxPSF.apply(coefficients.to(torch.float32), self)


class OnnxRuntimePSFBasisEngine(CompanionPair, Engine):
    """Exported PSF-basis graphs (one instrument) in ONNX Runtime, CPU execution provider."""

    wants_coarse_modes = True
    linear_in_object = True

    def __init__(self, session, meta: dict, path, vjp_session=None, vjp_path=None):
        self.session, self.meta, self.path = session, meta, Path(path)
        self.vjp_session, self.vjp_path = vjp_session, vjp_path
        self.psf_model = OnnxPSFModel(self, int(meta["n_modes"]), int(meta["psf_size"]))
        self.identity = EngineIdentity.of_export(
            "onnxruntime", "cpu", meta, path,
            {"kind": "psf-basis", "providers": session.get_providers(),
             "vjp_graph": str(vjp_path) if vjp_session else "", "psf_size": self.psf_model.psf_size,
             "threads": session.get_session_options().intra_op_num_threads,
             "svrt_version": meta.get("svrt_version", ""), "opset": meta.get("opset", "")})

    def _forward(self, obj, modes, instrument):
        return torch.stack([spatially_variant_convolve(o, a, self.psf_model) for o, a in zip(obj, modes)])

    def _vjp(self, obj, modes, instrument, grad_out):
        o, m = obj.detach().requires_grad_(True), modes.detach().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad(self._forward(o, m, instrument), (o, m), grad_out)

    def apply_coarse(self, obj: torch.Tensor, coarse: torch.Tensor, instrument: str, margin: int = 0) -> torch.Tensor:
        """``obj [B, 1, Y + 2m, X + 2m]``, ``coarse [B, M, Yg, Xg]`` -> ``[B, 1, Y + 2m, X + 2m]``, differentiable."""
        self.instrument_label(instrument)
        return interpolated_psf_convolve(obj[:, 0], coarse, self.psf_model, margin=margin)[:, None]
