"""ONNX graphs of the PSF-basis emulator (:mod:`svrt.psf_emulator`): what ``svrt export psfb-crisp8542`` writes.

Only the learned part is a graph: KL coefficients to PSFs. The spatially variant convolution around it is exact
arithmetic that the runtime does itself (:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`), so an
ONNX Runtime (or TensorRT) restoration runs the same convolution as a torch one.

- :class:`PSFForwardGraph` ``coefficients [P, M] -> psf [P, S, S]``.
- :class:`PSFVJPGraph` ``(coefficients [P, M], grad_psf [P, S, S]) -> grad_coefficients [P, M]``: the
  vector-Jacobian product written out as a forward computation with standard operators (MatMul, Sin, Cos,
  Where, Sigmoid), adjoint by adjoint:

  =========================================  ==========================================================
  forward                                    adjoint
  =========================================  ==========================================================
  ``psf = box / sum(box)``                   ``(G - <G, psf>) / sum(box)``
  ``box = Sy R Sx^T`` (shift and crop)       ``dR = Sy^T dB Sx``, ``dSy = dB Sx R^T``, ``dSx = dB^T Sy R``
  ``S[r, w] = D(r - w - t)`` (Dirichlet)     ``dt = -sum dS * D'(r - w - t)``
  ``t = a T`` (the tilt's image motion)      ``da += dt T^T``
  ``R = B_0 + c B`` (the basis)              ``dc = dR B^T``
  ``c = net(a / s_a) s_c`` (Linear, SiLU)    transposed weights, ``silu'(h) = sig(h) (1 + h (1 - sig(h)))``
  =========================================  ==========================================================
"""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from svrt.errors import SvrtError
from svrt.psf_emulator import KIND, PSFBasisEmulator, shift_matrix

FORMAT = "svrt-psf-basis-onnx/1"
OPSET = 17
NAMES = {"forward": (["coefficients"], ["psf"]), "vjp": (["coefficients", "grad_psf"], ["grad_coefficients"])}
COMPUTES = {"forward": "PSFs [P,S,S] of KL coefficients [P,M] (radians): the PSF-basis emulator",
            "vjp": "d<grad_psf, psf(coefficients)>/d coefficients: the PSF-basis emulator's vector-Jacobian product"}


def shift_matrix_slope(shift: torch.Tensor, width: int, rows: torch.Tensor) -> torch.Tensor:
    """``d D(u) / du`` at the entries of :func:`svrt.psf_emulator.shift_matrix` (``u = row - column - shift``),
    ``[..., R, W]``: ``D' = (pi / W) (W cos(pi u) cot(x) - sin(pi u) / sin(x)^2) / W``, ``x = pi u / W``; near
    ``u = 0``, ``-(pi^2 u) (1 + 2 / W^2) / 3``."""
    j = torch.arange(width, dtype=shift.dtype, device=shift.device)
    u = rows.to(shift.dtype)[:, None] - j[None, :] - shift[..., None, None]
    small = u.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(u), u)
    x = torch.pi * safe / width
    sin_x = torch.sin(x)
    slope = (torch.pi * torch.cos(torch.pi * safe) * torch.cos(x) / sin_x
             - torch.pi / width * torch.sin(torch.pi * safe) / (sin_x * sin_x)) / width
    return torch.where(small, -(torch.pi ** 2) * u * (1 + 2 / width ** 2) / 3, slope)


class _Graph(nn.Module):
    def __init__(self, model: PSFBasisEmulator):
        super().__init__()
        cfg = model.config
        self.size, self.width = cfg.psf_size, cfg.work_size
        lo = self.width // 2 - self.size // 2
        self.register_buffer("rows", torch.arange(lo, lo + self.size))
        for name in ("mean", "basis", "tilt", "mode_scale", "weight_scale"):
            self.register_buffer(name, getattr(model, name).detach().float().clone())
        self.linears = nn.ModuleList([m for m in model.net if isinstance(m, nn.Linear)])

    def _network(self, a: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        h = a / self.mode_scale
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i < len(self.linears) - 1:
                if keep is not None:
                    keep.append(h)
                h = h * torch.sigmoid(h)
        return h * self.weight_scale

    def _forward(self, a: torch.Tensor, keep: list | None = None):
        c = self._network(a, keep)
        k, w = self.basis.shape[0], self.width
        rest = self.mean + (c @ self.basis.reshape(k, w * w)).reshape(-1, w, w)
        t = a @ self.tilt
        sy, sx = shift_matrix(t[:, 1], w, self.rows), shift_matrix(t[:, 0], w, self.rows)
        box = sy @ rest @ sx.transpose(-2, -1)
        total = box.sum(dim=(-2, -1), keepdim=True)
        return box / total, (rest, t, sy, sx, total)


class PSFForwardGraph(_Graph):
    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self._forward(coefficients)[0]


class PSFVJPGraph(_Graph):
    def forward(self, coefficients: torch.Tensor, grad_psf: torch.Tensor) -> torch.Tensor:
        keep: list = []
        psf, (rest, t, sy, sx, total) = self._forward(coefficients, keep)
        w = self.width
        d_box = (grad_psf - (grad_psf * psf).sum(dim=(-2, -1), keepdim=True)) / total
        d_rest = sy.transpose(-2, -1) @ d_box @ sx
        d_sy = d_box @ sx @ rest.transpose(-2, -1)
        d_sx = d_box.transpose(-2, -1) @ sy @ rest
        d_ty = -(d_sy * shift_matrix_slope(t[:, 1], w, self.rows)).sum(dim=(-2, -1))
        d_tx = -(d_sx * shift_matrix_slope(t[:, 0], w, self.rows)).sum(dim=(-2, -1))
        d_a = torch.stack([d_tx, d_ty], dim=-1) @ self.tilt.transpose(0, 1)
        k = self.basis.shape[0]
        d_h = (d_rest.reshape(-1, w * w) @ self.basis.reshape(k, w * w).transpose(0, 1)) * self.weight_scale
        for i in range(len(self.linears) - 1, -1, -1):
            d_h = d_h @ self.linears[i].weight
            if i > 0:
                h = keep[i - 1]
                sig = torch.sigmoid(h)
                d_h = d_h * sig * (1 + h * (1 - sig))
        return d_a + d_h / self.mode_scale


def graph_metadata(model: PSFBasisEmulator, meta: dict, graph: str) -> dict:
    """The metadata written into each graph (``onnxruntime`` reads it back)."""
    from svrt.export.onnx_export import svrt_version

    cfg = model.config
    return {"format": FORMAT, "kind": KIND, "svrt_version": svrt_version(), "graph": graph,
            "computes": COMPUTES[graph], "instrument": cfg.instrument, "model": str(meta.get("name", "model")),
            "model_hash": str(meta.get("sha256", "")), "n_modes": str(cfg.n_modes), "psf_size": str(cfg.psf_size),
            "precision": "fp32", "config": json.dumps(cfg.to_dict(), sort_keys=True), "opset": str(OPSET),
            "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False)"}


def to_onnx(model: PSFBasisEmulator, meta: dict, graph: str):
    """The checked ONNX ``ModelProto`` of one graph (dynamic P)."""
    import onnx

    module = {"forward": PSFForwardGraph, "vjp": PSFVJPGraph}[graph](model).eval()
    cfg = model.config
    args = [0.1 * torch.randn(3, cfg.n_modes)]
    if graph == "vjp":
        args.append(torch.randn(3, cfg.psf_size, cfg.psf_size))
    names_in, names_out = NAMES[graph]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), buf, dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, dynamic_axes={n: {0: "psfs"} for n in names_in + names_out},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "svrt"
    proto.doc_string = COMPUTES[graph]
    for key, value in graph_metadata(model, meta, graph).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_psf_basis_onnx(model_or_path, output: str | Path, vjp: bool = True, check: bool = True,
                          meta: dict | None = None) -> dict:
    """Write ``output`` (forward graph) and its VJP graph beside it, atomically; with ``check`` both are run
    in ONNX Runtime (CPU) against the torch emulator and refused (nothing written) when they differ by more than
    1e-4 relative (float32 rounding is ~1e-6). ``model_or_path``: a loaded :class:`PSFBasisEmulator` (with its
    file's ``meta``) or a file or bundled name. Returns ``{"files": [...], "checks": {...}, "seconds": s}``."""
    from svrt.export.onnx_export import save_graph_pair
    from svrt.psf_emulator import load_psf_emulator
    from svrt.runtime.backends.gradient_companion import vjp_path_for

    t0 = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise SvrtError(f"{output}: an ONNX export needs a file name ending in .onnx.")
    if isinstance(model_or_path, PSFBasisEmulator):
        model, meta = model_or_path, dict(meta or {})
    else:
        model, meta = load_psf_emulator(model_or_path)
        meta.setdefault("name", Path(str(model_or_path)).stem)
    protos = {"forward": to_onnx(model, meta, "forward")}
    if vjp:
        protos["vjp"] = to_onnx(model, meta, "vjp")
    result = {"files": [str(output)] + ([str(vjp_path_for(output))] if vjp else [])}
    result["checks"] = save_graph_pair(protos, output, (lambda fwd, vjp_file: compare_with_torch(
        model, fwd, vjp_file, output)) if check else None)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def compare_with_torch(model: PSFBasisEmulator, forward_path, vjp_path, output) -> dict:
    """Relative max differences of the graphs' PSFs and coefficient gradients against torch autograd on 64
    wavefronts of the training regime; :class:`SvrtError` above 1e-4."""
    import numpy as np

    from svrt.runtime.backends.onnxruntime_backend import import_onnxruntime

    ort = import_onnxruntime()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, model.n_modes, generator=g) * model.mode_scale
    grad = torch.randn(64, model.psf_size, model.psf_size, generator=g)
    x = a.clone().requires_grad_(True)
    with torch.enable_grad():
        psf = model(x)
        ref_grad = torch.autograd.grad(psf, x, grad)[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    fwd = ort.InferenceSession(str(forward_path), opts, providers=["CPUExecutionProvider"])
    got = fwd.run(None, {"coefficients": a.numpy()})[0]
    checks = {"psf_max_rel": float(np.abs(got - psf.detach().numpy()).max() / psf.detach().abs().max())}
    if vjp_path is not None:
        vjp = ort.InferenceSession(str(vjp_path), opts, providers=["CPUExecutionProvider"])
        got_grad = vjp.run(None, {"coefficients": a.numpy(), "grad_psf": grad.numpy()})[0]
        checks["gradient_max_rel"] = float(np.abs(got_grad - ref_grad.numpy()).max() / ref_grad.abs().max())
    bad = {k: v for k, v in checks.items() if not v <= 1e-4}
    if bad:
        raise SvrtError(f"{output}: the exported graphs differ from the torch emulator ({bad}); nothing was written.")
    return checks
