"""svrt.benchmarks.peers: the peer harness on one tiny burst, its resume logic, its JSON and markdown, and the
torchmfbd peer where torchmfbd is installed."""

import json

import numpy as np
import pytest

from svrt.benchmarks import peers
from svrt.errors import SvrtError
from svrt.fileio import Burst, write_burst
from svrt.scenes import make_scene

N = 64
CASE = peers.Case(size=N, frames=3, seed=1, r0_cm=10.0, ao_modes=0)


def _blur(img, sigma, dy, dx):
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None]
    h = np.exp(-2 * (np.pi * sigma) ** 2 * (ky ** 2 + kx ** 2) - 2j * np.pi * (ky * dy + kx * dx))
    return np.fft.ifft2(np.fft.fft2(img) * h).real


@pytest.fixture(scope="module")
def tiny_burst():
    """A 64^2 x 3-frame burst made by hand (blur, shift, noise): the harness is tested, not the simulator."""
    truth = make_scene("granulation", N, 0.059, 2).astype(np.float64)
    rng = np.random.default_rng(0)
    frames = np.stack([_blur(truth, 1.2 + 0.3 * i, rng.normal(0, 0.7), rng.normal(0, 0.7)) for i in range(3)])
    frames += 0.005 * truth.mean() * rng.standard_normal(frames.shape)
    return Burst(
        frames=frames[None].astype(np.float32),
        instruments=["crisp8542"],
        truth=truth[None].astype(np.float32),
        header={"SIMULATE": True},
    )


def _cached(tmp_path, burst, case=CASE):
    """Put the burst where the harness looks for the case's burst, so nothing is simulated."""
    kw, _ = peers.simulate_keywords(case)
    path = tmp_path / "bursts" / f"{case.id}-{peers._hash(kw)}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_burst(path, burst, overwrite=True)
    return path


FAST = ["frame_average", "svrt-tiny=grid:0,iterations:1,margin:8"]   # one cheap solve: the harness is tested


def test_harness_resume_and_outputs(tmp_path, tiny_burst):
    _cached(tmp_path, tiny_burst)
    out = tmp_path / "out"
    settings = peers.PeerSettings(cases=[CASE], methods=FAST, threads=1)
    data = peers.run_peers(out, settings, bursts_dir=tmp_path / "bursts", command="pytest", progress=False)
    res = data["cases"][CASE.id]["results"]
    assert set(res) == {"frame_average", "svrt-tiny"}
    for name, rec in res.items():
        assert rec["status"] == "ok", (name, rec.get("error"))
        s = rec["score"]
        assert np.isfinite(s["nmse_variance"]) and set(s["power_ratio"]) == {"0.05-0.3", "0.3-0.6", "0.6-0.9"}
        assert rec["wall_s"] >= 0
    svrt = res["svrt-tiny"]
    assert svrt["method"]["solver_config"]["iterations"] == 1 and svrt["method"]["solver_config"]["grid"] == 0
    # no model named: the default forward model of every entry point (exact optics)
    from svrt.runtime.forward_choice import default_forward_model

    assert svrt["method"]["engine"]["backend"] == default_forward_model(svrt["method"]["solver_config"]["method"])[0]
    assert svrt["versions"]["svrt"]
    on_disk = json.loads((out / "peers.json").read_text())
    saved = on_disk["cases"][CASE.id]["results"]["svrt-tiny"]["score"]
    assert saved["nmse_variance"] == pytest.approx(svrt["score"]["nmse_variance"]) and "nmse" not in saved
    assert on_disk["machine"]["cpu"] and on_disk["versions"]["torch"] and on_disk["torch_threads"] == 1
    for f in ("peers.png", "peers-picture.png", "PEERS.md"):
        assert (out / f).stat().st_size > 0
    assert "| svrt-tiny |" in (out / "PEERS.md").read_text()

    # resume: nothing is rerun ...
    stamps = {m: r["finished"] for m, r in res.items()}
    again = peers.run_peers(out, settings, bursts_dir=tmp_path / "bursts", progress=False)
    assert {m: r["finished"] for m, r in again["cases"][CASE.id]["results"].items()} == stamps
    # ... except a method whose settings changed (or whose burst changed), a failed one, and everything with force
    h = svrt["burst_hash"]
    same = peers.parse_method(FAST[1]).describe()
    assert peers.is_finished(again, CASE.id, "svrt-tiny", same, h)
    assert not peers.is_finished(
        again, CASE.id, "svrt-tiny", peers.parse_method("svrt-tiny=grid:0,iterations:2").describe(), h
    )
    assert not peers.is_finished(again, CASE.id, "svrt-tiny", same, "another-burst")
    again["cases"][CASE.id]["results"]["svrt-tiny"]["status"] = "failed"
    assert not peers.is_finished(again, CASE.id, "svrt-tiny", same, h)
    forced = peers.PeerSettings(cases=[CASE], methods=["frame_average"], threads=1, force=True)
    r3 = peers.run_peers(out, forced, bursts_dir=tmp_path / "bursts", progress=False)["cases"][CASE.id]["results"]
    assert r3["frame_average"]["finished"] >= stamps["frame_average"]
    assert r3["svrt-tiny"]["finished"] == stamps["svrt-tiny"]      # kept from the first run
    assert len(json.loads((out / "peers.json").read_text())["runs"]) == 3


def _record(nmse, wall=1.0):
    return {"status": "ok", "wall_s": wall, "score": {"nmse_variance": nmse, "contrast": 0.1, "contrast_truth": 0.12,
                                                      "power_ratio": {"0.05-0.3": 1.0, "0.3-0.6": 0.5, "0.6-0.9": 0.3},
                                                      "shift_px": [0, 0], "scale": 1.0}, "method": {"kind": "x"}}


def test_summary_and_markdown_from_json():
    data = {"schema": peers.SCHEMA, "command": "python -m svrt.benchmarks.peers --seeds 1,2,3",
            "settings": {"methods": ["frame_average", "torchmfbd", "svrt"]}, "machine": {"cpu": "test"},
            "versions": {"torch": "2"}, "cases": {}}
    figures = [(0.6, 0.3, 0.2), (0.5, 0.2, 0.25), (0.7, 0.4, 0.4)]
    for i, (avg, tm, sv) in enumerate(figures):
        data["cases"][f"case{i}"] = {"params": {"size": 64, "r0_cm": 10.0, "ao_modes": 0, "seed": i},
                                     "results": {"frame_average": _record(avg), "torchmfbd": _record(tm, 5.0),
                                                 "svrt": _record(sv, 9.0)}}
    data["cases"]["case3"] = {"params": {"size": 64, "r0_cm": 7.0, "ao_modes": 20, "seed": 1}, "results": {},
                              "skipped": "no AO in this simulator"}
    s = peers.summarize(data)
    assert s["svrt"]["nmse_median"] == pytest.approx(0.25)
    assert s["svrt"]["vs_torchmfbd"] == {"wins": 1, "losses": 1, "ties": 1}
    assert s["frame_average"]["vs_torchmfbd"] == {"wins": 0, "losses": 3, "ties": 0}
    assert "vs_torchmfbd" not in s["torchmfbd"]
    page = peers.markdown_page(data)
    assert "python -m svrt.benchmarks.peers --seeds 1,2,3" in page
    assert "| svrt | 3 | 0.2500 |" in page and "1/1/1" in page
    assert "**0.2000**" in page                       # best of the row is bold
    assert "no AO in this simulator" in page and "skipped" in page


def test_method_specs():
    assert peers.split_methods("frame_average,svrt-fast=iterations:5,grid:0,torchmfbd") == [
        "frame_average", "svrt-fast=iterations:5,grid:0", "torchmfbd"]
    r = peers.parse_method("svrt-fast=iterations:5,grid:0,lr_objects:0.01")
    assert isinstance(r, peers.SvrtRunner) and r.config.iterations == 5 and r.config.grid == 0
    assert r.config.lr_objects == 0.01 and r.config.progress is False
    assert peers.parse_method("svrt-invariant").config.grid == 0
    exact = peers.parse_method("svrt-exact")
    assert exact.model is None and exact.backend == "psf-interpolation"
    assert isinstance(peers.parse_method("torchmfbd=iterations:10"), peers.TorchMFBDRunner)
    with pytest.raises(SvrtError, match="not a SolverConfig field"):
        peers.parse_method("svrt=gird:0")
    with pytest.raises(SvrtError, match="not a torchmfbd setting"):
        peers.parse_method("torchmfbd=itrations:3")
    with pytest.raises(SvrtError, match="Unknown method"):
        peers.parse_method("mfbd")


def test_matrix_and_simulator_keywords():
    cases = peers.build_cases(sizes=(128, 256), seeds=(1, 2), r0s=(7, 15), ao=(0, 20))
    assert len(cases) == 16 and {c.frames for c in cases if c.size == 128} == {8}
    assert {c.frames for c in cases if c.size == 256} == {12}
    assert len({c.id for c in cases}) == 16

    def old(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, progress): ...

    def new(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, progress, wavefront="modes",
            outer_scale_m=None, ao_modes=0, photons=None): ...

    kw, notes = peers.simulate_keywords(cases[0], old)
    assert kw["noise"] == 0.005 and "photons" not in kw and notes
    with pytest.raises(SvrtError, match="ao_modes"):
        peers.simulate_keywords(peers.Case(size=128, frames=8, seed=1, r0_cm=7, ao_modes=20), old)
    kw, notes = peers.simulate_keywords(peers.Case(size=128, frames=8, seed=1, r0_cm=7, ao_modes=20), new)
    assert kw["wavefront"] == "screen" and kw["ao_modes"] == 20 and kw["photons"] == 1e4 and kw["noise"] == 0.0
    assert kw["outer_scale_m"] == 20.0 and not notes


def test_patch_grid_tiles_the_field():
    assert peers.patch_grid(128, 64, 50) == (64, 32)
    assert peers.patch_grid(256, 64, 50) == (64, 48)
    assert peers.patch_grid(64, 64, 50) == (64, 64)
    p, s = peers.patch_grid(200, 64, 50)
    assert (200 - p) % s == 0 and s <= 50


def test_torchmfbd_peer(tiny_burst):
    ok, why = peers.torchmfbd_available()
    if not ok:
        pytest.skip(f"{why} (the torchmfbd peer is optional)")
    runner = peers.parse_method("torchmfbd=iterations:5")
    runner.prepare()
    out = runner.restore(tiny_burst)
    assert out.shape == (1, N, N) and np.isfinite(out).all()
    assert runner.info["patches"] == 1
    score = peers.score_objects(out, tiny_burst.truth, tiny_burst.instruments)[0]
    assert np.isfinite(score["nmse_variance"])


def test_torchmfbd_missing_is_one_sentence(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchmfbd" else real(name, *a))
    ok, why = peers.torchmfbd_available()
    assert not ok and why == "torchmfbd is not installed: pip install -e .[peers]"
    with pytest.raises(SvrtError, match=r"pip install -e \.\[peers\]"):
        peers.parse_method("torchmfbd").prepare()


def test_bench_peers_hook(tmp_path):
    """``svrt bench --peers`` passes its shared options (--out-dir) and the peer options on; bench alone
    refuses them."""
    from click.testing import CliRunner

    from svrt.benchmarks.cli import bench_command

    data = {
        "schema": peers.SCHEMA,
        "command": "x",
        "settings": {"methods": ["frame_average"]},
        "cases": {
            "c0": {
                "params": {"size": 64, "r0_cm": 10.0, "ao_modes": 0, "seed": 1},
                "results": {"frame_average": _record(0.5)},
            }
        },
    }
    (tmp_path / "peers.json").write_text(json.dumps(data))
    page = tmp_path / "page" / "PEERS.md"
    res = CliRunner().invoke(bench_command, ["--peers", "--out-dir", str(tmp_path), "--report-only",
                                             "--results-page", str(page)])
    assert res.exit_code == 0, res.output
    assert "| frame_average | 1 | 0.5000 |" in page.read_text() and (tmp_path / "peers.png").exists()
    assert "](../peers.png)" in page.read_text()
    res = CliRunner().invoke(bench_command, ["--report-only"])
    assert res.exit_code != 0 and "--report-only" in res.output


def test_results_written_before_the_rename_are_read_under_the_new_names(tmp_path):
    """peers.json files from before the two NMSEs had distinct names call the score's NMSE ``nmse``."""
    from svrt.benchmarks.peers import SCHEMA, load_results

    old = {"schema": SCHEMA, "cases": {"c": {"results": {"svrt": {"status": "ok", "score": {
        "nmse": 0.05, "nmse_destretched": 0.04}}}}}}
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(old))
    score = load_results(path)["cases"]["c"]["results"]["svrt"]["score"]
    assert score == {"nmse_variance": 0.05, "nmse_variance_destretched": 0.04}
