"""PSF interpolation between grid nodes: exact where the PSF is constant, close to Eq. 1 where it varies."""

import pytest
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.mode_grid import bilinear_weights
from svrt.optics.convolution import fft_convolve, spatially_variant_convolve
from svrt.optics.psf import PSFModel
from svrt.optics.psf_interpolation import interpolated_psf_convolve


@pytest.fixture(scope="module")
def psf_model():
    return PSFModel("crisp8542", psf_size=24, min_pupil_px=16)


@pytest.mark.parametrize("n, g", [(37, 5), (29, 3), (16, 1), (12, 12)])
def test_weights_are_those_of_bilinear_interpolate(n, g):
    grid = torch.randn(1, 1, g, 1, dtype=torch.float64)
    w = bilinear_weights(n, g, dtype=torch.float64)
    ref = F.interpolate(grid, size=(n, 1), mode="bilinear", align_corners=False)[0, 0, :, 0]
    assert torch.allclose(w @ grid[0, 0, :, 0], ref, atol=1e-12)
    assert torch.allclose(w.sum(1), torch.ones(n, dtype=torch.float64))


def test_constant_modes_equal_the_fft_convolution(psf_model):
    torch.manual_seed(0)
    obj = torch.rand(2, 40, 33)
    a = torch.randn(44) * 0.3
    coarse = a[None, :, None, None].expand(2, 44, 3, 4).contiguous()
    # float32 FFTs of ~60^2 patches: ~1e-6 relative rounding
    assert torch.allclose(interpolated_psf_convolve(obj, coarse, psf_model), fft_convolve(obj, psf_model(a)), atol=2e-6)


def test_varying_field_is_close_to_the_exact_per_pixel_convolution(psf_model):
    torch.manual_seed(1)
    obj = torch.rand(1, 40, 40) + 0.5
    coarse = torch.randn(1, 44, 4, 4) * 0.1
    coarse[:, 2] += torch.linspace(-1.0, 1.0, 4)[None, :, None]       # defocus ramp of 2 rad across the field
    per_pixel = F.interpolate(coarse, size=(40, 40), mode="bilinear", align_corners=False)[0]
    exact = spatially_variant_convolve(obj, per_pixel, psf_model)
    interp = interpolated_psf_convolve(obj, coarse, psf_model)
    invariant = fft_convolve(obj, psf_model(coarse.mean(dim=(-2, -1))[0]))

    def nmse(a):
        return float(((a - exact) ** 2).sum() / (exact ** 2).sum())

    # interpolating PSFs errs only by the PSF's curvature in the modes within a cell (second order),
    # while one PSF for the whole field errs at first order: expect an order of magnitude between them
    assert nmse(interp) < 0.1 * nmse(invariant)
    assert nmse(interp) < 1e-3


def test_gradients_match_finite_differences():
    pm = PSFModel("crisp8542", n_modes=5, psf_size=8, min_pupil_px=8, dtype=torch.float64)
    torch.manual_seed(2)
    obj = torch.rand(1, 10, 9, dtype=torch.float64, requires_grad=True)
    coarse = (torch.randn(1, 5, 2, 2, dtype=torch.float64) * 0.3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o, c: interpolated_psf_convolve(o, c, pm), (obj, coarse), atol=1e-6)


def test_bad_shapes(psf_model):
    with pytest.raises(SvrtError, match="modes have 3"):
        interpolated_psf_convolve(torch.rand(1, 16, 16), torch.zeros(1, 3, 2, 2), psf_model)
    with pytest.raises(SvrtError, match="finer than"):
        interpolated_psf_convolve(torch.rand(1, 4, 4), torch.zeros(1, 44, 8, 8), psf_model)
