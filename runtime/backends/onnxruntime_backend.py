"""The ONNX Runtime back end: runs the graphs written by ``svrt export`` (see :mod:`svrt.export.onnx_export`).

``name.onnx`` is the forward graph of one instrument; the gradient comes from the vector-Jacobian
product graph ``name.vjp.onnx`` beside it (found automatically, or given as ``vjp_path``). Without a
VJP graph the engine still runs forward, and asking for a gradient is a one-sentence error.

Devices: ``"cpu"`` (CPU execution provider), ``"cuda"`` / ``"cuda:N"`` (CUDA execution provider of
onnxruntime-gpu; inputs and outputs stay on the GPU and are bound to torch tensors through I/O
binding, no host copies). ``providers=[...]`` chooses execution providers explicitly, e.g.
``["TensorrtExecutionProvider", "CUDAExecutionProvider"]``; ``providers="tensorrt"`` is a shortcut
for that list. ``threads`` sets ONNX Runtime's intra-op thread count; on the CPU the default is torch's thread count and
the pool's threads sleep between calls instead of spinning (:func:`cpu_threads` says why).

onnxruntime is imported when an engine is loaded, never at import time of :mod:`svrt.runtime`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.runtime.backends.gradient_companion import (
    CompanionPair,
    check_pair,
    find_companion,
    missing_vjp,
)
from svrt.runtime.engine import Engine, EngineIdentity

INSTALL_HINT = "pip install onnxruntime (CPU) or pip install onnxruntime-gpu (CUDA and TensorRT execution providers)"
REQUIRED_KEYS = ("graph", "instrument", "n_modes", "precision")
# keys that the forward graph and its VJP graph must share
SHARED_KEYS = ("instrument", "model_hash", "n_modes", "precision", "config")


def import_onnxruntime():
    """``onnxruntime``, or :class:`SvrtError` saying what to install."""
    try:
        import onnxruntime
    except ImportError:
        raise SvrtError(
            f"the onnxruntime back end needs ONNX Runtime, which is not installed; {INSTALL_HINT}."
        ) from None
    return onnxruntime


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300].rstrip(".")


def check_graph_metadata(meta: dict, path, graph: str = "forward", instrument: str | None = None,
                         n_modes: int | None = None, precision: str | None = None) -> None:
    """Refuse (:class:`SvrtError`) a graph that is not an svrt ``graph`` or not the one asked for."""
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise SvrtError(f"{path}: ONNX metadata key '{key}' missing; expected a graph written by 'svrt export'.")
    if meta["graph"] != graph:
        if meta["graph"] == "vjp" and graph == "forward":
            raise SvrtError(f"{path} is a gradient (VJP) graph; load the forward graph, which finds its VJP graph "
                            "beside it.")
        raise SvrtError(f"{path}: ONNX metadata key 'graph' is '{meta['graph']}'; expected '{graph}'.")
    try:
        int(meta["n_modes"])
    except ValueError:
        raise SvrtError(f"{path}: ONNX metadata key 'n_modes' is '{meta['n_modes']}'; expected an integer.") from None
    if instrument is not None and meta["instrument"].lower() != str(instrument).lower():
        raise SvrtError(f"{path} was exported for {meta['instrument']}, not '{instrument}'; export a graph for it with "
                        f"'svrt export MODEL -o {instrument}.onnx --instrument {instrument}'.")
    if n_modes is not None and int(meta["n_modes"]) != int(n_modes):
        raise SvrtError(f"{path} was exported for {meta['n_modes']} modes, not {n_modes}.")
    if precision is not None and meta["precision"] != precision:
        raise SvrtError(f"{path} is an {meta['precision']} graph, not {precision}; export the {precision} variant "
                        f"with 'svrt export'{' --fp16' if precision == 'fp16' else ''}.")


def check_companion(forward_meta: dict, vjp_meta: dict, path, vjp_path) -> None:
    """The VJP graph must belong to the forward graph (same instrument, weights, modes, precision)."""
    check_graph_metadata(vjp_meta, vjp_path, graph="vjp")
    check_pair(forward_meta, vjp_meta, path, vjp_path, SHARED_KEYS, "graph", "export both again with 'svrt export'")


def _device_and_providers(ort, device: str, providers):
    dev = torch.device(device)
    available = ort.get_available_providers()
    if providers == "tensorrt":
        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    if providers is None:
        providers = ["CPUExecutionProvider"] if dev.type == "cpu" else ["CUDAExecutionProvider"]
    if dev.type not in ("cpu", "cuda"):
        raise SvrtError(f"the onnxruntime back end runs on cpu or cuda, not '{device}'.")
    names = [p[0] if isinstance(p, (tuple, list)) else p for p in providers]
    missing = [n for n in names if n not in available]
    if missing:
        raise SvrtError(f"ONNX Runtime {ort.__version__} here has no {', '.join(missing)} (it has "
                        f"{', '.join(available)}); install onnxruntime-gpu for CUDA and TensorRT: pip uninstall "
                        "onnxruntime && pip install onnxruntime-gpu.")
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else 0
        dev = torch.device("cuda", index)
        opts = {"device_id": str(index)}
        providers = [(n, opts) if n in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else n for n in names]
    else:
        providers = list(names)
    if "CPUExecutionProvider" not in names:
        providers.append("CPUExecutionProvider")
    return dev, providers


def cpu_threads(threads: int | None) -> int:
    """ONNX Runtime's intra-op thread count on the CPU: ``threads`` when given, else torch's
    (``torch.get_num_threads()``, which follows ``OMP_NUM_THREADS`` and ``torch.set_num_threads``).

    Why not ONNX Runtime's own default: it takes one thread per physical core, whatever the process's
    thread budget, and its pool threads spin between operators and calls. A restoration asked to run on
    one thread (``OMP_NUM_THREADS=1``) ran ONNX Runtime on every core, and in the solver, which
    alternates engine calls with torch work (upsampling, filter, loss, optimiser), spinning threads take
    CPU from torch's. One budget for the process, and pool threads that sleep (:func:`_session`). On the
    loaded 2-core machine of docs/ENGINE.md the step time was the same either way within the noise; the
    engine's extra time in the solver is its VJP graph, which recomputes the forward pass."""
    if threads:
        return int(threads)
    return max(1, torch.get_num_threads())


def _session(ort, path, providers, threads, cpu: bool = True):
    path = Path(path)
    if not path.exists():
        raise SvrtError(f"{path}: ONNX file not found.")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if cpu:
        # torch's thread budget, and no busy-waiting between operators or calls (see cpu_threads)
        options.intra_op_num_threads = cpu_threads(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    elif threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise SvrtError(f"{path}: not a readable ONNX graph ({_first_line(exc)}); the file may be truncated or "
                        "corrupted.") from None
    return session, dict(session.get_modelmeta().custom_metadata_map)


def _width(meta: dict) -> dict:
    """``{"width": C}`` from the emulator config ``svrt export`` wrote into the graph, for the solver's
    memory estimate (:func:`svrt.runtime.forward_model.bytes_per_pixel_sample`, which takes an engine
    without a width as width 64: 4x the activations of svce-c16, smaller batches or tiles for nothing)."""
    import json

    try:
        width = json.loads(meta.get("config", "{}")).get("width")
    except (ValueError, AttributeError):
        return {}
    return {"width": int(width)} if isinstance(width, int) and width > 0 else {}


class OnnxRuntimeEngine(CompanionPair, Engine):
    """An exported graph (one instrument) in ONNX Runtime; gradients from its VJP graph."""

    def __init__(self, session, meta: dict, path, device: torch.device, vjp_session=None, vjp_path=None):
        self.session, self.meta, self.path = session, meta, Path(path)
        self.vjp_session, self.vjp_path = vjp_session, vjp_path
        self._device = device
        self.identity = EngineIdentity.of_export(
            "onnxruntime", device, meta, path,
            {"providers": session.get_providers(), "vjp_graph": str(vjp_path) if vjp_session else "",
             "threads": session.get_session_options().intra_op_num_threads,
             **_width(meta),
             "svrt_version": meta.get("svrt_version", ""), "opset": meta.get("opset", "")})

    @classmethod
    def load(cls, path, device: str = "cpu", vjp_path=None, providers=None, threads: int | None = None,
             instrument: str | None = None, n_modes: int | None = None, precision: str | None = None, **_):
        """Load ``path`` (forward graph) and its VJP graph (``vjp_path``: None looks for ``name.vjp.onnx``
        beside it, False loads none). ``instrument``, ``n_modes``, ``precision``: refuse a graph built
        for something else."""
        if path is None:
            raise SvrtError("the onnxruntime back end needs the path of an .onnx file written by 'svrt export'.")
        ort = import_onnxruntime()
        dev, provider_list = _device_and_providers(ort, device, providers)
        cpu = dev.type == "cpu"
        session, meta = _session(ort, path, provider_list, threads, cpu)
        check_graph_metadata(meta, path, "forward", instrument, n_modes, precision)
        vjp_session = None
        vjp_path = find_companion(path, vjp_path)
        if vjp_path:
            vjp_session, vjp_meta = _session(ort, vjp_path, provider_list, threads, cpu)
            check_companion(meta, vjp_meta, path, vjp_path)
        if meta.get("kind") == "psf-basis":   # PSF graphs of a PSF-basis emulator (svrt.export.psf_basis_graphs)
            from svrt.runtime.backends.onnxruntime_psf_basis import OnnxRuntimePSFBasisEngine

            return OnnxRuntimePSFBasisEngine(session, meta, path, vjp_session, vjp_path)
        return cls(session, meta, path, dev, vjp_session, vjp_path)

    # --- running -------------------------------------------------------------------------------
    def _run(self, session, inputs: dict, output_shapes: dict, device: torch.device) -> list:
        if self._device.type == "cpu":
            feeds = {k: np.ascontiguousarray(v.detach().to("cpu", torch.float32).numpy()) for k, v in inputs.items()}
            outs = session.run(list(output_shapes), feeds)
            return [torch.from_numpy(o).to(device) for o in outs]
        # CUDA: bind torch tensors (inputs and freshly allocated outputs) directly, no host copies
        index = self._device.index or 0
        binding = session.io_binding()
        keep = []
        for name, value in inputs.items():
            t = value.detach().to(self._device, torch.float32).contiguous()
            keep.append(t)
            binding.bind_input(name, "cuda", index, np.float32, list(t.shape), t.data_ptr())
        outs = []
        for name, shape in output_shapes.items():
            t = torch.empty(shape, dtype=torch.float32, device=self._device)
            outs.append(t)
            binding.bind_output(name, "cuda", index, np.float32, list(shape), t.data_ptr())
        torch.cuda.current_stream(self._device).synchronize()  # inputs written by torch are ready
        session.run_with_iobinding(binding)
        return [o.to(device) for o in outs]

    def _forward(self, obj, modes, instrument):
        return self._run(self.session, {"obj": obj, "modes": modes}, {"out": tuple(obj.shape)}, obj.device)[0]

    def _vjp(self, obj, modes, instrument, grad_out):
        if self.vjp_session is None:
            raise missing_vjp(self.path, "graph", "onnxruntime",
                              "export it with 'svrt export ... --vjp', or use the torch back end")
        g_obj, g_modes = self._run(self.vjp_session, {"obj": obj, "modes": modes, "grad_out": grad_out},
                                   {"grad_obj": tuple(obj.shape), "grad_modes": tuple(modes.shape)}, obj.device)
        return g_obj, g_modes

