"""Build TensorRT plans from the exported ONNX graphs (``svrt export --tensorrt``).

For a name ``crisp8542`` this writes ``crisp8542.plan`` (forward), ``crisp8542.vjp.plan`` (vector-
Jacobian product, with ``--vjp``) and a ``.plan.json`` beside each with the graph's metadata, the GPU
name and compute capability, the TensorRT version and the optimisation profile. The runtime
(:mod:`svrt.runtime.backends.tensorrt_backend`) refuses a plan whose GPU, TensorRT version,
instrument or number of modes differ from what it is asked to run.

Precision:

- ``fp16`` (default): the plan is built from the FP16 ONNX graph as a *strongly typed* network
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the U-Net's convolutions run in FP16, and what
  FP16 would hurt stays in FP32 exactly as the graph says: the normalisation by the 8-norm of obj, the
  residual, the output scaling and the gradient rescaling of the VJP (see
  :mod:`svrt.export.graphs`). This is TensorRT's way of pinning per-layer precisions (the older
  ``BuilderFlag.FP16`` plus per-layer ``precision`` constraints lets the builder pick types itself);
  on a TensorRT without strong typing (< 9) the FP16 flag is used instead.
- ``fp32``: built from the FP32 graph with TF32 disabled, so it matches PyTorch FP32 to ~1e-5.

Optimisation profile: one profile covering batch x height x width from ``min_shape`` to
``max_shape``, tuned for ``opt_shape`` (sizes are multiples of 16: the Engine pads to them).

tensorrt is imported only when a plan is built; building needs a CUDA GPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from svrt.emulator import MULTIPLE
from svrt.errors import SvrtError

DEFAULT_MIN_SHAPE = (1, 64, 64)
DEFAULT_OPT_SHAPE = (1, 256, 256)
DEFAULT_MAX_SHAPE = (4, 1024, 1024)


def parse_shape(text: str, option: str = "shape") -> tuple[int, int, int]:
    """``"BxYxX"`` (or ``"B,Y,X"``) -> (B, Y, X), with Y and X multiples of 16."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        b, y, x = (int(p) for p in parts)
    except ValueError:
        raise SvrtError(f"{option} '{text}' is not BxYxX (batch x height x width, e.g. 2x256x256).") from None
    if b < 1 or y < MULTIPLE or x < MULTIPLE or y % MULTIPLE or x % MULTIPLE:
        raise SvrtError(
            f"{option} '{text}' needs a batch >= 1 and a height and width that are multiples of {MULTIPLE}."
        )
    return b, y, x


def check_profile(min_shape, opt_shape, max_shape) -> None:
    if not all(a <= b <= c for a, b, c in zip(min_shape, opt_shape, max_shape)):
        raise SvrtError(f"the optimisation profile needs min <= opt <= max in batch, height and width; got "
                        f"{'x'.join(map(str, min_shape))}, {'x'.join(map(str, opt_shape))}, "
                        f"{'x'.join(map(str, max_shape))}.")


def plan_metadata(onnx_meta: dict, *, gpu: dict, tensorrt_version: str, min_shape, opt_shape, max_shape,
                  strongly_typed: bool, onnx_sha256: str = "", build_seconds: float = 0.0) -> dict:
    """The JSON written beside a plan (what :func:`check_plan_metadata` reads)."""
    meta = {k: v for k, v in onnx_meta.items()}
    meta["n_modes"] = int(meta.get("n_modes", 0))
    meta.update(gpu)
    meta.update({
        "format": "svrt-emulator-tensorrt/1",
        "tensorrt_version": tensorrt_version,
        "profile": {"min": list(min_shape), "opt": list(opt_shape), "max": list(max_shape),
                    "axes": "batch x height x width"},
        "strongly_typed": bool(strongly_typed),
        "onnx_sha256": onnx_sha256,
        "build_seconds": round(build_seconds, 2),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return meta


def build_plan(onnx_model, plan_path: str | Path, *, min_shape=DEFAULT_MIN_SHAPE, opt_shape=DEFAULT_OPT_SHAPE,
               max_shape=DEFAULT_MAX_SHAPE, workspace_gb: float = 4.0, device: int = 0) -> dict:
    """Build ``plan_path`` (+ ``.json``) from an ONNX ``ModelProto`` written by :func:`svrt.export.onnx_export.to_onnx`.

    The plan's precision is the graph's (``metadata_props['precision']``). Returns the metadata written.
    """
    import hashlib

    import torch

    from svrt.fileio import atomic_write
    from svrt.runtime.backends.tensorrt_backend import current_gpu, import_tensorrt, plan_metadata_path

    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise SvrtError(f"{plan_path}: building a TensorRT plan needs a CUDA GPU, and torch sees none on this machine.")
    check_profile(min_shape, opt_shape, max_shape)
    onnx_meta = {e.key: e.value for e in onnx_model.metadata_props}
    precision = onnx_meta.get("precision", "fp32")
    n_modes = int(onnx_meta["n_modes"])
    data = onnx_model.SerializeToString()
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    flags_enum = trt.NetworkDefinitionCreationFlag
    strongly_typed = precision == "fp16" and hasattr(flags_enum, "STRONGLY_TYPED")
    flags = 0
    if strongly_typed:
        flags |= 1 << int(flags_enum.STRONGLY_TYPED)
    if int(trt.__version__.split(".")[0]) < 10 and hasattr(flags_enum, "EXPLICIT_BATCH"):
        flags |= 1 << int(flags_enum.EXPLICIT_BATCH)
    with torch.cuda.device(device):
        torch.cuda.init()
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(data):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise SvrtError(f"{plan_path}: TensorRT could not parse the ONNX graph ({errors[:300]}).")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if precision == "fp16" and not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: ~1e-5 against PyTorch
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            channels = n_modes if name == "modes" else 1
            shapes = [(b, channels, y, x) for b, y, x in (min_shape, opt_shape, max_shape)]
            profile.set_shape(name, *shapes)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise SvrtError(f"{plan_path}: TensorRT failed to build the plan (see its log above); try a smaller "
                            "--max-shape or a larger --workspace-gb.")
        gpu = current_gpu(device)
    meta = plan_metadata(onnx_meta, gpu=gpu, tensorrt_version=trt.__version__, min_shape=min_shape,
                         opt_shape=opt_shape, max_shape=max_shape, strongly_typed=strongly_typed,
                         onnx_sha256=hashlib.sha256(data).hexdigest()[:16], build_seconds=time.perf_counter() - t0)
    plan_path = Path(plan_path)
    with atomic_write(plan_path) as tmp:
        Path(tmp).write_bytes(bytes(serialized))
        with atomic_write(plan_metadata_path(plan_path)) as tmp_meta:
            Path(tmp_meta).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export_tensorrt(model, meta: dict, instrument: str, plan_path: str | Path, *, precision: str = "fp16",
                    vjp: bool = True, min_shape=DEFAULT_MIN_SHAPE, opt_shape=DEFAULT_OPT_SHAPE,
                    max_shape=DEFAULT_MAX_SHAPE, workspace_gb: float = 4.0, device: int = 0,
                    opset: int | None = None) -> list:
    """Export the graphs of ``model`` for ``instrument`` at ``precision`` (in memory) and build
    ``plan_path`` and, with ``vjp``, its VJP plan. Returns the paths written."""
    from svrt.export.onnx_export import OPSET, to_onnx
    from svrt.runtime.backends.gradient_companion import vjp_path_for
    from svrt.runtime.backends.tensorrt_backend import import_tensorrt, plan_metadata_path

    import_tensorrt()  # fail early, before the export, with the install hint
    plan_path = Path(plan_path)
    written = []
    graphs = [("forward", plan_path)] + ([("vjp", vjp_path_for(plan_path))] if vjp else [])
    for graph, path in graphs:
        proto = to_onnx(model, meta, instrument, graph, precision, opset or OPSET)
        build_plan(proto, path, min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                   workspace_gb=workspace_gb, device=device)
        written += [str(path), str(plan_metadata_path(path))]
    return written
