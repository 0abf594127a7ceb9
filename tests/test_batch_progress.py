"""Watching a batch (:mod:`svrt.runtime.batch_progress`): a start line per burst before that burst ends,
log lines on disk while the solve runs, end lines with a fit summary, the batch bar, the Dask dashboard
line, and the SLURM recipe of :mod:`svrt.runtime.cluster` (checked by its job script, no scheduler).

Tiny bursts (2 objects x 2 frames x 32^2), the untrained width-4 emulator, method adam (it calls the
solve callback every iteration), a few iterations."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import svrt.runtime.batch as batch
from svrt.errors import SvrtError
from svrt.fileio import Burst, write_burst
from svrt.runtime.batch import EngineSpec, plan_jobs, run_batch
from svrt.runtime.batch_progress import BatchWatch, IterationLog, format_elapsed
from svrt.runtime.solver import SolverConfig
from svrt.settings import load_settings

FAST = SolverConfig(method="adam", iterations=3, grid=0, progress=False)


def _bursts(folder: Path, n: int = 2, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        frames = (1000 * (1 + 0.05 * rng.standard_normal((2, 2, size, size)))).astype(np.float32)
        p = folder / f"burst_{i:02d}.fits"
        write_burst(p, Burst(frames=frames, instruments=["crisp8542"] * 2, header={"CDELT1": 0.059, "CDELT2": 0.059}))
        paths.append(p)
    return paths


def _watched_batch(tiny_model, tmp_path, monkeypatch, config, n=2):
    """Run ``n`` bursts in this process under a :class:`BatchWatch`; return the jobs, the watch, the
    outcomes and, per iteration line of burst_00: (inside SVMOMFBD.solve?, its start line printed?,
    iteration lines in its log file) -- what a user watching the batch would see at that moment."""
    from svrt.runtime.solver import SVMOMFBD

    jobs = plan_jobs(_bursts(tmp_path / "night", n=n), tmp_path / "out")
    stream = io.StringIO()
    seen, solving = [], [False]
    solve = SVMOMFBD.solve

    def watched_solve(self, *args, **kw):
        solving[0] = True
        try:
            return solve(self, *args, **kw)
        finally:
            solving[0] = False

    class Spy(IterationLog):   # the iteration log of the batch
        def __call__(self, rec):
            super().__call__(rec)
            if "burst_00" in self.logger.name:
                text = Path(jobs[0].log).read_text()
                seen.append((solving[0], "start   burst_00" in stream.getvalue(), text.count("iteration ")))

    monkeypatch.setattr(SVMOMFBD, "solve", watched_solve)
    monkeypatch.setattr(batch, "IterationLog", Spy)
    with BatchWatch([j.name for j in jobs], stream=stream, bar=False) as watch:
        outcomes = run_batch(jobs, EngineSpec(paths=(str(tiny_model),)), config, workers=0, on_outcome=watch.ended)
    assert stream.getvalue().splitlines() == watch.lines
    return jobs, watch, outcomes, seen


def test_start_line_and_log_lines_appear_while_the_first_burst_runs(tiny_model, tmp_path, monkeypatch):
    jobs, watch, outcomes, seen = _watched_batch(tiny_model, tmp_path, monkeypatch, FAST)
    assert [o.status for o in outcomes] == ["done", "done"], outcomes
    # during the solve of burst 1: its start line is out, and every finished iteration is in its log
    assert seen == [(True, True, 1), (True, True, 2), (True, True, 3)], seen
    lines = watch.lines
    assert len(lines) == 4
    assert "start   burst_00" in lines[0] and "(burst 1 of 2, 0:00:0" in lines[0]
    assert lines[1].startswith("[1/2] done    burst_00") and "3 iterations, loss " in lines[1]
    assert "into the batch" in lines[1] and "start   burst_01" in lines[2] and "burst 2 of 2" in lines[2]
    assert lines[3].startswith("[2/2] done    burst_01")


def test_momfbd_log_lines_appear_while_the_burst_runs(tiny_model, tmp_path, monkeypatch):
    config = SolverConfig(method="momfbd", grid=0, progress=False, patch_iterations=3, object_iterations=3,
                          refine_rounds=1, refine_iterations=2, data_per_mode=0)  # 32^2 x 2: plumbing only
    jobs, watch, outcomes, seen = _watched_batch(tiny_model, tmp_path, monkeypatch, config, n=1)
    assert [o.status for o in outcomes] == ["done"], outcomes
    # each iteration line is written, and on disk, while the solve runs (not from the loss table after it)
    assert seen and all(s == (True, True, i + 1) for i, s in enumerate(seen)), seen


def test_end_lines_of_skipped_and_failed_bursts_and_the_bar(tmp_path):
    out = io.StringIO()
    done = batch.Outcome("a", "a.fits", "a.out", "done", seconds=2.0, solve_seconds=1.5, iterations=4,
                         message="wrote a.out", extra={"loss_first": 10.0, "loss_last": 2.0})
    failed = batch.Outcome("bb", "bb.fits", "bb.out", "failed", seconds=0.1, message="bad file")
    skipped = batch.Outcome("c", "c.fits", "c.out", "skipped", message="c.out exists")
    with BatchWatch(["a", "bb", "c"], stream=out, bar=True) as watch:   # bar forced on: a terminal's view
        for n, o in enumerate([done, failed, skipped], 1):
            watch.ended(o, n, 3)
    text = out.getvalue()
    assert "4 iterations, loss 1.00e+01 -> 2.00e+00, solve 1.5 s" in text
    assert "[2/3] failed  bb" in text and "bad file  (0:00:00 into the batch)" in text
    assert "[3/3] skipped c" in text
    assert "3/3" in text.split("[3/3] skipped")[-1]             # the bar, redrawn below the last line
    quiet = io.StringIO()
    with BatchWatch(["a"], stream=quiet, quiet=True) as watch:
        watch.ended(done, 1, 1)
    assert quiet.getvalue() == "" and len(watch.lines) == 1
    assert format_elapsed(3725.2) == "1:02:05"


def test_local_cluster_prints_the_dashboard_and_start_lines_through_dask(tiny_model, tmp_path):
    pytest.importorskip("distributed", reason="Dask distributed is in requirements-ci.txt and the [cluster] extra")
    jobs = plan_jobs(_bursts(tmp_path / "night"), tmp_path / "out")
    stream = io.StringIO()
    with BatchWatch([j.name for j in jobs], stream=stream, bar=False) as watch:
        outcomes = run_batch(jobs, EngineSpec(paths=(str(tiny_model),)), FAST, workers=1, on_outcome=watch.ended,
                             on_client=watch.attach)
    assert sorted(o.status for o in outcomes) == ["done", "done"], outcomes
    lines = watch.lines
    dash = [ln for ln in lines if ln.startswith("Dask dashboard: ")]
    assert len(dash) == 1 and lines[0] == dash[0]
    try:
        import bokeh  # noqa: F401
        assert "http://" in dash[0], dash
    except ImportError:
        assert "bokeh is not installed" in dash[0], dash
    for name in ("burst_00", "burst_01"):   # the worker's start event came through the scheduler
        start = next(i for i, ln in enumerate(lines) if f"start   {name}" in ln)
        end = next(i for i, ln in enumerate(lines) if f"done    {name}" in ln)
        assert start < end and "on tcp://" in lines[start], lines


def test_cli_prints_a_start_line_on_stderr_while_the_first_burst_runs(tiny_model, tmp_path):
    _bursts(tmp_path / "night")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "svrt.cli", "batch", str(tmp_path / "night" / "*.fits"), "-o", str(out),
           "--workers", "0", "--engine", str(tiny_model), "--method", "adam", "--iterations", "3", "--grid", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = ""
        while "start   burst_00" not in first:   # read as it comes: blocks until the next line is out
            first = proc.stderr.readline()
            if not first:
                break
        running = proc.poll() is None
        rest_err, stdout = proc.stderr.read(), proc.stdout.read()
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0, (first, rest_err, stdout)
    assert "start   burst_00" in first and "burst 1 of 2" in first, (first, rest_err)
    assert running                               # the line came out while the batch ran, not at its end
    assert rest_err.index("done    burst_00") < rest_err.index("start   burst_01"), rest_err
    assert "[1/2]" not in stdout and "2 done, 0 skipped, 0 failed" in stdout   # the lines went to stderr


# ------------------------------------------------------------------------------------------ SLURM

def _run_toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text("[solver]\ngrid = 0\n\n[cluster]\n" + body, encoding="utf-8")
    return p


def test_cluster_table_is_checked_with_one_sentence(tmp_path):
    cfg = load_settings(_run_toml(tmp_path, 'queue = "normal"\ncores = 4\njobs = 16\n'), "cluster")
    assert (cfg.queue, cfg.cores, cfg.jobs, cfg.processes, cfg.memory) == ("normal", 4, 16, None, "8GB")
    assert load_settings(_run_toml(tmp_path, "jobs = 2\n"), "solver").grid == 0    # [solver] still reads
    for body, words in [('walltime = "12h"\n', ["run.toml", "walltime", "[D-]HH:MM[:SS]", "12h"]),
                        ('memory = "lots"\n', ["run.toml", "memory", "8GB", "lots"]),
                        ("cores = 2\nprocesses = 3\n", ["run.toml", "processes", "1..cores (2)"]),
                        ("qeueu = \"x\"\n", ["run.toml", "no setting 'qeueu'", "'queue'"]),
                        ("jobs = \"many\"\n", ["run.toml", "jobs must be an integer"])]:
        with pytest.raises(SvrtError) as err:
            load_settings(_run_toml(tmp_path, body), "cluster")
        assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), (body, str(err.value))


def test_svrt_config_cluster_prints_the_table_that_reads_back(tmp_path):
    from click.testing import CliRunner

    from svrt.cli import cli
    from svrt.runtime.cluster import ClusterConfig

    r = CliRunner().invoke(cli, ["config", "--cluster"])
    assert r.exit_code == 0, r.output
    assert "[cluster]" in r.output and "# SLURM partition of the jobs (sbatch -p)" in r.output
    (tmp_path / "run.toml").write_text(r.output)
    assert load_settings(tmp_path / "run.toml", "cluster") == ClusterConfig()
    assert CliRunner().invoke(cli, ["config", "--cluster", "--train"]).exit_code == 2


class _Client:
    """What dashboard_line asks of a Dask client: its link, and a function run on its scheduler."""

    def __init__(self, link, bokeh):
        self.link, self.bokeh = link, bokeh

    @property
    def dashboard_link(self):
        if self.link is None:
            raise KeyError("dashboard")     # a remote scheduler without an HTTP server
        return self.link

    def run_on_scheduler(self, fn):
        if self.bokeh is None:
            raise OSError("scheduler gone")
        return self.bokeh


def test_dashboard_line_says_where_or_why_not():
    from svrt.runtime.cluster import dashboard_line

    assert dashboard_line(_Client("http://10.0.0.1:8787/status", True)) == "Dask dashboard: http://10.0.0.1:8787/status"
    # distributed serves /status without bokeh too, as a page asking for bokeh: no link then
    assert "bokeh is not installed where the scheduler runs" in dashboard_line(_Client("http://h:8787/status", False))
    assert "serves no dashboard" in dashboard_line(_Client(None, None))
    assert dashboard_line(_Client("http://h:8787/status", None)) == "Dask dashboard: http://h:8787/status"


def test_slurm_and_workers_or_scheduler_are_refused_together(tiny_model, tmp_path):
    from click.testing import CliRunner

    from svrt.cli import cli

    _bursts(tmp_path / "night", n=1)
    for extra in (["--workers", "2"], ["--scheduler", "tcp://h:8786"]):
        r = CliRunner().invoke(cli, ["batch", str(tmp_path / "night" / "*.fits"), "-o", str(tmp_path / "out"),
                                     "--cluster", "slurm", *extra])
        assert r.exit_code == 2 and "not both" in r.output, r.output


def test_slurm_without_dask_jobqueue_is_one_sentence(monkeypatch):
    from svrt.runtime.cluster import ClusterConfig, open_cluster

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)   # as if not installed
    with pytest.raises(SvrtError, match=r"^--cluster slurm needs dask-jobqueue \(pip install 'svrt\[cluster\]'"):
        with open_cluster("slurm", None, 1, say=lambda line: None):
            pass
    with open_cluster("local") as scheduler:
        assert scheduler is None
    assert ClusterConfig().processes is None and ClusterConfig(cores=8).cores == 8


def test_slurm_job_script_from_the_cluster_table(tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the [cluster] extra, not in requirements-ci.txt")
    from svrt.runtime.cluster import slurm_cluster

    cfg = load_settings(_run_toml(tmp_path, """queue = "normal"
account = "solar"
cores = 4
memory = "16GB"
walltime = "02:30:00"
jobs = 3
job_extra_directives = ["--gres=gpu:1"]
job_script_prologue = ["source /shared/svrt/.venv/bin/activate"]
dashboard_address = ":0"
"""), "cluster")
    with slurm_cluster(cfg, threads=2) as cluster:   # a scheduler in this process; no job is submitted
        script = cluster.job_script()
    assert "#SBATCH -p normal" in script and "#SBATCH -A solar" in script
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --mem=15G" in script                      # dask-jobqueue rounds 16 GB down to GiB
    assert "#SBATCH --gres=gpu:1" in script
    assert "export OMP_NUM_THREADS=2" in script and "source /shared/svrt/.venv/bin/activate" in script
    assert script.index("export OMP_NUM_THREADS=2") < script.index("distributed.cli.dask_worker")
    assert "--nthreads 1 " in script and "--nworkers 4 " in script   # one single-threaded worker per core
    assert "--memory-limit 3.73GiB" in script                  # the job's memory shared by its 4 workers


_FAKE_SBATCH = """#!/bin/bash
# sbatch of this test: run the job script now, in a session of its own (its id is the job id)
cp "$1" "{jobs}/job-$$.sh"
setsid bash "{jobs}/job-$$.sh" > "{jobs}/job-$$.out" 2>&1 < /dev/null &
echo "Submitted batch job $!"
"""
_FAKE_SCANCEL = """#!/bin/bash
# scancel of this test: end the job's session (the worker and its nanny), and nothing else
kill -TERM -- "-$1" 2>/dev/null || true
"""


@pytest.mark.slow
def test_batch_command_on_slurm_with_a_stand_in_sbatch(tiny_model, tmp_path, monkeypatch):
    """``svrt batch --cluster slurm`` end to end: the [cluster] table becomes a SLURMCluster whose job
    script a stand-in ``sbatch`` runs on this machine; its worker restores the bursts and ``scancel``
    ends it."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the [cluster] extra, not in requirements-ci.txt")
    if shutil.which("setsid") is None:
        pytest.skip("the stand-in sbatch needs setsid (util-linux) to start the job in a session scancel can end")
    from click.testing import CliRunner

    from svrt.cli import cli

    _bursts(tmp_path / "night")
    bin_dir, job_dir = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    job_dir.mkdir()
    for name, text in (("sbatch", _FAKE_SBATCH.format(jobs=job_dir)), ("scancel", _FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run_toml = _run_toml(tmp_path, 'memory = "2GB"\nwalltime = "00:10:00"\njobs = 1\ndashboard_address = ":0"\n')
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["batch", str(tmp_path / "night" / "*.fits"), "-o", str(out), "--cluster", "slurm",
                                 "--config", str(run_toml), "--engine", str(tiny_model), "--method", "adam",
                                 "--iterations", "2"])
    jobs_out = "".join(p.read_text() for p in job_dir.glob("*.out"))
    assert r.exit_code == 0, (r.output, r.exception, jobs_out)
    assert "SLURM: 1 job(s) of 1 core(s), 2GB, 00:10:00 submitted" in r.output
    assert "Dask dashboard: " in r.output and "start   burst_00" in r.output
    assert "2 done, 0 skipped, 0 failed" in r.output
    assert (out / "burst_00.fits").exists() and (out / "burst_01.fits").exists()
    assert len(list(job_dir.glob("job-*.sh"))) == 1                         # one job submitted
    assert "export OMP_NUM_THREADS=1" in next(job_dir.glob("job-*.sh")).read_text()
