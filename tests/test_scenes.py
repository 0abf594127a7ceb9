"""Tests of svrt.scenes: determinism, statistics of the granulation, sunspot structure, point sources."""

import os

import numpy as np
import pytest

from svrt.errors import SvrtError
from svrt.scenes import (
    SCENE_KINDS,
    granulation,
    make_objects,
    make_scene,
    plot_scenes,
    point_sources,
    sunspot,
)


def cell_scale_arcsec(img, pixel_arcsec):
    """Scale 1/k (arcsec) at the peak of k^2 P(k), the variance per logarithmic wavenumber interval.

    P(k) is the azimuthally averaged power spectrum in log-spaced bins, smoothed over three bins;
    the peak is refined with a parabola in log k.
    """
    z = img - img.mean()
    power = np.abs(np.fft.fft2(z)) ** 2
    ny, nx = img.shape
    k = np.hypot(np.fft.fftfreq(ny, pixel_arcsec)[:, None], np.fft.fftfreq(nx, pixel_arcsec)[None, :])
    edges = np.geomspace(0.2, 3.0, 31)
    idx = np.digitize(k.ravel(), edges)
    tot = np.bincount(idx, power.ravel(), minlength=32)[1:31]
    cnt = np.bincount(idx, minlength=32)[1:31]
    kc = np.sqrt(edges[1:] * edges[:-1])
    e = np.convolve(tot / np.maximum(cnt, 1) * kc ** 2, [0.25, 0.5, 0.25], mode="same")
    i = int(np.clip(np.argmax(e), 1, len(e) - 2))
    y0, y1, y2 = np.log(e[i - 1:i + 2])
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    logk = np.log(kc[i]) + shift * np.log(edges[1] / edges[0])
    return float(np.exp(-logk))


def radius_map(shape, pixel_arcsec):
    ny, nx = shape
    y = (np.arange(ny) + 0.5) * pixel_arcsec - 0.5 * ny * pixel_arcsec
    x = (np.arange(nx) + 0.5) * pixel_arcsec - 0.5 * nx * pixel_arcsec
    return np.hypot(y[:, None], x[None, :]), np.arctan2(y[:, None], x[None, :])


# ------------------------------------------------------------------------------------------------
# common properties
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_deterministic_for_a_seed_and_different_across_seeds(kind):
    a = make_scene(kind, 96, 0.059, 5)
    b = make_scene(kind, 96, 0.059, 5)
    c = make_scene(kind, 96, 0.059, 6)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a)) and np.all(a >= 0)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_rectangular_shape_and_tuple(kind):
    a = make_scene(kind, (40, 72), 0.05, 1)
    assert a.shape == (40, 72) and a.dtype == np.float32


def test_scene_kinds_dispatch_to_the_functions():
    assert np.array_equal(make_scene("granulation", 64, 0.059, 2), granulation(64, 0.059, 2))
    assert np.array_equal(make_scene("sunspot", 64, 0.059, 2), sunspot(64, 0.059, 2))
    assert np.array_equal(make_scene("points", 64, 0.059, 2), point_sources(64, 2))


# ------------------------------------------------------------------------------------------------
# granulation
# ------------------------------------------------------------------------------------------------

def test_granulation_mean_and_rms_contrast():
    g = granulation(192, 0.059, 3).astype(np.float64)
    assert abs(g.mean() - 1.0) < 1e-3
    assert 0.10 <= g.std() / g.mean() <= 0.15
    assert abs(g.std() / g.mean() - 0.12) < 1e-3
    g14 = granulation(192, 0.059, 3, contrast=0.14).astype(np.float64)
    assert abs(g14.std() / g14.mean() - 0.14) < 1e-3
    # granules (bright, most of the area) and narrow lanes (dark): the median exceeds the mean
    assert np.median(g) > g.mean()
    assert g.min() > 0.5 and g.max() < 1.8


@pytest.mark.parametrize("pixel_arcsec, size", [(0.059, 256), (0.038, 384)])
def test_granulation_cell_size_follows_the_pixel_scale(pixel_arcsec, size):
    scales = [cell_scale_arcsec(granulation(size, pixel_arcsec, seed), pixel_arcsec) for seed in (1, 2)]
    for s in scales:
        assert 1.0 <= s <= 1.5, scales


def test_granulation_cell_arcsec_sets_the_scale():
    s = cell_scale_arcsec(granulation(256, 0.059, 1, cell_arcsec=2.0), 0.059)
    assert 1.7 <= s <= 2.4


def test_same_seed_same_physical_scene_at_another_pixel_scale():
    coarse = granulation(128, 0.059, 4).astype(np.float64)
    fine = granulation(256, 0.0295, 4).astype(np.float64)
    binned = fine.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.corrcoef(coarse.ravel(), binned.ravel())[0, 1] > 0.98


def test_granulation_is_periodic():
    # the field wraps: the jump across the edge is like any jump between neighbouring pixels
    g = granulation(128, 0.059, 7).astype(np.float64)
    inner = np.abs(np.diff(g, axis=1)).mean()
    wrap = np.abs(g[:, 0] - g[:, -1]).mean()
    assert wrap < 1.5 * inner


# ------------------------------------------------------------------------------------------------
# sunspot
# ------------------------------------------------------------------------------------------------

def test_sunspot_umbra_penumbra_quiet_sun():
    shape, p, ru, rp = (256, 256), 0.059, 2.5, 5.5
    s = sunspot(shape, p, 3, umbra_radius_arcsec=ru, penumbra_radius_arcsec=rp).astype(np.float64)
    r, th = radius_map(shape, p)
    umbra = s[r < 0.6 * ru].mean()
    pen_mask = (r > ru + 0.3 * (rp - ru)) & (r < rp - 0.3 * (rp - ru))
    penumbra = s[pen_mask].mean()
    quiet = s[r > rp + 1.5].mean()
    assert 0.05 < umbra < 0.3
    assert umbra < penumbra < quiet
    assert 0.6 <= penumbra <= 0.85
    assert abs(quiet - 1.0) < 0.05
    # umbral dots: some umbral pixels clearly brighter than the umbral floor
    assert np.percentile(s[r < 0.8 * ru], 99.5) > umbra + 0.08
    # filaments: intensity varies much faster across (azimuth) than along (radius) the penumbra
    gy, gx = np.gradient(s)
    g_rad = gy * np.sin(th) + gx * np.cos(th)
    g_az = -gy * np.cos(th) + gx * np.sin(th)
    assert np.sqrt(np.mean(g_az[pen_mask] ** 2) / np.mean(g_rad[pen_mask] ** 2)) > 2.0
    # bright and dark filaments
    assert s[pen_mask].std() > 0.06


def test_sunspot_default_radii_fit_the_field_and_bad_radii_raise():
    shape, p = 160, 0.059
    s = sunspot(shape, p, 1).astype(np.float64)
    r, _ = radius_map((shape, shape), p)
    assert s[r < 0.5].mean() < 0.3
    corners = s[r > 0.48 * shape * p]
    assert abs(corners.mean() - 1.0) < 0.06
    with pytest.raises(SvrtError):
        sunspot(shape, p, 1, umbra_radius_arcsec=3.0, penumbra_radius_arcsec=2.0)
    with pytest.raises(SvrtError):
        sunspot(shape, p, 1, umbra_radius_arcsec=-1.0)


# ------------------------------------------------------------------------------------------------
# point sources
# ------------------------------------------------------------------------------------------------

def test_point_sources_are_isolated_pixels():
    a = point_sources((100, 120), 3, n_sources=25, amplitude_range=(0.2, 0.9))
    nz = a != 0
    assert nz.sum() == 25
    assert np.all(a[~nz] == 0)
    assert a[nz].min() >= 0.2 and a[nz].max() <= 0.9
    d = point_sources(256, 3)
    assert (d != 0).sum() == 256 * 256 // 1024
    m = point_sources(64, 3, n_sources=50, margin=8)
    iy, ix = np.nonzero(m)
    assert iy.min() >= 8 and ix.min() >= 8 and iy.max() < 56 and ix.max() < 56


# ------------------------------------------------------------------------------------------------
# multi-object scenes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_make_objects_object_zero_is_the_scene(kind):
    objs = make_objects(kind, 3, (64, 80), 0.059, 9)
    assert objs.shape == (3, 64, 80) and objs.dtype == np.float32
    assert np.array_equal(objs[0], make_scene(kind, (64, 80), 0.059, 9))
    assert np.array_equal(objs, make_objects(kind, 3, (64, 80), 0.059, 9))
    assert not np.allclose(objs[1], objs[0]) and not np.allclose(objs[2], objs[1])
    assert np.all(np.isfinite(objs)) and np.all(objs >= 0)
    assert make_objects(kind, 1, 32, 0.059, 9).shape == (1, 32, 32)


def test_narrow_band_object_is_correlated_but_different():
    objs = make_objects("granulation", 3, 128, 0.059, 2).astype(np.float64)
    for k in (1, 2):
        o = objs[k]
        assert abs(o.mean() - 1.0) < 1e-3
        assert 0.03 < o.std() / o.mean() < objs[0].std()           # lower contrast than the continuum
        corr = np.corrcoef(objs[0].ravel(), o.ravel())[0, 1]
        assert 0.2 < corr < 0.98


def test_point_objects_share_the_positions():
    objs = make_objects("points", 2, 64, 0.059, 4)
    assert np.array_equal(objs[0] != 0, objs[1] != 0)
    assert not np.array_equal(objs[0], objs[1])


def test_sunspot_objects_keep_the_spot():
    objs = make_objects("sunspot", 2, 128, 0.059, 4).astype(np.float64)
    r, _ = radius_map((128, 128), 0.059)
    assert objs[1][r < 0.5].mean() < objs[1][r > 3.5].mean() - 0.2


# ------------------------------------------------------------------------------------------------
# errors and the figure
# ------------------------------------------------------------------------------------------------

def test_unknown_kind_lists_the_known_kinds():
    with pytest.raises(SvrtError) as exc:
        make_scene("flare", 32, 0.059, 0)
    msg = str(exc.value)
    assert all(kind in msg for kind in SCENE_KINDS) and "flare" in msg
    with pytest.raises(SvrtError):
        make_objects("flare", 2, 32, 0.059, 0)


@pytest.mark.parametrize("shape, pixel, seed", [
    (0, 0.059, 0), ((32, -4), 0.059, 0), ((32,), 0.059, 0), ("big", 0.059, 0), (32.5, 0.059, 0),
    (32, 0.0, 0), (32, -0.05, 0), (32, float("nan"), 0), (32, "x", 0), (32, 0.059, -1), (32, 0.059, 1.5),
])
def test_bad_sizes_scales_and_seeds_raise(shape, pixel, seed):
    for kind in SCENE_KINDS:
        with pytest.raises(SvrtError):
            make_scene(kind, shape, pixel, seed)


def test_other_bad_arguments_raise():
    with pytest.raises(SvrtError):
        make_objects("granulation", 0, 32, 0.059, 0)
    with pytest.raises(SvrtError):
        granulation(32, 0.059, 0, contrast=0.0)
    with pytest.raises(SvrtError):
        granulation(32, 0.059, 0, cell_arcsec=-1.3)
    with pytest.raises(SvrtError):
        point_sources(8, 0, n_sources=65)
    with pytest.raises(SvrtError):
        point_sources(8, 0, n_sources=0)
    with pytest.raises(SvrtError):
        point_sources(8, 0, margin=4)


def test_plot_scenes_writes_a_png_atomically(tmp_path):
    path = tmp_path / "scenes.png"
    out = plot_scenes(str(path), pixel_arcsec=0.059, size=48, seed=2)
    assert out == str(path)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["scenes.png"]
