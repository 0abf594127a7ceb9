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


def _kolmogorov_modes(noise_rms=0.0, seed=1):
    """``[200, 44, 1, 1]`` KL coefficients with Kolmogorov variances (D/r0 = 4^(3/5)); ``noise_rms`` [rad]
    added to KL 18-35: noise fitted as aberration."""
    from svrt.optics.kl import kl_basis

    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(200, 44, 1, 1)) * np.sqrt(4.0 * kl_basis(44).variances)[None, :, None, None]
    modes[:, 17:35] += rng.normal(size=(200, 18, 1, 1)) * noise_rms
    return modes


def test_an_over_sharpened_restoration_is_flagged():
    truth, frames, mtf, nvar = _burst()
    average = frames[0].mean(axis=0)
    spec = np.fft.fft2(average - average.mean())
    # the MTF taken 3x too low (wavefronts fitted too strong: noise in the high modes): 9x the power restored
    sharp = np.fft.ifft2(spec * mtf / ((mtf / 3) ** 2 + 1e-6) / 3).real + average.mean()
    q = assess(frames, None, frames, sharp[None], average[None], nvar, [CUTOFF], modes=_kolmogorov_modes(0.3),
               n_fit=35)
    assert q.label == "over-restored" and q.excess > THRESHOLDS["excess"], q
    assert "--fit-modes" in q.warning() and "Kolmogorov" in q.warning()
    # the same figures with Kolmogorov wavefronts pass
    assert assess(frames, None, frames, sharp[None], average[None], nvar, [CUTOFF], modes=_kolmogorov_modes(),
                  n_fit=35).label == "ok"
    # power where the frames hold only noise (0.8-1 of the cutoff, beyond the frame average's SNR of 1)
    rng = np.random.default_rng(0)
    nu = np.hypot(np.fft.fftfreq(64)[:, None], np.fft.fftfreq(64)[None, :]) / CUTOFF
    hf = np.fft.ifft2(np.fft.fft2(rng.normal(size=average.shape)) * ((nu > 0.8) & (nu < 1))).real
    noisy = average + 0.15 * hf / hf.std()
    q = assess(frames, None, frames, noisy[None], average[None], nvar, [CUTOFF])
    assert q.label == "over-restored" and q.noise > THRESHOLDS["noise"], q
    assert noise_power_fraction(average, average, nvar.mean() / 4, CUTOFF) < 0.1


def test_worse_than_average_and_not_converged_verdicts():
    truth, frames, mtf, nvar = _burst()
    average = frames[0].mean(axis=0)
    model = np.broadcast_to(average, frames.shape) * 1.01            # the average, a little off: explains less
    q = assess(frames, None, model, average[None], average[None], nvar, [CUTOFF])
    assert q.label == "worse-than-average" and q.chi2 > q.chi2_average
    assert "--fit-modes" in q.warning()
    # frames that differ only by noise: their average explains them best, but a model at the noise is no fault
    assert verdict(1.02, 0.75, 0.0, 2.0).label == "ok"
    q = verdict(1.0, 5.0, 0.0, 1.0, object_solved=False)
    assert q.label == "not-converged" and "--time-budget" in q.warning()
    cards = q.cards()
    assert cards["QUALITY"] == "not-converged" and all(len(str(v)) <= 68 for v in cards.values())


def test_wavefront_excess_is_one_for_kolmogorov_and_large_for_noise_fitted_high_modes():
    assert wavefront_excess(_kolmogorov_modes(), 35) < 0.1 * THRESHOLDS["excess"]
    # 0.3 rad of noise in each of 18 modes: 1.62 rad^2 beyond Kolmogorov
    assert wavefront_excess(_kolmogorov_modes(0.3), 35) == pytest.approx(18 * 0.09, rel=0.15)
    assert math.isnan(wavefront_excess(_kolmogorov_modes(), 5))


def test_fitted_modes_adapt_to_the_field_and_refuse_a_field_too_small():
    cfg = SolverConfig()
    assert fitted_modes(cfg, (2, 8, 128, 128), 44) == 35                 # large fields keep fit_modes
    assert fitted_modes(cfg, (2, 12, 256, 256), 44) == 35
    assert fitted_modes(cfg, (1, 8, 128, 128), 44) == 35                 # the peer matrix's 128^2 bursts keep 35
    assert fitted_modes(cfg, (2, 4, 64, 64), 44) == 14                   # 6144 / 400 = 15: order 4 ends at 14
    assert fitted_modes(cfg, (1, 4, 64, 64), 44) == 5
    assert fitted_modes(SolverConfig(data_per_mode=0), (2, 4, 64, 64), 44) == 35
    assert fitted_modes(SolverConfig(fit_modes=None), (2, 8, 256, 256), 44) == 44
    error_of(lambda: fitted_modes(cfg, (1, 2, 32, 32), 44), "32x32", "--data-per-mode 0", "more frames")
    error_of(lambda: SolverConfig(data_per_mode=-1), "data_per_mode")


@pytest.fixture(scope="module")
def burst64():
    """The 64^2 x 4-frame, 2-object burst of issue 22 (``svrt simulate --size 64 --frames 4 --objects 2 --seed 1``)."""
    from svrt.simulate import simulate_burst

    return simulate_burst(size=64, n_frames=4, n_objects=2, seed=1, progress=False)


def _score(burst, images):
    from svrt.benchmarks.metrics import score_restoration
    from svrt.instruments import get_instrument

    return [score_restoration(images[k], burst.truth[k], get_instrument(burst.instruments[k]).cutoff_cycles_per_pixel)
            ["nmse_variance"] for k in range(len(images))]


def test_default_restoration_of_a_64x4_burst_is_no_worse_than_the_frame_average_and_carries_its_verdict(burst64):
    """Fitting 35 modes (the old default) gave NMSE_var 1.68 / 2.19 against the frame average's 0.55 / 0.77;
    the defaults now fit 10 (0.11 / 0.22 measured)."""
    import warnings

    from svrt.runtime.solver import SVMOMFBD, load_solver_engine

    engine = load_solver_engine(method="momfbd")   # the default forward model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = SVMOMFBD(engine, SolverConfig(progress=False)).solve(burst64)
    restored, average = _score(burst64, result.objects), _score(burst64, result.frame_average)
    assert result.header["FIT_MODES_USED"] == 14
    # the margin: half the frame average's NMSE (measured 0.11 / 0.22 against 0.55 / 0.77)
    assert all(r < 0.5 * a for r, a in zip(restored, average)), (restored, average)
    assert result.header["QUALITY"] == "ok" and result.quality.label == "ok"
    for key in ("QCHI2", "QCHI2AVG", "QNOISE", "QGAIN", "QWFEXC"):
        assert isinstance(result.header[key], float), key
    assert result.header["QCHI2"] < result.header["QCHI2AVG"]
    assert result.quality.summary().startswith("quality ok (chi2 ")
    assert not [w for w in caught if "over-restored" in str(w.message)]


def test_time_budget_that_cuts_the_object_solve_is_not_converged_and_warned(burst64):
    from svrt.checks import SvrtWarning
    from svrt.runtime.solver import SVMOMFBD, load_solver_engine

    engine = load_solver_engine(method="momfbd")   # the default forward model
    cfg = SolverConfig(progress=False, time_budget=1e-3, patch_iterations=2)
    with pytest.warns(SvrtWarning, match="--time-budget"):
        result = SVMOMFBD(engine, cfg).solve(burst64)
    assert result.header["QUALITY"] == "not-converged"
    np.testing.assert_allclose(result.objects_unfiltered, result.frame_average, rtol=1e-4)
    strict = SVMOMFBD(engine, SolverConfig(progress=False, time_budget=1e-3, patch_iterations=2, strict=True))
    error_of(lambda: strict.solve(burst64), "--strict", "--time-budget", "nothing was written")
