"""svrt.metrics.score_restoration, the one score of DESIGN.md: what it must and must not count."""

import numpy as np
import pytest
from shifted import fourier_shift

from svrt.metrics import compare, diffraction_limited, nmse_variance, score_restoration
from svrt.scenes import make_scene

N = 128
CUT = 0.3349  # CRISP 8542: D/lambda in cycles per pixel (0.059" / (8542 A / 1 m))


@pytest.fixture(scope="module")
def truth():
    return make_scene("granulation", N, 0.059, 5).astype(np.float64)


def gaussian_blur(img, sigma_px):
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2 * (np.pi * sigma_px) ** 2 * (ky ** 2 + kx ** 2))).real


def test_identical_scores_zero_and_unit_ratios(truth):
    s = score_restoration(truth, truth, CUT)
    assert s["nmse_variance"] == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in s["power_ratio"].values())
    assert s["shift_px"] == pytest.approx([0.0, 0.0], abs=1e-3)
    assert s["contrast"] == pytest.approx(s["contrast_truth"])
    assert s["border_px"] == N // 8
    assert set(s["power_ratio"]) == {"0.05-0.3", "0.3-0.6", "0.6-0.9"}


def test_known_subpixel_shift_is_removed(truth):
    """A (1.4, -0.6) px move: measured and undone; without registration the NMSE would be ~0.5."""
    moved = fourier_shift(truth, 1.4, -0.6)
    s = score_restoration(moved, truth, CUT)
    assert s["shift_px"] == pytest.approx([1.4, -0.6], abs=0.05)
    assert s["nmse_variance"] < 0.01
    unregistered = nmse_variance(diffraction_limited(moved, CUT), diffraction_limited(truth, CUT), margin=N // 8)
    assert unregistered > 20 * s["nmse_variance"]


def test_blur_lowers_mid_and_high_band_power(truth):
    s = score_restoration(gaussian_blur(truth, 1.5), truth, CUT)
    low, mid, high = (s["power_ratio"][k] for k in ("0.05-0.3", "0.3-0.6", "0.6-0.9"))
    assert mid < 0.8 and high < mid and low > mid
    assert s["contrast"] < s["contrast_truth"]
    assert s["nmse_variance"] > 0.05


def test_mean_scaled_copy_scores_zero(truth):
    s = score_restoration(3.7 * truth, truth, CUT)
    assert s["nmse_variance"] == pytest.approx(0.0, abs=1e-12)
    assert s["scale"] == pytest.approx(1 / 3.7)


def test_noise_beyond_the_cutoff_does_not_count(truth):
    """White noise with all its power above 1.1 D/lambda (the score low-passes at 0.9): no effect; the
    same noise inside the band is heavily penalised."""
    rng = np.random.default_rng(0)
    white = np.fft.fft2(rng.standard_normal(truth.shape) * truth.std())
    ky = np.fft.fftfreq(N)[:, None]
    kx = np.fft.fftfreq(N)[None]
    nu = np.hypot(ky, kx) / CUT
    high = np.fft.ifft2(white * (nu > 1.1)).real
    inband = np.fft.ifft2(white * ((nu > 0.3) & (nu < 0.6))).real
    assert score_restoration(truth + high, truth, CUT)["nmse_variance"] < 1e-5
    assert score_restoration(truth + inband, truth, CUT)["nmse_variance"] > 0.05


def test_destretch_option_reports_extra_figures(truth):
    s = score_restoration(fourier_shift(truth, 0.5, 0.5), truth, CUT, destretch=True)
    assert s["nmse_variance_destretched"] <= s["nmse_variance"] + 1e-3
    assert s["destretch_rms_px"] >= 0


def test_shape_mismatch_is_one_sentence(truth):
    with pytest.raises(ValueError, match="same shape"):
        score_restoration(truth[:64], truth, CUT)


def test_existing_functions_still_work(truth):
    out = compare(truth[None], {"copy": truth[None]}, CUT)
    assert float(out["copy"]["nmse_variance"][0]) == pytest.approx(0.0, abs=1e-12)
