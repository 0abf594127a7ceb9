"""What a benchmark ran on: CPU, GPU, memory, library versions and the code's commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def versions() -> dict:
    import numpy

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for dist, key in (("svrt", "svrt"), ("onnxruntime", "onnxruntime"), ("onnxruntime-gpu", "onnxruntime-gpu"),
                      ("onnx", "onnx"), ("tensorrt", "tensorrt"), ("triton", "triton")):
        v = _version(dist)
        if v:
            out[key] = v
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    if torch.backends.cudnn.is_available():
        out["cudnn"] = str(torch.backends.cudnn.version())
    return out


def git_info() -> dict:
    """Commit of the checkout svrt runs from (if it is one), and whether it has local changes."""
    import svrt

    root = Path(svrt.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if not commit:
            return {}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {}


def machine_info(device="cpu") -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    info = {"hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
            "torch_threads": torch.get_num_threads(), "memory_gib": memory_gib(), "device": str(device)}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
                     "compute_capability": f"{props.major}.{props.minor}",
                     # torch's fp32 convolutions use TF32 tensor cores when this is on (the default)
                     "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                     "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)})
    return info


def machine_label(info: dict) -> str:
    """A short name for a results page section, e.g. ``cpu-AMD-EPYC-2c`` or ``cuda-NVIDIA-H100``."""
    if info.get("gpu"):
        name = info["gpu"]
        prefix = "cuda"
    else:
        name = info.get("cpu", "cpu")
        prefix = "cpu"
        name = f"{name}-{info.get('cpus_usable')}c"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")
    return f"{prefix}-{slug}"
