"""The stages of method momfbd: patch wavefronts, the object's power spectrum, the object solve, and the
fitting error of the unmodelled high orders. Each against an exact reference or published numbers."""

import math

import numpy as np
import pytest
import torch

from svrt.errors import SvrtError
from svrt.instruments import get_instrument
from svrt.optics.kl import kl_residual_variances
from svrt.optics.psf import PSFModel
from svrt.optics.residual import estimate_d_over_r0, fitting_error_otf, fitting_error_variance
from svrt.runtime.channel import otf
from svrt.runtime.object_prior import PowerLaw, fit_object_power, prior_weights
from svrt.runtime.object_solve import fourier_precondition, prior_value, solve_objects
from svrt.runtime.patch_mfbd import PatchProblem, patch_layout, patch_wavefronts
from svrt.windows import modified_hann

# ------------------------------------------------------------------------------------- fitting error

def test_fitting_error_variance_is_nolls_residual():
    # sigma^2 = Delta_M (D/r0)^(5/3); Noll's large-J approximation 0.2944 J^(-sqrt(3)/2) for Zernikes is an
    # upper bound for KL (KL is optimal); at J = 45 they agree within ~15 %
    s2 = fitting_error_variance(1.0, 44)
    assert s2 == pytest.approx(float(kl_residual_variances(44)[44]))
    noll = 0.2944 * 45 ** (-math.sqrt(3) / 2)
    assert 0.8 * noll < s2 <= 1.05 * noll
    assert fitting_error_variance(10.0, 44) == pytest.approx(s2 * 10 ** (5 / 3))


def test_fitting_error_otf_limits():
    nu = torch.tensor([0.0, 1e-4, 0.5, 0.99])
    a = fitting_error_otf(nu, 7.7, 44)
    s2 = fitting_error_variance(7.7, 44)
    assert float(a[0]) == 1.0 and float(a[1]) > 0.999            # the lowest frequencies are untouched
    assert float(a[2]) == pytest.approx(math.exp(-s2), rel=1e-6)   # the halo lowers the rest by exp(-sigma^2)
    assert torch.all(a[1:] <= a[:-1])                              # monotonic


def test_estimate_d_over_r0_from_kolmogorov_draws():
    from svrt.atmosphere import kolmogorov_coefficients

    inst = get_instrument("crisp8542")
    coef = kolmogorov_coefficients(inst, 10.0, 44, size=4000, rng=np.random.default_rng(1))    # [N, M]
    truth = inst.diameter_cm / (10.0 * (inst.wavelength_angstrom / 5000.0) ** 1.2)
    est = estimate_d_over_r0(torch.as_tensor(coef)[..., None, None])
    # 4000 draws of 22 modes: the mean square is known to ~0.3 %; (.)^0.6 keeps it well under 2 %
    assert est == pytest.approx(truth, rel=0.02)


def test_kolmogorov_precision_from_kolmogorov_draws():
    """The prior of the modes already fitted: on Kolmogorov draws of known r0 it is ``1 / (c_j (D/r0)^(5/3))``
    for every mode, tip and tilt free; each step's group at its own scale, so an AO-like correction of the
    low orders (their RMS / 5) makes their prior 25x stronger and leaves the others' alone."""
    from svrt.atmosphere import kl_standard_deviations, kolmogorov_coefficients
    from svrt.runtime.patch_mfbd import kolmogorov_precision, mode_groups

    inst = get_instrument("crisp8542")
    coef = torch.as_tensor(kolmogorov_coefficients(inst, 7.0, 44, size=(2000, 2, 2), rng=np.random.default_rng(2)))
    truth = 1.0 / torch.as_tensor(kl_standard_deviations(inst, 7.0, 44), dtype=torch.float64) ** 2
    groups = mode_groups(20)
    assert groups == [(0, 2), (2, 5), (5, 9), (9, 14), (14, 20)]
    got = kolmogorov_precision(coef, groups).double()                     # [L, Yg, Xg, M]
    # 8000 draws of >= 3 modes per group: each group's mean square is known to sqrt(2 / 24000) ~ 0.9 %;
    # 4 % is over four sigma
    assert got[2:20].numpy() == pytest.approx(truth[2:20].numpy(), rel=0.04)
    assert float(got[:2].abs().sum()) == 0.0 and float(got[20:].abs().sum()) == 0.0
    corrected = coef.clone()
    corrected[..., :9] /= 5.0
    ao = kolmogorov_precision(corrected, groups).double()
    assert ao[2:9].numpy() == pytest.approx(25 * got[2:9].numpy(), rel=1e-5)
    assert ao[9:].numpy() == pytest.approx(got[9:].numpy(), rel=1e-5)
    assert torch.allclose(kolmogorov_precision(coef, groups, weight=2.5).double(), 2.5 * got, rtol=1e-6)
    assert kolmogorov_precision(coef, [(0, 2)]) is None                   # only tip-tilt fitted: no scale
    assert kolmogorov_precision(torch.zeros(4, 44), groups) is None        # nothing fitted: no prior, not infinite


def test_mode_prior_adds_minus_its_log_per_frequency():
    """With a mode prior the patch metric is the marginal likelihood's plus ``sum alpha^2 precision / 2``
    over the same count of frequencies: the negative log posterior (MAP)."""
    g = torch.Generator().manual_seed(4)
    inst = get_instrument("crisp8542")
    frames = 1 + 0.1 * torch.randn(1, 3, 64, 64, generator=g)
    problem = PatchProblem(frames, [inst], 44, patch_layout((64, 64), (1, 1), 64), torch.tensor([1e-4]))
    alpha = 0.3 * torch.randn(3, 1, 1, 44, generator=g)
    problem.refit_object_power(alpha)
    bare = float(problem.metric(alpha))
    precision = torch.linspace(0.0, 50.0, 44)
    problem.set_mode_prior(precision)
    expected = bare + 0.5 * float((alpha.pow(2) * precision).sum()) / problem.count[0]
    assert float(problem.metric(alpha)) == pytest.approx(expected, rel=1e-6)
    problem.set_mode_prior(None)
    assert float(problem.metric(alpha)) == pytest.approx(bare, rel=1e-7)


# ------------------------------------------------------------------------------------- object prior

def test_power_law_fit_recovers_slope_and_amplitude():
    s, cutoff, slope, amp, noise = 64, 0.33, 3.0, 1e-4, 1e-6
    from svrt.optics.filters import frequency_radius

    nu = frequency_radius((s, s), real=True)
    win_power = 1000.0
    mtf2 = torch.exp(-(nu / 0.2) ** 2)[None]                       # any MTF^2
    truth = PowerLaw(amp, slope, 1.0 / s)
    frame_power = mtf2 * truth(nu) * win_power + noise * win_power
    law = fit_object_power(frame_power, mtf2, noise, win_power, cutoff)
    # rings of width 1/S average a convex power law over +-0.5/S: at the innermost rings used (r = 3..4)
    # that raises the ring means by up to ~6 %, which tilts the fitted slope by a few hundredths
    assert law.slope == pytest.approx(slope, abs=0.1)
    assert law(torch.tensor(0.1)) == pytest.approx(float(truth(torch.tensor(0.1))), rel=0.1)
    r = prior_weights((32, 32), law)
    assert float(r[0, 0]) == 0.0 and float(r[0, 1]) > 0


# ------------------------------------------------------------------------------------- object solve

def _circular(o, t):
    return torch.fft.ifft2(torch.fft.fft2(o) * t).real


def test_conjugate_gradients_reach_the_wiener_solution():
    """Invariant, periodic deconvolution of 3 frames: the CG minimiser equals the closed-form Wiener
    estimate sum conj(S) D / (sum |S|^2 + s^2 R) (to 1e-4 of the object's RMS)."""
    g = torch.Generator().manual_seed(0)
    n, frames, s2 = 32, 3, 1e-4
    model = PSFModel("crisp8542", 44, psf_size=n)
    a = torch.randn(frames, 44, generator=g) * 0.3
    psf = model(a)                                                   # [L, n, n]
    t = torch.fft.fft2(torch.fft.ifftshift(psf, dim=(-2, -1)))      # [L, n, n]
    obj = 1 + 0.1 * torch.randn(n, n, generator=g)
    data = _circular(obj, t) + math.sqrt(s2) * torch.randn(frames, n, n, generator=g)
    from svrt.optics.filters import frequency_radius

    prior = (1.0 / PowerLaw(1e-3, 3.0, 1.0 / n)(frequency_radius((n, n)))).double()
    prior[0, 0] = 0.0
    w = 1.0 / s2

    def value_and_grad(o):
        oo = o.detach().requires_grad_(True)
        with torch.enable_grad():
            model_o = _circular(oo[0], t)
            val = w * (model_o - data).pow(2).sum()
            (gr,) = torch.autograd.grad(val, oo)
        return float(val), gr, model_o.detach()[None]

    den = 2 * (w * t.abs().pow(2).sum(0) + prior)[None]
    res = solve_objects(value_and_grad, lambda o: _circular(o[0], t)[None], data.mean(0)[None].double(),
                        prior[None], den, lambda r: float(w * r.pow(2).sum()), iterations=20, tolerance=1e-12)
    # closed form: minimiser of w |D - S O|^2 + R |O|^2 / N per frequency, with the FFT's normalisation
    d = torch.fft.fft2(data)
    wiener = torch.fft.ifft2((w * (t.conj() * d).sum(0)) / (w * t.abs().pow(2).sum(0) + prior)).real
    err = (res.objects[0] - wiener).pow(2).mean().sqrt() / obj.std()
    assert float(err) < 1e-4, (float(err), res.stop_reason, res.iterations)
    assert res.history[-1][0] <= res.history[0][0]


def test_prior_value_and_preconditioner_are_consistent():
    o = torch.randn(2, 8, 8, dtype=torch.float64)
    prior = torch.rand(2, 8, 8, dtype=torch.float64)
    # Parseval: a flat prior of 1 is sum o^2
    assert float(prior_value(o, torch.ones_like(prior))) == pytest.approx(float(o.pow(2).sum()), rel=1e-10)
    assert torch.allclose(fourier_precondition(o, torch.ones_like(prior)), o)


# ------------------------------------------------------------------------------------- patch wavefronts

def test_patch_layout_centres_and_clamps():
    lay = patch_layout((128, 128), (4, 4), 64)
    assert lay.size == 64 and lay.starts_y == (0, 16, 48, 64)    # nodes at 15.5, 47.5, 79.5, 111.5
    one = patch_layout((100, 120), (1, 1), 64)
    assert one.size == 100 and one.starts_y == (0,) and one.starts_x == (10,)
    w = modified_hann(32)
    assert float(w[16, 16]) == 1.0 and float(w[0, 0]) < 0.05


def test_patch_wavefronts_recover_the_psfs():
    """One isoplanatic patch, 4 frames convolved (periodically) with known wavefronts of 20 modes, 0.1 %
    noise: the fitted wavefronts lower the metric and give MTFs much closer to the frames' than the
    diffraction-limited start. (MOMFBD without phase diversity has local minima, and the apodised patch is
    not exactly a convolution at its edges, so the MTFs are recovered to ~15-25 %, not exactly; the sign of
    the even part of a wavefront is not observable, the MTF is.)"""
    g = torch.Generator().manual_seed(3)
    n, frames = 64, 4
    inst = get_instrument("crisp8542")
    model = PSFModel(inst, 44, psf_size=n)
    a = torch.zeros(frames, 44)
    a[:, :9] = torch.randn(frames, 9, generator=g) * 0.6
    a[:, :2] -= a[:, :2].mean(0)
    t = otf(model(a))
    from svrt.scenes import make_objects

    obj = torch.as_tensor(make_objects("granulation", 1, (n, n), inst.pixel_arcsec, 5)[0]).float()
    obj = obj / obj.mean()
    sigma = 1e-3
    data = torch.fft.irfft2(torch.fft.rfft2(obj) * t, s=(n, n)) + sigma * torch.randn(frames, n, n, generator=g)
    fitted, info = patch_wavefronts(data[None], [inst], 44, (1, 1), torch.tensor([sigma ** 2]), iterations=30,
                                    fit_modes=20)
    assert info["metric_end"] < info["metric_start"]
    from svrt.optics.filters import frequency_radius

    nu = frequency_radius((n, n), real=True)
    sel = (nu < 0.5 * inst.cutoff_cycles_per_pixel) & (nu > 0) & (t.abs().mean(0) > 0.05)

    def mtf_error(tt):
        return float((tt.abs() - t.abs()).abs()[:, sel].mean() / t.abs()[:, sel].mean())

    fit_err = mtf_error(otf(model(fitted[:, :, 0, 0])))
    start_err = mtf_error(otf(model(torch.zeros(frames, 44))))
    assert fit_err < 0.3 and fit_err < 0.25 * start_err, (fit_err, start_err)


def test_shared_wavefront_tiles_add_up_the_tiles_metrics():
    """A field seen as 2 x 2 tiles that share each frame's wavefront (``shared``, the whole-field fit of a
    large field): its metric is the mean of the four tiles' own one-patch metrics under the same object power,
    so the tiles add up the field's data, and the wavefronts are ``[L, 1, 1, M]`` (one OTF per frame)."""
    g = torch.Generator().manual_seed(1)
    inst = get_instrument("crisp8542")
    frames = 1 + 0.1 * torch.randn(1, 3, 128, 128, generator=g)
    noise = torch.tensor([1e-4])
    tiled = PatchProblem(frames, [inst], 44, patch_layout((128, 128), (2, 2), 64), noise)
    alpha = 0.3 * torch.randn(3, 1, 1, 44, generator=g)
    tiled.refit_object_power(alpha)
    parts = []
    for ty in (0, 64):
        for tx in (0, 64):
            one = PatchProblem(frames[..., ty:ty + 64, tx:tx + 64], [inst], 44, patch_layout((64, 64), (1, 1), 64),
                               noise)
            one.set_object_power(0, tiled.powers[0])
            parts.append(float(one.metric(alpha)))
    assert len(set(parts)) == 4                                          # four different tiles
    assert float(tiled.metric(alpha)) == pytest.approx(float(np.mean(parts)), rel=1e-5)
    fitted, info = patch_wavefronts(frames, [inst], 44, (2, 2), noise, patch_size=64, iterations=2, fit_modes=5,
                                    shared=True)
    assert fitted.shape == (3, 44, 1, 1) and info["patch_size"] == 64


def test_whole_field_tiles_only_beyond_the_tile_side():
    from svrt.runtime.solver_config import SolverConfig, whole_field_tiles

    cfg = SolverConfig()
    assert cfg.whole_field_tile == 256
    assert whole_field_tiles(cfg, (256, 256)) == (1, 1) and whole_field_tiles(cfg, (100, 256)) == (1, 1)
    assert whole_field_tiles(cfg, (1024, 1024)) == (4, 4) and whole_field_tiles(cfg, (200, 600)) == (1, 3)
    assert whole_field_tiles(SolverConfig(whole_field_tile=0), (1024, 1024)) == (1, 1)
    with pytest.raises(SvrtError, match="whole_field_tile = 8 is smaller than the smallest patch"):
        whole_field_tiles(SolverConfig(whole_field_tile=8), (1024, 1024))


# ------------------------------------------------------------------------------------- the whole method

@pytest.mark.parametrize("whole_field_tile, high_order, grid", [(256, "none", 32), (32, "kolmogorov", 16)])
def test_momfbd_default_restores_a_full_screen_burst(whole_field_tile, high_order, grid):
    """The defaults (method momfbd, exact optics) on a burst the solver's model did not make (full phase
    screens, Poisson noise): much closer to the truth than the frame average, with the stages and the
    stopping reason in the header; also with the whole-field wavefront fit as 2 x 2 tiles of 32 px sharing it
    (``whole_field_tile``, the path of fields beyond 256^2), there with the Kolmogorov high orders, whose object
    power is refitted on those tiles from the mean of 4 x 4 nodes' wavefronts. 64^2 x 4 frames, r0 = 15 cm:
    ~10 s on one core each."""
    from svrt.metrics import score_restoration
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    from svrt.simulate import simulate_burst

    burst = simulate_burst("crisp8542", size=64, n_frames=4, n_objects=1, seed=2, r0_cm=15.0, wavefront="screen",
                           outer_scale_m=20.0, photons=1e4, noise=0.0, progress=False)
    cfg = SolverConfig(progress=False, patch_iterations=15, whole_field_tile=whole_field_tile, high_order=high_order,
                       grid=grid)
    engine = load_solver_engine(method=cfg.method)   # the default forward model
    result = SVMOMFBD(engine, cfg).solve(burst)
    cut = get_instrument("crisp8542").cutoff_cycles_per_pixel
    restored = score_restoration(result.objects[0], burst.truth[0], cut)["nmse_variance"]
    average = score_restoration(burst.frames[0].mean(0), burst.truth[0], cut)["nmse_variance"]
    assert restored < 0.5 * average, (restored, average)
    h = result.header
    assert h["METHOD_USED"] == "momfbd" and h["STOP"] and h["OBJ_ITERS"] >= 1
    refined = h["CHI2_FIRST"] > cfg.refine_above
    assert h["ROUNDS"] == (cfg.refine_rounds if refined else 0) and ("SV" in h) != refined
    assert np.all(np.isfinite(result.loss["data"])) and result.modes.shape == (4, 44, 64 // grid, 64 // grid)


def test_sv_refinement_only_where_the_field_is_anisoplanatic():
    """The node wavefronts are refined only when the first (one wavefront per frame) solution leaves chi^2
    per pixel above ``refine_above``: a burst through one wavefront (theta0 = 1000") is explained to the
    noise (chi^2 1.1) and skips it, a strongly anisoplanatic one (theta0 = 0.5", ~1" at 8542 A: the 96^2
    field of 5.7" spans ~6 isoplanatic patches) leaves chi^2 2.3 and is refined. 96^2 x 4 frames, ~5 s.
    (On 64^2 fields the first solution leaves chi^2 1.4-2 even through one wavefront: edges, few modes.)"""
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine
    from svrt.simulate import simulate_burst

    cfg = SolverConfig(progress=False, patch_iterations=10, object_iterations=10, refine_iterations=3,
                       refine_rounds=1)
    engine = load_solver_engine(method=cfg.method)   # the default forward model
    headers = {}
    for theta0 in (1000.0, 0.5):
        burst = simulate_burst("crisp8542", size=96, n_frames=4, n_objects=1, seed=3, r0_cm=10.0,
                               theta0_arcsec=theta0, wavefront="screen", outer_scale_m=20.0, photons=1e4,
                               noise=0.0, progress=False)
        headers[theta0] = SVMOMFBD(engine, cfg).solve(burst).header
    iso, aniso = headers[1000.0], headers[0.5]
    assert iso["CHI2_FIRST"] <= cfg.refine_above < aniso["CHI2_FIRST"], (iso["CHI2_FIRST"], aniso["CHI2_FIRST"])
    assert iso["ROUNDS"] == 0 and iso["SV"].startswith("skipped")
    assert aniso["ROUNDS"] == 1 and "SV" not in aniso
