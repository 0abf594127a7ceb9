"""Phase diversity: units, the burst cards, the simulated diversity channel and the solver's use of it."""

import math

import numpy as np
import pytest
import torch

from svrt.errors import SvrtError
from svrt.optics.diversity import (
    DiversitySpec,
    defocus_phase,
    defocus_rms_rad,
    diversity_coefficients,
    read_diversity,
    waves_from_focus_shift,
)


def test_units_follow_the_peak_to_valley_convention():
    # one wave P-V of Noll's Z4 (P-V = 2 sqrt(3) a4) is a4 = pi / sqrt(3) rad RMS
    assert defocus_rms_rad(1.0) == pytest.approx(math.pi / math.sqrt(3.0))
    # a focus shift of 8 F^2 lambda is one wave P-V
    f_number, lam = 42.0, 6302.0
    assert waves_from_focus_shift(8 * f_number ** 2 * lam * 1e-10 * 1e3, f_number, lam) == pytest.approx(1.0)
    with pytest.raises(SvrtError, match="f-number"):
        waves_from_focus_shift(1.0, 0.0, lam)


def test_kl_coefficients_reproduce_the_exact_defocus_on_the_pupil():
    from svrt.optics.kl import kl_basis

    n = 201
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    inside = np.hypot(x, y) <= 1.0
    x, y = x[inside], y[inside]
    exact = defocus_phase(1.0, x, y, 2.0)                           # a pupil of diameter 2 (unit radius)
    kl = diversity_coefficients(1.0, 44) @ kl_basis(44).evaluate(np.hypot(x, y), np.arctan2(y, x))
    a4 = defocus_rms_rad(1.0)
    assert np.sqrt(np.mean(exact ** 2)) == pytest.approx(a4, rel=0.01)
    # 44 KL modes hold 99.97 % of Z4's variance: the residual is 1.8 % of the defocus RMS (spherical terms)
    assert np.sqrt(np.mean((kl - exact) ** 2)) < 0.025 * a4


def test_cards_are_read_and_every_inconsistency_is_one_sentence():
    inst = ["crisp6302", "crisp6302"]
    assert read_diversity({"TELESCOP": "SST"}, inst) is None
    spec = read_diversity({"DIVERS1": 1.2, "DIVOBJ1": 0}, inst)
    assert spec == DiversitySpec(partner=(0, 0), waves=(0.0, 1.2))
    assert spec.active and spec.anchors == [0] and spec.owner == [0, 0] and spec.groups == [[0, 1]]
    assert spec.coefficients(44)[0] is None and spec.coefficients(44)[1].shape == (44,)
    # mm at the focal plane with the f-number
    mm = 8 * 42.0 ** 2 * 6302e-10 * 1e3
    assert read_diversity({"DIVMM1": mm, "FNUMBER": 42.0, "DIVOBJ1": 0}, inst).waves[1] == pytest.approx(1.0)
    bad = [({"DIVERS1": 1.0}, "no DIVOBJ1"),
           ({"DIVERS1": 1.0, "DIVMM1": 2.0, "DIVOBJ1": 0}, "both"),
           ({"DIVMM1": 2.0, "DIVOBJ1": 0}, "FNUMBER"),
           ({"DIVERS1": 150.0, "DIVOBJ1": 0}, "units"),
           ({"DIVERS1": 1.0, "DIVOBJ1": 5}, "channel index"),
           ({"DIVERS1": "one", "DIVOBJ1": 0}, "finite number")]
    for cards, words in bad:
        with pytest.raises(SvrtError, match=words):
            read_diversity(cards, inst)
    with pytest.raises(SvrtError, match="different instruments"):
        read_diversity({"DIVERS1": 1.0, "DIVOBJ1": 0}, ["crisp6302", "crisp8542"])
    with pytest.raises(SvrtError, match="itself points"):
        read_diversity({"DIVERS1": 1.0, "DIVOBJ1": 0, "DIVOBJ0": 2}, inst + ["crisp6302"])


@pytest.fixture(scope="module")
def pd_burst():
    from svrt.simulate import simulate_burst

    torch.set_num_threads(1)
    # isoplanatic KL wavefronts: grid 0 (one wavefront per frame) is the exact model
    return simulate_burst("crisp8542", size=64, n_frames=3, n_objects=1, seed=3, r0_cm=10.0, theta0_arcsec=None,
                          noise=0.005, wavefront="kl", diversity=1.0, progress=False)


def test_simulated_diversity_channel(pd_burst, tmp_path):
    from svrt.fileio import read_burst, write_burst
    from svrt.simulate import simulate_burst

    b = pd_burst
    assert b.frames.shape == (2, 3, 64, 64)
    assert b.header["DIVERS1"] == 1.0 and b.header["DIVOBJ1"] == 0
    np.testing.assert_array_equal(b.truth[1], b.truth[0])
    # the focused channel is the burst without diversity, bit for bit (the diversity noise is drawn after)
    plain = simulate_burst("crisp8542", size=64, n_frames=3, n_objects=1, seed=3, r0_cm=10.0, theta0_arcsec=None,
                           noise=0.005, wavefront="kl", progress=False)
    np.testing.assert_array_equal(b.frames[:1], plain.frames)
    # the defocused channel is blurrier: lower RMS contrast in every frame
    c = b.frames.std(axis=(2, 3)) / b.frames.mean(axis=(2, 3))
    assert (c[1] < 0.9 * c[0]).all()
    # the cards travel with the file
    write_burst(tmp_path / "pd.fits", b)
    back = read_burst(tmp_path / "pd.fits")
    assert read_diversity(back.header, back.instruments).groups == [[0, 1]]


def _patch_problem(burst, channels, diversity):
    from svrt.instruments import get_instrument
    from svrt.runtime.patch_mfbd import PatchProblem, patch_layout

    frames = torch.as_tensor(burst.frames[channels])
    frames = frames / frames.mean(dim=(1, 2, 3), keepdim=True)
    insts = [get_instrument(burst.instruments[i]) for i in channels]
    layout = patch_layout((64, 64), (1, 1), 64)
    problem = PatchProblem(frames, insts, 44, layout, torch.full((len(channels),), 2.5e-5), diversity=diversity)
    true = torch.as_tensor(burst.modes).permute(0, 2, 3, 1)                       # [L, 1, 1, M]
    problem.refit_object_power(true)
    return problem, true


def test_diversity_breaks_the_sign_ambiguity_of_the_even_modes(pd_burst):
    """A focused channel alone cannot tell a wavefront from its point reflection with the sign of the even
    modes flipped (nearly the same MTF); the known defocus of a second channel can (Paxman et al. 1992)."""
    from svrt.optics.kl import kl_basis
    from svrt.optics.zernike import noll_to_nm

    coeffs = kl_basis(44).coefficients
    even = torch.tensor([noll_to_nm(int(np.argmax(np.abs(c))) + 2)[0] % 2 == 0 for c in coeffs])
    spec = read_diversity(pd_burst.header, pd_burst.instruments)
    with torch.no_grad():
        focus, true = _patch_problem(pd_burst, [0], None)
        flipped = torch.where(even, -true, true)
        gap_focus = float(focus.metric(flipped) - focus.metric(true))
        pd, _ = _patch_problem(pd_burst, [0, 1], spec)
        gap_pd = float(pd.metric(flipped) - pd.metric(true))
    assert gap_pd > 0
    assert gap_pd > 20 * abs(gap_focus)


def test_solver_ties_the_channels_and_finds_the_wavefronts(pd_burst):
    from svrt.benchmarks.diversity import focused_only, wavefront_rms
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

    engine = load_solver_engine(None, backend="psf-interpolation")
    cfg = SolverConfig(grid=0, fit_modes=9, patch_iterations=15, object_iterations=10, progress=False)
    pd = SVMOMFBD(engine, cfg).solve(pd_burst)
    focus = SVMOMFBD(engine, cfg).solve(focused_only(pd_burst))
    assert pd.objects.shape == (2, 64, 64) and pd.header["DIVERSITY"] is True
    # one object, written in each channel's photometric units
    ratio = pd.objects[1] / pd.objects[0]
    assert np.allclose(ratio, ratio.mean(), rtol=1e-4)
    err_pd = wavefront_rms(pd.modes, pd_burst.modes, (64, 64), (2, 9))
    err_focus = wavefront_rms(focus.modes, pd_burst.modes, (64, 64), (2, 9))
    true_rms = wavefront_rms(0 * pd_burst.modes, pd_burst.modes, (64, 64), (2, 9))
    # a 64^2 patch with a 56-pixel PSF is dominated by edge effects, so the bar is relative: diversity must at
    # least halve the focused channel's error (which flips the sign of the even modes) and beat zero wavefronts
    assert err_pd < 0.5 * err_focus and err_pd < true_rms


def test_adam_refuses_diversity(pd_burst):
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

    engine = load_solver_engine(None, backend="psf-interpolation")
    with pytest.raises(SvrtError, match="phase diversity"):
        SVMOMFBD(engine, SolverConfig(method="adam", iterations=1, progress=False)).solve(pd_burst)
