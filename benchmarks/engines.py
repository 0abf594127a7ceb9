"""The emulator model and the back ends the benchmarks time.

:func:`benchmark_model` loads the bundled (or given) model; when the default bundled model is not
installed it falls back to a randomly initialised width-16 network and says so (the timings of a
network do not depend on its weights). :func:`build_engines` makes one :class:`~svrt.runtime.engine.Engine`
per back end and precision asked for, exporting ONNX graphs and TensorRT plans on the fly into a
work folder, and returns a reason for each one that cannot run here.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from svrt.errors import SvrtError

BACKENDS = ("torch", "torch-compiled", "onnxruntime", "tensorrt")
RANDOM_WIDTH = 16


@dataclass
class BenchModel:
    model: object
    meta: dict
    info: dict       # written into bench.json: name, path, hash, width, parameters, random_init, note


def benchmark_model(name_or_path=None) -> BenchModel:
    """The model to time. ``None`` or the default bundled name falls back to a random width-16 model
    when the bundled weights are absent (``info["random_init"]`` and ``info["note"]`` say so)."""
    from svrt.emulator import DEFAULT_MODEL, SVCE, EmulatorConfig, count_parameters, load_model, resolve_model_path

    try:
        path = resolve_model_path(name_or_path)
        model, meta = load_model(path, device="cpu")
        meta.setdefault("name", path.stem)
        info = {"name": meta["name"], "path": str(path), "hash": meta.get("sha256", ""), "random_init": False,
                "note": ""}
    except SvrtError:
        if name_or_path not in (None, DEFAULT_MODEL):
            raise
        torch.manual_seed(0)
        model = SVCE(EmulatorConfig(width=RANDOM_WIDTH)).eval()
        meta = {"name": f"random-c{RANDOM_WIDTH}", "sha256": "random-init-seed0"}
        info = {"name": meta["name"], "path": "", "hash": meta["sha256"], "random_init": True,
                "note": f"the bundled model '{DEFAULT_MODEL}' is not installed: a randomly initialised width-"
                        f"{RANDOM_WIDTH} network of the same architecture is timed instead (timings do not depend "
                        "on the weights)."}
    info.update({"width": model.config.width, "n_modes": model.config.n_modes,
                 "instruments": list(model.config.instruments), "parameters": count_parameters(model)})
    return BenchModel(model=model, meta=meta, info=info)


@dataclass
class EngineEntry:
    """One back end at one precision: the engine, or why it is skipped."""

    backend: str
    precision: str
    engine: object = None
    skip: str = ""
    setup_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def parse_backends(text: str | None) -> list | None:
    if text is None:
        return None
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise SvrtError(f"unknown back end(s) {', '.join(bad)}; expected a comma-separated list of "
                        f"{', '.join(BACKENDS)}.")
    return names


def cuda_available(device) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def build_engines(bm: BenchModel, backends, precisions, device, instrument: str, workdir: Path, *,
                  max_batch: int = 16, min_size: int = 64, max_size: int = 1024, vjp: bool = True,
                  threads: int | None = None, echo=print) -> list:
    """Engines for every (back end, precision); an entry with ``skip`` set for those that cannot run."""
    entries = []
    dev = torch.device(device)
    for backend in backends:
        for precision in precisions:
            entry = EngineEntry(backend, precision)
            entries.append(entry)
            t0 = time.perf_counter()
            try:
                entry.engine = _make(bm, backend, precision, dev, instrument, Path(workdir), max_batch, min_size,
                                     max_size, vjp, threads)
            except _Skip as exc:
                entry.skip = str(exc)
            except SvrtError as exc:
                entry.skip = str(exc)
            except Exception as exc:  # an optional back end that is broken here: say why, keep benchmarking
                entry.skip = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            entry.setup_s = time.perf_counter() - t0
            if entry.skip:
                echo(f"skipped {entry.label} on {dev}: {entry.skip}")
    return entries


class _Skip(Exception):
    pass


def _cpu_copy(model):
    """A CPU copy for exporters and counters, which move the module they are given to the CPU (the
    torch engines share ``bm.model`` and may hold it on a GPU)."""
    import copy

    return copy.deepcopy(model).cpu()


def _make(bm: BenchModel, backend: str, precision: str, dev: torch.device, instrument: str, workdir: Path,
          max_batch: int, min_size: int, max_size: int, vjp: bool, threads: int | None = None):
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _Skip("no CUDA GPU is visible to torch on this machine")
    if backend in ("torch", "torch-compiled"):
        from svrt.runtime.backends.torch_backend import TorchEngine

        if precision == "fp16" and dev.type != "cuda":
            raise _Skip("FP16 (autocast) is a CUDA option of the torch back end")
        if backend == "torch-compiled":
            try:
                # importlib, not `import torch._inductor`: that statement would make `torch` a local name of
                # this function, unbound in the CUDA check above
                importlib.import_module("torch._inductor")
            except Exception as exc:
                raise _Skip(f"torch.compile is not usable here ({exc})") from None
        return TorchEngine(bm.model, dict(bm.meta), device=str(dev), precision=precision,
                           compiled=backend == "torch-compiled", path=bm.info.get("path", ""))
    if backend == "onnxruntime":
        try:
            from svrt.export.onnx_export import export_onnx
        except ImportError as exc:
            raise _Skip(f"the ONNX export module is not available ({exc})") from None
        try:
            import onnxruntime as ort
        except ImportError:
            raise _Skip("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)") from None
        if dev.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise _Skip("this ONNX Runtime has no CUDAExecutionProvider (it has "
                        f"{', '.join(ort.get_available_providers())}); "
                        "install onnxruntime-gpu")
        if precision == "fp16" and dev.type != "cuda":
            raise _Skip("the FP16 graph is meant for GPUs; ONNX Runtime on CPU runs FP32")
        from svrt.runtime.engine import load_engine

        path = workdir / f"{instrument}-{precision}.onnx"
        export_onnx(_cpu_copy(bm.model), path, instrument, precision=precision, vjp=vjp, check=False,
                    meta={"name": bm.meta.get("name", "model"), "sha256": bm.meta.get("sha256", "")})
        return load_engine(path, backend="onnxruntime", device=str(dev), threads=threads)
    if backend == "tensorrt":
        if dev.type != "cuda":
            raise _Skip("TensorRT runs on CUDA GPUs only (use --device cuda)")
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise _Skip("tensorrt is not installed (pip install tensorrt)") from None
        try:
            from svrt.export.tensorrt_build import export_tensorrt
        except ImportError as exc:
            raise _Skip(f"the TensorRT export module is not available ({exc})") from None
        from svrt.runtime.engine import load_engine

        path = workdir / f"{instrument}-{precision}.plan"
        export_tensorrt(
            _cpu_copy(bm.model),
            {"name": bm.meta.get("name", "model"), "sha256": bm.meta.get("sha256", "")},
            instrument,
            path,
            precision=precision,
            vjp=vjp,
            min_shape=(1, min_size, min_size),
            opt_shape=(1, min(256, max_size), min(256, max_size)),
            max_shape=(max_batch, max_size, max_size),
            device=dev.index or 0,
        )
        engine = load_engine(path, backend="tensorrt", device=str(dev))
        engine.max_batch = max_batch
        return engine
    raise _Skip(f"unknown back end '{backend}'")
