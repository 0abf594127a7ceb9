"""Tests of svrt.adaptive_optics: a ground-conjugated mirror correcting KL 1..N of the lock point's wavefront.

Statistical checks use fixed seeds and tolerances of >= 3.5 standard errors estimated from the samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svrt.adaptive_optics import MAX_AO_MODES, AdaptiveOptics, DeformableMirror
from svrt.atmosphere import Atmosphere, r0_at_wavelength
from svrt.errors import SvrtError
from svrt.optics.kl import kl_basis, kl_residual_variances
from svrt.optics.psf import PSFModel
from svrt.phase_screens import anisoplanatic_modes, layered_screens, wavefront_modes

INST = "crisp8542"
PUPIL_PX = 32
N_AO = 20


def _modes(n_frames, grid, image, ao_modes=0, seed=1, **kw):
    return anisoplanatic_modes(INST, 5.0, kw.pop("theta0", 0.5), n_frames, grid, image, rng=np.random.default_rng(seed),
                               pupil_px=PUPIL_PX, ao_modes=ao_modes, **kw)


def test_no_ao_is_unchanged():
    a = _modes(2, (2, 3), (32, 48))
    np.testing.assert_array_equal(a, _modes(2, (2, 3), (32, 48), ao_modes=0, ao_lock_arcsec=(1.0, 2.0)))
    frame = next(layered_screens(INST, Atmosphere.from_theta0(7.0, 2.0), 1, 0.0, np.random.default_rng(0)))
    assert AdaptiveOptics(INST, 0).correct(frame) is frame


def _leak_bound(free):
    """Tolerance for 'corrected' KL 1..N in MODES: the sensor's N-mode least-squares fit and MODES'
    M-mode one split the wavefront slightly differently, because the KL modes are orthogonal on the
    disk but not exactly on a discrete pupil of 32 points; the difference is a fraction (measured
    0.4 %, 0.1 % at 64 points) of the modes N+1..M. Allow 1 % of their RMS."""
    return 0.01 * np.sqrt(np.mean(free[:, N_AO:] ** 2))


def test_lock_point_is_corrected_in_modes_1_to_n():
    """On axis (a 1 x 1 grid: the node is the field centre) KL 1..N vanish: exactly (rounding) for the
    sensor's own fit, to the discrete-pupil leak for MODES; the modes beyond N are untouched (the
    mirror's shape lies in the span of KL 1..N)."""
    free = _modes(3, (1, 1), (16, 16))[:, :, 0, 0]
    ao = _modes(3, (1, 1), (16, 16), ao_modes=N_AO)[:, :, 0, 0]
    assert np.sqrt(np.mean(ao[:, :N_AO] ** 2)) < _leak_bound(free) < 0.01 * np.sqrt(np.mean(free[:, :N_AO] ** 2))
    np.testing.assert_allclose(ao[:, N_AO:], free[:, N_AO:], atol=1e-5 * np.abs(free).max())
    sensor = AdaptiveOptics(INST, N_AO, pupil_px=PUPIL_PX)
    for frame in layered_screens(INST, Atmosphere.from_theta0(5.0, 0.5), 2, 0.0, np.random.default_rng(2),
                                 pupil_px=PUPIL_PX):
        before = sensor.measure(frame)
        assert np.abs(sensor.measure(sensor.correct(frame))).max() < 1e-9 * np.abs(before).max()
    # an off-centre lock: the node at the lock point is corrected, the centre no longer
    grid = _modes(3, (1, 3), (16, 48), ao_modes=N_AO, ao_lock_arcsec=(0.0, 16 * 0.059))[:, :, 0]
    assert np.sqrt(np.mean(grid[:, :N_AO, 2] ** 2)) < _leak_bound(free)
    assert np.sqrt(np.mean(grid[:, :N_AO, 1] ** 2)) > 10 * _leak_bound(free)


def test_ground_layer_is_corrected_everywhere():
    """A pupil-conjugated mirror corrects the ground layer for every field point (isoplanatic)."""
    free = _modes(2, (3, 3), (96, 96), theta0=None)
    m = _modes(2, (3, 3), (96, 96), ao_modes=N_AO, theta0=None)
    assert np.sqrt(np.mean(m[:, :N_AO] ** 2)) < _leak_bound(free)
    np.testing.assert_array_equal(m, np.broadcast_to(m[:, :, :1, :1], m.shape))


def test_anisoplanatism_grows_away_from_the_lock_point():
    """Default profile (60 % of C_n^2 at the ground), r0 = 5 cm and theta0 = 0.5" at 5000 A; nodes along x
    at 0, 1.9, 5.7 and 15" (0, 4, 11, 30 theta0) from the locked centre. The residual variance in KL
    1..N grows with the distance. Far away the footprints in the high layers (5.8 and 17.5 km) are
    shifted by 0.45 and 1.3 m, more than the scale D / 4 of the modes of radial order >= 4 (KL 10..N):
    those are uncorrelated between lock point and node in the high layers and identical in the ground
    layer, so residual / uncorrected variance -> 2 (1 - 0.6) = 0.8. 100 frames: the ratio, pooled over
    11 modes, has a standard error of ~5 % (sqrt(2 / (100 x 11)) for each variance, partly correlated):
    allow 0.8 +- 0.15."""
    offsets = np.array([0, 32, 96, 256])                  # pixels from the centre
    width = 2 * 256 + 16
    grid = (1, width // 16)
    nodes = grid[1] // 2 + offsets // 16                  # node j sits at (j + 0.5) 16 - width / 2 pixels
    # the same screens seen without and with AO (what anisoplanatic_modes does, drawing them once)
    frames = list(layered_screens(INST, Atmosphere.from_theta0(5.0, 0.5), 100, (width / 2) * 0.059 / 206265,
                                  np.random.default_rng(4), pupil_px=PUPIL_PX))
    sensor = AdaptiveOptics(INST, N_AO, pupil_px=PUPIL_PX)
    free = wavefront_modes(frames, INST, grid, (16, width), pupil_px=PUPIL_PX)[:, :, 0]
    ao = wavefront_modes([sensor.correct(f) for f in frames], INST, grid, (16, width), pupil_px=PUPIL_PX)[:, :, 0]
    residual = np.mean(ao[:, :N_AO, nodes] ** 2, axis=(0, 1))
    assert np.sqrt(residual[0]) < _leak_bound(free[:, :, nodes[0]]) and np.all(np.diff(residual) > 0), residual
    ratio = np.mean(ao[:, 9:N_AO, nodes[-1]] ** 2) / np.mean(free[:, 9:N_AO, nodes[-1]] ** 2)
    assert ratio == pytest.approx(0.8, abs=0.15)
    # beyond N nothing changes anywhere
    np.testing.assert_allclose(ao[:, N_AO:], free[:, N_AO:], atol=1e-4 * np.abs(free).max())


def test_full_phase_strehl_matches_the_fitting_error():
    """With the full phase screens (all spatial frequencies, not 44 modes) an AO of N modes leaves the
    fitting error sigma^2 = kl_residual_variances(N)[N] (D / r0)^(5/3) (ground layer: no anisoplanatism),
    so the Strehl ratio (peak over the diffraction-limited peak, on axis) is ~exp(-sigma^2)
    (Marechal). r0 = 7 cm at 5000 A, CRISP 8542 A: sigma^2 = 0.25 rad^2 (N = 44), 0.13 (N = 100).
    The peak-pixel Strehl lies slightly above exp(-sigma^2): the halo adds to the central pixel,
    exp(-sigma^2) is convex (Jensen, over frames), and the screens miss the ~2 % of sigma^2 above their
    Nyquist frequency; measured +2-4 %: allow [0.98, 1.07]. A 44-mode wavefront would have no
    residual at all (Strehl 1)."""
    atm = Atmosphere.from_theta0(7.0, None)
    model = PSFModel(INST, 44, field=128, min_pupil_px=24, dtype=torch.float64)
    peak = float(model.diffraction_limited().max())
    d_over_r0 = 100.0 / r0_at_wavelength(7.0, 8542.0)
    for n, seed in ((44, 3), (100, 4)):
        ao = AdaptiveOptics(INST, n)
        strehl = np.array([float(ao.correct(f).psfs(model, [0.0], [0.0]).max()) / peak
                           for f in layered_screens(INST, atm, 40, 0.0, np.random.default_rng(seed))])
        marechal = np.exp(-kl_residual_variances(n)[n] * d_over_r0 ** (5 / 3))
        se = strehl.std(ddof=1) / np.sqrt(strehl.size)
        assert 0.98 < strehl.mean() / marechal < 1.07 and se < 0.01, (n, strehl.mean(), marechal, se)


def test_deformable_mirror_shape_and_cache():
    rng = np.random.default_rng(0)
    c = rng.standard_normal(5)
    x, y = rng.uniform(-0.4, 0.4, (2, 50))
    dm = DeformableMirror(c, 0.5)
    expected = c @ kl_basis(5).evaluate(np.hypot(x, y) / 0.5, np.arctan2(y, x))
    np.testing.assert_allclose(dm(x, y).numpy(), expected, rtol=1e-12)
    assert dm(x.copy(), y.copy()) is dm(x, y)                       # same points: cached
    assert not torch.equal(dm(y, x), dm(x, y))


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_modes=-1), "ao_modes must be an integer"),
    (dict(n_modes=MAX_AO_MODES + 1), "ao_modes must be an integer"),
    (dict(n_modes=2.5), "ao_modes must be an integer"),
    (dict(n_modes=4, lock_arcsec=(1.0,)), "ao_lock_arcsec must be"),
    (dict(n_modes=4, lock_arcsec="centre"), "ao_lock_arcsec must be"),
    (dict(n_modes=4, lock_arcsec=(np.nan, 0.0)), "ao_lock_arcsec must be"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(SvrtError, match=words):
        AdaptiveOptics(INST, **kwargs)
