"""The GPU proof: every GPU path of svrt checked and timed in one short, time-boxed call.

``scripts/gpu-check.sh`` installs svrt and runs this driver, which runs the steps below in order,
each in its own process with its own timeout, within one overall time limit (``--time-limit``,
450 s by default, counted from ``--started-at``, the moment the shell script started). After every
step it writes what it has as JSON into the output folder, so a run that is cut short still leaves
its results. A step that does not fit in the time left is skipped and says so; a step that outruns
its timeout is interrupted (SIGINT, so pytest still writes its JUnit file), then terminated.

Steps (in order of value, since the later ones are the first to be cut):

=================  =====================================================================================
``versions``       torch, CUDA, cuDNN, GPU name, driver, Triton, nvcc, how svrt was installed
``pytest``         every CUDA and Triton test of tests/test_kernels.py and tests/test_engines.py
                   (kernels against their references, FP32 and FP16, odd sizes, adjoints; the Triton
                   kernels compiled for sm_90; the torch engine on CUDA) -> ``pytest.xml`` (JUnit); on the
                   GPU a test skipped for want of CUDA, Triton or nvcc fails the step
``restore_fp16``   the paper's restoration case, 512^2 x 12 frames x 2 objects, FP16 + gradient
                   checkpointing, through the public solver API: seconds per iteration and peak
                   memory against the paper's 0.75 s on an RTX 4090 and 8 GB -> ``restoration.json``
``kernels``        the Triton kernels against the PyTorch operators they replace, with the share of the
                   measured copy bandwidth and of the datasheet bandwidth -> ``kernels-bench.json``
``consistency``    small solves on CUDA: Triton vs PyTorch kernels, checkpointing on vs off, FP16 vs
                   FP32; the engine's FP16 forward against its FP32 forward
``bench``          ``svrt bench --device cuda`` (the Fig. 6 GPU column, quick sizes) -> ``bench.json``,
                   ``bench.png``
``restore_fp32``   the paper's case at FP32 (checkpointing on), for comparison
``restore_fp16_20f`` 20 frames of 512^2 x 2 objects, FP16 + checkpointing, under an 8 GiB memory bound:
                   the paper's memory figure
=================  =====================================================================================

The restorations use a synthetic burst (:func:`synthetic_burst`: granulation FFT-convolved with one
Kolmogorov PSF per frame, invariant over the field, plus 1 % noise), not
:func:`svrt.simulate.simulate_burst`, whose exact per-pixel PSFs take minutes at 512^2: the cost of a
solver iteration does not depend on the content of the frames.

``--dry-run`` plans every step and runs the CPU-runnable ones small (tiny sizes, CPU device, FP32);
the GPU-only one (``kernels``) reports their plan as ``planned``. CI runs it
(tests/test_gpu_check.py).

Output folder (at most 8 flat files, as the device machine returns no more): ``gpu-check.json`` (the
summary: versions, plan, every step's status, time and result), ``pytest.xml``, ``restoration.json``,
``kernels-bench.json``, ``bench.json``, ``bench.png``; the shell script adds ``gpu-check.log``.

The parent process imports only the standard library (no torch, no CUDA), so it can always stop its
children and write the summary. Usage::

    python -m svrt.benchmarks.gpu_check [--dry-run] [--time-limit 450] [--out DIR] [--only a,b]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from svrt.records import write_json  # noqa: F401  (re-exported: the JSON writer's earlier home)

SCHEMA = "svrt-gpu-check/1"
DEFAULT_TIME_LIMIT_S = 450.0
RESERVE_S = 20.0            # kept back from the time limit: stopping a step (SIGINT, SIGTERM) and the last write
INTERRUPT_GRACE_S = 10.0    # after SIGINT, before SIGTERM (pytest writes its JUnit file on SIGINT)
TERMINATE_GRACE_S = 5.0     # after SIGTERM, before SIGKILL
MODEL = "svce-c16"
INSTRUMENT = "crisp8542"

#: The paper's figures (Asensio Ramos, A&A), as the design notes list them ("headline figures").
PAPER = {"s_per_iteration": 0.75, "s_per_iteration_gpu": "RTX 4090",
         "s_per_iteration_case": "512^2 x 12 frames x 2 objects",
         "memory_GB": 8.0, "memory_case": "20 frames of 512^2, FP16 + gradient checkpointing"}

#: Files of the output folder, by step (the summary gpu-check.json holds everything besides).
OUT_SUMMARY = "gpu-check.json"
OUT_JUNIT = "pytest.xml"
OUT_RESTORATION = "restoration.json"
OUT_KERNELS = "kernels-bench.json"
OUT_BENCH = ("bench.json", "bench.png")

#: The CUDA and Triton tests: the GPU tests of the kernels, the Triton compile for sm_90, the dispatch
#: between Triton and PyTorch, the torch engine
#: on CUDA, and the message for onnxruntime without its CUDA provider.
PYTEST_FILES = ("tests/test_kernels.py", "tests/test_engines.py")
PYTEST_SELECT = ("test_gpu_ or torch-cuda or for_cuda or import_order or dispatch_choices "
                 "or available_impls or cuda_without_provider")
PYTEST_SELECT_DRY = "test_gpu_ or dispatch_choices or available_impls"

#: Restoration cases: (size, frames, objects) per step; the dry run shrinks them (DRY_RESTORATION).
RESTORATION_CASES = {
    "restore_fp16": {"size": 512, "frames": 12, "objects": 2, "iterations": 10, "precision": "fp16",
                     "checkpointing": "on"},
    "restore_fp32": {"size": 512, "frames": 12, "objects": 2, "iterations": 6, "precision": "fp32",
                     "checkpointing": "on"},
    "restore_fp16_20f": {"size": 512, "frames": 20, "objects": 2, "iterations": 6, "precision": "fp16",
                         "checkpointing": "on", "memory_mb": 8192},
}
DRY_RESTORATION = {"size": 32, "frames": 2, "iterations": 2}

#: svrt bench: short, torch back end only (no TensorRT or onnxruntime-gpu on the device machine;
#: torch-compiled takes minutes to compile).
BENCH_ARGS = ["--device", "cuda", "--backends", "torch", "--precisions", "fp32,fp16", "--sizes", "64,128,256,512",
              "--batches", "1,4", "--exact-sizes", "64,128", "--repeats", "5", "--warmup", "2",
              "--restoration", "128x4x2x16", "--iterations", "4", "--no-progress"]
BENCH_ARGS_DRY = ["--device", "cpu", "--backends", "torch", "--precisions", "fp32", "--sizes", "32", "--batches", "1",
                  "--exact-sizes", "32", "--repeats", "1", "--warmup", "0", "--restoration", "32x2x2x4",
                  "--iterations", "2", "--threads", "1", "--no-progress"]


# ================================================================================================
# the steps (each runs in a child process: ``--step NAME``)
# ================================================================================================

@dataclass
class Context:
    """What a step gets: where to write, and whether this is the dry run."""

    name: str
    dry: bool
    repo: Path
    out: Path
    work: Path

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    def save(self, result: dict) -> None:
        """Write the step's result so far (the parent reads it even if the step is then killed)."""
        write_json(self.work / f"{self.name}.json", result)


def _need_cuda(ctx: Context) -> dict | None:
    """None when CUDA is there (or in the dry run); else the step's 'failed' result."""
    if ctx.dry:
        return None
    import torch

    if not torch.cuda.is_available():
        return {"status": "failed", "error": "torch sees no CUDA GPU (torch.cuda.is_available() is False; "
                                             f"torch {torch.__version__}, built for CUDA {torch.version.cuda})."}
    return None


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _run_text(cmd: list, timeout: float = 20.0) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


# ------------------------------------------------------------------------------------------ versions

def step_versions(ctx: Context) -> dict:
    import importlib.metadata as md
    import platform

    import numpy
    import torch

    import svrt

    def dist(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    info = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "numpy": numpy.__version__,
            "svrt": getattr(svrt, "__version__", None) or dist("svrt"), "svrt_path": str(Path(svrt.__file__).parent),
            "svrt_install": os.environ.get("SVRT_GPU_CHECK_INSTALL", "as found"),
            "astropy": os.environ.get("SVRT_GPU_CHECK_ASTROPY") or dist("astropy"),
            "cuda_available": bool(torch.cuda.is_available()),
            "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET", "SVRT_KERNELS")},
            "cpus": os.cpu_count()}
    if torch.backends.cudnn.is_available():
        info["cudnn"] = str(torch.backends.cudnn.version())
    try:
        import triton
        info["triton"] = getattr(triton, "__version__", "?")
    except Exception as exc:  # noqa: BLE001 (a broken install raises anything)
        info["triton"] = f"not importable ({type(exc).__name__}: {exc})"
    try:
        import onnxruntime as ort
        info["onnxruntime"] = f"{ort.__version__} ({', '.join(ort.get_available_providers())})"
    except Exception:  # noqa: BLE001
        info["onnxruntime"] = None
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc:
        out = _run_text([nvcc, "--version"]) or ""
        m = re.search(r"release [^\n]*", out)
        info["nvcc"] = m.group(0) if m else nvcc
    else:
        info["nvcc"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update({"gpu": p.name, "gpu_count": torch.cuda.device_count(), "capability": f"{p.major}.{p.minor}",
                     "multiprocessors": p.multi_processor_count, "gpu_memory_GiB": round(p.total_memory / 2 ** 30, 1),
                     "l2_MB": round(getattr(p, "L2_cache_size", 0) / 1e6, 1)})
        smi = _run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                         "--format=csv,noheader"])
        info["driver"] = smi.splitlines()[0].split(",")[1].strip() if smi and "," in smi else None
        info["nvidia_smi"] = smi
        from svrt.benchmarks.kernels_bench import nominal_bandwidth_GBps
        info["nominal_GBps"] = nominal_bandwidth_GBps(p.name)
    for key in ("python", "torch", "cuda_runtime", "cudnn", "gpu", "capability", "gpu_memory_GiB", "driver",
                "nominal_GBps", "triton", "nvcc", "numpy", "astropy", "onnxruntime", "svrt", "svrt_install"):
        if key in info:
            print(f"  {key:15s} {info[key]}")
    gpu = f"{info.get('gpu')}, driver {info.get('driver')}" if info.get("gpu") else "no CUDA GPU"
    return {"status": "ok", **info,
            "headline": f"{gpu}; torch {info['torch']} (CUDA {info['cuda_runtime']}), triton {info['triton']}"}


# ------------------------------------------------------------------------------------------ pytest

def step_pytest(ctx: Context) -> dict:
    import importlib.util

    junit = ctx.out / OUT_JUNIT
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
           "-c", str(ctx.repo / "pyproject.toml"), "--rootdir", str(ctx.repo), f"--junitxml={junit}",
           "-o", "junit_family=xunit2", "-k", PYTEST_SELECT_DRY if ctx.dry else PYTEST_SELECT]
    cmd += [str(ctx.repo / f) for f in PYTEST_FILES]
    if not ctx.dry and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "4"]
    ctx.save({"status": "running", "command": cmd})
    print("  " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ctx.work)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # the parent's timeout: pytest got the SIGINT too and writes its report
        try:
            rc = proc.wait(timeout=INTERRUPT_GRACE_S - 1)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    summary = parse_junit(junit) if junit.exists() else {"error": "pytest wrote no JUnit file"}
    ok = rc == 0 and summary.get("failures", 1) == 0 and summary.get("errors", 1) == 0
    headline = (f"{summary.get('passed', 0)} passed, {summary.get('failures', 0)} failed, "
                f"{summary.get('errors', 0)} errors, {summary.get('skipped', 0)} skipped")
    result = {"status": "ok" if ok else "failed", "returncode": rc, "command": cmd, "junit": OUT_JUNIT, **summary,
              "headline": headline}
    if not ctx.dry:   # on the GPU machine nothing of this selection should skip: a skip hides a missing piece
        missing = {r: n for r, n in summary.get("skip_reasons", {}).items()
                   if re.search(r"CUDA GPU|no CUDA|not installed|TRITON_INTERPRET|ptxas", r)}
        if missing:
            result["status"] = "failed"
            result["error"] = "GPU tests were skipped: " + "; ".join(f"{n} x {r}" for r, n in missing.items())
            result["headline"] = headline + " (" + result["error"] + ")"
    elif not ok and "error" not in result:
        result["error"] = f"pytest exited with code {rc}"
    return result


def parse_junit(path: Path) -> dict:
    """Counts, failures (name and message) and skip reasons from a JUnit XML file."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, skips = [], {}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                failed.append({"test": name, "kind": tag, "message": (el.get("message") or el.text or "")[:400]})
        el = case.find("skipped")
        if el is not None:
            reason = (el.get("message") or "")[:200]
            skips[reason] = skips.get(reason, 0) + 1
    n_fail = sum(1 for f in failed if f["kind"] == "failure")
    n_err = sum(1 for f in failed if f["kind"] == "error")
    n_skip = sum(skips.values())
    return {"tests": len(cases), "passed": len(cases) - n_fail - n_err - n_skip, "failures": n_fail, "errors": n_err,
            "skipped": n_skip, "failed_tests": failed, "skip_reasons": skips,
            "time_s": float(root.get("time") or next(iter(root), root).get("time") or 0.0)}


# ------------------------------------------------------------------------------------------ restoration

def synthetic_burst(size: int, n_frames: int, n_objects: int, device: str = "cpu", seed: int = 0,
                    instrument: str = INSTRUMENT, r0_cm: float = 10.0, noise: float = 0.01):
    """Frames ``[K, L, Y, X]`` (float32 numpy): ``n_objects`` granulation images of one field
    (:func:`svrt.scenes.make_objects`) each FFT-convolved (periodically) with one Kolmogorov PSF per
    frame (r0 = ``r0_cm`` at 5000 A, invariant over the field), plus Gaussian noise of ``noise`` times
    the mean. A second at 512^2, where :func:`svrt.simulate.simulate_burst` (one PSF per pixel) takes
    minutes; the cost of a solver iteration does not depend on what the frames hold."""
    import numpy as np
    import torch

    from svrt.atmosphere import kolmogorov_coefficients
    from svrt.instruments import get_instrument
    from svrt.optics.psf import PSFModel
    from svrt.scenes import make_objects

    inst = get_instrument(instrument)
    rng = np.random.default_rng(seed)
    obj = torch.as_tensor(make_objects("granulation", n_objects, (size, size), inst.pixel_arcsec, seed + 1),
                          device=device)
    model = PSFModel(inst, 44, device=device)
    s = min(model.psf_size, size)
    psf = model(torch.as_tensor(kolmogorov_coefficients(inst, r0_cm, 44, size=n_frames, rng=rng), device=device))
    lo = (psf.shape[-1] - s) // 2
    psf = psf[:, lo:lo + s, lo:lo + s]
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    canvas = torch.zeros(n_frames, size, size, device=device)
    canvas[:, :s, :s] = psf
    canvas = torch.roll(canvas, shifts=(-(s // 2), -(s // 2)), dims=(-2, -1))          # PSF centre on pixel (0, 0)
    frames = torch.fft.irfft2(torch.fft.rfft2(obj)[:, None] * torch.fft.rfft2(canvas)[None], s=(size, size))
    frames = frames.cpu().numpy()
    frames += noise * frames.mean(axis=(-2, -1), keepdims=True) * rng.standard_normal(frames.shape)
    return frames.astype(np.float32)


def _solver_config(**wanted):
    """A SolverConfig with the wanted fields it has; (config, names it does not have)."""
    import inspect

    from svrt.runtime.solver import SolverConfig

    try:
        known = set(inspect.signature(SolverConfig).parameters)
    except (TypeError, ValueError):
        known = set(wanted)
    # the GPU proof times and compares solves of given sizes, including the dry run's 32^2 fields: the rule that
    # refuses fields too small to restore safely (data_per_mode) is not what it measures
    wanted = {"data_per_mode": 0, **wanted}
    used = {k: v for k, v in wanted.items() if k in known}
    return SolverConfig(**used), sorted(set(wanted) - set(used))


def _solve(engine, config, frames, device: str) -> tuple:
    """(result, seconds at the end of each iteration after the start, total seconds): one timed solve."""
    import inspect

    from svrt.runtime.solver import SVMOMFBD

    solver = SVMOMFBD(engine, config)
    stamps = []

    def callback(*_, **__):
        _sync(device)
        stamps.append(time.perf_counter())

    try:
        takes = set(inspect.signature(solver.solve).parameters)
    except (TypeError, ValueError):
        takes = {"instruments", "callback"}
    kwargs = {"instruments": [INSTRUMENT] * frames.shape[0]} if "instruments" in takes else {}
    if "callback" in takes:         # without it, only the total time
        kwargs["callback"] = callback
    _sync(device)
    t0 = time.perf_counter()
    result = solver.solve(frames, **kwargs)
    _sync(device)
    return result, [s - t0 for s in stamps], time.perf_counter() - t0


def _median(values):
    v = sorted(values)
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


HEADER_KEYS = ("T_ITER", "PEAK_MB", "PEAK_KIND", "BATCH", "NTILES", "CKPT_USED", "MEM_BOUND_MB", "MEM_EST_MB",
               "GRID_Y", "GRID_X", "ENGINE_PRECISION", "ENGINE_DEVICE", "KERNELS", "LOSS_FINAL", "T_TOTAL")


def run_restoration(ctx: Context, case: dict) -> dict:
    """One restoration case through the public solver API: time per iteration and peak memory."""
    import numpy as np
    import torch

    from svrt.runtime.solver import load_solver_engine

    case, notes = dict(case), []
    if ctx.dry:
        case.update(DRY_RESTORATION)
        if case["precision"] == "fp16":
            case["precision"] = "fp32"
            notes.append("dry run: FP32 on the CPU (FP16 autocast is the CUDA path)")
    failed = _need_cuda(ctx)
    if failed:
        return {**failed, "case": case}
    dev = ctx.device
    result = {"status": "running", "case": case, "device": dev, "notes": notes, "paper": PAPER}
    ctx.save(result)
    t = time.perf_counter()
    frames = synthetic_burst(case["size"], case["frames"], case["objects"], device=dev)
    result["burst"] = {"s": round(time.perf_counter() - t, 3), "shape": list(frames.shape),
                       "how": "synthetic: granulation FFT-convolved with one invariant Kolmogorov PSF per frame "
                              "(r0 10 cm at 5000 A), 1 % noise (not simulate_burst: minutes at 512^2)"}
    t = time.perf_counter()
    engine = load_solver_engine(MODEL, device=dev, precision=case["precision"])
    result["engine_load_s"] = round(time.perf_counter() - t, 3)
    ident = getattr(engine, "identity", None)
    if ident is not None and hasattr(ident, "to_dict"):
        result["engine"] = ident.to_dict()
    config, dropped = _solver_config(iterations=case["iterations"], progress=False,
                                     checkpointing=case["checkpointing"], memory_mb=case.get("memory_mb"))
    if dropped:
        notes.append(f"SolverConfig has no {', '.join(dropped)}: left at its default")
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        result["gpu"] = torch.cuda.get_device_name(0)
    res, stamps, total = _solve(engine, config, frames, dev)
    header = dict(getattr(res, "header", None) or {})
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    per_iter = _median(intervals)
    result.update({
        "status": "ok", "total_s": round(total, 3), "iterations_seen": len(stamps),
        "first_iteration_s": round(stamps[0], 4) if stamps else None,
        "iteration_s": [round(v, 5) for v in intervals],
        "s_per_iteration": round(per_iter, 5) if per_iter is not None else None,
        "s_per_iteration_how": "median of the intervals between iteration callbacks (device synchronised), "
                               "the first iteration (setup, first-call costs) left out",
        "header": {k: header[k] for k in HEADER_KEYS if k in header},
    })
    if per_iter is None:
        t_iter = header.get("T_ITER")
        result["s_per_iteration"] = float(t_iter) if t_iter is not None else round(total / case["iterations"], 5)
        result["s_per_iteration_how"] = "header T_ITER" if t_iter is not None else "total time / iterations"
    if dev == "cuda":
        result["peak_MiB"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        result["peak_reserved_MiB"] = round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)
        result["peak_how"] = "torch.cuda.max_memory_allocated over the solve (statistics reset before it)"
    elif header.get("PEAK_MB") is not None:
        result["peak_MiB"] = float(header["PEAK_MB"])
        result["peak_how"] = f"header PEAK_MB ({header.get('PEAK_KIND', '?')})"
    objects = getattr(res, "objects", None)
    if objects is not None:
        result["objects_finite"] = bool(np.isfinite(np.asarray(objects)).all())
    loss = getattr(res, "loss", None)
    loss = loss.get("total") if isinstance(loss, dict) else None
    if loss is not None and len(loss):
        result["loss_first"], result["loss_last"] = float(loss[0]), float(loss[-1])
    if result.get("objects_finite") is False:
        result["status"] = "failed"
        result["error"] = "the restored objects hold NaN or Inf"
    s = result["s_per_iteration"]
    peak = result.get("peak_MiB")
    bound = case.get("memory_mb")
    if bound and peak is not None and dev == "cuda":
        result["within_memory_bound"] = bool(peak <= bound)
    result["vs_paper"] = {"speedup_over_paper": round(PAPER["s_per_iteration"] / s, 2) if s else None,
                          "peak_GB": round(peak * 2 ** 20 / 1e9, 2) if peak is not None else None}
    label = (f"{case['size']}^2 x {case['frames']} x {case['objects']} {case['precision']}"
             f"{' + ckpt' if case['checkpointing'] == 'on' else ''}" + (f" (bound {bound} MiB)" if bound else ""))
    result["headline"] = (f"{label}: {s:.3f} s/iteration (paper {PAPER['s_per_iteration']} s, RTX 4090), "
                          f"peak {peak / 1024 if peak is not None else float('nan'):.2f} GiB "
                          f"(paper 8 GB, 20 frames); batch {header.get('BATCH', '?')}")
    return result


def _restoration_step(name: str, dry_run_too: bool = False) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        if ctx.dry and not dry_run_too:   # the same code as restore_fp16, which the dry run runs: spare the time
            return {"status": "planned", "case": RESTORATION_CASES[name],
                    "reason": "the dry run runs this code path once, in restore_fp16"}
        return run_restoration(ctx, RESTORATION_CASES[name])
    run.__name__ = f"step_{name}"
    return run


# ------------------------------------------------------------------------------------------ kernels

def step_kernels(ctx: Context) -> dict:
    """The Triton kernels against PyTorch (benchmarks/kernels_bench.py), one size at a time."""
    from svrt.benchmarks import kernels_bench as kb

    sizes = [{key: [cfg]} for key in ("upsample", "filter") for cfg in kb.DEFAULT_SIZES[key]]
    plan = {"sizes": kb.DEFAULT_SIZES, "dtypes": ["float32", "float16"]}
    if ctx.dry:
        return {"status": "planned", **plan, "reason": "times compiled Triton kernels with CUDA events: needs a GPU"}
    failed = _need_cuda(ctx)
    if failed:
        return {**failed, **plan}
    import torch

    peak = kb.measure_copy_bandwidth(torch.device("cuda"))
    merged = {"status": "running", **plan, "peak_copy_GBps": round(peak, 1), "results": [], "speedups": {}}
    for one in sizes:
        res = kb.run_kernel_benchmark("cuda", sizes=one, peak_copy_GBps=peak)
        if res.get("status") != "ok":
            return {**merged, "status": "skipped", "reason": res.get("reason")}
        for key in ("device", "torch", "triton", "nominal_GBps", "l2_bytes", "repeats"):
            merged[key] = res.get(key)
        merged["results"] += res["results"]
        merged["speedups"].update(res["speedups"])
        ctx.save(merged)
        print(kb._format(res), flush=True)
    merged["status"] = "ok"
    write_json(ctx.out / OUT_KERNELS, merged)
    merged["headline"] = _kernels_headline(merged)
    return merged


def _kernels_headline(res: dict) -> str:
    """The paper-size upsampling (B12 M44 64x64 -> 512x512) and the 512^2 filter, FP32."""
    parts = []
    for op, case in (("upsample_forward", "B12 M44 64x64->512x512"), ("upsample_adjoint", "B12 M44 64x64->512x512"),
                     ("fourier_filter_forward_backward", "K2 512x512")):
        tri = [r for r in res["results"] if r["op"] == op and r["case"] == case and r["dtype"] == "float32"
               and r["impl"] == "triton"]
        sp = res["speedups"].get(f"{op}|{case}|float32")
        if tri and sp:
            share = tri[0].get("nominal_share") or tri[0].get("peak_share")
            parts.append(f"{op.replace('_', ' ')} {sp:.2f}x torch ({tri[0]['GBps']:.0f} GB/s"
                         + (f", {100 * share:.0f}% of {'datasheet' if tri[0].get('nominal_share') else 'copy'})"
                            if share else ")"))
    return "; ".join(parts) or "no timings"


# ------------------------------------------------------------------------------------------ consistency

def step_consistency(ctx: Context) -> dict:
    """Small solves that must agree: Triton vs PyTorch kernels, checkpointing on vs off; FP16 vs FP32."""
    import numpy as np

    from svrt.runtime.solver import load_solver_engine

    failed = _need_cuda(ctx)
    if failed:
        return failed
    dev = ctx.device
    size, frames_n, iters = (32, 2, 2) if ctx.dry else (128, 4, 5)
    frames = synthetic_burst(size, frames_n, 2, device=dev, seed=3)
    engines = {"fp32": load_solver_engine(MODEL, device=dev, precision="fp32")}
    checks = []

    def rel(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b - b.mean()), 1e-30))

    def solve(precision="fp32", **cfg):
        config, dropped = _solver_config(iterations=iters, progress=False, **cfg)
        if dropped:
            raise KeyError(f"SolverConfig has no {', '.join(dropped)}")
        return _solve(engines[precision], config, frames, dev)[0].objects

    def check(what, fn, tol):
        try:
            err = fn()
            checks.append({"check": what, "error": err, "tolerance": tol,
                           "ok": None if tol is None else bool(math.isfinite(err) and err <= tol)})
        except KeyError as exc:                 # a SolverConfig without that option
            checks.append({"check": what, "ok": None, "skipped": str(exc)})
        except Exception as exc:  # noqa: BLE001 (recorded; the other checks still run)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            checks.append({"check": what, "ok": False, "exception": f"{type(exc).__name__}: {msg}"[:400]})
        ctx.save({"status": "running", "checks": checks})

    base = {"kernels": "torch", "checkpointing": "off"}
    ref = None

    def reference():
        nonlocal ref
        if ref is None:
            ref = solve(**base)
        return ref

    # ||a - b|| / ||b - <b>||: relative to the object's contrast, not its mean
    check(f"checkpointing on vs off ({size}^2 x {frames_n} x 2, {iters} iterations, FP32)",
          lambda: rel(solve(kernels="torch", checkpointing="on"), reference()), 1e-3)
    if ctx.dry:
        checks.append({"check": "Triton vs PyTorch kernels in the solver", "ok": None, "skipped": "needs CUDA"})
        checks.append({"check": "engine FP16 vs FP32 forward", "ok": None, "skipped": "needs CUDA"})
    else:
        check(f"Triton vs PyTorch kernels ({size}^2 x {frames_n} x 2, {iters} iterations, FP32)",
              lambda: rel(solve(kernels="triton", checkpointing="off"), reference()), 1e-3)
        engines["fp16"] = load_solver_engine(MODEL, device=dev, precision="fp16")
        check(f"FP16 vs FP32 solve ({iters} iterations; reported, no tolerance)",
              lambda: rel(solve("fp16", kernels="auto", checkpointing="on"), reference()), None)
        check("engine FP16 vs FP32 forward (256^2 x 2, max error / max output)",
              lambda: _engine_fp16_error(engines, dev), 1e-2)
    bad = [c["check"] for c in checks if c.get("ok") is False]
    ran = [c for c in checks if c.get("ok") is not None]
    headline = f"{len(ran) - len(bad)}/{len(ran)} agree" + "".join(
        f"; {c['check'].split(' (')[0]}: " + (f"{c['error']:.1e}" if "error" in c else c.get("exception", "skipped"))
        for c in checks if "error" in c or "exception" in c)
    return {"status": "failed" if bad else "ok", "checks": checks, "failed_checks": bad, "headline": headline}


def _engine_fp16_error(engines: dict, dev: str) -> float:
    """max |FP16 - FP32| / max |FP32| of the engine's forward on two 256^2 granulation images."""
    import numpy as np
    import torch

    from svrt.atmosphere import kolmogorov_coefficients
    from svrt.scenes import make_objects

    obj = torch.as_tensor(make_objects("granulation", 2, (256, 256), 0.059, 7), device=dev)[:, None]
    a = torch.as_tensor(kolmogorov_coefficients(INSTRUMENT, 10.0, 44, size=2, rng=np.random.default_rng(7)), device=dev)
    modes = a[:, :, None, None].expand(2, 44, 256, 256).contiguous()
    with torch.no_grad():
        out32 = engines["fp32"].forward(obj, modes, INSTRUMENT).float()
        out16 = engines["fp16"].forward(obj, modes, INSTRUMENT).float()
    return float((out16 - out32).abs().max() / out32.abs().max())


# ------------------------------------------------------------------------------------------ svrt bench

def step_bench(ctx: Context) -> dict:
    """``svrt bench`` through its command line, into the work folder; bench.json and bench.png copied out."""
    failed = _need_cuda(ctx)
    if failed:
        return failed
    from svrt.cli import cli

    folder = ctx.work / "bench"
    args = ["bench", *(BENCH_ARGS_DRY if ctx.dry else BENCH_ARGS), "--out-dir", str(folder)]
    print("  svrt " + " ".join(args), flush=True)
    ctx.save({"status": "running", "command": "svrt " + " ".join(args)})
    try:
        cli.main(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    data = json.loads((folder / "bench.json").read_text())
    for name in OUT_BENCH:
        if (folder / name).exists():
            shutil.copyfile(folder / name, ctx.out / name)
    records = data.get("records", [])
    emu = [{k: r.get(k) for k in ("backend", "precision", "size", "batch", "per_image_s", "peak_fraction")}
           for r in records if r.get("kind") == "convolution" and r.get("method") == "emulator"]
    rest = [{k: r.get(k) for k in ("backend", "precision", "size", "frames", "objects", "per_iteration_s", "peak_mb")}
            for r in records if r.get("kind") == "restoration"]
    largest = max(emu, key=lambda r: (r["size"] or 0, -(r["per_image_s"] or 0)), default=None)
    headline = "no emulator records"
    if largest:
        best = min((r for r in emu if r["size"] == largest["size"]), key=lambda r: r["per_image_s"] or 1e9)
        headline = (f"emulator {best['size']}^2: {1e3 * best['per_image_s']:.2f} ms/image "
                    f"({best['backend']} {best['precision']}, batch {best['batch']})")
    return {"status": "ok", "command": "svrt " + " ".join(args[:-2]), "files": list(OUT_BENCH),
            "peaks": data.get("peaks"), "speedups": data.get("speedups"), "emulator": emu, "restoration": rest,
            "skipped": data.get("skipped"), "notes": data.get("notes"), "elapsed_s": data.get("elapsed_s"),
            "headline": headline + (f"; SV-MOMFBD {rest[0]['size']}^2: {rest[0]['per_iteration_s']:.3f} s/iteration"
                                    if rest and rest[0].get("per_iteration_s") else "")}


# ================================================================================================
# the plan
# ================================================================================================

@dataclass(frozen=True)
class Step:
    name: str
    limit_s: float          # its own timeout
    min_s: float            # not started with less time left than this
    gpu: str                # what it does on the GPU
    dry: str                # what the dry run does
    run: Callable[[Context], dict]


STEPS = (
    Step("versions", 60, 10, "versions of torch, CUDA, driver, GPU, Triton, nvcc", "the same, on this machine",
         step_versions),
    Step("pytest", 170, 40, "every CUDA and Triton test (kernels vs references, FP32/FP16, odd sizes, adjoints; "
         "nvcc; torch engine on CUDA) -> pytest.xml", "the dispatch tests; the GPU tests report as skipped",
         step_pytest),
    Step("restore_fp16", 100, 30, "512^2 x 12 x 2, FP16 + checkpointing: s/iteration and peak memory vs the paper",
         "32^2 x 2 x 2, FP32, 2 iterations on the CPU", _restoration_step("restore_fp16", dry_run_too=True)),
    Step("kernels", 100, 30, "Triton vs PyTorch timings, share of copy and datasheet bandwidth",
         "the plan (planned)", step_kernels),
    Step("consistency", 75, 25, "Triton vs PyTorch kernels, checkpointing on/off, FP16 vs FP32 (small solves)",
         "checkpointing on/off at 32^2 on the CPU", step_consistency),
    Step("bench", 150, 60, "svrt bench --device cuda (quick sizes, torch back end)",
         "svrt bench --device cpu at 32^2", step_bench),
    Step("restore_fp32", 90, 30, "512^2 x 12 x 2 at FP32 + checkpointing", "the case (planned)",
         _restoration_step("restore_fp32")),
    Step("restore_fp16_20f", 90, 30, "512^2 x 20 x 2, FP16 + checkpointing, 8 GiB memory bound",
         "the case (planned)", _restoration_step("restore_fp16_20f")),
)
STEP_NAMES = tuple(s.name for s in STEPS)


# ================================================================================================
# the parent: runs the steps in child processes, within the time limit
# ================================================================================================

def run_process(cmd: list, timeout: float, cwd=None, env=None) -> tuple[str, int | None, float]:
    """Run ``cmd`` in its own process group for at most ``timeout`` seconds: ("done", returncode, seconds)
    or ("timeout", returncode or None, seconds) after SIGINT, then SIGTERM, then SIGKILL to the group."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    try:
        return "done", proc.wait(timeout=max(timeout, 0.1)), time.perf_counter() - t0
    except BaseException as exc:    # the timeout, or the parent itself being stopped: stop the whole group
        _stop_group(proc)
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        return "timeout", proc.poll(), time.perf_counter() - t0


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the process group of ``proc``, then SIGTERM, then SIGKILL, each after a grace period."""
    for sig, grace in ((signal.SIGINT, INTERRUPT_GRACE_S), (signal.SIGTERM, TERMINATE_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:                            # whatever the step started and left behind (pytest-xdist workers)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Stopped(Exception):
    """The parent got SIGTERM or SIGHUP."""


def _on_signal(signum, _frame):
    raise _Stopped(signal.Signals(signum).name)


def run_plan(out: Path, repo: Path, dry: bool, time_limit: float, started_at: float, only=None) -> dict:
    """Run the steps; write ``out/gpu-check.json`` after each; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    deadline = started_at + time_limit
    work = Path(tempfile.mkdtemp(prefix="svrt-gpu-check-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if dry:      # one thread per child: on a busy 2-core machine two OpenMP threads wait on each other
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    else:        # the compiled kernels and the default dispatch
        env.pop("TRITON_INTERPRET", None)
        env.pop("SVRT_KERNELS", None)
    summary = {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "dry_run": dry, "time_limit_s": time_limit, "reserve_s": RESERVE_S, "repo": str(repo),
               "git_commit": _run_text(["git", "-C", str(repo), "rev-parse", "HEAD"], 10),
               "paper": PAPER, "plan": [{"step": s.name, "limit_s": s.limit_s, "min_s": s.min_s, "gpu": s.gpu,
                                         "dry_run": s.dry} for s in STEPS],
               "steps": {}, "files": [OUT_SUMMARY]}
    restoration = {}
    write_json(out / OUT_SUMMARY, summary)
    _print_plan(summary, deadline)
    stopped = None
    for step in STEPS:
        record = {"status": "skipped"}
        summary["steps"][step.name] = record
        if stopped:
            record["reason"] = f"the check was stopped ({stopped})"
            continue
        if only and step.name not in only:
            record["reason"] = "not selected (--only)"
            continue
        left = deadline - time.time() - RESERVE_S
        if left < step.min_s:
            record["reason"] = (f"out of time: {left:.0f} s left of the {time_limit:.0f} s limit, "
                                f"the step needs {step.min_s:.0f} s")
            summary["stopped_early"] = True
            print(f"== {step.name}: skipped ({record['reason']})", flush=True)
            write_json(out / OUT_SUMMARY, summary)
            continue
        timeout = min(step.limit_s, left)
        print(f"\n== {step.name} (timeout {timeout:.0f} s): {step.dry if dry else step.gpu}", flush=True)
        cmd = [sys.executable, "-m", "svrt.benchmarks.gpu_check", "--step", step.name, "--work", str(work),
               "--out", str(out), "--repo", str(repo)] + (["--dry-run"] if dry else [])
        result_file = work / f"{step.name}.json"
        try:
            how, rc, seconds = run_process(cmd, timeout, cwd=work, env=env)
        except (_Stopped, KeyboardInterrupt) as exc:
            stopped = str(exc) or type(exc).__name__
            how, rc, seconds = "stopped", None, None
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        status = result.get("status", "failed")
        if how == "timeout":
            status = "timeout"
            result["reason"] = f"stopped at its timeout of {timeout:.0f} s; partial results kept"
        elif how == "stopped":
            status = "stopped"
        elif rc != 0 and status not in ("failed", "skipped"):
            status = "failed"
        if status == "failed" and "error" not in result:
            result["error"] = f"the step exited with code {rc} and wrote no error (see gpu-check.log)"
        record.update({"status": status, "returncode": rc, "seconds": round(seconds, 2) if seconds else None,
                       "timeout_s": round(timeout, 1), "result": result})
        print(f"== {step.name}: {status} in {seconds or 0:.1f} s"
              + (f": {result['headline']}" if result.get("headline") else "")
              + (f": {result.get('error') or result.get('reason')}" if status not in ("ok", "planned") else ""),
              flush=True)
        if step.name.startswith("restore_") and result:
            restoration[step.name] = {"status": status, **result}
            write_json(out / OUT_RESTORATION, {"paper": PAPER, "cases": restoration})
        summary["elapsed_s"] = round(time.time() - started_at, 1)
        summary["files"] = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        write_json(out / OUT_SUMMARY, summary)
    summary["elapsed_s"] = round(time.time() - started_at, 1)
    if stopped:
        summary["stopped"] = stopped
    statuses = [r["status"] for r in summary["steps"].values()]
    summary["ok"] = not any(s in ("failed", "timeout", "stopped") for s in statuses)
    summary["files"] = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    write_json(out / OUT_SUMMARY, summary)
    _print_table(summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _print_plan(summary: dict, deadline: float) -> None:
    mode = "dry run (CPU, tiny sizes)" if summary["dry_run"] else "GPU run"
    print(f"svrt GPU check, {mode}: {len(STEPS)} steps, {max(0.0, deadline - time.time()):.0f} s left "
          f"of {summary['time_limit_s']:.0f} s", flush=True)
    for s in STEPS:
        print(f"  {s.name:17s} <= {s.limit_s:4.0f} s  {s.dry if summary['dry_run'] else s.gpu}")


def _print_table(summary: dict) -> None:
    v = summary["steps"].get("versions", {}).get("result", {})
    print(f"\nsvrt GPU check ({'dry run' if summary['dry_run'] else 'GPU'}): {v.get('gpu') or 'no GPU'}, "
          f"torch {v.get('torch')}, CUDA {v.get('cuda_runtime')}, triton {v.get('triton')}, driver {v.get('driver')}; "
          f"{summary.get('elapsed_s', 0):.0f} s of {summary['time_limit_s']:.0f}")
    print(f"{'step':17s} {'status':8s} {'seconds':>7s}  result")
    for name, rec in summary["steps"].items():
        res = rec.get("result", {})
        text = res.get("headline") or res.get("error") or res.get("reason") or rec.get("reason") or ""
        secs = f"{rec['seconds']:.1f}" if rec.get("seconds") is not None else "-"
        print(f"{name:17s} {rec['status']:8s} {secs:>7s}  {text}"[:400])
    print(f"files: {', '.join(summary['files'])}")


# ================================================================================================
# command line
# ================================================================================================

def _child(args) -> int:
    """Run one step; its result goes to WORK/NAME.json (exit 0 unless the step failed)."""
    step = {s.name: s for s in STEPS}[args.step]
    ctx = Context(step.name, args.dry_run, Path(args.repo), Path(args.out), Path(args.work))
    try:
        result = step.run(ctx)
    except KeyboardInterrupt:   # the parent's timeout: keep what was saved so far
        path = ctx.work / f"{step.name}.json"
        partial = json.loads(path.read_text()) if path.exists() else {}
        ctx.save({**partial, "status": "timeout"})
        return 130
    except BaseException as exc:  # noqa: BLE001 (the error goes into the JSON and the log)
        import traceback

        traceback.print_exc()
        path = ctx.work / f"{step.name}.json"
        partial = json.loads(path.read_text()) if path.exists() else {}
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        ctx.save({**partial, "status": "failed", "error": f"{type(exc).__name__}: {msg}"[:500],
                  "traceback": traceback.format_exc()[-3000:]})
        return 1
    ctx.save(result)
    return 1 if result.get("status") == "failed" else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svrt.benchmarks.gpu_check",
                                 description="The GPU proof of svrt: every GPU path checked and timed in one call "
                                             "(see scripts/gpu-check.sh).")
    ap.add_argument("--dry-run", action="store_true", help="plan every step; run the CPU-runnable ones small")
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, help="seconds for the whole check")
    ap.add_argument("--started-at", type=float, default=None, help="epoch seconds the time limit counts from")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out", help="output folder (default $OUT)")
    ap.add_argument("--repo", default=None, help="the svrt source tree (default: the one this file is in)")
    ap.add_argument("--only", default=None, help=f"comma-separated steps among {', '.join(STEP_NAMES)}")
    ap.add_argument("--step", choices=STEP_NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repo = str(Path(args.repo).resolve() if args.repo else Path(__file__).resolve().parent.parent)
    if args.step:
        return _child(args)
    only = None
    if args.only:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = sorted(only - set(STEP_NAMES))
        if unknown:
            ap.error(f"--only names unknown steps {', '.join(unknown)}; the steps are {', '.join(STEP_NAMES)}.")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    summary = run_plan(Path(args.out).resolve(), Path(args.repo), args.dry_run, args.time_limit,
                       args.started_at if args.started_at else time.time(), only)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
