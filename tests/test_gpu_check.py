"""scripts/gpu-check.sh and its driver svrt.benchmarks.gpu_check: the CPU dry run end to end (every step
planned, the CPU-runnable ones run small, the JSON it writes), the time limit, the stopping of a step at
its timeout, and the JUnit summary. The GPU run itself happens only on a GPU machine (see the README)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from svrt.benchmarks import gpu_check as gc
from svrt.benchmarks.kernels_bench import nominal_bandwidth_GBps

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
FLAT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _env(out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SVRT_KERNELS")}
    env.update(OUT=str(out), PYTHON=sys.executable)
    return env


def test_dry_run_plans_every_step_and_writes_the_json(tmp_path):
    """The dry run CI runs: < 60 s on 2 idle cores (measured ~30 s with other work beside it)."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--time-limit", "150"], env=_env(out), cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert elapsed < 150

    # what comes back from the device machine: at most 8 flat files with plain names
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() and FLAT_NAME.match(f) for f in files), files
    assert len(files) <= 8
    assert {"gpu-check.json", "gpu-check.log", "pytest.xml", "restoration.json", "bench.json",
            "bench.png"} <= set(files)

    summary = json.loads((out / "gpu-check.json").read_text())
    assert summary["schema"] == gc.SCHEMA and summary["dry_run"] is True and summary["ok"] is True
    assert [p["step"] for p in summary["plan"]] == list(gc.STEP_NAMES) == list(summary["steps"])
    for name, rec in summary["steps"].items():
        assert rec["status"] in ("ok", "planned"), (name, rec)
        assert rec["seconds"] is not None and rec["seconds"] < rec["timeout_s"]
    steps = {name: rec["result"] for name, rec in summary["steps"].items()}
    assert steps["versions"]["torch"] and steps["versions"]["cuda_available"] in (True, False)
    assert steps["pytest"]["tests"] > 0 and steps["pytest"]["failures"] == 0 and steps["pytest"]["errors"] == 0
    assert steps["kernels"]["status"] == "planned" and steps["kernels"]["sizes"]["upsample"]
    assert any(c.get("ok") is True for c in steps["consistency"]["checks"])
    assert steps["bench"]["emulator"] and (out / "bench.png").read_bytes()[:4] == b"\x89PNG"

    rest = steps["restore_fp16"]
    assert rest["device"] == "cpu" and rest["case"]["size"] == gc.DRY_RESTORATION["size"]
    assert rest["s_per_iteration"] > 0 and rest["peak_MiB"] > 0 and rest["objects_finite"] is True
    assert rest["paper"]["s_per_iteration"] == 0.75
    restoration = json.loads((out / "restoration.json").read_text())
    assert restoration["cases"]["restore_fp16"]["s_per_iteration"] == rest["s_per_iteration"]
    assert set(restoration["cases"]) == {"restore_fp16", "restore_fp32", "restore_fp16_20f"}
    assert "restore_fp16" in res.stdout and "step" in res.stdout          # the closing table


def test_time_limit_skips_what_does_not_fit(tmp_path):
    """With no time left every step is skipped with its reason, and the summary is still written."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "svrt.benchmarks.gpu_check", "--dry-run", "--time-limit",
                          str(gc.RESERVE_S + 1), "--out", str(out)], env=_env(out), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert time.monotonic() - t0 < 30                     # the parent imports no torch
    summary = json.loads((out / "gpu-check.json").read_text())
    assert summary["stopped_early"] is True
    for rec in summary["steps"].values():
        assert rec["status"] == "skipped" and rec["reason"].startswith("out of time")


def test_only_selects_steps_and_refuses_unknown_ones(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "svrt.benchmarks.gpu_check", "--dry-run", "--only", "kernels",
                          "--out", str(out)], env=_env(out), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = json.loads((out / "gpu-check.json").read_text())["steps"]
    assert steps["kernels"]["status"] == "planned"
    assert all(r["reason"] == "not selected (--only)" for n, r in steps.items() if n != "kernels")
    bad = subprocess.run([sys.executable, "-m", "svrt.benchmarks.gpu_check", "--only", "nope", "--out", str(out)],
                         env=_env(out), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown steps nope" in bad.stderr


def test_a_step_is_stopped_at_its_timeout(monkeypatch):
    """SIGINT first (pytest then writes its report); a step that ignores it gets SIGTERM."""
    monkeypatch.setattr(gc, "INTERRUPT_GRACE_S", 0.5)
    t0 = time.monotonic()
    how, rc, seconds = gc.run_process([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.0)
    assert how == "timeout" and rc is not None and seconds < 10
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    how, rc, seconds = gc.run_process([sys.executable, "-c", stubborn], timeout=1.5)
    assert how == "timeout" and rc == -15
    assert time.monotonic() - t0 < 20
    how, rc, _ = gc.run_process([sys.executable, "-c", "raise SystemExit(3)"], timeout=30)
    assert (how, rc) == ("done", 3)


def test_parse_junit(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" time="1.5">
      <testcase classname="tests.test_kernels" name="test_a" time="0.1"/>
      <testcase classname="tests.test_kernels" name="test_b" time="0.1">
        <failure message="assert 2 == 1">x</failure></testcase>
      <testcase classname="tests.test_kernels" name="test_c" time="0.1"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="tests.test_kernels" name="test_d" time="0.1"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="tests.test_engines" name="test_e" time="0.1"><error message="fixture broke"/></testcase>
    </testsuite></testsuites>""")
    s = gc.parse_junit(xml)
    assert (s["tests"], s["passed"], s["failures"], s["errors"], s["skipped"]) == (5, 1, 1, 1, 2)
    assert s["skip_reasons"] == {"needs a CUDA GPU": 2} and s["time_s"] == 1.5
    assert s["failed_tests"][0] == {"test": "tests.test_kernels::test_b", "kind": "failure",
                                    "message": "assert 2 == 1"}


def test_write_json_is_clean_and_atomic(tmp_path):
    gc.write_json(tmp_path / "a.json", {"x": float("nan"), "y": (1, 2), "p": tmp_path})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1, 2], "p": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("name,gbps", [("NVIDIA H200", 4800.0), ("NVIDIA H100 80GB HBM3", 3350.0),
                                       ("NVIDIA H100 PCIe", 2000.0), ("NVIDIA GH200 480GB", 4000.0),
                                       ("NVIDIA GeForce RTX 4090", 1008.0), ("cpu", None), (None, None)])
def test_nominal_bandwidth_from_the_gpu_name(name, gbps):
    assert nominal_bandwidth_GBps(name) == gbps
