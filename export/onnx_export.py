"""Export the emulator of one instrument to ONNX: a forward graph and its vector-Jacobian product.

Files (one pair per instrument and precision)::

    crisp8542.onnx       forward:  obj [B,1,Y,X], modes [B,M,Y,X]            -> out [B,1,Y,X]
    crisp8542.vjp.onnx   gradient: obj, modes, grad_out [B,1,Y,X]            -> grad_obj [B,1,Y,X],
                                                                                grad_modes [B,M,Y,X]

Two files rather than one graph with both: a run that only needs the forward model loads half the
weights, and each graph is an ordinary single-purpose ONNX model that any runtime (and TensorRT's
parser) accepts. :func:`svrt.runtime.backends.gradient_companion.vjp_path_for` gives the companion's
name; the runtime finds it beside the forward graph and checks that both carry the same instrument,
model hash, modes and precision.

All inputs and outputs are float32 (the FP16 variant casts at its boundaries, see
:mod:`svrt.export.graphs`); B, Y and X are dynamic, Y and X must be multiples of 16 (the Engine
pads other sizes). BatchNorm is folded into the convolutions and the instrument's FiLM conditioning
into two constants. Each file carries its metadata in ``metadata_props`` (:data:`METADATA_KEYS`).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. With torch 2.13 it
traces these graphs in one to two seconds, keeps B, Y, X symbolic through ``dynamic_axes`` and writes
plain opset-17 operators (Conv, Relu, MaxPool, Resize, Where, DepthToSpace, Pad(edge), ...); it is
deprecated but works reliably here. The torch.export-based exporter (the default since torch 2.9)
needs the ``onnxscript`` package, which this environment does not have, and ``Dim`` constraints for
the multiple-of-16 sizes; the graphs are plain tensor code, so switching is a change to
:func:`to_onnx` only when the TorchScript exporter is removed.
"""

from __future__ import annotations

import copy
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from svrt.emulator import MULTIPLE, SVCE, load_model, resolve_model_path, state_hash
from svrt.errors import SvrtError
from svrt.export.graphs import ForwardGraph, VJPGraph
from svrt.runtime.backends.gradient_companion import vjp_path_for

OPSET = 17
GRAPHS = ("forward", "vjp")
INPUT_NAMES = {"forward": ["obj", "modes"], "vjp": ["obj", "modes", "grad_out"]}
OUTPUT_NAMES = {"forward": ["out"], "vjp": ["grad_obj", "grad_modes"]}
COMPUTES = {
    "forward": "out = f(obj, modes): the emulated spatially variant convolution of obj [B,1,Y,X] with the "
               "PSFs given at every pixel by the KL coefficients modes [B,M,Y,X] (radians); Y, X multiples of 16",
    "vjp": "grad_obj, grad_modes = d<grad_out, f(obj, modes)>/d(obj, modes): the vector-Jacobian product of "
           "the forward graph for the upstream gradient grad_out [B,1,Y,X]; Y, X multiples of 16",
}
#: keys of ``metadata_props`` in every exported graph (all values are strings)
METADATA_KEYS = ("format", "svrt_version", "graph", "computes", "instrument", "model", "model_hash",
                 "n_modes", "precision", "multiple", "inputs", "outputs", "config", "exporter", "opset")

# A comparison with PyTorch worse than this means a broken export, not rounding: nothing is written.
# (Measured on tiny models: FP32 ~4e-7 relative; FP16 forward ~3e-5 (the FP32 residual dominates), FP16
# gradients ~1e-3 max-relative for obj and 3-10% in L2 for the modes, where FP16 rounding flips a few
# ReLU masks and max-pool winners; a wrong graph is off by O(1).)
REFUSE_RELATIVE = {"fp32": 1e-3, "fp16": 5e-2}
REFUSE_L2_GRADIENT = {"fp32": 1e-3, "fp16": 0.5}


def svrt_version() -> str:
    try:
        from importlib.metadata import version

        return version("svrt")
    except Exception:  # not installed (running from a checkout)
        import svrt

        return getattr(svrt, "__version__", "unknown")


def graph_metadata(model: SVCE, meta: dict, instrument: str, graph: str, precision: str,
                   opset: int = OPSET) -> dict:
    m = model.config.n_modes
    inputs = f"obj [B,1,Y,X] float32; modes [B,{m},Y,X] float32 (radians)"
    outputs = "out [B,1,Y,X] float32"
    if graph == "vjp":
        inputs += "; grad_out [B,1,Y,X] float32"
        outputs = f"grad_obj [B,1,Y,X] float32; grad_modes [B,{m},Y,X] float32"
    return {
        "format": "svrt-emulator-onnx/1",
        "svrt_version": svrt_version(),
        "graph": graph,
        "computes": COMPUTES[graph],
        "instrument": instrument,
        "model": str(meta.get("name", "model")),
        "model_hash": str(meta.get("sha256", "")),
        "n_modes": str(m),
        "precision": precision,
        "multiple": str(MULTIPLE),
        "inputs": inputs,
        "outputs": outputs,
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False), BatchNorm folded, FiLM folded",
        "opset": str(opset),
    }


def _canonical_instrument(model: SVCE, instrument: str) -> str:
    model.one_hot(instrument)  # raises SvrtError naming the model's instruments
    return next(s for s in model.config.instruments if s.lower() == instrument.lower())


def _cpu_eval_float(model: SVCE) -> SVCE:
    """``model`` itself when it is already an eval-mode float32 CPU model, else such a copy (the
    caller's model is never moved, cast or switched to eval)."""
    p = next(model.parameters())
    if p.device.type == "cpu" and p.dtype == torch.float32 and not model.training:
        return model
    return copy.deepcopy(model).float().cpu().eval()


def build_graph(model: SVCE, instrument: str, graph: str = "forward", precision: str = "fp32") -> torch.nn.Module:
    """The PyTorch module that is exported (:class:`ForwardGraph` or :class:`VJPGraph`), float32 on CPU."""
    cls = {"forward": ForwardGraph, "vjp": VJPGraph}[graph]
    return cls(model, _canonical_instrument(model, instrument), precision, dtype=torch.float32).cpu().eval()


def to_onnx(model: SVCE, meta: dict, instrument: str, graph: str = "forward", precision: str = "fp32",
            opset: int = OPSET):
    """The ONNX ``ModelProto`` of one graph, checked with ``onnx.checker`` (full check)."""
    import onnx

    if opset < 17:
        raise SvrtError(f"ONNX opset {opset} is too old; svrt export needs opset 17 or newer.")
    module = build_graph(model, instrument, graph, precision)
    instrument = _canonical_instrument(model, instrument)
    m = model.config.n_modes
    b, y, x = 1, 2 * MULTIPLE, 2 * MULTIPLE
    args = [torch.rand(b, 1, y, x) + 0.5, torch.randn(b, m, y, x)]
    if graph == "vjp":
        args.append(torch.randn(b, 1, y, x))
    names_in, names_out = INPUT_NAMES[graph], OUTPUT_NAMES[graph]
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in names_in + names_out}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and constant-folding notes
        torch.onnx.export(module, tuple(args), buf, dynamo=False, opset_version=opset, input_names=names_in,
                          output_names=names_out, dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "svrt"
    proto.producer_version = svrt_version()
    proto.doc_string = COMPUTES[graph]
    del proto.metadata_props[:]
    for key, value in graph_metadata(model, meta, instrument, graph, precision, opset).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug here, not a user error; keep the detail
        raise SvrtError(f"the exported {graph} graph failed onnx.checker: {str(exc).splitlines()[0]}.") from None
    return proto


# --------------------------------------------------------------------------- comparison with PyTorch

def differences(test: torch.Tensor, ref: torch.Tensor) -> dict:
    """max_abs, max_rel (max |test - ref| over max |ref|) and l2_rel (||test - ref|| / ||ref||)."""
    d = (test.double() - ref.double())
    scale = ref.double().abs().max().item() or 1.0
    norm = ref.double().norm().item() or 1.0
    return {"max_abs": d.abs().max().item(), "max_rel": d.abs().max().item() / scale, "l2_rel": d.norm().item() / norm}


def torch_reference(model: SVCE, instrument: str, obj: torch.Tensor, modes: torch.Tensor,
                    grad_out: torch.Tensor | None = None):
    """The unfolded PyTorch model in FP32: ``out`` and, with ``grad_out``, (grad_obj, grad_modes)."""
    model = _cpu_eval_float(model)
    cond = model.one_hot(instrument, obj.shape[0])
    o, m = obj.detach().clone().requires_grad_(True), modes.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(o, m, cond)
        if grad_out is None:
            return out.detach()
        go, gm = torch.autograd.grad(out, (o, m), grad_out)
    return out.detach(), go, gm


def compare_engine(engine, model: SVCE, instrument: str, size: int = 64, batch: int = 2, seed: int = 0,
                   gradient: bool = True) -> dict:
    """Differences between an :class:`svrt.runtime.engine.Engine` and the PyTorch FP32 model on a
    random and a solar-like input: ``{"random": {"forward": {...}, "grad_obj": ..., "grad_modes": ...},
    "solar": {...}}``."""
    from svrt.export.inputs import random_inputs, solar_inputs

    m = model.config.n_modes
    report = {}
    for kind in ("random", "solar"):
        if kind == "random":
            obj, modes = random_inputs(batch, m, size, seed)
        else:
            obj, modes = solar_inputs(instrument, batch, m, size, seed)
        g = torch.randn(obj.shape, generator=torch.Generator().manual_seed(seed + 1))
        out, go, gm = torch_reference(model, instrument, obj, modes, g)
        entry = {"forward": differences(engine.forward(obj, modes, instrument).cpu(), out)}
        if gradient:
            eo, em = engine.vjp(obj, modes, instrument, g)
            entry["grad_obj"] = differences(eo.cpu(), go)
            entry["grad_modes"] = differences(em.cpu(), gm)
        report[kind] = entry
    return report


def _check_report(report: dict, precision: str, where: str) -> None:
    for kind, entry in report.items():
        for name, d in entry.items():
            bad = d["max_rel"] > REFUSE_RELATIVE[precision] if name == "forward" else \
                d["l2_rel"] > REFUSE_L2_GRADIENT[precision]
            if bad:
                raise SvrtError(f"{where}: the exported graph disagrees with PyTorch on the {kind} input "
                                f"({name}: max relative difference {d['max_rel']:.2e}, L2 {d['l2_rel']:.2e}); "
                                "nothing was written.")


# --------------------------------------------------------------------------- the export itself

@dataclass
class ExportResult:
    files: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0


def load_for_export(model_or_path) -> tuple[SVCE, dict]:
    """(model, metadata) from a model, a ``.safetensors`` path or a bundled model name."""
    if isinstance(model_or_path, SVCE):
        model = _cpu_eval_float(model_or_path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        return model, {"name": "model", "sha256": state_hash(tensors)}
    path = resolve_model_path(model_or_path)
    model, meta = load_model(path, device="cpu")
    meta.setdefault("name", path.stem)
    return model, meta


def export_onnx(model_or_path, output: str | Path, instrument: str, precision: str = "fp32", vjp: bool = True,
                opset: int = OPSET, check: bool = True, check_size: int = 64, check_batch: int = 2,
                meta: dict | None = None) -> ExportResult:
    """Write ``output`` (forward graph) and, with ``vjp``, ``vjp_path_for(output)``; both atomically.

    With ``check`` the graphs are run with ONNX Runtime (CPU) on a random and a solar-like input and
    compared with the PyTorch model (forward and gradient); a gross disagreement
    (:data:`REFUSE_RELATIVE`) raises :class:`SvrtError` and writes nothing.
    """


    t0 = time.perf_counter()
    if precision not in ("fp32", "fp16"):
        raise SvrtError(f"precision must be fp32 or fp16, not '{precision}'.")
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise SvrtError(f"{output}: an ONNX export needs a file name ending in .onnx.")
    model, file_meta = load_for_export(model_or_path)
    if meta:
        file_meta = {**file_meta, **meta}
    instrument = _canonical_instrument(model, instrument)
    protos = {"forward": to_onnx(model, file_meta, instrument, "forward", precision, opset)}
    if vjp:
        protos["vjp"] = to_onnx(model, file_meta, instrument, "vjp", precision, opset)
    result = ExportResult(metadata={e.key: e.value for e in protos["forward"].metadata_props})

    result.checks = save_graph_pair(protos, output, (lambda fwd, vjp_file: _run_checks(
        fwd, vjp_file, model, instrument, precision, output, check_size, check_batch)) if check else None)
    result.files = [str(output)] + ([str(vjp_path_for(output))] if vjp else [])
    result.seconds = time.perf_counter() - t0
    return result


def save_graph_pair(protos: dict, output, check=None) -> dict:
    """Write ``protos["forward"]`` to ``output`` and ``protos["vjp"]`` (when there) beside it, both atomically:
    ``check(forward_file, vjp_file_or_None)`` runs on the written temporary files before they are renamed, so a
    check that raises leaves nothing behind. Returns what ``check`` returns (``{}`` without one)."""
    import onnx

    from svrt.fileio import atomic_write

    checks: dict = {}
    with atomic_write(output) as tmp_fwd:
        onnx.save(protos["forward"], tmp_fwd)
        if "vjp" in protos:
            with atomic_write(vjp_path_for(output)) as tmp_vjp:
                onnx.save(protos["vjp"], tmp_vjp)
                if check:
                    checks = check(tmp_fwd, tmp_vjp)
        elif check:
            checks = check(tmp_fwd, None)
    return checks


def _run_checks(fwd, vjp, model, instrument, precision, output, size, batch) -> dict:
    from svrt.runtime.backends.onnxruntime_backend import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine.load(fwd, vjp_path=vjp if vjp else False)
    try:
        report = compare_engine(engine, model, instrument, size=size, batch=batch, gradient=bool(vjp))
    finally:
        engine.close()
    _check_report(report, precision, str(output))
    return report
