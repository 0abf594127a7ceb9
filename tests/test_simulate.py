"""Tests of svrt.simulate: tiny bursts (32 x 32 to 64 x 64, 2-3 frames) and the `svrt simulate` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from svrt.cli import main
from svrt.errors import SvrtError
from svrt.fileio import read_burst
from svrt.optics.convolution import fft_convolve, spatially_variant_convolve
from svrt.scenes import make_objects
from svrt.simulate import burst_psf_model, choose_psf_size, per_pixel_modes, simulate_burst, truth_with_margin

TINY = dict(instrument="crisp8542", size=32, n_frames=2, n_objects=2, seed=3, psf_size=24, progress=False)


@pytest.fixture(scope="module")
def noiseless():
    return simulate_burst(**{**TINY, "noise": 0.0})


@pytest.fixture(scope="module")
def noisy():
    return simulate_burst(**TINY)                                   # noise = 0.01 (the default)


def test_shapes_and_header(noiseless):
    b = noiseless
    assert b.frames.shape == (2, 2, 32, 32) and b.frames.dtype == np.float32
    assert b.truth.shape == (2, 32, 32)
    assert b.modes.shape == (2, 44, 2, 2)                      # default grid: size // 16
    assert b.instruments == ["crisp8542", "crisp8542"]
    h = b.header
    assert h["TELESCOP"] == "SST" and h["WAVELNTH"] == 8542.0
    assert h["CDELT1"] == h["CDELT2"] == 0.059
    for key, value in dict(R0=10.0, R0WAVE=5000.0, THETA0=2.0, NOISE=0.0, SEED=3, SCENE="granulation",
                           GRID=2, NMODES=44, PSFSIZE=24, NLAYERS=3).items():
        assert h[key] == value, key
    assert h["LAYH0"] == 0.0 and h["LAYH2"] > h["LAYH1"] > 0
    assert "DATE-OBS" not in h                                   # a simulation has no date


def test_deterministic_for_a_seed(noisy):
    b = simulate_burst(**TINY)
    np.testing.assert_array_equal(noisy.frames, b.frames)
    np.testing.assert_array_equal(noisy.modes, b.modes)
    np.testing.assert_array_equal(noisy.truth, b.truth)
    small = {**TINY, "size": 16, "n_frames": 1}
    c, d = simulate_burst(**{**small, "seed": 4}), simulate_burst(**small)
    assert not np.allclose(c.frames, d.frames) and not np.allclose(c.modes, d.modes)


def test_noiseless_frames_are_the_exact_convolution_of_the_truth(noiseless):
    """Frame l of object k = spatially_variant_convolve of the scene with its margin (TRUTH is its
    centre) with the bilinearly upsampled modes of frame l (the solver's contract)."""
    b = noiseless
    scene, s = truth_with_margin(b), b.header["PSFSIZE"]
    assert scene.shape == (2, 32 + s - 1, 32 + s - 1)
    np.testing.assert_array_equal(scene, make_objects("granulation", 2, (32 + s - 1,) * 2, b.header["CDELT1"], 3))
    off = s - 1 - s // 2
    np.testing.assert_array_equal(scene[:, off:off + 32, off:off + 32], b.truth)
    model = burst_psf_model("crisp8542", s)
    for frame in range(2):
        coef = torch.nn.functional.interpolate(torch.tensor(b.modes[frame])[None], size=(32, 32),
                                               mode="bilinear", align_corners=False)[0]
        np.testing.assert_array_equal(coef.numpy(), per_pixel_modes(b.modes[frame], (32, 32)).numpy())
        exact = spatially_variant_convolve(torch.tensor(scene), coef, model, boundary="valid")
        np.testing.assert_allclose(b.frames[:, frame], exact.numpy(), rtol=1e-5, atol=1e-6)


def test_truth_with_margin_refuses_a_burst_it_did_not_make(noiseless):
    import dataclasses

    changed = dataclasses.replace(noiseless, truth=noiseless.truth * 1.01)
    with pytest.raises(SvrtError, match="TRUTH differs"):
        truth_with_margin(changed)
    with pytest.raises(SvrtError, match="SEED"):
        truth_with_margin(dataclasses.replace(noiseless, header={k: v for k, v in noiseless.header.items() if k != "SEED"}))


def test_isoplanatic_burst_equals_fft_convolution():
    """Independent path: with a ground layer only (theta0 None) every pixel has the same PSF, so each
    frame is the ordinary (FFT) convolution of the scene with it, cropped to the field."""
    b = simulate_burst(**{**TINY, "noise": 0.0, "theta0_arcsec": None})
    assert np.ptp(b.modes, axis=(2, 3)).max() == 0
    scene, s = truth_with_margin(b), b.header["PSFSIZE"]
    off = s - 1 - s // 2
    model = burst_psf_model("crisp8542", s)
    for frame in range(2):
        psf = model(torch.tensor(b.modes[frame, :, 0, 0]))
        full = fft_convolve(torch.tensor(scene, dtype=torch.float64), psf.to(torch.float64))
        np.testing.assert_allclose(b.frames[:, frame], full[:, off:off + 32, off:off + 32].numpy(), atol=2e-5)


def test_flux_is_conserved():
    """Every PSF has unit sum, so the frames keep the flux except what the border exchanges with the
    margin (light of the margin blurred in, light of the field blurred out). The imbalance is at most
    the granulation contrast (12 %) x the share of the field within a PSF radius r of the border,
    4 r / Y, and with ~12 granules along the border the signs mostly cancel: for Y = 64, r ~ 8 px
    (seeing FWHM ~16 px at r0 = 19 cm, tilt rms ~5 px) ~ 0.12 x 0.5 / sqrt(12) ~ 2 %. Require 3 %
    per frame and 1.5 % for the mean over frames (the frames' tilts differ)."""
    b = simulate_burst(**{**TINY, "size": 64, "noise": 0.0, "psf_size": None})
    assert b.header["PSFSIZE"] >= 48
    ratio = b.frames.mean(axis=(2, 3)) / b.truth.mean(axis=(1, 2))[:, None]
    assert np.all(np.abs(ratio - 1) < 0.03), ratio
    assert np.all(np.abs(ratio.mean(axis=1) - 1) < 0.015), ratio


def test_noise_level(noiseless, noisy):
    d = noisy.frames - noiseless.frames
    sigma = d.std(axis=(2, 3)) / noiseless.frames.mean(axis=(2, 3))
    # 1024 pixels per frame: the standard deviation is estimated to 1 / sqrt(2 x 1024) = 2.2 %
    np.testing.assert_allclose(sigma, 0.01, rtol=0.1)
    assert abs(d.mean()) < 4 * 0.01 / np.sqrt(d.size)               # zero mean


def test_psf_size_grows_with_turbulence():
    rng = np.random.default_rng(0)
    from svrt.atmosphere import anisoplanatic_modes

    good = anisoplanatic_modes("crisp8542", 20.0, None, 8, (1, 1), (32, 32), rng=rng, pupil_px=32)
    bad = anisoplanatic_modes("crisp8542", 5.0, None, 8, (1, 1), (32, 32), rng=rng, pupil_px=32)
    s_good, s_bad = choose_psf_size("crisp8542", good), choose_psf_size("crisp8542", bad)
    assert 16 <= s_good < s_bad <= 256 and s_good % 8 == 0 and s_bad % 8 == 0


@pytest.mark.parametrize("kwargs, words", [
    (dict(size=8, grid=16), "too small for a grid"),
    (dict(r0_cm=-3.0), "r0 must be positive"),
    (dict(noise=-0.1), "noise must be"),
    (dict(scene="galaxy"), "unknown scene"),
    (dict(instrument="hubble"), "unknown instrument"),
    (dict(theta0_arcsec=0.0), "theta0 must be positive"),
    (dict(n_frames=0), "number of frames"),
    (dict(n_modes=200), "more than the 152"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(SvrtError, match=words):
        simulate_burst(**{**TINY, **kwargs})


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

CLI_TINY = ["simulate", "--size", "32", "--frames", "2", "--objects", "2", "--seed", "3", "--psf-size", "24", "-q"]


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", ["burst.fits", "burst.h5"])
def test_cli_writes_a_readable_burst_and_png(tmp_path, capsys, name, noisy):
    path = tmp_path / name
    code, out, err = _run(CLI_TINY + ["-o", str(path)], capsys)
    assert code == 0, err
    assert "wrote" in out
    burst = read_burst(path)
    ref = noisy
    np.testing.assert_array_equal(burst.frames, ref.frames)
    np.testing.assert_array_equal(burst.truth, ref.truth)
    np.testing.assert_array_equal(burst.modes, ref.modes)
    assert burst.instruments == ["crisp8542", "crisp8542"]
    assert burst.header["R0"] == 10.0 and burst.header["SCENE"] == "granulation"
    png = tmp_path / "burst.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary files left
    if name.endswith(".fits"):
        with fits.open(path) as hdul:
            assert "[cm]" in hdul[0].header.comments["R0"]
            assert "Angstrom" in hdul[0].header.comments["R0WAVE"]


def test_cli_help_has_an_example(capsys):
    code, out, _ = _run(["simulate", "--help"], capsys)
    assert code == 0
    assert "svrt simulate --instrument crisp8542" in out and "--theta0" in out


@pytest.mark.parametrize("args, words", [
    (["--size", "8", "--grid", "16"], "too small for a grid"),
    (["--r0", "-5"], "r0 must be positive"),
    (["--noise", "-0.01"], "noise must be"),
    (["--instrument", "hubble"], "unknown instrument"),
    (["--scene", "galaxy"], "unknown scene"),
    (["--theta0", "wide"], "--theta0 must be"),
])
def test_cli_errors_are_one_sentence(tmp_path, capsys, args, words):
    code, out, err = _run(CLI_TINY + args + ["-o", str(tmp_path / "b.fits")], capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("svrt: error: ") and lines[0].endswith("."), err
    assert words in lines[0]
    assert not list(tmp_path.iterdir())                             # nothing written


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "b.fits"
    path.write_bytes(b"precious")
    code, _, err = _run(CLI_TINY + ["-o", str(path)], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == b"precious"
    code, _, err = _run(CLI_TINY + ["-o", str(tmp_path / "b.txt")], capsys)
    assert code == 2 and "extension" in err
