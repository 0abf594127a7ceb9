"""The plan ``svrt deconvolve`` prints before the work (runtime/plan.py: estimate, describe, check_fits) and the
cost curve's bookkeeping (benchmarks/cost_curve.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sentences import sentence

from svrt.errors import SvrtError
from svrt.runtime.forward_model import EXACT_OPTICS_BYTES_PER_PIXEL
from svrt.runtime.plan import plan_summary
from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine


@pytest.fixture(scope="module")
def exact():
    return load_solver_engine(device="cpu")      # the default forward model: exact optics


def test_exact_optics_plan_does_not_tile_a_camera_field(exact):
    """A 1024^2 x 12 x 2 burst under an 8 GiB bound: one frame of exact optics takes ~0.9 GB, so the field is solved
    whole by momfbd. The width-64 emulator rule (9.1 kB per pixel, ~10 GB a frame) cut it into tiles, which
    momfbd does not support: the restoration silently became method adam."""
    solver = SVMOMFBD(exact, SolverConfig(progress=False, memory_mb=8192))
    assert solver.bytes_per_pixel_sample() == EXACT_OPTICS_BYTES_PER_PIXEL
    plan = solver.plan(2, 12, (1024, 1024))
    assert not plan.tiled and plan.batch >= 1
    line = plan_summary(solver, (2, 12, 1024, 1024), "burst.fits")
    assert line.startswith("plan: 2 object(s) x 12 frames of 1024x1024, whole field")
    est = float(re.search(r"estimated peak memory ([\d.]+) GiB", line).group(1))
    assert 2.0 < est < 16.0                       # issue 23: under 16 GiB (measured 1024^2 x 12 x 1: 3.1 GB)


def test_plan_refuses_a_burst_beyond_the_bound(exact):
    """One frame fits a 1.5 GiB bound but the burst's own arrays and the patch stage do not: refused before any
    work, in one sentence naming the file and the setting to change."""
    solver = SVMOMFBD(exact, SolverConfig(progress=False, memory_mb=1500))
    with pytest.raises(SvrtError) as e:
        plan_summary(solver, (2, 12, 1024, 1024), "camera.fits")
    sentence(e.value, "camera.fits", "1024x1024", "memory bound", "--memory-mb")


def test_deconvolve_prints_the_plan_and_its_memory_is_within_2x(tmp_path):
    """``svrt deconvolve`` (a fresh process, as the cost curve runs it) prints the plan line before the result,
    and the estimated peak memory is within 2x of the process's measured peak RSS."""
    from svrt.benchmarks.cost_curve import collect, run_size

    rec = run_size(64, 3, 1, seed=2, simulate_up_to=64, out_dir=tmp_path)
    log = (tmp_path / "deconvolve-64.log").read_text().splitlines()
    assert log[0].startswith("plan: 1 object(s) x 3 frames of 64x64"), log[:2]
    assert any(line.startswith("wrote ") for line in log[1:])
    est_mb = 1024 * float(re.search(r"estimated peak memory ([\d.]+) GiB", rec["plan"]).group(1))
    assert 0.5 <= est_mb / rec["peak_rss_mb"] <= 2.0, (est_mb, rec["peak_rss_mb"])
    # the frame average's score beside the restoration's: the mean of the frames, scored the same way
    from svrt.benchmarks.cost_curve import _nmse
    from svrt.fileio import read_burst

    burst = read_burst(tmp_path / rec["burst"])
    assert rec["frame_average_nmse_var"] == _nmse(burst.frames.mean(axis=1), burst) != rec["nmse_var"]
    curve = collect(tmp_path)
    assert [r["size"] for r in curve["rows"]] == [64] and curve["rows"][0]["relative_to_ref"] == 1.0


def test_mirror_tile_reflects_about_the_edges():
    from svrt.benchmarks.cost_curve import mirror_tile
    from svrt.fileio import Burst

    frames = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    big = mirror_tile(Burst(frames=frames, instruments="crisp8542", truth=frames[:, 0]), 10)
    assert big.frames.shape == (2, 3, 10, 10) and big.truth.shape == (2, 10, 10)
    np.testing.assert_array_equal(big.frames[..., :4, :4], frames)
    np.testing.assert_array_equal(big.frames[..., :4, 4:8], frames[..., ::-1])      # mirrored across x = 4
    np.testing.assert_array_equal(big.frames[..., 4:8, :4], frames[..., ::-1, :])   # mirrored across y = 4
    assert big.modes is None


def test_whole_field_psfs_by_fft_equal_the_pruned_dft():
    """PSFs of a whole field (the patch stage's one wavefront per frame) are computed by FFT, whose cost grows as
    S^2 log S instead of the DFT products' S^3; the numbers are the same to float32 rounding."""
    import torch

    import svrt.optics.psf as psf_module
    from svrt.optics.psf import FFT_MIN_PSF_SIZE, PSFModel

    model = PSFModel("crisp8542", 44, psf_size=FFT_MIN_PSF_SIZE)
    a = 0.5 * torch.randn(3, 44, generator=torch.Generator().manual_seed(0))
    by_fft = model(a)
    try:
        psf_module.FFT_MIN_PSF_SIZE = 10 ** 9                 # force the DFT products
        by_dft = model(a)
    finally:
        psf_module.FFT_MIN_PSF_SIZE = FFT_MIN_PSF_SIZE
    assert float((by_fft - by_dft).abs().max() / by_dft.max()) < 1e-5
    np.testing.assert_allclose(by_fft.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-5)


def _fake_svrt_record(folder, size, frames, objects, cpu_s, wall_s, rss_mb, nmse):
    """A ``cost-<size>.json`` as :func:`run_size` writes it (the svrt run is the slow part, tested above)."""
    from svrt.records import write_json

    write_json(folder / f"cost-{size}.json", {
        "size": size, "frames": frames, "objects": objects, "seed": 2, "burst": "b.fits", "mirrored": False,
        "command": "", "wall_s": wall_s, "cpu_s": cpu_s, "peak_rss_mb": rss_mb, "peak_mb_at_solve_end": rss_mb,
        "plan": "", "nmse_var": nmse, "threads": "1", "t_total_solver_s": 1.0, "t_patch_s": 0.5,
        "t_iterations_s": 0.4, "t_other_s": 0.1, "iterations": 2, "obj_iters": 1, "patch_evals": 1, "rounds": 1})


def test_cost_curve_runs_a_peer_in_its_own_process_and_gives_the_ratio(tmp_path):
    """``--peer-sizes``: the peer (here the harness's frame average, which needs no optional package) restores the
    same burst in a fresh process, measured by ``os.wait4`` as svrt is; the curve gives svrt / peer at that size, the
    page's table a row for it and the PNG is written."""
    import json

    from svrt.benchmarks.cost_curve import collect, main, markdown

    _fake_svrt_record(tmp_path, 64, 3, 2, cpu_s=4.0, wall_s=8.0, rss_mb=500.0, nmse=[0.05, 0.1])
    assert main(["--sizes", "", "--peer-sizes", "64", "--peer", "frame_average", "--frames", "3", "--objects", "2",
                 "--seed", "2", "--simulate-up-to", "64", "--out-dir", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "peer-frame_average-64.json").read_text())
    assert rec["peer"] == "frame_average" and rec["cpu_s"] > 0 and rec["wall_s"] >= rec["cpu_s"] * 0.5
    assert 20 < rec["peak_rss_mb"] < 4000          # the child's own peak (python, numpy, astropy), not ours
    assert len(rec["nmse_var"]) == 2 and all(v > 0.1 for v in rec["nmse_var"])   # the average is blurred
    curve = collect(tmp_path)
    (peer,) = curve["peers"]
    assert peer["svrt_over_peer"]["cpu"] == pytest.approx(4.0 / rec["cpu_s"], rel=1e-2)
    assert peer["svrt_over_peer"]["peak_rss"] == pytest.approx(500.0 / rec["peak_rss_mb"], rel=1e-2)
    assert peer["svrt_over_peer"]["nmse_var"][0] == pytest.approx(0.05 / rec["nmse_var"][0], rel=1e-2)
    page = markdown(curve)
    assert "| 64^2 x 3 x 2 | frame_average |" in page and "svrt / peer" in page
    assert (tmp_path / "cost_curve.png").stat().st_size > 1000


def test_cost_curve_peer_without_svrt_row_has_no_ratio_and_bad_peer_is_one_sentence(tmp_path):
    from svrt.benchmarks.cost_curve import collect, markdown, run_peer
    from svrt.records import write_json

    _fake_svrt_record(tmp_path, 64, 3, 1, cpu_s=4.0, wall_s=8.0, rss_mb=500.0, nmse=[0.05])
    write_json(tmp_path / "peer-torchmfbd-128.json", {"size": 128, "frames": 3, "objects": 1, "peer": "torchmfbd",
                                                       "cpu_s": 9.0, "wall_s": 9.5, "peak_rss_mb": 900.0,
                                                       "nmse_var": [0.07]})
    curve = collect(tmp_path)
    assert curve["peers"][0]["svrt_over_peer"] is None
    assert "| 128^2 x 3 x 1 | torchmfbd | 9 | 10 | 900 |" in markdown(curve)
    with pytest.raises(SvrtError) as e:
        run_peer(64, 3, 1, 2, 64, tmp_path, peer="nobody")
    sentence(e.value, "nobody", "torchmfbd")


def test_cost_curve_torchmfbd_peer_restores_a_small_burst(tmp_path):
    """The real peer, a few iterations on a 64^2 burst: torchmfbd's patches cover the field and it is scored."""
    from svrt.benchmarks.cost_curve import run_peer
    from svrt.benchmarks.peers import torchmfbd_available

    ok, why = torchmfbd_available()
    if not ok:
        pytest.skip(why)
    rec = run_peer(64, 3, 1, 2, 64, tmp_path, peer="torchmfbd=iterations:3")
    assert rec["peer"] == "torchmfbd" and rec["settings"]["iterations"] == 3 and rec["info"]["patches"] >= 1
    assert len(rec["nmse_var"]) == 1 and np.isfinite(rec["nmse_var"][0]) and rec["cpu_s"] > 0
