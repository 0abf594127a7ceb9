"""The batch, streaming and checkpoint faults of issue 22, each one sentence (or the right exit status) where
today's main overwrote an input, exited 0, printed a traceback or failed after the solve. Plumbing only: a
32^2 burst of 2 frames, the tiny untrained emulator, adam with 2 iterations (docs/FAULTS.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from sentences import one_sentence

import svrt.cli
from svrt.cli import cli
from svrt.errors import SvrtError
from svrt.fileio import Burst, read_restoration, write_burst
from svrt.runtime.solver import SolverConfig
from svrt.runtime.streaming import Restorer

FAST = SolverConfig(method="adam", iterations=2, grid=0, progress=False)
FAST_OPTIONS = ["--method", "adam", "--iterations", "2", "--grid", "0"]


def _burst(path, seed=0):
    rng = np.random.default_rng(seed)
    frames = (1000 * (1 + 0.05 * rng.standard_normal((1, 2, 32, 32)))).astype(np.float32)
    write_burst(path, Burst(frames=frames, instruments=["crisp8542"], header={"CDELT1": 0.059, "CDELT2": 0.059}))
    return path


def _svrt(args) -> int:
    """The ``svrt`` console script's exit status (svrt.cli.main, not click's standalone runner)."""
    with pytest.raises(SystemExit) as exit_info:
        svrt.cli.main([str(a) for a in args])
    return exit_info.value.code


def test_streaming_write_never_replaces_the_input_burst(tiny_model, tmp_path, monkeypatch):
    path = _burst(tmp_path / "b.fits")
    before = path.read_bytes()
    link = tmp_path / "link.fits"
    link.symlink_to(path)
    item = Restorer(tiny_model, FAST).restore(str(path))
    assert item.error is None, item.error
    monkeypatch.chdir(tmp_path)
    for spelling in (path, "b.fits", "./sub/../b.fits", link):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(SvrtError, match="never overwrites an input"):
            item.write(spelling, overwrite=True)
    assert path.read_bytes() == before
    item.write(tmp_path / "r.fits")           # elsewhere it writes
    assert read_restoration(tmp_path / "r.fits").objects.shape == (1, 32, 32)


def test_batch_exit_status_is_1_when_a_burst_failed(tiny_model, tmp_path, capsys):
    good = _burst(tmp_path / "good.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(good.read_bytes()[:3000])  # truncated
    code = _svrt(["batch", good, bad, "-o", tmp_path / "out", "--workers", "0", "--engine", tiny_model, "-q",
                  *FAST_OPTIONS])
    assert code == 1, capsys.readouterr()
    assert (tmp_path / "out" / "good.fits").exists()
    assert _svrt(["batch", good, "-o", tmp_path / "out2", "--workers", "0", "--engine", tiny_model, "-q",
                  *FAST_OPTIONS]) == 0


def test_unwritable_checkpoint_is_one_sentence_before_the_solve(tiny_model, tmp_path):
    burst = _burst(tmp_path / "b.fits")
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    for ck, words in ((blocker / "run.ckpt", "--checkpoint"), (tmp_path, "--checkpoint")):
        result = CliRunner().invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "r.fits"), "--engine",
                                          str(tiny_model), "--checkpoint", str(ck), "-q", *FAST_OPTIONS])
        assert "Output" not in one_sentence(result, words)
        assert not (tmp_path / "r.fits").exists()


def test_checkpoint_that_is_a_folder_is_named_as_the_checkpoint(tiny_model, tmp_path):
    burst = _burst(tmp_path / "b.fits")
    (tmp_path / "ck").mkdir()
    result = CliRunner().invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "r.fits"), "--engine",
                                      str(tiny_model), "--checkpoint", str(tmp_path / "ck"), "-q", *FAST_OPTIONS])
    one_sentence(result, "--checkpoint", "folder")


def test_batch_into_an_unusable_out_dir_is_one_sentence(tiny_model, tmp_path, capsys):
    good = _burst(tmp_path / "good.fits")
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    for out in (blocker / "restored", blocker / "deeper" / "restored"):   # (an existing file: click's usage error)
        code = _svrt(["batch", good, "-o", out, "--workers", "0", "--engine", tiny_model, "-q", *FAST_OPTIONS])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith("svrt: error: --out-dir") and err.count("\n") == 1, err


def test_non_ascii_names_do_not_fail_after_the_solve(tiny_model, tmp_path, monkeypatch):
    from svrt.runtime import solver as solver_module

    burst = _burst(tmp_path / "bürst_λ.fits")
    out = tmp_path / "restored.fits"
    result = CliRunner().invoke(cli, ["deconvolve", str(burst), "-o", str(out), "--engine", str(tiny_model), "-q",
                                      "--no-png", *FAST_OPTIONS])
    assert result.exit_code == 0, (result.output, result.exception)
    assert read_restoration(out).header["INPUT"].isascii()
    # a non-ASCII FITS output name is refused before the solve (its FILENAME card holds ASCII only)
    solves = []
    monkeypatch.setattr(solver_module.SVMOMFBD, "solve", lambda *a, **k: solves.append(1))
    result = CliRunner().invoke(cli, ["deconvolve", str(burst), "-o", str(tmp_path / "réstored.fits"), "--engine",
                                      str(tiny_model), "-q", "--no-png", *FAST_OPTIONS])
    one_sentence(result, "FILENAME")
    assert solves == []


def test_output_folder_inside_a_recursive_glob_is_not_an_input(tiny_model, tmp_path):
    night = tmp_path / "night"
    night.mkdir()
    _burst(night / "a.fits")
    args = ["batch", str(night / "**" / "*.fits"), "-o", str(night / "restored"), "--workers", "0", "--engine",
            str(tiny_model), "-q", *FAST_OPTIONS]
    for _ in range(2):                          # the second run finds restored/a.fits under the glob
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(os.listdir(night / "restored")) == ["a.fits", "batch-summary.tsv", "logs"]


@pytest.mark.parametrize("item", [42, None, "", b"x", {"frames": 1}])
def test_bad_stream_items_are_one_svrt_sentence(tiny_model, item):
    restorer = Restorer(tiny_model, FAST)
    out = restorer.restore(item)
    assert out.error is not None and "AttributeError" not in out.error and "TypeError" not in out.error, out.error
    assert "\n" not in out.error and out.error.endswith(".") and "stream item" in out.error
    streamed = list(Restorer(tiny_model, FAST).stream([item]))
    assert len(streamed) == 1 and "AttributeError" not in streamed[0].error, streamed[0].error
