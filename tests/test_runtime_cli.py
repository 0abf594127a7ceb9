"""``svrt convolve``, ``svrt deconvolve`` and ``svrt demo`` through click's test runner (tiny random
emulators, 32x32 images, 2 frames, 2 iterations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sentences import one_sentence as _error

from svrt.cli import cli
from svrt.emulator import SVCE, EmulatorConfig, save_model
from svrt.fileio import Burst, read_array, read_restoration, write_array, write_burst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-models")
    torch.manual_seed(0)
    save_model(d / "tiny.safetensors", SVCE(EmulatorConfig(width=4)), {"name": "tiny"})
    save_model(d / "m10.safetensors", SVCE(EmulatorConfig(width=4, n_modes=10)), {"name": "m10"})
    return d


@pytest.fixture()
def burst_file(tmp_path):
    rng = np.random.default_rng(0)
    frames = (1000 * (1 + 0.05 * rng.standard_normal((2, 2, 32, 32)))).astype(np.float32)
    truth = frames.mean(axis=1)
    path = tmp_path / "burst.fits"
    write_burst(path, Burst(frames=frames, instruments=["crisp8542", "crisp8542"], truth=truth,
                            header={"CDELT1": 0.059, "CDELT2": 0.059, "TELESCOP": "SST"}))
    return path


def _random_frames(shape):
    """Frames with an image in them (constant frames are dead frames, refused on reading)."""
    return (1 + 0.05 * np.random.default_rng(3).standard_normal(shape)).astype(np.float32)


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


# the adam path: fast, fixed iterations
FAST = ["--method", "adam", "--method", "adam", "--iterations", "2", "--grid", "16", "-q"]


def test_deconvolve_writes_fits_and_png(tiny, burst_file, tmp_path):
    out = tmp_path / "restored.fits"
    r = run(["deconvolve", burst_file, "-o", out, "--engine", tiny / "tiny.safetensors", *FAST])
    assert r.exit_code == 0, (r.output, r.exception)
    assert out.exists() and (tmp_path / "restored.png").exists()
    assert (tmp_path / "restored.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rest = read_restoration(out)
    assert (
        rest.objects.shape == (2, 32, 32) and rest.modes.shape == (2, 44, 2, 2) and rest.model.shape == (2, 2, 32, 32)
    )
    assert rest.n_iterations == 2
    h = rest.header
    assert h["INPUT"] == "burst.fits" and h["TELESCOP"] == "SST" and h["ENGINE_MODEL"] == "tiny"
    assert h["ITERATIONS"] == 2 and h["GRID"] == 16 and h["LAMBDA_OBJ"] == 1.0
    assert "wrote" in r.output and "against the truth" in r.output
    # HDF5 output, custom PNG name, options
    out2 = tmp_path / "r.h5"
    r = run(["deconvolve", burst_file, "-o", out2, "--engine", tiny / "tiny.safetensors", *FAST, "--lambda-obj", "0.05",
             "--lambda-modes", "0.02", "--png", tmp_path / "q.png", "--weights", "noise", "--max-batch", "1"])
    assert r.exit_code == 0, (r.output, r.exception)
    h = read_restoration(out2).header
    assert h["LAMBDA_OBJ"] == 0.05 and h["LAMBDA_MODES"] == 0.02 and h["WEIGHTS"] == "noise" and h["BATCH"] == 1
    assert (tmp_path / "q.png").exists()


def test_deconvolve_refuses_to_overwrite(tiny, burst_file, tmp_path):
    before = burst_file.read_bytes()
    _error(run(["deconvolve", burst_file, "-o", burst_file, "--engine", tiny / "tiny.safetensors", *FAST]), "input")
    assert burst_file.read_bytes() == before
    out = tmp_path / "restored.fits"
    out.write_bytes(b"keep")
    _error(run(["deconvolve", burst_file, "-o", out, "--engine", tiny / "tiny.safetensors", *FAST]), "already exists")
    assert out.read_bytes() == b"keep"
    _error(run(["deconvolve", burst_file, "-o", tmp_path / "x.fits", "--png", burst_file,
                "--engine", tiny / "tiny.safetensors", *FAST]), ".png")


def test_deconvolve_bad_inputs(tiny, burst_file, tmp_path):
    eng = ["--engine", tiny / "tiny.safetensors"]
    _error(run(["deconvolve", tmp_path / "missing.fits", "-o", tmp_path / "o.fits", *eng, *FAST]), "does not exist")
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(burst_file.read_bytes()[:5000])
    _error(run(["deconvolve", trunc, "-o", tmp_path / "o.fits", *eng, *FAST]), "trunc.fits")
    # NaN frames: refused, or weighted to zero with --allow-nonfinite
    frames = _random_frames((1, 2, 32, 32))
    frames[0, 1, 3, 4] = np.nan
    nan_file = tmp_path / "nan.fits"
    write_burst(nan_file, Burst(frames=frames, instruments=["crisp8542"]))
    _error(run(["deconvolve", nan_file, "-o", tmp_path / "o.fits", *eng, *FAST]), "NaN")
    r = run(["deconvolve", nan_file, "-o", tmp_path / "o.fits", *eng, *FAST, "--allow-nonfinite", "--no-png"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert read_restoration(tmp_path / "o.fits").header["NMASKED"] == 1
    # wrong dimensions: a 2-D array is read as one frame of one object, too small for the solver
    small = tmp_path / "small.fits"
    write_burst(small, Burst(frames=_random_frames((1, 2, 8, 8)), instruments=["crisp8542"]))
    _error(run(["deconvolve", small, "-o", tmp_path / "o2.fits", *eng, *FAST]), "too small")
    # grid larger than the image
    _error(run(["deconvolve", burst_file, "-o", tmp_path / "o3.fits", *eng, "--method", "adam", "--iterations", "1",
                "--grid", "64", "-q"]), "grid factor")
    # an engine with another number of modes is fine alone, but not with a 44-mode one
    _error(
        run(["deconvolve", burst_file, "-o", tmp_path / "o4.fits", *eng, "--engine", tiny / "m10.safetensors", *FAST]),
        "numbers of modes",
    )
    # an engine that does not know the instrument
    hifi = tmp_path / "other.fits"
    write_burst(hifi, Burst(frames=_random_frames((1, 2, 32, 32)), instruments=["nowhere"]))
    _error(run(["deconvolve", hifi, "-o", tmp_path / "o5.fits", *eng, *FAST]), "unknown instrument")
    _error(run(["deconvolve", burst_file, "-o", tmp_path / "o6.fits", *eng, "--model", "svce-c16", *FAST]), "not both")
    _error(
        run(["deconvolve", burst_file, "-o", tmp_path / "o7.fits", "--engine", tmp_path / "none.safetensors", *FAST]),
        "does not exist",
    )


def test_convolve(tiny, tmp_path):
    rng = np.random.default_rng(1)
    obj = (1 + 0.1 * rng.standard_normal((40, 36))).astype(np.float32)
    write_array(tmp_path / "obj.fits", obj)
    write_array(tmp_path / "coarse.fits", (0.1 * rng.standard_normal((44, 5, 5))).astype(np.float32))
    write_array(tmp_path / "fine.h5", (0.1 * rng.standard_normal((44, 40, 36))).astype(np.float32))
    eng = ["--engine", tiny / "tiny.safetensors", "--instrument", "crisp8542"]
    r = run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "coarse.fits", *eng, "-o",
             tmp_path / "out.fits"])
    assert r.exit_code == 0, (r.output, r.exception)
    out, header = read_array(tmp_path / "out.fits")
    assert out.shape == (40, 36) and np.all(np.isfinite(out)) and header["ENGINE_MODEL"] == "tiny"
    assert (tmp_path / "out.png").exists()
    r = run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "fine.h5", "--instrument",
             "crisp6302", "--engine", tiny / "tiny.safetensors", "-o", tmp_path / "out.h5", "--no-png"])
    assert r.exit_code == 0, (r.output, r.exception)
    _error(run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "coarse.fits", *eng,
                "-o", tmp_path / "obj.fits"]), "input")
    write_array(tmp_path / "m7.fits", np.zeros((7, 5, 5), np.float32))
    _error(run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "m7.fits", *eng,
                "-o", tmp_path / "o2.fits"]), "M = 7")
    write_array(tmp_path / "big.fits", np.zeros((44, 50, 50), np.float32))
    _error(run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "big.fits", *eng,
                "-o", tmp_path / "o3.fits"]), "larger than the object")
    _error(run(["convolve", "--object", tmp_path / "obj.fits", "--modes", tmp_path / "coarse.fits",
                "--engine", tiny / "tiny.safetensors", "--instrument", "nowhere", "-o", tmp_path / "o4.fits"]),
           "unknown instrument")
    write_array(tmp_path / "cube.fits", np.zeros((2, 2, 40, 36), np.float32))
    _error(run(["convolve", "--object", tmp_path / "cube.fits", "--modes", tmp_path / "coarse.fits", *eng,
                "-o", tmp_path / "o5.fits"]), "[B, Y, X]")


def test_demo(tiny, tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--size", "32", "--frames", "2", "--objects", "1", "--method", "adam", "--iterations", "2",
            "--grid", "16", "--engine", tiny / "tiny.safetensors", "--out-dir", out, "-q"]
    r = run(args)
    assert r.exit_code == 0, (r.output, r.exception)
    for name in ("burst.fits", "restored.fits", "restored.png"):
        assert (out / name).exists() and str(out / name) in r.output
    assert "NMSE" in r.output
    _error(run(args), "already exists")
    r = run(args + ["--overwrite"])
    assert r.exit_code == 0, (r.output, r.exception)


def test_help_has_examples():
    for cmd in ("convolve", "deconvolve", "demo"):
        r = run([cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.output


def test_a_command_that_does_not_import_says_why(monkeypatch):
    import svrt.cli as svrt_cli

    monkeypatch.setitem(svrt_cli.COMMANDS, "ghost", ("svrt.no_such_module:command", "A part not built."))
    res = CliRunner().invoke(cli, ["ghost"])
    assert res.exit_code != 0 and "'svrt ghost' is not available in this install" in res.output
    assert "No module named 'svrt.no_such_module'" in res.output
