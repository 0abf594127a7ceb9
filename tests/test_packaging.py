"""The extras install cleanly: read from pyproject.toml (no network, no pip), with the requirement and
marker rules of the ``packaging`` library that pip itself uses.

- no install pulls both ONNX Runtimes (``onnxruntime`` and ``onnxruntime-gpu`` are two distributions
  of the one module ``onnxruntime``): the core has neither, ``[cpu]`` one, ``[gpu]`` the other;
- ``tomli`` for Python < 3.11 (svrt/settings.py falls back to it), not above;
- ``triton`` (Linux wheels only) and ``dask-cuda`` (Linux only) carry a Linux marker;
- ``[cluster]`` has the Dask dashboard (bokeh), dask-jobqueue and dask-cuda;
- the README set-up (requirements-ci.txt, then ``pip install --no-deps -e .``) still gets the CPU ONNX Runtime;
- progress bars are ``tqdm.auto`` (a widget in notebooks, text in a terminal).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
ORT = {"onnxruntime", "onnxruntime-gpu"}


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements(group: str | None) -> dict[str, Requirement]:
    """name -> requirement of the core dependencies (``group=None``) or of one extra."""
    project = _project()
    items = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {canonicalize_name(r.name): r for r in map(Requirement, items)}


def _applies(req: Requirement, **env: str) -> bool:
    return req.marker is None or req.marker.evaluate(env)


def test_no_install_pulls_both_onnx_runtimes():
    core = set(_requirements(None))
    assert not core & ORT, "ONNX Runtime in the core dependencies would sit beside onnxruntime-gpu in [gpu]"
    assert "onnxruntime" in _requirements("cpu")
    gpu = set(_requirements("gpu"))
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    for extra in _project()["optional-dependencies"]:
        assert len((core | set(_requirements(extra))) & ORT) <= 1, f"[{extra}] pulls both ONNX Runtimes"


def test_readme_setup_keeps_the_cpu_onnx_runtime():
    """scripts/setup.sh installs requirements-ci.txt and then svrt with --no-deps: the pins are the CPU set."""
    pins = {}
    for line in (ROOT / "requirements-ci.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    assert "onnxruntime" in pins and "onnxruntime-gpu" not in pins
    assert "--no-deps -e ." in (ROOT / "scripts" / "setup.sh").read_text()


@pytest.mark.parametrize("python, needed", [("3.10", True), ("3.11", False), ("3.13", False)])
def test_tomli_only_below_python_3_11(python, needed):
    tomli = _requirements(None).get("tomli")
    assert tomli is not None, "svrt/settings.py falls back to tomli on Python 3.10; declare it"
    assert _applies(tomli, python_version=python, python_full_version=f"{python}.0") is needed


@pytest.mark.parametrize("group, name", [("gpu", "triton"), ("test", "triton"), ("cluster", "dask-cuda")])
def test_linux_only_packages_have_a_linux_marker(group, name):
    req = _requirements(group)[name]
    assert _applies(req, platform_system="Linux", sys_platform="linux")
    for system, platform in (("Windows", "win32"), ("Darwin", "darwin")):
        assert not _applies(req, platform_system=system, sys_platform=platform), f"[{group}] {name} on {system}"


def test_cluster_extra_has_dashboard_jobqueue_and_cuda_workers():
    assert {"dask", "bokeh", "dask-jobqueue", "dask-cuda"} <= set(_requirements("cluster"))
    assert "distributed" in _requirements("cluster")["dask"].extras


def test_progress_bars_are_tqdm_auto():
    """``from tqdm import tqdm`` gives text bars in a notebook; ``tqdm.auto`` picks the widget there."""
    plain = re.compile(r"^\s*(from tqdm import|import tqdm\b)", re.M)
    offenders = []
    for folder in ("svrt", "runtime", "trainer", "export", "kernels", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if plain.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"plain tqdm in {offenders}; use `from tqdm.auto import tqdm`"
