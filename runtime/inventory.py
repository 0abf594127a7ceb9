"""``svrt engines``: which back ends and devices this machine can run, one line each.

Optional libraries are probed inside functions (never at import time) and a missing one is reported
with what to install.
"""

from __future__ import annotations

import json
import os
import shutil

import click


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _gpus() -> list:
    import torch

    out = []
    if not torch.cuda.is_available():
        return out
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"device": f"cuda:{i}", "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                    "memory_gib": round(p.total_memory / 2**30, 1)})
    return out


def inventory() -> list:
    """One dict per line of ``svrt engines``: ``name``, ``available``, ``version``, ``devices``,
    ``detail`` and, where something is missing, ``install``."""
    import torch

    rows = []
    gpus = _gpus()
    cuda_devices = [g["device"] for g in gpus]
    torch_cuda = torch.version.cuda
    rows.append({
        "name": "torch", "available": True, "version": torch.__version__, "devices": ["cpu"] + cuda_devices,
        "detail": f"eager; cpu with {torch.get_num_threads()} threads"
                  + (f"; CUDA {torch_cuda}" if torch_cuda else "; this torch build has no CUDA"),
        **({} if cuda_devices or torch_cuda else {"install": "a CUDA build of torch for GPUs, see https://pytorch.org/get-started"}),
    })
    compiler = next((c for c in ("g++", "c++", "clang++", "cl") if shutil.which(c)), None)
    try:
        import torch._inductor  # noqa: F401

        inductor = True
    except Exception:  # pragma: no cover - broken install
        inductor = False
    compiled_ok = inductor and (compiler is not None or bool(cuda_devices))
    rows.append({
        "name": "torch-compiled", "available": compiled_ok, "version": torch.__version__,
        "devices": (["cpu"] if compiler else []) + (cuda_devices if inductor else []),
        "detail": f"torch.compile (inductor); C++ compiler for cpu: {compiler or 'none'}",
        **({} if compiled_ok else {"install": "a C++ compiler (g++) for torch.compile on the CPU"}),
    })
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        devices = ["cpu"] + ([d for d in cuda_devices] if "CUDAExecutionProvider" in providers else [])
        row = {"name": "onnxruntime", "available": True, "version": ort.__version__, "devices": devices,
               "detail": "execution providers: " + ", ".join(providers)}
        if "CUDAExecutionProvider" not in providers:
            row["install"] = "pip install onnxruntime-gpu on a GPU host for the CUDA and TensorRT execution providers"
        rows.append(row)
    except ImportError:
        rows.append({"name": "onnxruntime", "available": False, "version": "", "devices": [],
                     "detail": "not installed", "install": "pip install onnxruntime, or onnxruntime-gpu for CUDA"})
    try:
        import tensorrt as trt

        ok = bool(cuda_devices)
        rows.append({"name": "tensorrt", "available": ok, "version": trt.__version__, "devices": cuda_devices,
                     "detail": "native plans" + ("" if ok else "; no CUDA GPU visible to torch"),
                     **({} if ok else {"install": "an NVIDIA GPU and a CUDA build of torch"})})
    except ImportError:
        rows.append({"name": "tensorrt", "available": False, "version": "", "devices": [], "detail": "not installed",
                     "install": "pip install tensorrt, on a host with an NVIDIA GPU"})
    except Exception as exc:  # installed but broken (missing CUDA libraries)
        rows.append({"name": "tensorrt", "available": False, "version": "", "devices": [],
                     "detail": f"installed but fails to import ({str(exc).splitlines()[0][:120]})",
                     "install": "reinstall tensorrt matching this machine's CUDA"})
    rows.append({"name": "cpu", "available": True, "version": "", "devices": ["cpu"],
                 "detail": f"{_cpu_threads()} hardware threads available to this process"})
    if gpus:
        for g in gpus:
            rows.append({"name": "gpu", "available": True, "version": "", "devices": [g["device"]],
                         "detail": f"{g['name']}, compute capability {g['compute_capability']}, {g['memory_gib']} GiB"})
    else:
        rows.append({"name": "gpu", "available": False, "version": "", "devices": [],
                     "detail": "no CUDA GPU visible to torch"})
    return rows


def format_row(row: dict) -> str:
    if row["available"]:
        status = row["version"] or "yes"
    elif row["version"]:
        status = f"{row['version']} unusable"
    else:
        status = "none" if row["name"] == "gpu" else "missing"
    text = f"{row['name']:<15} {status:<14} devices: {', '.join(row['devices']) or 'none'}; {row['detail']}"
    if row.get("install"):
        text += f"; install: {row['install']}"
    return text


@click.command("engines", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
def engines_command(as_json: bool):
    """List the back ends (torch, torch-compiled, onnxruntime, tensorrt) and devices this machine
    can run, with versions, and what to install for a missing one.

    \b
    Example:
      svrt engines
      svrt engines --json > engines.json
    """
    rows = inventory()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(format_row(row))
