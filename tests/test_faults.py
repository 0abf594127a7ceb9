"""The fault suite of issue 12: every bad input or fault a hostile but realistic user tried, as a test.

Each bad input must end in one :class:`SvrtError` sentence (printed by ``svrt`` without a traceback,
non-zero exit) naming the file, the key and what was expected, before any solving; suspicious but
usable input gives a :class:`SvrtWarning`. Tiny emulators (C = 4), 32x32 bursts, 2 iterations: the
whole file runs in well under a minute on two cores. docs/FAULTS.md maps each case to its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from click.testing import CliRunner
from sentences import error_of, one_sentence

from svrt.checks import SvrtWarning, check_frames, check_wavefront_units, dead_frames, wavefront_bounds
from svrt.cli import cli
from svrt.emulator import SVCE, EmulatorConfig, load_model, save_model
from svrt.fileio import (
    Burst,
    check_writable,
    merge_headers,
    read_array,
    read_burst,
    read_restoration,
    write_array,
    write_burst,
)

# the adam path: fast, fixed iterations
FAST = ["--method", "adam", "--method", "adam", "--iterations", "2", "--grid", "16", "-q"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def models(tiny_model):
    return tiny_model.parent


def tiny_engine(models):
    return ["--engine", models / "tiny.safetensors"]


def frames(k=1, n_frames=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return (1000 * (1 + 0.05 * rng.standard_normal((k, n_frames, size, size)))).astype(np.float32)


def burst_file(path, data, instruments=None, **header):
    k = data.shape[0]
    write_burst(path, Burst(frames=data, instruments=instruments or ["crisp8542"] * k, header=header))
    return path


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture()
def no_solve(monkeypatch):
    """Any solve is a failure: the faults must be caught before the (expensive) solver runs."""
    from svrt.runtime import solver

    def refuse(*args, **kwargs):
        raise AssertionError("the solver was reached: the fault must be caught before solving")

    monkeypatch.setattr(solver.SVMOMFBD, "solve", refuse)


def no_temporaries(folder) -> bool:
    return not [p for p in os.listdir(folder) if ".tmp-" in p]


# ================================================================ silent wrong results: dead frames

def test_dead_frame_is_refused_naming_its_index(models, tmp_path, no_solve):
    data = frames(k=2, n_frames=4)
    data[1, 2] = 0
    path = burst_file(tmp_path / "dead.fits", data)
    msg = error_of(lambda: read_burst(path), "dead.fits", "FRAMES", "[1, 2]", "all 0", "--drop-dead-frames")
    assert "dead" in msg
    r = run(["deconvolve", path, "-o", tmp_path / "out.fits", *tiny_engine(models), *FAST])
    one_sentence(r, "[1, 2]", "dead.fits")
    assert not (tmp_path / "out.fits").exists()


def test_constant_frame_is_refused(tmp_path):
    data = frames(n_frames=3)
    data[0, 1] = 4095.0  # saturated / stuck frame
    error_of(lambda: read_burst(burst_file(tmp_path / "sat.fits", data)), "[0, 1]", "all 4095")
    assert dead_frames(data) == [(0, 1)]


def test_all_zero_burst_and_object_are_refused(models, tmp_path, no_solve):
    zero = burst_file(tmp_path / "zero.fits", np.zeros((2, 3, 32, 32), np.float32))
    one_sentence(run(["deconvolve", zero, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST]),
                 "zero.fits", "every one of its 2 x 3 frames is all 0")
    data = frames(k=2)
    data[1] = 0
    obj = burst_file(tmp_path / "obj.fits", data)
    one_sentence(run(["deconvolve", obj, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST]),
                 "obj.fits", "every frame of object 1 is all 0")


def test_dead_frames_dropped_with_option(models, tmp_path):
    from svrt.checks import drop_dead_frames

    data = frames(k=2, n_frames=4)
    data[:, 3] = 0        # frame 3 dead in both objects: dropped
    data[0, 1] = 0        # frame 1 dead in object 0 only: zero weight there
    path = burst_file(tmp_path / "dead.fits", data)
    burst, dropped, masked = drop_dead_frames(read_burst(path, check=False))
    assert dropped == [3] and masked == [(0, 1)] and burst.n_frames == 3
    assert not burst.mask[0, 1].any() and burst.mask[1, 1].all()
    out = tmp_path / "out.fits"
    r = run(["deconvolve", path, "-o", out, *tiny_engine(models), *FAST, "--no-png", "--drop-dead-frames"])
    assert r.exit_code == 0, (r.output, r.exception)
    rest = read_restoration(out)
    assert rest.model.shape[1] == 3 and np.isfinite(rest.objects).all()


def test_boolean_and_mask_frames_are_refused(tmp_path):
    h5 = tmp_path / "bool.h5"
    with h5py.File(h5, "w") as f:
        f["frames"] = np.random.default_rng(0).random((1, 2, 32, 32)) > 0.5
        f.attrs["instruments"] = ["crisp8542"]
    error_of(lambda: read_burst(h5), "bool.h5", "FRAMES", "boolean")
    binary = (np.random.default_rng(1).random((1, 2, 32, 32)) > 0.5).astype(np.uint8)
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("INSTR0", "crisp8542")])),
                  fits.ImageHDU(binary, name="FRAMES")]).writeto(tmp_path / "mask.fits")
    error_of(lambda: read_burst(tmp_path / "mask.fits"), "mask.fits", "only the values 0 and 1")


def test_frames_near_1e36_are_refused_on_reading(models, tmp_path, no_solve):
    path = burst_file(tmp_path / "huge.fits", frames() * np.float32(1e33))
    one_sentence(run(["deconvolve", path, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST]),
                 "huge.fits", "FRAMES", "rescale")
    error_of(lambda: check_frames(frames() * np.float32(1e-20), "tiny.fits"), "below")


def test_check_frames_warns_for_suspicious_frames():
    data = frames(n_frames=4)
    data[0, 2] = 1000 + 1e-3 * np.random.default_rng(2).standard_normal((32, 32))   # nearly constant
    data[0, 3, :10] = 0                                                              # partial readout
    with pytest.warns(SvrtWarning) as caught:
        check_frames(data, "odd.fits")
    text = " ".join(str(w.message) for w in caught)
    assert "nearly constant" in text and "[0, 2]" in text and "exactly 0" in text and "[0, 3]" in text
    with pytest.warns(SvrtWarning, match="mean more than 10 times"):
        scaled = frames(n_frames=4)
        scaled[0, 0] *= 100
        check_frames(scaled, "exposure.fits")


# ================================================================ silent wrong results: units of modes

def _convolve_inputs(tmp_path, scale):
    from svrt.atmosphere import kolmogorov_coefficients

    rng = np.random.default_rng(4)
    write_array(tmp_path / "obj.fits", (1 + 0.1 * rng.standard_normal((32, 32))).astype(np.float32))
    coarse = kolmogorov_coefficients("crisp8542", 10.0, 44, size=(4, 4), rng=rng).transpose(2, 0, 1)
    path = tmp_path / f"modes{scale:g}.fits"
    write_array(path, (coarse * scale).astype(np.float32))
    return tmp_path / "obj.fits", path


@pytest.mark.parametrize("scale", [100, 1e6])
def test_convolve_refuses_modes_in_wrong_units(models, tmp_path, scale):
    obj, modes = _convolve_inputs(tmp_path, scale)
    r = run(["convolve", "--object", obj, "--modes", modes, "--instrument", "crisp8542", *tiny_engine(models),
             "-o", tmp_path / "out.fits"])
    one_sentence(r, modes.name, "RMS wavefront", "physical bound", "radians of phase at 8542 A")
    assert not (tmp_path / "out.fits").exists() and not (tmp_path / "out.png").exists()


def test_convolve_accepts_radians_and_warns_outside_training(models, tmp_path):
    obj, modes = _convolve_inputs(tmp_path, 1)
    r = run(["convolve", "--object", obj, "--modes", modes, "--instrument", "crisp8542", *tiny_engine(models),
             "-o", tmp_path / "ok.fits", "--no-png"])
    assert r.exit_code == 0, (r.output, r.exception)
    soft, hard = wavefront_bounds("crisp8542", 44)
    assert 15 < soft < hard < 60  # 2x RMS at r0 = 3 cm, 3x RMS at r0 = 2 cm (5000 A), 8542 A, D = 1 m
    strong = read_array(modes)[0]
    strong *= 0.5 * (soft + hard) / np.sqrt((strong ** 2).sum(axis=0)).max()
    write_array(tmp_path / "strong.fits", strong)
    with pytest.warns(SvrtWarning, match="training range"):
        r = run(["convolve", "--object", obj, "--modes", tmp_path / "strong.fits", "--instrument", "crisp8542",
                 *tiny_engine(models), "-o", tmp_path / "strong-out.fits", "--no-png"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert check_wavefront_units(read_array(modes)[0], "crisp8542", "m.fits") < soft


# ================================================================ silent wrong results: model files

def _data_offset(path: Path) -> int:
    raw = path.read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def test_bit_flipped_model_is_refused(models, tmp_path):
    bad = tmp_path / "flipped.safetensors"
    raw = bytearray((models / "tiny.safetensors").read_bytes())
    raw[_data_offset(models / "tiny.safetensors") + 1001] ^= 0x04  # one bit of one weight
    bad.write_bytes(bytes(raw))
    error_of(lambda: load_model(bad), "flipped.safetensors", "hash", "recorded in its metadata")
    obj, modes = _convolve_inputs(tmp_path, 1)
    one_sentence(run(["convolve", "--object", obj, "--modes", modes, "--instrument", "crisp8542", "--engine", bad,
                      "-o", tmp_path / "o.fits"]), "hash")


def test_nan_weights_are_refused(tmp_path):
    model = SVCE(EmulatorConfig(width=4))
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    save_model(tmp_path / "nan.safetensors", model)
    error_of(lambda: load_model(tmp_path / "nan.safetensors"), "nan.safetensors", "NaN or Inf", "head.weight")


def _with_metadata(path: Path, meta) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in SVCE(EmulatorConfig(width=4)).state_dict().items()}
    save_file(tensors, str(path), metadata={"svrt": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


@pytest.mark.parametrize("meta, needle", [
    ("{not json", "not valid JSON"),
    ({"name": "x", "sha256": "0" * 16}, "has no 'config'"),
    ({"config": "width=4"}, "'config' is a str"),
    ({"config": {"width": "four", "n_modes": 44, "instruments": ["crisp8542"]}}, "width = 'four'"),
    ({"config": {"width": 4, "n_modes": -3, "instruments": ["crisp8542"]}}, "n_modes = -3"),
    ({"config": {"width": 4, "n_modes": 44, "instruments": 5}}, "instruments = 5"),
    ({"config": {"width": 4, "n_modes": 44, "instruments": ["crisp8542"], "normalize": "yes"}}, "normalize = 'yes'"),
    ({"config": {**EmulatorConfig(width=4).to_dict()}}, "no 'sha256'"),
])
def test_bad_model_metadata_is_one_sentence(tmp_path, meta, needle):
    path = _with_metadata(tmp_path / "bad.safetensors", meta)
    error_of(lambda: load_model(path), "bad.safetensors", needle)


# ================================================================ silent wrong results: redefined instruments

def _redefine(tmp_path, monkeypatch, **changes):
    from svrt.instruments import builtin_instruments

    entry = {**builtin_instruments()["crisp8542"].to_dict(), **changes}
    path = tmp_path / "instruments.json"
    path.write_text(json.dumps({"instruments": [entry]}))
    monkeypatch.setenv("SVRT_INSTRUMENTS", str(path))
    return path


def test_redefined_instrument_physics_is_refused(models, tmp_path, monkeypatch):
    obj, modes = _convolve_inputs(tmp_path, 1)
    burst = burst_file(tmp_path / "b.fits", frames())
    _redefine(tmp_path, monkeypatch, pixel_arcsec=0.02)
    conv = run(["convolve", "--object", obj, "--modes", modes, "--instrument", "crisp8542", *tiny_engine(models),
                "-o", tmp_path / "o.fits"])
    one_sentence(conv, "crisp8542", "$SVRT_INSTRUMENTS", "pixel_arcsec 0.02 (trained on 0.059)", "tiny")
    dec = run(["deconvolve", burst, "-o", tmp_path / "r.fits", *tiny_engine(models), *FAST])
    one_sentence(dec, "crisp8542", "pixel_arcsec 0.02")
    assert not (tmp_path / "o.fits").exists() and not (tmp_path / "r.fits").exists()


def test_redefined_instrument_with_the_same_or_recorded_physics_is_accepted(models, tmp_path, monkeypatch):
    from svrt.runtime.engine import load_engine

    x, a = torch.zeros(1, 1, 16, 16), torch.zeros(1, 44, 16, 16)
    _redefine(tmp_path, monkeypatch, telescope="Swedish 1-m Solar Telescope")  # same physics: fine
    assert load_engine(models / "tiny.safetensors").check(x, a, "crisp8542") == "crisp8542"
    _redefine(tmp_path, monkeypatch, pixel_arcsec=0.02)
    assert load_engine(None, backend="psf-interpolation").check(x, a, "crisp8542") == "crisp8542"  # exact optics
    phys = {"crisp8542": {"diameter_cm": 100.0, "obscuration_cm": 0.0, "pixel_arcsec": 0.02,
                          "wavelength_angstrom": 8542.0}}
    save_model(tmp_path / "custom.safetensors", SVCE(EmulatorConfig(width=4)), {"instrument_physics": phys})
    custom = load_engine(tmp_path / "custom.safetensors")
    assert custom.check(x, a, "crisp8542") == "crisp8542"  # trained on that physics, as its metadata records
    monkeypatch.delenv("SVRT_INSTRUMENTS")
    error_of(
        lambda: custom.check(x, a, "crisp8542"), "pixel_arcsec 0.059 (trained on 0.02)", "recorded in its metadata"
    )


# ================================================================ silent wrong results: header

def test_restoration_keeps_input_header_cards(models, tmp_path):
    data = frames(k=1, n_frames=2)
    path = tmp_path / "obs.fits"
    prim = fits.Header([("INSTR0", "crisp8542"), ("SEED", 7), ("GRID", 4), ("TELESCOP", "SST"),
                        ("DATE-OBS", "2024-06-01T08:30:00")])
    own = fits.Header([("BUNIT", "DN"), ("EXPTIME", 0.012), ("CTYPE1", "HPLN-TAN"), ("CTYPE2", "HPLT-TAN"),
                       ("CRPIX1", 16.5), ("CRPIX2", 16.5), ("CRVAL1", -120.0), ("CRVAL2", 300.0),
                       ("CDELT1", 0.059), ("CDELT2", 0.059), ("CUNIT1", "arcsec"), ("CUNIT2", "arcsec"),
                       ("PC1_1", 0.99), ("PC1_2", -0.1), ("PC2_1", 0.1), ("PC2_2", 0.99)])
    fits.HDUList([fits.PrimaryHDU(header=prim), fits.ImageHDU(data, header=own, name="FRAMES")]).writeto(path)
    burst = read_burst(path)
    assert burst.header["BUNIT"] == "DN" and burst.header["EXPTIME"] == 0.012 and burst.header["CTYPE1"] == "HPLN-TAN"
    out = tmp_path / "rest.fits"
    r = run(["deconvolve", path, "-o", out, *tiny_engine(models), *FAST, "--no-png"])
    assert r.exit_code == 0, (r.output, r.exception)
    h = read_restoration(out).header
    assert h["SEED"] == 7 and h["GRID"] == 4                        # the input's, untouched
    assert h["SVRT_GRID"] == 16 and "SVRT_SEED" in h                # the solver's, under distinct names
    assert h["ITERATIONS"] == 2 and h["INPUT"] == "obs.fits" and h["TELESCOP"] == "SST"
    for key, value in own.items():
        assert h[key] == value, key
    with fits.open(out) as hdul:
        for name in ("OBJECT", "MODEL"):
            img = hdul[name].header
            assert (
                img["BUNIT"] == "DN" and img["CTYPE1"] == "HPLN-TAN" and img["CRPIX2"] == 16.5 and img["PC1_2"] == -0.1
            )


def test_merge_headers():
    merged = merge_headers({"SEED": 1, "GRID": 4, "DATE": "2020-01-01", "NOBJ": 2, "INSTR0": "x"},
                           {"SEED": 0, "GRID": 16, "DATE": "2025-01-01", "ITERATIONS": 3, "SVRT_GRID_X": 1})
    assert merged == {"SEED": 1, "GRID": 4, "DATE": "2025-01-01", "SVRT_SEED": 0, "SVRT_GRID": 16,
                      "ITERATIONS": 3, "SVRT_GRID_X": 1}
    assert merge_headers({"A": 1, "SVRT_A": 2}, {"A": 3}) == {"A": 1, "SVRT_A": 2, "SVRT_A_2": 3}


# ================================================================ tracebacks: outputs

def _unwritable(tmp_path, kind):
    if kind == "file-as-folder":
        (tmp_path / "afile").write_text("x")
        return tmp_path / "afile" / "out.fits"
    if kind == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        return Path("/proc/out.fits")
    if ROOT:
        pytest.skip("root writes into read-only (0o555) folders: the permission case needs a normal user")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "out.fits"


@pytest.mark.parametrize("kind", ["file-as-folder", "proc", "read-only"])
def test_unwritable_output_is_refused_before_solving(models, tmp_path, no_solve, kind):
    burst = burst_file(tmp_path / "b.fits", frames())
    out = _unwritable(tmp_path, kind)
    one_sentence(run(["deconvolve", burst, "-o", out, *tiny_engine(models), *FAST]), "Cannot write", str(out))
    one_sentence(run(["deconvolve", burst, "-o", tmp_path / "fine.fits", "--png", out.with_suffix(".png"),
                      *tiny_engine(models), *FAST]), "Cannot write", ".png")
    obj, modes = _convolve_inputs(tmp_path, 1)
    one_sentence(run(["convolve", "--object", obj, "--modes", modes, "--instrument", "crisp8542",
                      *tiny_engine(models), "-o", out]), "Cannot write")
    assert not (tmp_path / "fine.fits").exists()


def test_full_disk_is_refused_before_solving(models, tmp_path, no_solve, monkeypatch):
    import shutil
    from collections import namedtuple

    burst = burst_file(tmp_path / "b.fits", frames())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 4096, 4096))
    one_sentence(run(["deconvolve", burst, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST]),
                 "o.fits", "MiB free", "free some space")


def test_full_disk_during_write_is_one_sentence(tmp_path):
    """A real write failure (file-size limit, the same OSError path as a full disk), in a child
    process: FITS, HDF5 (which could segfault when HDF5 itself met the full disk) and PNG outputs."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from svrt.errors import SvrtError
        from svrt.fileio import Restoration, write_restoration, atomic_write
        rng = np.random.default_rng(0)
        rest = Restoration(objects=rng.random((2, 128, 128)), modes=rng.random((4, 44, 4, 4)),
                           model=rng.random((2, 4, 128, 128)),
                           loss={{k: np.zeros(3) for k in ("iteration", "total", "data", "reg_object", "reg_modes")}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        for name in ("r.fits", "r.h5"):
            try:
                write_restoration(r"{tmp_path}/" + name, rest)
                print("WROTE", name)
            except SvrtError as exc:
                print("ERROR", exc)
        fig = plt.figure()
        plt.imshow(rng.random((512, 512)))
        try:
            with atomic_write(r"{tmp_path}/q.png") as tmp:
                fig.savefig(tmp, dpi=300)
            print("WROTE png")
        except SvrtError as exc:
            print("ERROR", exc)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])  # -11 would be the segfault
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ERROR Cannot write") for line in lines), p.stdout
    assert "Traceback" not in p.stderr
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)  # nothing half-written, no temporaries


def test_no_space_left_sentence(tmp_path, monkeypatch):
    import errno

    import svrt.fileio.hdf5file as hdf5file

    def full(tmp, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hdf5file, "_write_bytes", full)
    error_of(lambda: write_array(tmp_path / "a.h5", np.ones((4, 4))), "a.h5", "no space left", "free some space")
    assert no_temporaries(tmp_path)


def test_kill_9_during_write_leaves_no_stale_temporary(tmp_path):
    target = tmp_path / "out.fits"
    script = textwrap.dedent(f"""
        import time
        from svrt.fileio import atomic_write
        with atomic_write(r"{target}") as tmp:
            open(tmp, "wb").write(b"half")
            print("writing", flush=True)
            time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
    finally:
        p.kill()  # SIGKILL: no cleanup can run
        p.wait(timeout=30)
    left = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert len(left) == 1 and left[0].startswith(".out.fits.tmp-") and not target.exists()
    # another process's temporary of another output is not touched; ours is removed on the next run
    (tmp_path / ".other.fits.tmp-1-deadbeef.fits").write_bytes(b"")
    with pytest.warns(SvrtWarning, match="interrupted write"):
        check_writable(target)
    assert sorted(os.listdir(tmp_path)) == [".other.fits.tmp-1-deadbeef.fits"]
    os.unlink(tmp_path / ".other.fits.tmp-1-deadbeef.fits")
    (tmp_path / left[0]).write_bytes(b"")  # the same stale file again: the writer itself removes it
    with pytest.warns(SvrtWarning):
        write_array(target, np.arange(16.0).reshape(4, 4))
    assert os.listdir(tmp_path) == ["out.fits"]


# ================================================================ tracebacks: Ctrl-C at start-up

def _svrt_command():
    exe = Path(sys.executable).with_name("svrt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "svrt.cli"]


@pytest.mark.parametrize("module", ["click", "numpy", "torch"])
def test_ctrl_c_while_modules_load_exits_130_without_traceback(tmp_path, module):
    """KeyboardInterrupt injected exactly while ``svrt deconvolve`` imports click (svrt.cli's own
    imports), numpy (the sub-command's module) or torch (inside the command)."""
    script = textwrap.dedent(f"""
        import builtins, sys
        real = builtins.__import__
        def interrupted(name, *args, **kwargs):
            if name == {module!r}:
                raise KeyboardInterrupt
            return real(name, *args, **kwargs)
        builtins.__import__ = interrupted
        sys.argv = ["svrt", "deconvolve", "burst.fits", "-o", "out.fits"]
        from svrt.cli import main
        sys.exit(main())
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 130, (p.returncode, p.stderr[-1500:])
    assert "Traceback" not in p.stderr and "aborted" in p.stderr


def _before_svrt_code(err: str) -> bool:
    """Whether a traceback is the interpreter's, from before any svrt code could run: Python's own
    initialisation ('Fatal Python error: init_...'), or finding and loading the svrt package (import
    machinery, an editable install's finder) with no frame in svrt's own files."""
    import svrt

    if "Fatal Python error: init_" in err:
        return True
    package = str(Path(svrt.__file__).resolve().parent) + os.sep
    files = [line.split('"')[1] for line in err.splitlines() if line.strip().startswith('File "')]
    return bool(files) and not any(str(Path(f).resolve()).startswith(package) for f in files if not f.startswith("<"))


def test_ctrl_c_in_the_first_tenth_of_a_second(tmp_path):
    """Real SIGINTs 10 to 150 ms after ``svrt`` starts: exit 130, "aborted", no traceback; an interrupt
    that lands before any svrt code can run (interpreter start-up, finding the package) is Python's."""
    cmd = _svrt_command() + ["deconvolve", "burst.fits", "-o", "out.fits"]
    for delay in (0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15):
        p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        if "Traceback" in err and _before_svrt_code(err):
            continue
        assert "Traceback" not in err, (delay, err[-1500:])
        assert p.returncode in (130, 2, -signal.SIGINT), (delay, p.returncode, err[-500:])


# ================================================================ late or misleading errors

def _burst_with_truth_and_modes() -> Burst:
    rng = np.random.default_rng(0)
    return Burst(frames=frames(), instruments=["crisp8542"], truth=rng.random((1, 32, 32)).astype(np.float32) + 1,
                 modes=rng.standard_normal((3, 44, 4, 4)).astype(np.float32))


def test_truncated_fits_gz_is_reported_truncated(tmp_path):
    burst = _burst_with_truth_and_modes()
    write_burst(tmp_path / "b.fits.gz", burst)
    raw = (tmp_path / "b.fits.gz").read_bytes()
    for frac in (0.1, 0.5, 0.9, 0.99):
        cut = tmp_path / f"cut{int(frac * 100)}.fits.gz"
        cut.write_bytes(raw[: int(len(raw) * frac)])
        msg = error_of(lambda: read_burst(cut), cut.name, "truncated")
        assert "no FRAMES" not in msg


def test_fits_cut_between_extensions_is_truncated(tmp_path):
    burst = _burst_with_truth_and_modes()
    write_burst(tmp_path / "b.fits", burst)
    with fits.open(tmp_path / "b.fits") as hdul:
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(tmp_path / "cut.fits")  # TRUTH and MODES lost
    error_of(lambda: read_burst(tmp_path / "cut.fits"), "cut.fits", "truncated", "NEXTEND = 3")


def test_truth_or_modes_without_data_is_an_error(tmp_path):
    hdus = [fits.PrimaryHDU(header=fits.Header([("INSTR0", "crisp8542")])), fits.ImageHDU(frames(), name="FRAMES"),
            fits.ImageHDU(name="TRUTH")]
    fits.HDUList(hdus).writeto(tmp_path / "t.fits")
    error_of(lambda: read_burst(tmp_path / "t.fits"), "TRUTH", "t.fits", "no data")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["frames"] = frames()
        f.attrs["instruments"] = ["crisp8542"]
        f.create_group("modes").create_dataset("a", data=np.zeros(3))
    error_of(lambda: read_burst(tmp_path / "m.h5"), "MODES", "m.h5", "a table")


@pytest.mark.parametrize("device, needle", [("foo", "not a device torch knows"), ("cuda:99", "cuda:99"),
                                            ("xla", "not supported")])
def test_bad_device_names_the_device(models, tmp_path, no_solve, device, needle):
    burst = burst_file(tmp_path / "b.fits", frames())
    msg = one_sentence(run(["deconvolve", burst, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST,
                            "--device", device]), f"device '{device}'", needle)
    assert "safetensors" not in msg and "model" not in msg
    error_of(lambda: load_model(models / "tiny.safetensors", device=device), f"device '{device}'")


@pytest.mark.parametrize("option, value", [("--iterations", "1e12"), ("--iterations", "1000000000000"),
                                           ("--iterations", "0"), ("--grid", "-1"), ("--lambda-obj", "nan"),
                                           ("--lr-modes", "inf"), ("--lr-obj", "0"), ("--max-batch", "0"),
                                           ("--memory-mb", "-5")])
def test_absurd_option_values_are_refused(models, tmp_path, no_solve, option, value):
    burst = burst_file(tmp_path / "b.fits", frames())
    args = ["deconvolve", burst, "-o", tmp_path / "o.fits", *tiny_engine(models), *FAST, option, value]
    r = run(args)
    assert r.exit_code == 2 and "Traceback" not in r.output and option in r.output, r.output
    assert not (tmp_path / "o.fits").exists()


def test_absurd_demo_options_are_refused(tmp_path):
    for option, value in (("--size", "100000"), ("--frames", "0"), ("--r0", "nan"), ("--iterations", "1e12")):
        r = run(["demo", option, value, "--out-dir", tmp_path / "d"])
        assert r.exit_code == 2 and option in r.output, r.output
    assert not (tmp_path / "d").exists()
