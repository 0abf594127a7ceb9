"""Restoration files as standard solar FITS: SOLARNET keywords, the input's WCS and metadata kept,
provenance (PRSTEPn) with the solver's settings in a CONFIG table, one 2-D HDU per object that
``sunpy.map.Map`` opens. No solver runs here: a stub result goes through the CLI's write path."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from svrt.fileio import Restoration, read_burst, read_restoration, write_restoration
from svrt.runtime.cli import write_result

K, L, Y, X = 2, 3, 24, 20
WCS_CARDS = [("CTYPE1", "HPLN-TAN"), ("CTYPE2", "HPLT-TAN"), ("CRPIX1", 10.5), ("CRPIX2", 12.5),
             ("CRVAL1", -120.0), ("CRVAL2", 300.0), ("CDELT1", 0.059), ("CDELT2", 0.059),
             ("CUNIT1", "arcsec"), ("CUNIT2", "arcsec"), ("PC1_1", 0.99), ("PC1_2", -0.1), ("PC2_1", 0.1),
             ("PC2_2", 0.99)]
SOLVER = {"METHOD": "momfbd", "METHOD_USED": "momfbd", "GRID": 16, "SEED": 0, "ITERATIONS": 30, "LR_OBJECTS": 0.0199,
          "MAX_BATCH": "auto", "TIPTILT": True, "ENGINE_MODEL": "tiny", "ENGINE_BACKEND": "torch",
          "SVRT_VERSION": "0.1.0", "DATE": "2026-01-02T03:04:05", "T_ITER": 0.25}


def _burst_file(path, instruments=("crisp8542", "crisp8542"), bunit="DN"):
    rng = np.random.default_rng(0)
    frames = (1000 + 50 * rng.standard_normal((K, L, Y, X))).astype(np.float32)
    prim = fits.Header([("INSTR0", instruments[0]), ("INSTR1", instruments[1]), ("SEED", 7), ("GRID", 4),
                        ("TELESCOP", "SST"), ("INSTRUME", "CRISP"), ("WAVELNTH", 8542.1),
                        ("DATE-OBS", "2024-06-01T08:30:00.5"), ("PRSTEP1", "CALIBRATION"), ("DSUN_OBS", 1.516e11),
                        ("HGLN_OBS", 0.0), ("HGLT_OBS", 1.2)])
    own = fits.Header([("EXPTIME", 0.012), *WCS_CARDS] + ([("BUNIT", bunit)] if bunit else []))
    fits.HDUList([fits.PrimaryHDU(header=prim), fits.ImageHDU(frames, header=own, name="FRAMES")]).writeto(path)
    return path


def _stub_result(burst):
    rng = np.random.default_rng(1)
    loss = {key: np.arange(3, dtype=float) for key in ("iteration", "total", "data", "reg_object", "reg_modes")}
    rest = Restoration(objects=rng.random((K, Y, X)) * 1000, modes=rng.normal(size=(L, 5, 2, 2)),
                       model=rng.random((K, L, Y, X)), loss=loss, header=dict(SOLVER), instruments=burst.instruments)
    return SimpleNamespace(to_restoration=lambda: rest)


@pytest.fixture()
def restored(tmp_path):
    burst = read_burst(_burst_file(tmp_path / "burst.fits"))
    out = tmp_path / "restored.fits"
    rest = write_result(out, _stub_result(burst), burst, "burst.fits")
    return out, burst, rest


def test_every_hdu_named_and_observation_hdus_solarnet(restored):
    out, burst, rest = restored
    with fits.open(out) as hdul:
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "OBJECT0", "OBJECT1", "OBJECT", "MODES", "MODEL", "LOSS", "CONFIG"]
        for hdu in hdul:
            assert "EXTNAME" in hdu.header, hdu.name
        for name in ("OBJECT0", "OBJECT1", "OBJECT", "MODEL"):
            h = hdul[name].header
            assert h["SOLARNET"] == 0.5 and h["OBS_HDU"] == 1, name
            assert h["DATE-BEG"] == h["DATE-OBS"] == "2024-06-01T08:30:00.5"
            assert h["WAVEUNIT"] == -10 and h["WAVELNTH"] == 8542.1 and h["BTYPE"]
            assert h["BUNIT"] == "DN" and h["EXPTIME"] == 0.012 and h["FILENAME"] == "restored.fits"
            # provenance: the input's step 1 kept, the restoration is step 2, its settings in CONFIG
            assert h["PRSTEP1"] == "CALIBRATION" and h["PRSTEP2"] == "MOMFBD"
            assert h["PRPROC2"].endswith("SVMOMFBD") and h["PRPVER2"] == "0.1.0" and h["PRMODE2"] == "momfbd"
            assert "GRID=16" in h["PRPARA2"] and "CONFIG" in h["PRPARA2"] and h["PRLIB2A"] == "svrt"
        np.testing.assert_array_equal(hdul["OBJECT1"].data, rest.objects[1])
        assert hdul["OBJECT1"].header["SVRTINST"] == "crisp8542" and hdul["MODES"].header["BUNIT"] == "rad"
        # ~35 solver settings are no longer HIERARCH cards: the primary has none, CONFIG has them all
        assert not [c for c in hdul[0].header.cards if len(c.keyword) > 8]
        table = {k: v for k, v in zip(hdul["CONFIG"].data["KEY"], hdul["CONFIG"].data["VALUE"])}
        assert table["GRID"] == "16" and table["TIPTILT"] == "true" and table["METHOD"] == '"momfbd"'


def test_input_metadata_never_overwritten(restored):
    out, burst, rest = restored
    with fits.open(out) as hdul:
        prim = hdul[0].header
        assert prim["GRID"] == 4 and prim["SEED"] == 7 and prim["DATE-OBS"] == "2024-06-01T08:30:00.5"
        assert prim["BUNIT"] == "DN" and prim["EXPTIME"] == 0.012 and prim["INPUT"] == "burst.fits"
    back = read_restoration(out)
    assert back.config == SOLVER                                     # the solver's, as solved
    h = back.header
    assert h["GRID"] == 4 and h["SEED"] == 7                         # the input's, untouched
    assert h["SVRT_GRID"] == 16 and h["SVRT_SEED"] == 0              # the solver's, under distinct names
    assert h["ITERATIONS"] == 30 and h["ENGINE_MODEL"] == "tiny" and h["DATE"] == SOLVER["DATE"]
    for key, value in WCS_CARDS + [("EXPTIME", 0.012), ("BUNIT", "DN")]:
        assert h[key] == value, key
    # reading and writing again is stable (no config entries leak into the cards, no new PRSTEP)
    again = out.with_name("again.fits")
    write_restoration(again, back)
    twice = read_restoration(again)
    assert twice.header == back.header and twice.config == back.config
    with fits.open(again) as hdul:
        assert "PRSTEP3" not in hdul["OBJECT0"].header and "ITERATIONS" not in hdul[0].header


def test_wcs_round_trip(restored):
    out, burst, rest = restored
    with fits.open(out.with_name("burst.fits")) as hdul:
        w_in = WCS(hdul["FRAMES"].header).celestial
    pix = np.array([[0.0, 0.0], [10.5, 12.5], [19.0, 23.0], [3.25, 17.5]])
    expected = w_in.all_pix2world(pix, 0)
    with fits.open(out) as hdul:
        for name in ("OBJECT0", "OBJECT1", "OBJECT", "MODEL"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = WCS(hdul[name].header).celestial
            assert list(w.wcs.ctype) == ["HPLN-TAN", "HPLT-TAN"], name
            np.testing.assert_allclose(w.wcs.pc, [[0.99, -0.1], [0.1, 0.99]])
            np.testing.assert_allclose(w.all_pix2world(pix, 0), expected, rtol=0, atol=1e-10)
            assert w.wcs.cunit[0] == u.deg or w.wcs.cunit[0] == u.arcsec


def test_sunpy_map_opens_each_object(restored):
    sunpy_map = pytest.importorskip("sunpy.map", reason="sunpy[map] is in the test extras (pip install -e '.[test]')")
    out, burst, rest = restored
    with fits.open(out.with_name("burst.fits")) as hdul:
        w_in = WCS(hdul["FRAMES"].header).celestial
    for k in range(K):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sunpy's INFO about the solar radius
            m = sunpy_map.Map(out, hdus=k + 1)
        np.testing.assert_array_equal(m.data, rest.objects[k].astype(np.float32))
        assert m.date.isot.startswith("2024-06-01T08:30:00.5")
        assert m.wavelength == 8542.1 * u.AA and m.unit == u.DN
        assert m.coordinate_frame.name == "helioprojective"
        assert u.allclose(m.scale.axis1, 0.059 * u.arcsec / u.pix)
        world = m.pixel_to_world(5 * u.pix, 7 * u.pix)
        lon, lat = w_in.all_pix2world([[5.0, 7.0]], 0)[0]
        assert abs(world.Tx.to_value(u.deg) - lon) < 1e-9 and abs(world.Ty.to_value(u.deg) - lat) < 1e-9


def test_default_bunit_and_per_object_wavelength(tmp_path):
    burst = read_burst(_burst_file(tmp_path / "b.fits", instruments=("crisp6302", "crisp8542"), bunit=None))
    out = tmp_path / "r.fits"
    write_result(out, _stub_result(burst), burst, "b.fits")
    with fits.open(out) as hdul:
        for name in ("OBJECT0", "OBJECT1"):
            bunit = hdul[name].header["BUNIT"]
            assert u.Unit(bunit, format="fits") == u.dimensionless_unscaled   # '' is a valid FITS unit
        # different instruments: each object's own line; the input's WAVELNTH kept where it is that line
        assert hdul["OBJECT0"].header["WAVELNTH"] == 6302.0 and hdul["OBJECT1"].header["WAVELNTH"] == 8542.1
        assert hdul[0].header["WAVELNTH"] == 8542.1


def test_hdf5_keeps_config_apart(tmp_path):
    burst = read_burst(_burst_file(tmp_path / "b.fits"))
    out = tmp_path / "r.h5"
    write_result(out, _stub_result(burst), burst, "b.fits")
    back = read_restoration(out)
    assert back.config == SOLVER and back.header["GRID"] == 4 and back.header["SVRT_GRID"] == 16
    import h5py

    with h5py.File(out) as f:
        assert int(f.attrs["GRID"]) == 4 and "ITERATIONS" not in f.attrs and "config" in f


# ================================================================ standard metadata and fitsverify (issues 22, 24)

FITSVERIFY = shutil.which("fitsverify")
needs_fitsverify = pytest.mark.skipif(
    FITSVERIFY is None, reason="fitsverify is not installed (Debian: apt-get install -y fitsverify)")


def fitsverify_report(path) -> tuple[int, int, str]:
    """(warnings, errors, report) of ``fitsverify`` on ``path``."""
    out = subprocess.run([FITSVERIFY, str(path)], capture_output=True, text=True, check=False).stdout
    found = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2)), out


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_model):
    """Every kind of FITS file svrt writes, each made by its command: a simulated burst, its restoration by
    svrt deconvolve and by svrt batch, and svrt convolve's output (tiny sizes, tiny engine, 2 iterations)."""
    from click.testing import CliRunner

    from svrt.cli import cli

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("written")

    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
        assert r.exit_code == 0, (r.output, r.exception)

    fast = ["--engine", tiny_model, "--method", "adam", "--iterations", "2", "--grid", "16"]
    run("simulate", "--size", "32", "--frames", "2", "--objects", "2", "--psf-size", "24", "-q", "-o", d / "sim.fits")
    run("deconvolve", d / "sim.fits", "-o", d / "rest.fits", "-q", *fast)
    run("batch", d / "sim.fits", "-o", d / "batch", *fast)
    run("convolve", "--object", d / "sim.fits", "--object-key", "TRUTH", "--modes", d / "sim.fits", "--modes-key",
        "MODES", "--instrument", "crisp8542", "--engine", tiny_model, "-o", d / "conv.fits")
    return {"simulate": d / "sim.fits", "deconvolve": d / "rest.fits", "batch": d / "batch" / "sim.fits",
            "convolve": d / "conv.fits"}


@needs_fitsverify
@pytest.mark.parametrize("command", ["simulate", "deconvolve", "batch", "convolve"])
def test_every_fits_file_svrt_writes_passes_fitsverify(written, command):
    warns, errors, report = fitsverify_report(written[command])
    assert (warns, errors) == (0, 0), report


@needs_fitsverify
def test_input_with_long_strings_and_pc_matrix_passes_fitsverify(restored):
    """The input's PC matrix and a long string (continued on CONTINUE cards, declared by LONGSTRN)."""
    out, burst, rest = restored
    back = read_restoration(out)
    back.header["NOTE"] = "a note longer than one FITS card can hold, " * 3
    long = out.with_name("long.fits")
    write_restoration(long, back)
    with fits.open(long) as hdul:
        assert hdul[0].header["LONGSTRN"] == "OGIP 1.0" and hdul["OBJECT0"].header["LONGSTRN"] == "OGIP 1.0"
        assert "PC1_2" in hdul["OBJECT0"].header
    for path in (out, long):
        warns, errors, report = fitsverify_report(path)
        assert (warns, errors) == (0, 0), report


def test_data_less_primary_has_no_wcs_and_images_a_full_one(written):
    for command, path in written.items():
        with fits.open(path) as hdul:
            for hdu in hdul:
                keys = set(hdu.header)
                wcs = {k for k in keys if re.match(r"^(CTYPE|CRPIX|CRVAL|CDELT|CUNIT)[12]$", k)}
                if hdu.data is None or isinstance(hdu, fits.BinTableHDU):
                    assert not wcs, (command, hdu.name)
                elif hdu.name not in ("MODES",) or command == "deconvolve":
                    assert len(wcs) == 10, (command, hdu.name, sorted(wcs))      # a full WCS of the image axes


def test_simulated_burst_and_its_restoration_carry_the_standard_cards(written):
    from svrt.fileio.standard import DEFAULT_POINTING, SIMULATION_DATE, SIMULATION_EXPTIME

    with fits.open(written["simulate"]) as hdul:
        h = hdul["FRAMES"].header
        assert (h["CTYPE1"], h["CTYPE2"]) == ("HPLN-TAN", "HPLT-TAN") and (h["CRVAL1"], h["CRVAL2"]) == DEFAULT_POINTING
        assert (h["CRPIX1"], h["CRPIX2"]) == (16.5, 16.5) and h["WCSAXES"] == 2
        p = hdul[0].header
        assert p["DATE-BEG"] == SIMULATION_DATE and p["XPOSURE"] == SIMULATION_EXPTIME and p["NSUMEXP"] == 1
        assert p["ORIGIN"] == "svrt" and p["DATE-END"] == "2000-01-01T12:00:00.024"
    with fits.open(written["deconvolve"]) as hdul:
        for name in ("OBJECT0", "OBJECT1", "OBJECT", "MODEL"):
            h = hdul[name].header
            assert h["DATE-BEG"] == SIMULATION_DATE and h["DATE-AVG"] == "2000-01-01T12:00:00.012", name
            assert h["NSUMEXP"] == 2 and h["XPOSURE"] == pytest.approx(2 * SIMULATION_EXPTIME), name
            assert h["LEVEL"] == "2" and h["ORIGIN"] == "svrt" and h["ATMOS_R0"] > 0, name
            WCS(h)  # astropy builds it
        # the MODES HDU maps the grid's nodes: 2x2 nodes of 16 px over the 32x32 field
        m = hdul["MODES"].header
        assert m["CDELT1"] == pytest.approx(16 * 0.059) and m["CRPIX1"] == 1.5 and m["CRVAL1"] == 0.0


def test_restoration_times_follow_the_input_and_r0_the_fitted_modes(restored):
    """The input's DATE-OBS and EXPTIME (12 ms, 3 frames) give the restoration's times; ATMOS_R0 is the r0 of
    the fitted KL coefficients at 5000 A (svrt.optics.residual), and re-writing changes none of it."""
    out, burst, rest = restored
    with fits.open(out) as hdul:
        h = hdul["OBJECT0"].header
        assert h["DATE-BEG"] == "2024-06-01T08:30:00.5" and h["DATE-END"] == "2024-06-01T08:30:00.536"
        assert h["DATE-AVG"] == "2024-06-01T08:30:00.518" and h["NSUMEXP"] == L
        assert h["XPOSURE"] == pytest.approx(L * 0.012) and 0 < h["ATMOS_R0"] < 10
    again = out.with_name("again2.fits")
    write_restoration(again, read_restoration(out))
    with fits.open(again) as hdul:
        assert hdul["OBJECT0"].header["NSUMEXP"] == L and hdul["OBJECT0"].header["XPOSURE"] == pytest.approx(L * 0.012)


def test_sunpy_map_opens_a_restoration_without_arguments(restored, written):
    sunpy_map = pytest.importorskip("sunpy.map", reason="sunpy[map] is in the test extras (pip install -e '.[test]')")
    out, burst, rest = restored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = sunpy_map.Map(out)
        simulated = sunpy_map.Map(written["deconvolve"])
    assert isinstance(maps, list) and len(maps) >= K
    np.testing.assert_array_equal(maps[0].data, rest.objects[0].astype(np.float32))    # the objects first
    assert maps[0].date.isot.startswith("2024-06-01T08:30:00.5")                        # the input's time
    assert simulated[0].date.isot == "2000-01-01T12:00:00.000"                          # the simulation's default
    assert simulated[0].coordinate_frame.name == "helioprojective"


def test_undated_input_claims_no_solarnet_compliance(tmp_path):
    """DATE-BEG is mandatory in SOLARNET: a restoration of an input without a date has no SOLARNET card
    (it had SOLARNET = 0.5 without DATE-BEG), one with a date has both."""
    loss = {key: np.arange(3, dtype=float) for key in ("iteration", "total", "data", "reg_object", "reg_modes")}
    rng = np.random.default_rng(0)
    for header, claimed in (({"CDELT1": 0.059, "CDELT2": 0.059}, False),
                            ({"CDELT1": 0.059, "CDELT2": 0.059, "DATE-OBS": "2024-06-01T08:30:00"}, True)):
        rest = Restoration(rng.random((1, Y, X)), rng.normal(size=(L, 5, 2, 2)), rng.random((1, L, Y, X)), loss,
                           header=header, instruments=["crisp8542"])
        path = tmp_path / f"r{int(claimed)}.fits"
        write_restoration(path, rest)
        with fits.open(path) as hdul:
            h = hdul["OBJECT0"].header
            assert ("SOLARNET" in h) == claimed and ("DATE-BEG" in h) == claimed and h["OBS_HDU"] == 1
