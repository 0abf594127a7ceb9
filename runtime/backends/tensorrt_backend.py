"""The TensorRT back end: runs the plans written by ``svrt export --tensorrt`` on a CUDA GPU.

Files::

    crisp8542.plan            forward plan  (obj, modes -> out)
    crisp8542.plan.json       its metadata: the ONNX graph's metadata (instrument, model hash, modes,
                              precision, ...) plus the GPU name and compute capability, the TensorRT
                              version and the optimisation profile (batch and image sizes)
    crisp8542.vjp.plan(.json) the vector-Jacobian product plan (obj, modes, grad_out -> grad_obj,
                              grad_modes), used for gradients

A TensorRT plan only runs on the GPU model and TensorRT version it was built with, so loading
checks both (and the instrument and number of modes when asked) and refuses with one sentence.
These checks are plain functions (:func:`check_plan_metadata`) that need neither TensorRT nor a GPU.

Buffers are torch CUDA tensors: their ``data_ptr()`` are bound with ``set_tensor_address`` and the
plan runs with ``execute_async_v3`` on torch's current CUDA stream, so there are no host copies and
no extra synchronisation (later torch work on that stream is ordered after the plan). CPU tensors
are moved to the GPU and the results moved back. tensorrt is imported only when a plan is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from svrt.errors import SvrtError
from svrt.runtime.backends.gradient_companion import (
    CompanionPair,
    check_pair,
    find_companion,
    missing_vjp,
)
from svrt.runtime.engine import Engine, EngineIdentity

INSTALL_HINT = "install it on a host with an NVIDIA GPU: pip install tensorrt (with a CUDA build of torch)"
REQUIRED_PLAN_KEYS = ("graph", "instrument", "n_modes", "precision", "gpu_name", "compute_capability",
                      "tensorrt_version", "profile")


def import_tensorrt():
    """``tensorrt``, or :class:`SvrtError` saying what to install."""
    try:
        import tensorrt
    except ImportError:
        raise SvrtError(
            f"the tensorrt back end needs NVIDIA TensorRT, which is not installed; {INSTALL_HINT}."
        ) from None
    return tensorrt


def unavailable_reason() -> str:
    """Why the TensorRT back end cannot run on this machine, or "" when it can."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed"
    return ""


def plan_metadata_path(plan: str | Path) -> Path:
    """``name.plan -> name.plan.json``."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def read_plan_metadata(plan: str | Path) -> dict:
    """The JSON metadata beside a plan; :class:`SvrtError` when missing or unreadable."""
    meta_path = plan_metadata_path(plan)
    if not meta_path.exists():
        raise SvrtError(f"{meta_path}: TensorRT plan metadata not found; expected the .plan.json that "
                        f"'svrt export --tensorrt' writes beside {Path(plan).name}.")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SvrtError(
            f"{meta_path}: not readable JSON ({exc}); rebuild the plan with 'svrt export --tensorrt'."
        ) from None
    if not isinstance(meta, dict):
        raise SvrtError(f"{meta_path}: expected a JSON object of plan metadata.")
    return meta


def current_gpu(device: int | str | torch.device = 0) -> dict:
    """Name and compute capability (``"9.0"``) of a CUDA device as torch sees it."""
    index = torch.device("cuda", device).index if isinstance(device, int) else (torch.device(device).index or 0)
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def profile_ok(profile: dict, shape: tuple) -> bool:
    """Whether ``(B, Y, X)`` lies inside a plan's optimisation profile ``{"min": [B,Y,X], "max": ...}``."""
    lo, hi = profile["min"], profile["max"]
    return all(int(a) <= int(s) <= int(b) for a, s, b in zip(lo, shape, hi))


def check_plan_metadata(meta: dict, path, *, gpu_name: str, compute_capability: str, tensorrt_version: str,
                        graph: str = "forward", instrument: str | None = None, n_modes: int | None = None) -> None:
    """Refuse (:class:`SvrtError`, one sentence) a plan built for another GPU, TensorRT version,
    instrument or number of modes, or one that is not an svrt ``graph`` plan."""
    path = Path(path)
    for key in REQUIRED_PLAN_KEYS:
        if key not in meta:
            raise SvrtError(f"{plan_metadata_path(path)}: key '{key}' missing; expected the metadata of a plan "
                            "written by 'svrt export --tensorrt'.")
    rebuild = (f"rebuild it here with 'svrt export MODEL -o {path.with_suffix('.onnx').name} "
               f"--instrument {meta['instrument']} --tensorrt'")
    if str(meta["tensorrt_version"]) != str(tensorrt_version):
        raise SvrtError(f"{path} was built with TensorRT {meta['tensorrt_version']}, but this machine has TensorRT "
                        f"{tensorrt_version}; {rebuild}.")
    if meta["gpu_name"] != gpu_name or str(meta["compute_capability"]) != str(compute_capability):
        raise SvrtError(f"{path} was built for a {meta['gpu_name']} (compute capability {meta['compute_capability']}), "
                        f"not for this {gpu_name} (compute capability {compute_capability}); {rebuild}.")
    if meta["graph"] != graph:
        raise SvrtError(
            f"{plan_metadata_path(path)}: key 'graph' is '{meta['graph']}'; expected '{graph}'"
            + (" (load the forward plan, which finds its VJP plan beside it)." if meta["graph"] == "vjp" else ".")
        )
    if instrument is not None and str(meta["instrument"]).lower() != str(instrument).lower():
        raise SvrtError(f"{path} was built for {meta['instrument']}, not '{instrument}'; export a plan for it with "
                        f"'svrt export MODEL -o {instrument}.onnx --instrument {instrument} --tensorrt'.")
    if n_modes is not None and int(meta["n_modes"]) != int(n_modes):
        raise SvrtError(f"{path} was built for {meta['n_modes']} modes, not {n_modes}.")


def check_plan_pair(forward_meta: dict, vjp_meta: dict, path, vjp_path) -> None:
    """The VJP plan must belong to the forward plan (and to the same TensorRT and GPU)."""
    check_pair(forward_meta, vjp_meta, path, vjp_path,
               ("instrument", "model_hash", "n_modes", "precision", "tensorrt_version", "gpu_name"), "plan",
               "build both again with 'svrt export --tensorrt'")


class _Plan:
    """One deserialised plan and its execution context."""

    def __init__(self, trt, path: Path, meta: dict, logger):
        self.path, self.meta = path, meta
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SvrtError(f"{path}: cannot read the TensorRT plan ({exc.strerror or exc}).") from None
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise SvrtError(f"{path}: TensorRT could not deserialise the plan; the file may be truncated or corrupted.")
        self.context = self.engine.create_execution_context()
        self.runtime = runtime

    def execute(self, inputs: dict, outputs: dict, device: torch.device) -> list:
        b, _, y, x = next(iter(inputs.values())).shape
        profile = self.meta["profile"]
        if not profile_ok(profile, (b, y, x)):
            raise SvrtError(f"{self.path} was built for batch x height x width from "
                            f"{'x'.join(map(str, profile['min']))} to {'x'.join(map(str, profile['max']))}; got "
                            f"{b}x{y}x{x} (after padding to multiples "
                            "of 16); rebuild it with other --min-shape/--max-shape.")
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            keep = []
            for name, value in inputs.items():
                t = value.detach().to(device, torch.float32).contiguous()
                keep.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outs = []
            for name, shape in outputs.items():
                t = torch.empty(shape, dtype=torch.float32, device=device)
                outs.append(t)
                self.context.set_tensor_address(name, t.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise SvrtError(f"{self.path}: TensorRT failed to run the plan on {tuple(keep[0].shape)}.")
            for t in keep:  # the caching allocator must not reuse the inputs before the plan has read them
                t.record_stream(stream)
        return outs


class TensorRTEngine(CompanionPair, Engine):
    """A TensorRT plan (one instrument) on one GPU; gradients from its VJP plan."""

    _pair = ("plan", "vjp_plan")

    def __init__(self, plan: _Plan, vjp_plan: _Plan | None, device: torch.device, trt_version: str):
        self.plan, self.vjp_plan, self._device = plan, vjp_plan, device
        meta = plan.meta
        self.identity = EngineIdentity.of_export(
            "tensorrt", device, meta, plan.path,
            {"tensorrt_version": trt_version, "gpu_name": meta["gpu_name"],
             "compute_capability": meta["compute_capability"], "profile": meta["profile"],
             "vjp_plan": str(vjp_plan.path) if vjp_plan else ""})

    @classmethod
    def load(cls, path, device: str = "cuda", vjp_path=None, instrument: str | None = None,
             n_modes: int | None = None, **_):
        """Load ``name.plan`` and, when present (or given), ``name.vjp.plan``. ``device="cpu"`` (the
        :func:`svrt.runtime.engine.load_engine` default) means the first GPU: plans only run on GPUs."""
        if path is None:
            raise SvrtError("the tensorrt back end needs the path of a .plan file written by 'svrt export --tensorrt'.")
        path = Path(path)
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise SvrtError(f"{path}: TensorRT plans run on a CUDA GPU, and torch sees none on this machine.")
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise SvrtError(f"the tensorrt back end runs on cuda devices, not '{device}'.")
        dev = torch.device("cuda", (dev.index or 0) if dev.type == "cuda" else 0)
        if not path.exists():
            raise SvrtError(f"{path}: TensorRT plan not found.")
        gpu = current_gpu(dev.index)
        logger = trt.Logger(trt.Logger.ERROR)
        meta = read_plan_metadata(path)
        check_plan_metadata(meta, path, tensorrt_version=trt.__version__, instrument=instrument, n_modes=n_modes, **gpu)
        with torch.cuda.device(dev):
            plan = _Plan(trt, path, meta, logger)
            vjp = None
            vjp_path = find_companion(path, vjp_path)
            if vjp_path:
                vmeta = read_plan_metadata(vjp_path)
                check_plan_metadata(vmeta, vjp_path, tensorrt_version=trt.__version__, graph="vjp", **gpu)
                check_plan_pair(meta, vmeta, path, vjp_path)
                vjp = _Plan(trt, vjp_path, vmeta, logger)
        return cls(plan, vjp, dev, trt.__version__)

    def _forward(self, obj, modes, instrument):
        out = self.plan.execute({"obj": obj, "modes": modes}, {"out": tuple(obj.shape)}, self._device)[0]
        return out.to(obj.device)

    def _vjp(self, obj, modes, instrument, grad_out):
        if self.vjp_plan is None:
            raise missing_vjp(self.plan.path, "plan", "TensorRT", "build it with 'svrt export ... --vjp --tensorrt'")
        g_obj, g_modes = self.vjp_plan.execute({"obj": obj, "modes": modes, "grad_out": grad_out},
                                               {"grad_obj": tuple(obj.shape), "grad_modes": tuple(modes.shape)},
                                               self._device)
        return g_obj.to(obj.device), g_modes.to(obj.device)

