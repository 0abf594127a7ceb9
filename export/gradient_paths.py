"""Which way of getting the gradient is fastest on this machine?

The solver needs, per iteration, the emulated frames and d(loss)/d(object, modes). Each path below
is timed doing exactly that through the common Engine interface (``engine.apply`` followed by
``backward`` of ``sum(grad_out * f)``):

- ``torch``: eager PyTorch autograd;
- ``torch-compiled``: ``torch.compile`` (inductor) forward and backward (compile time reported apart);
- ``onnxruntime``: the exported forward graph, then the exported VJP graph (``name.vjp.onnx``);
- ``onnxruntime-fp16``: the same with the FP16 graphs (GPU only: on a CPU FP16 is emulated);
- ``tensorrt``: forward and VJP plans (CUDA with TensorRT only).

Usage (the numbers in the export report came from this)::

    python -m svrt.export.gradient_paths MODEL.safetensors --size 256 --batch 1 --repeats 5
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from svrt.errors import SvrtError


def _gradient_step(engine, obj, modes, instrument, grad_out, cuda: bool):
    o = obj.detach().clone().requires_grad_(True)
    m = modes.detach().clone().requires_grad_(True)
    out = engine.apply(o, m, instrument)
    (out * grad_out).sum().backward()
    if cuda:
        torch.cuda.synchronize()
    return o.grad, m.grad


def compare_gradient_paths(model_path, size: int = 256, batch: int = 1, instrument: str | None = None,
                           device: str = "cpu", repeats: int = 5, warmup: int = 2, threads: int | None = None,
                           compiled: bool = True, fp16: bool | None = None, tensorrt: bool | None = None,
                           workdir: str | Path | None = None) -> dict:
    """Time forward + gradient for every path available on ``device``; returns::

        {"device": ..., "size": ..., "batch": ..., "instrument": ..., "model": ...,
         "paths": {name: {"seconds": median, "min_seconds", "first_call_seconds", "runs"} or {"error": why}},
         "fastest": name}

    The paths are loaded and warmed up first (``first_call_seconds`` includes torch.compile's
    compilation), then timed in ``repeats`` interleaved rounds so that on a shared machine every path
    sees the same background load.

    ``threads`` sets torch's and ONNX Runtime's CPU thread counts for the measurement (restored after).
    ``fp16`` / ``tensorrt``: include those paths (default: when ``device`` is CUDA / TensorRT is importable).
    """
    from svrt.emulator import load_model, resolve_model_path
    from svrt.export.inputs import solar_inputs
    from svrt.export.onnx_export import export_onnx
    from svrt.runtime.backends.onnxruntime_backend import OnnxRuntimeEngine
    from svrt.runtime.backends.torch_backend import TorchEngine

    path = resolve_model_path(model_path)
    model, meta = load_model(path)
    instrument = instrument or model.config.instruments[0]
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SvrtError(f"device '{device}' asked for, but torch sees no CUDA GPU on this machine.")
    fp16 = cuda if fp16 is None else fp16
    obj, modes = solar_inputs(instrument, batch, model.config.n_modes, size)
    grad_out = torch.randn(obj.shape, generator=torch.Generator().manual_seed(3))
    obj, modes, grad_out = obj.to(dev), modes.to(dev), grad_out.to(dev)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    result = {"device": str(dev), "size": size, "batch": batch, "instrument": instrument, "model": path.stem,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "paths": {}}
    paths = result["paths"]
    engines = {}

    def add(name, make):
        """Load, then run once (compilation, session warm-up) and ``warmup - 1`` more times."""
        try:
            engine = make()
            t0 = time.perf_counter()
            _gradient_step(engine, obj, modes, instrument, grad_out, cuda)
            paths[name] = {"first_call_seconds": time.perf_counter() - t0}
            for _ in range(max(warmup - 1, 0)):
                _gradient_step(engine, obj, modes, instrument, grad_out, cuda)
            engines[name] = engine
        except Exception as exc:  # a path that cannot run here is reported, not fatal
            paths[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}

    try:
        add("torch", lambda: TorchEngine.load(path, device=str(dev)))
        if compiled:
            add("torch-compiled", lambda: TorchEngine.load(path, device=str(dev), compiled=True))
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            precisions = ["fp32"] + (["fp16"] if fp16 else [])
            for precision in precisions:
                onnx_path = Path(tmp) / f"{instrument}-{precision}.onnx"
                export_onnx(path, onnx_path, instrument, precision=precision, check=False)
                name = "onnxruntime" + ("-fp16" if precision == "fp16" else "")
                add(name, lambda: OnnxRuntimeEngine.load(onnx_path, device=str(dev), threads=threads))
            want_trt = tensorrt if tensorrt is not None else cuda
            if want_trt and cuda:
                def make_trt():
                    from svrt.export.tensorrt_build import export_tensorrt
                    from svrt.runtime.backends.tensorrt_backend import TensorRTEngine

                    plan = Path(tmp) / f"{instrument}.plan"
                    shape = (batch, obj.shape[-2] + (-obj.shape[-2]) % 16, obj.shape[-1] + (-obj.shape[-1]) % 16)
                    export_tensorrt(model, meta, instrument, plan, precision="fp16", min_shape=shape, opt_shape=shape,
                                    max_shape=shape, device=dev.index or 0)
                    return TensorRTEngine.load(plan, device=str(dev))
                add("tensorrt", make_trt)
            # interleaved rounds: on a shared machine each path sees the same background load
            times = {name: [] for name in engines}
            for _ in range(repeats):
                for name, engine in engines.items():
                    t0 = time.perf_counter()
                    _gradient_step(engine, obj, modes, instrument, grad_out, cuda)
                    times[name].append(time.perf_counter() - t0)
            for name, ts in times.items():
                paths[name].update({"seconds": statistics.median(ts), "min_seconds": min(ts), "runs": len(ts)})
    finally:
        for engine in engines.values():
            engine.close()
        torch.set_num_threads(old_threads)
    timed = {k: v["seconds"] for k, v in paths.items() if "seconds" in v}
    result["fastest"] = min(timed, key=timed.get) if timed else None
    return result


def main(argv=None):
    import argparse
    import json

    p = argparse.ArgumentParser(description="Time forward + gradient of every back end on this machine.")
    p.add_argument("model")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--instrument", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-compiled", action="store_true")
    args = p.parse_args(argv)
    r = compare_gradient_paths(args.model, size=args.size, batch=args.batch, instrument=args.instrument,
                               device=args.device, repeats=args.repeats, threads=args.threads,
                               compiled=not args.no_compiled)
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
