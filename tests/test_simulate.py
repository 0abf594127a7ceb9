"""Tests of svrt.simulate: tiny bursts (32 x 32 to 64 x 64, 2-3 frames) and the `svrt simulate` command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from astropy.io import fits

from svrt.atmosphere import r0_at_wavelength
from svrt.cli import main
from svrt.errors import SvrtError
from svrt.fileio import read_burst
from svrt.mode_grid import per_pixel_modes
from svrt.optics.convolution import fft_convolve, spatially_variant_convolve
from svrt.scenes import make_objects
from svrt.simulate import (
    HEADER_COMMENTS,
    add_noise,
    burst_psf_model,
    burst_screens,
    choose_psf_size,
    screen_pupil_samples,
    simulate_burst,
    truth_with_margin,
)

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
    assert h["DATE-OBS"] == "2000-01-01T12:00:00.000"            # a simulation has no date: J2000.0, documented


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
        truth_with_margin(
            dataclasses.replace(noiseless, header={k: v for k, v in noiseless.header.items() if k != "SEED"})
        )


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
    from svrt.phase_screens import anisoplanatic_modes

    good = anisoplanatic_modes("crisp8542", 20.0, None, 8, (1, 1), (32, 32), rng=rng, pupil_px=32)
    bad = anisoplanatic_modes("crisp8542", 5.0, None, 8, (1, 1), (32, 32), rng=rng, pupil_px=32)
    s_good, s_bad = choose_psf_size("crisp8542", good), choose_psf_size("crisp8542", bad)
    assert 16 <= s_good < s_bad <= 256 and s_good % 8 == 0 and s_bad % 8 == 0


@pytest.mark.parametrize("kwargs, words", [
    (dict(size=8, nodes=16), "too small for a grid"),
    (dict(nodes=2, grid=2), "grid is the deprecated name of nodes"),
    (dict(r0_cm=-3.0), "r0 must be positive"),
    (dict(noise=-0.1), "noise must be"),
    (dict(scene="galaxy"), "unknown scene"),
    (dict(instrument="hubble"), "unknown instrument"),
    (dict(theta0_arcsec=0.0), "theta0 must be positive"),
    (dict(n_frames=0), "number of frames"),
    (dict(n_modes=200), "more than the 152"),
    (dict(wavefront="fft"), "wavefront must be 'kl'"),
    (dict(outer_scale_m=-5.0), "outer scale L0 must be positive"),
    (dict(outer_scale_m="far"), "outer scale L0 must be a number"),
    (dict(ao_modes=-1), "ao_modes must be an integer"),
    (dict(ao_modes=153), "ao_modes must be an integer"),
    (dict(ao_modes=4, ao_lock_arcsec=(1.0, 2.0, 3.0)), "ao_lock_arcsec must be"),
    (dict(photons=-10.0), "photons must be zero or positive"),
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
    for option in ("--wavefront", "--outer-scale", "--ao-modes", "--ao-lock", "--photons", "--wavefront screen"):
        assert option in out, option


@pytest.mark.parametrize("args, words", [
    (["--size", "8", "--nodes", "16"], "too small for a grid"),
    (["--nodes", "2", "--grid", "2"], "--grid is the deprecated name of --nodes"),
    (["--r0", "-5"], "r0 must be positive"),
    (["--noise", "-0.01"], "noise must be"),
    (["--instrument", "hubble"], "unknown instrument"),
    (["--scene", "galaxy"], "unknown scene"),
    (["--theta0", "wide"], "--theta0 must be"),
    (["--wavefront", "fft"], "--wavefront must be 'kl' or 'screen'"),
    (["--outer-scale", "0"], "--outer-scale must be a positive number of metres"),
    (["--outer-scale", "big"], "--outer-scale must be"),
    (["--ao-modes", "-3"], "--ao-modes must be an integer"),
    (["--ao-modes", "200"], "--ao-modes must be an integer"),
    (["--ao-modes", "many"], "--ao-modes must be an integer"),
    (["--ao-lock", "3"], "--ao-lock must be 'Y,X'"),
    (["--ao-lock", "a,b"], "--ao-lock must be"),
    (["--photons", "-1"], "--photons must be"),
    (["--photons", "lots"], "--photons must be"),
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


# ----------------------------------------------------------------------------------------------
# wavefront="screen", outer scale, adaptive optics, photon noise
# ----------------------------------------------------------------------------------------------

SCREEN = {**TINY, "noise": 0.0, "wavefront": "screen"}


@pytest.fixture(scope="module")
def screen_burst():
    return simulate_burst(**SCREEN)


def _screens_of(burst, **kw):
    """The layered screens a wavefront="screen" burst was made with, rebuilt from the documented recipe."""
    from svrt.adaptive_optics import AdaptiveOptics
    from svrt.atmosphere import Atmosphere

    h = burst.header
    atm = Atmosphere.from_theta0(h["R0"], h["THETA0"] or None, outer_scale_m=h["L0"] or None)
    ao = AdaptiveOptics(burst.instruments[0], h["AOMODES"], (h["AOLOCKY"], h["AOLOCKX"]))
    return burst_screens(burst.instruments[0], atm, burst.n_frames, burst.shape, np.random.default_rng([h["SEED"], 1]),
                         ao, h["SCREENPX"])


def test_screen_burst_header_and_modes(screen_burst, noiseless):
    """Same seed, same atmosphere: MODES (the KL projection at the nodes) equal those of the "kl" burst,
    the frames do not (the full phase has the high orders and the exact field dependence)."""
    b = screen_burst
    assert b.frames.shape == (2, 2, 32, 32) and b.modes.shape == (2, 44, 2, 2)
    h = b.header
    assert (h["WAVEFRNT"], h["L0"], h["AOMODES"], h["PHOTONS"], h["SCREENPX"]) == ("screen", 0.0, 0, 0.0, 64)
    assert noiseless.header["WAVEFRNT"] == "kl"
    for key in ("WAVEFRNT", "L0", "AOMODES", "AOLOCKY", "AOLOCKX", "PHOTONS", "PUPILPX", "SCREENPX"):
        assert key in HEADER_COMMENTS
    # the PSF's pupil grid resolves r0 (3 samples per r0 at 8542 A)
    d_over_r0 = 100.0 / h["R0INST"]
    assert h["PUPILPX"] >= 3 * d_over_r0 and screen_pupil_samples("crisp8542", 10.0)[1] >= 3 * d_over_r0
    assert screen_pupil_samples("crisp8542", 2.0) == (math.ceil(6 * 100.0 / r0_at_wavelength(2.0, 8542.0)),
                                                      3 * 100.0 / r0_at_wavelength(2.0, 8542.0))
    np.testing.assert_array_equal(b.modes, noiseless.modes)
    np.testing.assert_array_equal(b.truth, noiseless.truth)
    assert not np.allclose(b.frames, noiseless.frames, rtol=1e-2)
    again = simulate_burst(**SCREEN)
    np.testing.assert_array_equal(again.frames, b.frames)


def test_screen_frames_are_the_exact_convolution_with_full_phase_psfs(screen_burst):
    """Independent bookkeeping check: pixel (i, j) of frame l is the scene patch around it times the PSF of
    the full phase at that pixel's field angle ((i - (Y-1)/2, j - (X-1)/2) pixels), from the burst's
    screens; for a few pixels, including corners (rows and columns not swapped)."""
    b = screen_burst
    screens, s = _screens_of(b), b.header["PSFSIZE"]
    scene = torch.tensor(truth_with_margin(b), dtype=torch.float64)
    model = burst_psf_model("crisp8542", s, 44, screen_pupil_samples("crisp8542", 10.0)[1])
    pix = b.header["CDELT1"] / 206264.80624709636
    for frame, i, j in ((0, 0, 31), (1, 31, 0), (0, 5, 20), (1, 16, 16)):
        psf = screens[frame].psfs(model, [(i - 15.5) * pix], [(j - 15.5) * pix])[0].to(torch.float64)
        patch = scene[:, i:i + s, j:j + s]                       # pixel (i, j) at offset S - 1 - S // 2 + (i, j)
        value = (patch * psf.flip(-2, -1)).sum(dim=(-2, -1)).numpy()
        np.testing.assert_allclose(b.frames[:, frame, i, j], value, rtol=2e-5)


def test_isoplanatic_screen_burst_equals_fft_convolution():
    """Ground layer only: every pixel has the same full-phase PSF, so each frame is the ordinary (FFT)
    convolution of the scene with the PSF of the centre's phase."""
    b = simulate_burst(**{**SCREEN, "theta0_arcsec": None})
    screens, s = _screens_of(b), b.header["PSFSIZE"]
    scene = torch.tensor(truth_with_margin(b), dtype=torch.float64)
    off = s - 1 - s // 2
    model = burst_psf_model("crisp8542", s, 44, screen_pupil_samples("crisp8542", 10.0)[1])
    for frame in range(2):
        psf = screens[frame].psfs(model, [0.0], [0.0])[0].to(torch.float64)
        full = fft_convolve(scene, psf)
        np.testing.assert_allclose(b.frames[:, frame], full[:, off:off + 32, off:off + 32].numpy(), atol=2e-5)


@pytest.mark.parametrize("wavefront", ["kl", "screen"])
def test_ao_burst_is_corrected_at_the_lock_point(wavefront):
    """One node (grid 1), at the field centre, where the AO locks: MODES 1..N are ~0 (to the discrete-pupil
    leak of the projection, see test_adaptive_optics), modes beyond N as without AO; the frames are
    sharper (higher RMS contrast) than without AO."""
    base = {**TINY, "noise": 0.0, "nodes": 1, "wavefront": wavefront, "r0_cm": 7.0, "psf_size": 32}
    free, ao = simulate_burst(**base), simulate_burst(**{**base, "ao_modes": 20})
    assert ao.header["AOMODES"] == 20 and free.header["AOMODES"] == 0
    assert np.sqrt(np.mean(ao.modes[:, :20] ** 2)) < 0.01 * np.sqrt(np.mean(free.modes[:, 20:] ** 2))
    np.testing.assert_allclose(ao.modes[:, 20:], free.modes[:, 20:], atol=1e-4 * np.abs(free.modes).max())
    contrast = [b.frames.std(axis=(2, 3)).mean() for b in (free, ao)]
    assert contrast[1] > 1.5 * contrast[0], contrast


def test_outer_scale_in_a_burst():
    b = simulate_burst(**{**SCREEN, "outer_scale_m": 5.0})
    assert b.header["L0"] == 5.0
    kol = simulate_burst(**SCREEN)
    # same random numbers, tip/tilt damped (L0 = 5 D: variance ~0.23 of Kolmogorov's, one realisation)
    assert np.abs(b.modes[:, :2]).mean() < np.abs(kol.modes[:, :2]).mean()
    np.testing.assert_array_equal(simulate_burst(**{**SCREEN, "outer_scale_m": float("inf")}).frames, kol.frames)


def test_photon_noise_level(noiseless):
    """Poisson noise of P photo-electrons per pixel at the frame mean: in units of the frame mean m the
    variance of pixel v is (v / m) / P, on average over the frame 1 / P. 2 x 2 x 1024 pixels: the
    variance is estimated to sqrt(2 / 4096) = 2.2 %; allow 3.5 se = 8 %. With Gaussian noise too, the
    variances add. None and 0 mean no photon noise; the same seed gives the same noise."""
    p = 500.0
    noisy = simulate_burst(**{**TINY, "noise": 0.0, "photons": p})
    assert noisy.header["PHOTONS"] == p
    mean = noiseless.frames.mean(axis=(2, 3), keepdims=True)
    d = (noisy.frames - noiseless.frames) / mean
    assert np.mean(d ** 2) * p == pytest.approx(1.0, rel=0.08)
    # variance proportional to the signal: the bright half of the pixels is noisier than the dark half
    bright = noiseless.frames > np.median(noiseless.frames, axis=(2, 3), keepdims=True)
    assert np.mean(d[bright] ** 2) > np.mean(d[~bright] ** 2)
    both = simulate_burst(**{**TINY, "noise": 0.03, "photons": p})
    d2 = (both.frames - noiseless.frames) / mean
    assert np.mean(d2 ** 2) == pytest.approx(1 / p + 0.03 ** 2, rel=0.08)
    np.testing.assert_array_equal(simulate_burst(**{**TINY, "noise": 0.0, "photons": 0}).frames, noiseless.frames)
    np.testing.assert_array_equal(add_noise(noiseless.frames, 0.0, None, np.random.default_rng(0)), noiseless.frames)


def test_cli_new_options(tmp_path, capsys):
    path = tmp_path / "screen.fits"
    code, out, err = _run(
        CLI_TINY
        + [
            "--wavefront",
            "screen",
            "--outer-scale",
            "20",
            "--ao-modes",
            "10",
            "--ao-lock",
            "0.5,-0.5",
            "--photons",
            "1000",
            "--no-png",
            "-o",
            str(path),
        ],
        capsys,
    )
    assert code == 0, err
    burst = read_burst(path)
    h = burst.header
    assert (h["WAVEFRNT"], h["L0"], h["AOMODES"], h["AOLOCKY"], h["AOLOCKX"], h["PHOTONS"]) == \
        ("screen", 20.0, 10, 0.5, -0.5, 1000.0)
    ref = simulate_burst(**{**TINY, "wavefront": "screen", "outer_scale_m": 20.0, "ao_modes": 10,
                            "ao_lock_arcsec": (0.5, -0.5), "photons": 1000.0})
    np.testing.assert_array_equal(burst.frames, ref.frames)
    with fits.open(path) as hdul:
        for key, word in (("WAVEFRNT", "wavefront"), ("L0", "[m]"), ("AOMODES", "AO"), ("PHOTONS", "photo-electrons")):
            assert word in hdul[0].header.comments[key], key


def test_grid_of_the_simulator_is_a_deprecated_alias_of_nodes(tmp_path, capsys):
    """grid means pixels per node in the solver; the simulator's node count is nodes, and its old name still works
    with one warning sentence."""
    from svrt.checks import SvrtWarning

    with pytest.warns(SvrtWarning, match=r"grid=\.\.\.\) is deprecated.*nodes="):
        old = simulate_burst(**{**TINY, "grid": 2})
    new = simulate_burst(**{**TINY, "nodes": 2})
    assert old.modes.shape[-2:] == (2, 2) and np.array_equal(old.frames, new.frames)
    code, _, err = _run(CLI_TINY + ["--grid", "2", "-o", str(tmp_path / "b.fits"), "--no-png"], capsys)
    assert code == 0 and "--grid is deprecated" in err and "--nodes" in err, err
