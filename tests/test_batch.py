"""``svrt batch`` and :mod:`svrt.runtime.batch`: globs and manifests, resumable outputs, one log per
burst, failures that stop nothing, and a real 2-worker Dask LocalCluster (tiny random emulator,
32x32 bursts, 2 frames, the adam method with 2 iterations)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from svrt.cli import cli
from svrt.errors import SvrtError
from svrt.fileio import Burst, read_restoration, write_burst
from svrt.runtime.batch import EngineSpec, find_bursts, plan_jobs, run_batch, summary_table
from svrt.runtime.solver import SolverConfig

FAST = SolverConfig(method="adam", iterations=2, grid=0, progress=False)


@pytest.fixture(scope="module")
def engine(tiny_model):
    return tiny_model


def _bursts(folder, n=3, bad=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        frames = (1000 * (1 + 0.05 * rng.standard_normal((2, 2, 32, 32)))).astype(np.float32)
        p = folder / f"burst_{i:02d}.fits"
        write_burst(p, Burst(frames=frames, instruments=["crisp8542"] * 2,
                             header={"CDELT1": 0.059, "CDELT2": 0.059, "DATE-OBS": f"2024-06-01T08:30:{i:02d}"}))
        paths.append(p)
    for i in range(bad):
        p = folder / f"broken_{i}.fits"
        p.write_bytes(paths[0].read_bytes()[:5000])   # truncated
        paths.append(p)
    return paths


def test_globs_manifests_and_names(tmp_path):
    paths = _bursts(tmp_path / "night", n=2)
    assert find_bursts([str(tmp_path / "night" / "*.fits")]) == paths
    manifest = tmp_path / "list.txt"
    manifest.write_text("# tonight\nnight/burst_01.fits\n\n" + str(paths[0]) + "\nnight/missing.fits\n")
    listed = find_bursts(manifest=manifest)
    assert listed[:2] == [paths[1], paths[0]] and listed[2].name == "missing.fits"  # missing: that burst fails later
    jobs = plan_jobs(listed, tmp_path / "out", "h5")
    assert [j.output for j in jobs][0] == str(tmp_path / "out" / "burst_01.h5")
    assert jobs[0].log == str(tmp_path / "out" / "logs" / "burst_01.log")
    with pytest.raises(SvrtError, match="no burst file matches"):
        find_bursts([str(tmp_path / "nothing" / "*.fits")])
    other = tmp_path / "other" / "burst_00.fits"
    other.parent.mkdir()
    other.write_bytes(paths[0].read_bytes())
    with pytest.raises(SvrtError, match="would both be written"):
        plan_jobs([paths[0], other], tmp_path / "out")
    with pytest.raises(SvrtError, match="lists no burst"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        find_bursts(manifest=tmp_path / "empty.txt")


def test_local_dask_cluster_restores_resumes_and_survives_a_bad_burst(engine, tmp_path):
    pytest.importorskip("distributed", reason="Dask distributed is in requirements-ci.txt and the [cluster] extra")
    paths = _bursts(tmp_path / "night", n=3, bad=1)
    out = tmp_path / "restored"
    jobs = plan_jobs(paths, out)
    spec = EngineSpec(paths=(str(engine),))
    lines, info = [], {}
    outcomes = run_batch(jobs, spec, FAST, workers=2, cluster_info=info,
                         on_outcome=lambda o, n, total: lines.append((n, total, o.status, o.name)))
    assert info["workers"] == 2 and info["kind"] == "LocalCluster"
    status = {o.name: o.status for o in outcomes}
    assert status == {"burst_00": "done", "burst_01": "done", "burst_02": "done", "broken_0": "failed"}, outcomes
    assert [n for n, *_ in lines] == [1, 2, 3, 4] and all(total == 4 for _, total, *_ in lines)
    broken = next(o for o in outcomes if o.status == "failed")
    assert "broken_0.fits" in broken.message and "\n" not in broken.message
    assert "Traceback" in (out / "logs" / "broken_0.log").read_text()
    done = [o for o in outcomes if o.status == "done"]
    assert all(o.worker.startswith("tcp://") for o in done)
    assert all(o.extra["engine_loads"] == 1 for o in done)       # the engine is loaded once per worker
    for o in done:
        rest = read_restoration(o.output)
        assert rest.objects.shape == (2, 32, 32) and rest.config["METHOD"] == "adam"
        assert rest.header["INPUT"] == o.name + ".fits" and rest.header["DATE-OBS"].startswith("2024-06-01")
        log = (out / "logs" / f"{o.name}.log").read_text()
        assert "iteration 2" in log and "wrote" in log
    table = summary_table(outcomes, wall_s=10.0, workers=2)
    assert "3 done, 0 skipped, 1 failed" in table and "bursts/hour on 2 workers" in table
    # a second run (say, after the first was killed) skips what is done and retries only the failure
    again = run_batch(jobs, spec, FAST, workers=0)
    assert sorted(o.status for o in again) == ["failed", "skipped", "skipped", "skipped"]


def test_batch_command(engine, tmp_path):
    _bursts(tmp_path / "night", n=2, bad=1)
    out = tmp_path / "restored"
    out.mkdir()
    (out / "burst_01.fits").write_bytes(b"finished earlier")     # an existing output: skipped, untouched
    args = ["batch", str(tmp_path / "night" / "*.fits"), "-o", str(out), "--workers", "0", "--engine", str(engine),
            "--method", "adam", "--iterations", "2", "--grid", "0"]           # the options of svrt deconvolve
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, (r.output, r.exception)              # a burst failed
    assert "[1/3]" in r.output and "[3/3]" in r.output and "3 burst(s)" in r.output
    assert "1 done, 1 skipped, 1 failed" in r.output
    assert (out / "burst_00.fits").exists() and (out / "burst_01.fits").read_bytes() == b"finished earlier"
    tsv = (out / "batch-summary.tsv").read_text().splitlines()
    assert tsv[0].startswith("name\tstatus") and len(tsv) == 4
    assert read_restoration(out / "burst_00.fits").config["ITERATIONS"] == 2
    log = (out / "logs" / "burst_00.log").read_text()    # the plan line of svrt deconvolve, before the work
    assert "plan: 2 object(s) x 2 frames of 32x32, whole field" in log
    assert log.index("plan: ") < log.index("iteration 1")
    (tmp_path / "night" / "broken_0.fits").unlink()
    r = CliRunner().invoke(cli, args + ["-q"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert "0 done, 2 skipped, 0 failed" in r.output and "[1/" not in r.output
    r = CliRunner().invoke(cli, ["batch", "-o", str(out), "--workers", "0"])
    assert r.exit_code != 0 and isinstance(r.exception, SvrtError) and "no burst given" in str(r.exception)
