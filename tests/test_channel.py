"""The channel (runtime/channel.py): the one home of a channel's wavefront ``alpha * ratio + diversity``, its PSFs,
OTFs and high-order attenuation, which the forward model, the patch problem and the momfbd preconditioner share."""

from __future__ import annotations

import pathlib

import pytest
import torch

from svrt.atmosphere import d_over_r0_at_wavelength
from svrt.errors import SvrtError
from svrt.instruments import get_instrument
from svrt.optics.diversity import diversity_coefficients
from svrt.optics.filters import frequency_radius
from svrt.optics.residual import fitting_error_otf
from svrt.runtime.channel import Channel, burst_channels, otf, wavelength_ratios
from svrt.runtime.forward_model import ForwardModel
from svrt.runtime.patch_mfbd import PatchProblem, patch_layout

ROOT = pathlib.Path(__file__).resolve().parents[1]
M = 44


def _diverse_channel(inst="crisp8542", ratio=0.8, waves=1.0):
    return Channel(get_instrument(inst), ratio, diversity_coefficients(waves, M))


def test_wavefront_is_ratio_times_alpha_plus_diversity_along_either_mode_axis():
    ch = _diverse_channel()
    alpha = torch.randn(3, M, 2, 2, generator=torch.Generator().manual_seed(1))
    delta = torch.as_tensor(diversity_coefficients(1.0, M), dtype=torch.float32)
    expected = alpha * 0.8 + delta[None, :, None, None]
    assert torch.equal(ch.wavefront(alpha, dim=1), expected)
    # the same rule with the modes last (the patch problem's layout)
    assert torch.equal(ch.wavefront(alpha.permute(0, 2, 3, 1)), expected.permute(0, 2, 3, 1))
    plain = Channel(get_instrument("crisp8542"), 0.5)
    assert torch.equal(plain.wavefront(alpha), alpha * 0.5)


def test_burst_channels_take_the_ratio_to_channel_0_and_the_known_defocus():
    from svrt.optics.diversity import DiversitySpec

    insts = [get_instrument("crisp8542"), get_instrument("crisp8542")]
    spec = DiversitySpec(partner=(0, 0), waves=(0.0, 1.5))
    chans = burst_channels(insts, spec, M)
    assert [c.ratio for c in chans] == wavelength_ratios(insts) == [1.0, 1.0]
    assert chans[0].diversity is None
    assert torch.equal(chans[1].diversity, torch.as_tensor(diversity_coefficients(1.5, M), dtype=torch.float32))
    assert burst_channels(chans) == chans                      # channels already built pass through


def test_forward_model_sees_the_channels_wavefront():
    ch = _diverse_channel()
    fm = ForwardModel(object(), "crisp8542", ch)
    a = torch.randn(4, M, 3, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fm._modes(a, [1, 3]), ch.wavefront(a[[1, 3]], dim=1))
    # a number is the ratio of a channel without diversity (scripts' older calls)
    assert torch.equal(ForwardModel(object(), "crisp8542", 0.5)._modes(a, [0]), a[[0]] * 0.5)


def test_patch_problem_otfs_are_the_channels():
    ch = _diverse_channel(ratio=1.0)
    frames = 1.0 + 0.01 * torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(3))
    layout = patch_layout((64, 64), (1, 1), 64)
    problem = PatchProblem(frames, [ch], M, layout, torch.tensor([1e-4]))
    alpha = 0.3 * torch.randn(2, 1, 1, M, generator=torch.Generator().manual_seed(4))
    assert torch.equal(problem.otfs(alpha, 0), ch.patch_otf(alpha, M, 64, frames.device))
    psf = ch.psf_model(M, 64, "cpu")(ch.wavefront(alpha))
    assert torch.equal(problem.otfs(alpha, 0), otf(psf))


def test_field_otf_is_the_patch_otf_on_the_full_grid_and_passes_the_mean():
    ch = _diverse_channel(ratio=1.0)
    alpha = 0.3 * torch.randn(2, M, generator=torch.Generator().manual_seed(5))
    full = ch.field_otf(alpha, M, 48, (48, 48), "cpu")
    half = ch.patch_otf(alpha, M, 48, "cpu")
    assert full.shape == (2, 48, 48)
    assert torch.allclose(full[..., :25], half, atol=1e-6)
    assert torch.allclose(full[:, 0, 0].real, torch.ones(2), atol=1e-5)      # PSFs of unit sum
    # on a larger field: zero-padded PSF, same DC and the attenuation multiplies
    att = torch.full((80, 96), 0.5)
    big = ch.field_otf(alpha, M, 48, (80, 96), "cpu", attenuation=att)
    assert torch.allclose(big[:, 0, 0].real, 0.5 * torch.ones(2), atol=1e-5)


def test_attenuation_scales_d_over_r0_to_the_channels_wavelength():
    inst = get_instrument("crisp8542")
    nu = frequency_radius((32, 32), real=True)
    same = Channel(inst, 1.0).attenuation(nu, 12.0, 35)
    assert torch.equal(same, fitting_error_otf(nu / inst.cutoff_cycles_per_pixel, 12.0, 35))
    blue = Channel(inst, 1.5).attenuation(nu, 12.0, 35)
    d = d_over_r0_at_wavelength(12.0, 1.5)
    assert d > 12.0
    assert torch.equal(blue, fitting_error_otf(nu / inst.cutoff_cycles_per_pixel, d, 35))
    assert float(blue.min()) < float(same.min())        # a shorter wavelength sees more residual


def test_channel_without_instrument_has_no_psfs():
    with pytest.raises(SvrtError, match="no instrument"):
        Channel(None, 1.0).psf(torch.zeros(1, M), M, 32, "cpu")


def test_one_home_for_the_channel_wavefront():
    """The wavelength ratio and the diversity offset are computed in runtime/channel.py only (they were copied in
    the forward model, the patch problem, the preconditioner and the problem)."""
    offenders = []
    for path in sorted((ROOT / "runtime").glob("*.py")):
        if path.name == "channel.py":
            continue
        text = path.read_text()
        for needle in ("wavelength_angstrom /", "diversity.to(", "self.offsets"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []
