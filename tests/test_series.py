"""svrt series: restorations of a drifting (and turning) field, made with known sub-pixel shifts, come out
co-aligned: the drift is recovered to 0.01 px, the objects share the wide band's shift, the rotation
follows the WCS convention of CROTA2, and the file reads back (astropy, sunpy)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner
from sentences import error_of, one_sentence
from shifted import fourier_shift

from svrt.cli import cli
from svrt.fileio import Restoration, read_restoration, write_restoration
from svrt.runtime.series import align_series, read_series_file, series_maps, write_series
from svrt.scenes import make_scene

BIG, N, T = 160, 96, 5
#: the content's position in each restoration [px]: a drift of ~0.7 px per burst with sub-pixel jitter
DRIFT = np.array([[0.0, 0.0], [0.73, -0.41], [1.38, -0.95], [2.21, -1.27], [2.87, -1.93]])


@pytest.fixture(scope="module")
def scene():
    return make_scene("granulation", BIG, 0.059, 7).astype(np.float64)


def _restoration(objects, header):
    k, y, x = objects.shape
    loss = {key: np.zeros(1) for key in ("iteration", "total", "data", "reg_object", "reg_modes")}
    return Restoration(objects=objects.astype(np.float32), modes=np.zeros((1, 2, 2, 2), np.float32),
                       model=np.zeros((k, 1, y, x), np.float32), loss=loss, header=header)


def _header(t, **extra):
    h = {"DATE-BEG": f"2026-06-01T08:{10 + t:02d}:00.000", "DATE-END": f"2026-06-01T08:{10 + t:02d}:05.000",
         "TELESCOP": "SST", "WAVELNTH": 8542.0, "CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec",
         "CUNIT2": "arcsec", "CDELT1": 0.059, "CDELT2": 0.059, "CRPIX1": (N + 1) / 2, "CRPIX2": (N + 1) / 2,
         "CRVAL1": 120.0, "CRVAL2": -80.0}
    h.update(extra)
    return h


def _drifting(scene, noise=0.003, seed=0):
    """T restorations of one field drifting by DRIFT: objects 0 (wide band) and 1 (a narrow band: another
    image of the same field) cut from the Fourier-shifted scene (edges not periodic, as in real data)."""
    rng = np.random.default_rng(seed)
    narrow = np.sqrt(scene - scene.min() + 0.1)
    lo = (BIG - N) // 2
    out = []
    for t, (dy, dx) in enumerate(DRIFT):
        objs = np.stack([fourier_shift(img, dy, dx)[lo:lo + N, lo:lo + N] for img in (scene, narrow)])
        objs += noise * objs.std(axis=(1, 2), keepdims=True) * rng.normal(size=objs.shape)
        out.append(_restoration(objs, _header(t)))
    return out


def _fitsverify_clean(path):
    """No warning and no error from HEASARC's fitsverify, where it is installed."""
    if shutil.which("fitsverify"):
        report = subprocess.run(["fitsverify", "-q", str(path)], capture_output=True, text=True).stdout
        assert "verification OK" in report, report


def _write(tmp_path, rests):
    paths = []
    for t, rest in enumerate(rests):
        paths.append(tmp_path / f"restored-{t:02d}.fits")
        write_restoration(paths[-1], rest)
    return paths


@pytest.mark.parametrize("reference", ["first", "running"])
def test_series_recovers_a_known_drift(scene, tmp_path, reference):
    """Each restoration's shift relative to the first is found to 0.01 px (the old parabola registration
    was biased by ~0.02-0.03 px); after alignment the wide band and the narrow band of every time match
    the first restoration's inside the borders (the content that drifted in cannot match)."""
    paths = _write(tmp_path, _drifting(scene))
    out = tmp_path / "series.fits"
    result = CliRunner().invoke(cli, ["series", *map(str, paths), "-o", str(out), "--reference", reference])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "series.png").stat().st_size > 0
    cube, header, times = read_series_file(out)
    assert cube.shape == (T, 2, N, N) and header["CTYPE1"] == "HPLN-TAN"
    found = np.stack([times["DY"], times["DX"]], axis=1)
    np.testing.assert_allclose(found, DRIFT - DRIFT[0], atol=0.01)
    assert list(times["DATE_BEG"]) == [_header(t)["DATE-BEG"] for t in range(T)]
    _fitsverify_clean(out)
    first = read_restoration(paths[0]).objects
    inner = (slice(8, -8), slice(8, -8))
    for k in range(2):
        for t in range(1, T):
            before = np.std((read_restoration(paths[t]).objects[k] - first[k])[inner])
            assert np.std((cube[t, k] - first[k])[inner]) < 0.05 * before, (t, k)


def test_series_derotates_by_the_crota2_convention(scene):
    """Restorations of one field seen with CROTA2 = 1, 4 and -2 deg (made by sampling the scene at the
    world coordinates astropy.wcs gives each pixel) come out on the first one's grid; derotating the other
    way round would leave them far apart."""
    from astropy.wcs import WCS
    from scipy.ndimage import map_coordinates

    angles = [1.0, 4.0, -2.0]
    rests = []
    for t, rho in enumerate(angles):
        h = _header(t, CROTA2=rho, CDELT1=1.0, CDELT2=1.0, CRVAL1=0.0, CRVAL2=0.0)
        wcs = WCS(fits.Header(h))
        gy, gx = np.mgrid[0:N, 0:N].astype(np.float64)
        lon, lat = wcs.wcs_pix2world(gx, gy, 0)          # degrees; the scene's pixel is 1 arcsec, north up
        lon = (lon + 180) % 360 - 180
        coords = np.stack([lat * 3600 + (BIG - 1) / 2, lon * 3600 + (BIG - 1) / 2])
        rests.append(_restoration(map_coordinates(scene, coords, order=3)[None], h))
    inner = (slice(20, -20), slice(20, -20))

    def misfit(result):
        return max(np.std((result.cube[t, 0] - result.cube[0, 0])[inner]) for t in (1, 2)) / scene.std()

    right = align_series(rests)
    np.testing.assert_allclose(right.rotations, [0.0, -3.0, 3.0])
    assert np.abs(right.shifts).max() < 0.05
    for r, rho in zip(rests, angles):   # the wrong sense of rotation
        r.header["CROTA2"] = -rho
    assert misfit(right) < 0.1 < 0.5 < misfit(align_series(rests))


@pytest.mark.parametrize("reference", ["first", "running"])
def test_series_destretch_keeps_the_drift(scene, reference):
    """--destretch on top of the rigid alignment: the rigid shifts stay those found without it (the running
    reference is made of the rigidly aligned images, not of destretched ones: with them the shifts moved by
    0.017 px), the aligned frames are as close to the first."""
    rests = _drifting(scene)
    rigid = align_series(rests, reference=reference)
    warped = align_series(rests, reference=reference, destretch_block=32)
    np.testing.assert_allclose(warped.shifts, rigid.shifts, atol=1e-9)
    np.testing.assert_allclose(warped.shifts, DRIFT - DRIFT[0], atol=0.01)
    inner = (slice(12, -12), slice(12, -12))
    for t in range(1, T):
        assert np.std((warped.cube[t, 0] - warped.cube[0, 0])[inner]) < 0.05 * np.std(warped.cube[0, 0][inner])


def test_series_reads_as_a_sunpy_sequence(scene, tmp_path):
    pytest.importorskip("sunpy.map")
    paths = _write(tmp_path, _drifting(scene)[:3])
    out = tmp_path / "s.fits"
    result = CliRunner().invoke(cli, ["series", *map(str, paths), "-o", str(out), "--no-png"])
    assert result.exit_code == 0, result.output
    seq = series_maps(out, obj=1)
    assert len(seq) == 3 and not (tmp_path / "s.png").exists()
    assert [m.date.isot for m in seq] == [_header(t)["DATE-BEG"] for t in range(3)]
    assert seq[0].reference_coordinate.Tx.to_value("arcsec") == pytest.approx(120.0)


def test_series_bad_input_is_one_sentence(scene, tmp_path):
    rests = _drifting(scene)[:2]
    small = _restoration(rests[1].objects[:, :64, :64], _header(1))
    error_of(lambda: align_series([rests[0], small], ["a.fits", "b.fits"]), "b.fits", "[K, Y, X]")
    error_of(lambda: align_series(rests, wideband=2), "wide band", "2 objects")
    rests[0].header["CROTA2"] = 2.0
    error_of(lambda: align_series(rests, ["a.fits", "b.fits"]), "b.fits", "CROTA2")
    rests[0].header["CROTA2"] = "north"
    error_of(lambda: align_series(rests, ["a.fits", "b.fits"]), "a.fits", "CROTA2", "degrees")
    paths = _write(tmp_path, _drifting(scene)[:2])
    for output, needle in ((paths[0], "input"), (tmp_path / "s.h5", "FITS")):
        one_sentence(CliRunner().invoke(cli, ["series", *map(str, paths), "-o", str(output)]), needle)


def test_series_leaves_out_a_partial_wcs(scene, tmp_path):
    """Restorations whose header has a pixel scale but no CTYPE/CRPIX/CRVAL: the series has no half-made
    WCS (fitsverify would warn), and keeps the observation cards."""
    rests = _drifting(scene)[:2]
    for r in rests:
        for key in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2"):
            del r.header[key]
    out = tmp_path / "partial.fits"
    write_series(out, align_series(rests))
    _, header, _ = read_series_file(out)
    assert "CDELT1" not in header and header["WAVELNTH"] == 8542.0
    _fitsverify_clean(out)


def test_series_reads_fits_and_hdf5_restorations(scene, tmp_path):
    """load_restorations keeps objects and header only; an HDF5 restoration joins a FITS one."""
    from svrt.runtime.series import load_restorations

    rests = _drifting(scene)[:2]
    paths = [tmp_path / "a.fits", tmp_path / "b.h5"]
    for path, rest in zip(paths, rests):
        write_restoration(path, rest)
    frames = load_restorations(paths)
    assert [f.objects.shape for f in frames] == [(2, N, N)] * 2 and not hasattr(frames[0], "model")
    assert frames[1].header["DATE-BEG"] == _header(1)["DATE-BEG"]
    np.testing.assert_allclose(align_series(frames).shifts[1], DRIFT[1], atol=0.01)
