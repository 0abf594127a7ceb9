"""Checkpoints and ``resume`` (issue 12): a restoration interrupted after a stage (or killed with SIGKILL
through ``svrt deconvolve``) and resumed ends with exactly the result of an uninterrupted one; a
checkpoint of another burst or other settings, and a truncated or corrupt one, are one sentence.
64x64 bursts, 2 frames, a width-4 emulator (adam) and exact optics (momfbd), a few iterations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from svrt.cli import cli
from svrt.errors import SvrtError
from svrt.fileio import Burst, read_restoration, write_burst
from svrt.runtime import method_momfbd
from svrt.runtime.checkpoint import load_checkpoint
from svrt.runtime.engine import load_engine
from svrt.runtime.solver import SVMOMFBD, SolverConfig

ADAM = dict(method="adam", iterations=6, grid=32, checkpoint_every=2, progress=False)
MOMFBD = dict(method="momfbd", grid=32, patch_size=32, patch_iterations=2, object_iterations=3, refine_rounds=2,
              refine_iterations=2, fit_modes=6, progress=False)


def _frames(seed: int = 0, shape=(1, 2, 64, 64)) -> np.ndarray:
    """Smooth random frames with an image in them (a few Fourier components plus 1 % noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[-2], :shape[-1]] / shape[-1]
    scene = 1 + sum(0.1 * np.sin(2 * np.pi * (rng.integers(1, 6) * yy + rng.integers(1, 6) * xx) + rng.uniform(0, 6))
                    for _ in range(6))
    return (1000 * (scene + 0.01 * rng.standard_normal(shape))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def emulator(tiny):
    return load_engine(tiny, device="cpu")


@pytest.fixture(scope="module")
def optics():
    return load_engine(None, backend="psf-interpolation")


def _same(a, b) -> None:
    """Bit-identical objects, modes, model and loss history (the timings aside)."""
    for name in ("objects", "objects_unfiltered", "modes", "model"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for key in ("iteration", "total", "data", "reg_object", "reg_modes"):
        np.testing.assert_array_equal(a.loss[key], b.loss[key], err_msg=key)


def _interrupt_after(n: int):
    def callback(terms):
        if terms["iteration"] == n:
            raise KeyboardInterrupt
    return callback


def test_adam_interrupted_and_resumed_equals_uninterrupted(emulator, tmp_path):
    frames = _frames()
    ref = SVMOMFBD(emulator, SolverConfig(**ADAM)).solve(frames, "crisp8542")
    ck = tmp_path / "run.ckpt"
    solver = SVMOMFBD(emulator, SolverConfig(**ADAM, checkpoint=str(ck)))
    with pytest.raises(KeyboardInterrupt):
        solver.solve(frames, "crisp8542", callback=_interrupt_after(3))     # checkpoint of iteration 2 on disk
    tensors, meta = load_checkpoint(ck)
    assert meta["state"]["iteration"] == 2 and "opt/0/exp_avg" in tensors
    _same(solver.solve(frames, "crisp8542", resume=ck), ref)


def test_momfbd_interrupted_after_a_round_and_resumed_equals_uninterrupted(optics, tmp_path, monkeypatch):
    frames = _frames(1)
    ref = SVMOMFBD(optics, SolverConfig(**MOMFBD)).solve(frames, "crisp8542")
    ck = tmp_path / "run.ckpt"
    solver = SVMOMFBD(optics, SolverConfig(**MOMFBD, checkpoint=str(ck)))
    real, calls = method_momfbd.refine_modes, []

    def refine_then_interrupt(*args, **kw):
        calls.append(1)
        if len(calls) == 2:                        # the objects and round 1 are checkpointed: stop in round 2
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(method_momfbd, "refine_modes", refine_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        solver.solve(frames, "crisp8542")
    monkeypatch.setattr(method_momfbd, "refine_modes", real)
    assert load_checkpoint(ck)[1]["state"]["rounds_done"] == 1
    resumed = solver.solve(frames, "crisp8542", resume=ck)
    _same(resumed, ref)
    assert resumed.header["ROUNDS"] == ref.header["ROUNDS"] == 2
    assert resumed.header["OBJ_ITERS"] == ref.header["OBJ_ITERS"]


def _interrupted_run(emulator, tmp_path):
    """The checkpoint of an adam run stopped by Ctrl-C after 3 iterations."""
    ck = tmp_path / "run.ckpt"
    solver = SVMOMFBD(emulator, SolverConfig(**ADAM, checkpoint=str(ck)))
    with pytest.raises(KeyboardInterrupt):
        solver.solve(_frames(), "crisp8542", callback=_interrupt_after(3))
    return ck


def test_checkpoint_of_another_burst_or_settings_is_refused(emulator, tmp_path):
    ck = _interrupted_run(emulator, tmp_path)
    for frames, cfg in ((_frames(2), ADAM), (_frames(), dict(ADAM, lambda_obj=0.5))):
        with pytest.raises(SvrtError, match="belongs to another burst or other settings") as err:
            SVMOMFBD(emulator, SolverConfig(**cfg)).solve(frames, "crisp8542", resume=ck)
        msg = str(err.value)
        assert "\n" not in msg and "run.ckpt" in msg and msg.endswith(".")
    # the refused run left the checkpoint as it was: the right burst still resumes
    SVMOMFBD(emulator, SolverConfig(**ADAM)).solve(_frames(), "crisp8542", resume=ck)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_corrupt_or_missing_checkpoint_is_one_sentence(emulator, tmp_path, damage):
    ck = _interrupted_run(emulator, tmp_path)
    raw = ck.read_bytes()
    if damage == "truncated":
        ck.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        ck.write_bytes(b"\x00" * 8 + raw[8:200])
    else:
        ck.unlink()
    with pytest.raises(SvrtError) as err:
        SVMOMFBD(emulator, SolverConfig(**ADAM, checkpoint=str(ck))).solve(_frames(), "crisp8542", resume=ck)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("Checkpoint run.ckpt") and msg.endswith(".")
    assert ("does not exist" if damage == "missing" else "truncated or corrupt") in msg


def test_no_checkpoint_asked_writes_nothing(emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SVMOMFBD(emulator, SolverConfig(**dict(ADAM, iterations=2))).solve(_frames(), "crisp8542")
    assert list(tmp_path.iterdir()) == []


def test_cli_kill_9_then_resume_equals_uninterrupted(tiny, tmp_path):
    """A real SIGKILL of ``svrt deconvolve`` once its first checkpoint is on disk, then ``--resume``."""
    burst = tmp_path / "burst.fits"
    write_burst(burst, Burst(frames=_frames(), instruments=["crisp8542"]))
    opts = ["--engine", str(tiny), "--method", "adam", "--iterations", "40", "--grid", "32", "-q", "--no-png"]
    ck = tmp_path / "run.ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = "import sys, torch; torch.set_num_threads(1); from svrt.cli import main; sys.argv[0] = 'svrt'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "deconvolve", str(burst), "-o", str(tmp_path / "killed.fits"),
                             *opts, "--checkpoint", str(ck), "--checkpoint-every", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 40
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ck.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint after 40 s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.fits").exists()
    done = load_checkpoint(ck)[1]["state"]["iteration"]
    assert 1 <= done < 40

    runner = CliRunner()
    r = runner.invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "resumed.fits"), *opts,
                            "--checkpoint", str(ck), "--checkpoint-every", "1", "--resume"])
    assert r.exit_code == 0, (r.output, r.exception)
    r = runner.invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "plain.fits"), *opts])
    assert r.exit_code == 0, (r.output, r.exception)
    a, b = read_restoration(tmp_path / "resumed.fits"), read_restoration(tmp_path / "plain.fits")
    np.testing.assert_array_equal(a.objects, b.objects)
    np.testing.assert_array_equal(a.modes, b.modes)
    np.testing.assert_array_equal(a.model, b.model)
    np.testing.assert_array_equal(a.loss["total"], b.loss["total"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temporary files left


def test_cli_resume_needs_checkpoint_and_refuses_another_burst(tiny, tmp_path):
    runner = CliRunner()
    burst = tmp_path / "burst.fits"
    other = tmp_path / "other.fits"
    write_burst(burst, Burst(frames=_frames(), instruments=["crisp8542"]))
    write_burst(other, Burst(frames=_frames(5), instruments=["crisp8542"]))
    opts = ["--engine", str(tiny), "--method", "adam", "--iterations", "2", "--grid", "32", "-q", "--no-png"]
    r = runner.invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "a.fits"), *opts, "--resume"])
    assert isinstance(r.exception, SvrtError) and "--resume needs --checkpoint" in str(r.exception)
    r = runner.invoke(
        cli, ["deconvolve", str(burst), "-o", str(tmp_path / "a.fits"), *opts, "--checkpoint", str(burst)]
    )
    assert isinstance(r.exception, SvrtError), (r.output, r.exception)
    r = runner.invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "a.fits"), *opts,
                            "--checkpoint", str(tmp_path / "a.fits")])
    assert isinstance(r.exception, SvrtError) and "is also the output" in str(r.exception)
    ck = tmp_path / "run.ckpt"
    r = runner.invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "b.fits"), *opts, "--checkpoint", str(ck),
                            "--checkpoint-every", "1"])
    assert r.exit_code == 0 and ck.exists(), r.output
    r = runner.invoke(cli, ["deconvolve", str(other), "-o", str(tmp_path / "c.fits"), *opts, "--checkpoint", str(ck),
                            "--resume"])
    assert isinstance(r.exception, SvrtError), (r.output, r.exception)
    assert "belongs to another burst or other settings" in str(r.exception)
    assert not (tmp_path / "c.fits").exists()
