"""The metric functions of the engine diagnosis (benchmarks/engine_diagnosis.py): each measures what it says."""

import math

import numpy as np
import pytest
import torch

from svrt.benchmarks.engine_diagnosis import (
    BANDS,
    band_error_ratios,
    band_key,
    gradient_agreement,
    linearity_error,
    otf_ratio,
)
from svrt.errors import SvrtError
from svrt.optics.convolution import fft_convolve

CUTOFF = 0.334  # CRISP 8542, cycles per pixel


def _image(seed: int = 0, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 0.1 * torch.randn(n, n, generator=g, dtype=torch.float64)


def _psf(n: int = 9) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    p = torch.exp(-(x ** 2 + 0.5 * y ** 2) / 4.0).double()
    return p / p.sum()


def test_band_ratio_of_identical_images_is_zero():
    img = _image()
    ratios = band_error_ratios(img, img, CUTOFF)
    assert set(ratios) == {band_key(b) for b in BANDS}
    assert all(v == 0.0 for v in ratios.values())


def test_band_ratio_of_a_contrast_error_is_its_square_in_every_band():
    """e = r + 0.1 (r - <r>): the error is 0.1 times the signal at every non-zero frequency."""
    r = _image()
    e = r + 0.1 * (r - r.mean())
    for v in band_error_ratios(e, r, CUTOFF).values():
        assert v == pytest.approx(0.01, rel=1e-9)


def test_band_ratio_sees_only_the_band_of_the_error():
    """An error that is a pure sinusoid at 0.8 of the cutoff shows in band 0.6-0.9 and (Hann leakage
    aside) not at the lowest frequencies."""
    r = _image()
    n = r.shape[-1]
    k = round(0.8 * CUTOFF * n)                      # cycles across the image
    x = torch.arange(n, dtype=torch.float64)
    e = r + 0.05 * torch.cos(2 * math.pi * k * x / n)[None, :]
    ratios = band_error_ratios(e, r, CUTOFF)
    assert ratios["0.6-0.9"] > 1e3 * ratios["0-0.3"]


def test_band_ratio_refuses_mismatched_shapes():
    with pytest.raises(SvrtError, match="one shape"):
        band_error_ratios(np.zeros((8, 8)), np.zeros((8, 9)), CUTOFF)


def test_linearity_of_a_convolution_is_at_rounding_level():
    psf = _psf().float()
    o1, o2 = _image(1).float(), _image(2).float() - 1.0

    def f(o):
        return fft_convolve(o, psf)

    for a, b in ((1.0, 0.01), (0.7, 0.3), (1.0, 1.0)):
        lin = linearity_error(f, o1, o2, a, b)
        assert lin["relative_to_output"] < 1e-6                    # float32 rounding
        lin64 = linearity_error(lambda o: fft_convolve(o, psf.double()), o1.double(), o2.double(), a, b)
        assert lin64["relative_to_update"] < 1e-10


def test_linearity_flags_a_nonlinear_model():
    o1, o2 = _image(1), _image(2) - 1.0
    lin = linearity_error(lambda o: o * o, o1, o2, 1.0, 0.1)
    assert lin["relative_to_output"] > 1e-3
    assert lin["relative_to_update"] > 0.5      # the cross term 2 b o1 o2 is as large as the update itself


def test_gradient_agreement():
    g = torch.randn(3, 44, 4, 4, generator=torch.Generator().manual_seed(3))
    same = gradient_agreement(g, g)
    assert same["cosine"] == pytest.approx(1.0) and same["relative_error"] == 0.0
    flipped = gradient_agreement(-g, g)
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["relative_error"] == pytest.approx(2.0)
    double = gradient_agreement(2 * g, g)
    assert double["cosine"] == pytest.approx(1.0) and double["norm_ratio"] == pytest.approx(2.0)


def test_otf_ratio_is_one_for_identical_images_and_the_gain_of_a_scaled_one():
    img = fft_convolve(_image(4), _psf())
    nu, same = otf_ratio(img, img, CUTOFF)
    assert np.allclose(same, 1.0)
    assert nu[0] > 0 and nu[-1] == pytest.approx(0.5 / CUTOFF)
    _, gain = otf_ratio(2 * (img - img.mean()) + img.mean(), img, CUTOFF)
    assert np.allclose(gain, 2.0)
