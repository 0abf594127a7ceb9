"""Tests of svrt.optics.overlap_add: partition of unity, invariant limit, convergence to Eq. 1."""

import math

import pytest
import torch

from svrt.errors import SvrtError
from svrt.optics.convolution import fft_convolve, spatially_variant_convolve
from svrt.optics.overlap_add import overlap_add_convolve, overlap_add_flops
from svrt.optics.psf import PSFModel
from svrt.windows import axis_tiling, tile_weights

N_MODES = 10


@pytest.fixture(scope="module")
def psf_model():
    # a small PSF (pupil of ~11 px in a 32 px field, 15 px cut-out) keeps the exact method fast
    return PSFModel("crisp8542", N_MODES, field=32, psf_size=15)


def nmse(a, ref):
    return float(((a - ref) ** 2).mean() / ((ref - ref.mean()) ** 2).mean())


def smooth_field(size, seed=0, scale=0.8):
    """Per-pixel coefficients [M, Y, X] varying smoothly (a few radians of defocus and coma across the field)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    base = torch.randn(N_MODES, generator=g) * 0.2
    coef = base[:, None, None] * (1 + 0.5 * torch.sin(2.0 * yy + 1.3 * xx))
    coef[2] += scale * torch.exp(-((yy - 0.2) ** 2 + (xx + 0.1) ** 2) / 0.3)   # defocus bump
    coef[5] += 0.5 * scale * xx                                                # coma gradient
    return coef


@pytest.mark.parametrize("shape,patch,overlap", [((64, 64), 16, 8), ((70, 53), 20, 6), ((33, 100), 64, 32),
                                                 ((40, 40), 16, 0), ((17, 17), 2, 1)])
def test_weights_are_a_partition_of_unity(shape, patch, overlap):
    w = tile_weights(shape, patch, overlap)
    assert w.min() >= 0
    assert torch.allclose(w.sum(dim=(0, 1)), torch.ones(shape, dtype=w.dtype), atol=1e-12)
    # every tile's extent is about the patch: spacing + transition
    for n in shape:
        ax = axis_tiling(n, patch, overlap)
        assert ax.length <= n
        assert ax.length <= math.ceil(n / ax.count + ax.transition) + 2


@pytest.mark.parametrize("blend", ["output", "object"])
def test_invariant_field_equals_fft_convolution(psf_model, blend):
    g = torch.Generator().manual_seed(1)
    obj = torch.rand(2, 48, 48, generator=g)
    a = torch.randn(N_MODES, generator=g) * 0.4
    coef = a[:, None, None].expand(N_MODES, 48, 48).contiguous()
    ref = fft_convolve(obj, psf_model(a), boundary="zero")
    out = overlap_add_convolve(obj, coef, psf_model, patch=16, overlap=8, blend=blend)
    assert out.shape == obj.shape
    # with zero boundaries the blend of identical tiles is the convolution everywhere, borders included
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))


def test_invariant_field_reflect_boundary_away_from_borders(psf_model):
    g = torch.Generator().manual_seed(2)
    obj = torch.rand(48, 48, generator=g)
    a = torch.randn(N_MODES, generator=g) * 0.4
    coef = a[:, None, None].expand(N_MODES, 48, 48).contiguous()
    ref = fft_convolve(obj, psf_model(a), boundary="zero")
    out = overlap_add_convolve(obj, coef, psf_model, patch=16, boundary="reflect")
    m = psf_model.psf_size // 2 + 1
    assert out.shape == (48, 48)
    assert torch.allclose(out[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-5 * float(ref.abs().max()))


def test_approaches_exact_as_patches_shrink(psf_model):
    size = 48
    g = torch.Generator().manual_seed(3)
    obj = torch.rand(1, size, size, generator=g)
    coef = smooth_field(size)
    exact = spatially_variant_convolve(obj, coef, psf_model)
    errors = {p: nmse(overlap_add_convolve(obj, coef, psf_model, patch=p), exact) for p in (32, 8)}
    # measured: NMSE 8.2e-3 with 32-pixel tiles, 2.5e-4 with 8-pixel tiles (the object blend, whose
    # PSF belongs to the input pixel, levels off near 7e-3: it converges to a different operator)
    assert errors[8] < errors[32] / 10
    assert errors[8] < 1e-3
    # one-pixel tiles (patch 2, transitions of 1 pixel) are the per-pixel method itself
    single = overlap_add_convolve(obj, coef, psf_model, patch=2, overlap=1)
    assert torch.allclose(single, exact, atol=1e-5 * float(exact.abs().max()))


def test_errors_and_flop_count(psf_model):
    obj = torch.rand(32, 32)
    coef = torch.zeros(N_MODES, 32, 32)
    with pytest.raises(SvrtError):
        overlap_add_convolve(obj, coef, psf_model, patch=16, overlap=10)
    with pytest.raises(SvrtError):
        overlap_add_convolve(obj, coef[:3], psf_model)
    with pytest.raises(SvrtError):
        overlap_add_convolve(obj, coef, psf_model, blend="object", boundary="reflect")
    small, large = (overlap_add_flops((s, s), 1, psf_model, patch=16) for s in (32, 64))
    assert large["tiles"] == 4 * small["tiles"]
    assert large["flops"] == pytest.approx(4 * small["flops"])
