"""The quality verdict of a restoration from the data alone (runtime/quality.py) and the defaults that
adapt to the field (``fitted_modes``): constructed cases for each figure, and one 64^2 x 4-frame burst
restored end to end with the defaults."""

import math

import numpy as np
import pytest

from svrt.runtime.quality import (
    THRESHOLDS,
    assess,
    chi2_per_pixel,
    noise_power_fraction,
    restoration_gain,
    verdict,
    wavefront_excess,
)
from svrt.runtime.solver_config import SolverConfig, fitted_modes
from tests.sentences import error_of

CUTOFF = 0.25      # cycles per pixel: the diffraction cutoff of the constructed cases


def _scene(n=64, seed=0):
    """``[n, n]`` a power-law (nu^-3 power) random field, band-limited to CUTOFF, mean 1, contrast ~0.1."""
    rng = np.random.default_rng(seed)
    nu = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    amp = np.where((nu > 0) & (nu < CUTOFF), np.maximum(nu, 1.0 / n) ** -1.5, 0.0)
    f = np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((n, n)))).real
    return 1.0 + 0.1 * f / f.std()


def _blur(img, width):
    """``img`` through a Gaussian MTF of 1/e width ``width`` (units of CUTOFF), cut at the cutoff."""
    n = img.shape[-1]
    nu = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]) / CUTOFF
    mtf = np.exp(-(nu / width) ** 2) * (nu < 1)
    return np.fft.ifft2(np.fft.fft2(img) * mtf).real, mtf


def _burst(n_frames=4, sigma=0.01, seed=0):
    """(truth [Y, X], frames [1, L, Y, X], the mean MTF [Y, X], noise variance [1, L])."""
    rng = np.random.default_rng(seed + 1)
    truth = _scene(seed=seed)
    frames, mtfs = [], []
    for i in range(n_frames):
        blurred, mtf = _blur(truth, 0.35 + 0.05 * i)
        frames.append(blurred + rng.normal(0, sigma, truth.shape))
        mtfs.append(mtf)
    return truth, np.array(frames)[None], np.mean(mtfs, axis=0), np.full((1, n_frames), sigma ** 2)


def test_chi2_of_a_perfect_model_is_one_and_masked_pixels_are_left_out():
    rng = np.random.default_rng(3)
    model = rng.random((2, 3, 64, 64))
    sigma = np.array([[0.1, 0.2, 0.3], [0.05, 0.1, 0.4]])
    frames = model + rng.normal(size=model.shape) * sigma[:, :, None, None]
    assert chi2_per_pixel(frames, model, sigma ** 2) == pytest.approx(1.0, abs=0.03)
    valid = np.ones(frames.shape, dtype=bool)
    valid[0, 0, :8] = False
    frames[0, 0, :8] = 1e6                                   # bad pixels would dominate if counted
    assert chi2_per_pixel(frames, model, sigma ** 2, valid) == pytest.approx(1.0, abs=0.03)
    # a model that misses the signal has chi^2 >> 1
    assert chi2_per_pixel(frames, model * 0.5, sigma ** 2, valid) > 5


def test_frame_average_is_not_over_restored_and_a_wiener_restoration_is_ok():
    truth, frames, mtf, nvar = _burst()
    average = frames[0].mean(axis=0)
    assert restoration_gain(average, average, CUTOFF) == pytest.approx(1.0)
    assert noise_power_fraction(average, average, nvar.mean() / 4, CUTOFF) < 0.2
    # a Wiener restoration with the true mean MTF: sharper than the average, not over-restored
    spec = np.fft.fft2(average - average.mean())
    wiener = np.fft.ifft2(spec * mtf / (mtf ** 2 + 1e-3)).real + average.mean()
    q = assess(frames, None, frames, wiener[None], average[None], nvar, [CUTOFF])
    assert q.label == "ok", q
    assert 1.5 < q.gain < THRESHOLDS["gain"]


def test_an_over_sharpened_restoration_is_flagged():
    truth, frames, mtf, nvar = _burst()
    average = frames[0].mean(axis=0)
    spec = np.fft.fft2(average - average.mean())
    # the MTF taken 3x too low at mid frequencies (wavefronts fitted too strong): 9x the power restored there
    sharp = np.fft.ifft2(spec * mtf / ((mtf / 3) ** 2 + 1e-6) / 3).real + average.mean()
    q = assess(frames, None, frames, sharp[None], average[None], nvar, [CUTOFF])
    assert q.label == "over-restored", q
    assert "--fit-modes" in q.warning()
    # the plain inverse filter (no regularisation): its power sits where the frame average holds only noise
    inverse = np.fft.ifft2(np.where(mtf > 1e-8, spec / np.maximum(mtf, 1e-8), 0)).real + average.mean()
    assert noise_power_fraction(inverse, average, nvar.mean() / 4, CUTOFF) > THRESHOLDS["noise"]


def test_worse_than_average_and_not_converged_verdicts():
    truth, frames, mtf, nvar = _burst()
    average = frames[0].mean(axis=0)
    model = np.broadcast_to(average, frames.shape) * 1.01            # the average, a little off: explains less
    q = assess(frames, None, model, average[None], average[None], nvar, [CUTOFF])
    assert q.label == "worse-than-average" and q.chi2 > q.chi2_average
    assert "--fit-modes" in q.warning()
    q = verdict(1.0, 5.0, 0.0, 1.0, object_solved=False)
    assert q.label == "not-converged" and "--time-budget" in q.warning()
    cards = q.cards()
    assert cards["QUALITY"] == "not-converged" and all(len(str(v)) <= 68 for v in cards.values())


def test_wavefront_excess_is_one_for_kolmogorov_and_large_for_noise_fitted_high_modes():
    from svrt.optics.kl import kl_basis

    rng = np.random.default_rng(1)
    c = kl_basis(44).variances
    modes = rng.normal(size=(200, 44, 1, 1)) * np.sqrt(4.0 * c)[None, :, None, None]
    assert wavefront_excess(modes, 35) == pytest.approx(1.0, abs=0.15)
    noisy = modes.copy()
    noisy[:, 17:35] += rng.normal(size=(200, 18, 1, 1)) * 0.3          # noise fitted as aberration
    assert wavefront_excess(noisy, 35) > THRESHOLDS["excess"]
    assert math.isnan(wavefront_excess(modes, 5))


def test_fitted_modes_adapt_to_the_field_and_refuse_a_field_too_small():
    cfg = SolverConfig()
    assert fitted_modes(cfg, (2, 8, 128, 128), 44) == 35                 # large fields keep fit_modes
    assert fitted_modes(cfg, (2, 12, 256, 256), 44) == 35
    assert fitted_modes(cfg, (2, 4, 64, 64), 44) == 10                   # 6144 data / 600
    assert fitted_modes(SolverConfig(data_per_mode=0), (2, 4, 64, 64), 44) == 35
    assert fitted_modes(SolverConfig(fit_modes=None), (2, 8, 256, 256), 44) == 44
    error_of(lambda: fitted_modes(cfg, (1, 2, 32, 32), 44), "32x32", "--data-per-mode 0", "more frames")
    error_of(lambda: SolverConfig(data_per_mode=-1), "data_per_mode")
