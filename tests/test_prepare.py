"""svrt prepare on what cameras write: uint16 files (BZERO = 32768) with a dark pattern, a flat with dust
and a gain gradient, warm, hot and dead pixels, made from a simulated burst; prepared back, they equal the
calibrated frames to the quantisation, and restore as well as the float burst they were made from."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits
from click.testing import CliRunner

from svrt.cli import cli
from tests.sentences import error_of, one_sentence

N, L = 64, 4
SIGNAL = 20000.0        # DN per unit of the calibrated frames (their mean is ~1)
FLAT_SIGNAL = 30000.0   # DN of the flat-field frames
DARK_LEVEL = 1000.0
EXPOSURE = 0.012        # s, each frame


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def _write_uint16(path, data, header=None, extension=None):
    """``data`` as cameras write it: uint16, i.e. int16 with BZERO = 32768 (astropy's uint16 convention)."""
    data = np.asarray(data, dtype=np.uint16)
    hdr = fits.Header(header or {})
    if extension:
        hdus = [fits.PrimaryHDU(header=hdr), fits.ImageHDU(data, name=extension)]
    else:
        hdus = [fits.PrimaryHDU(data, header=hdr)]
    fits.HDUList(hdus).writeto(path)
    assert fits.getheader(path, 1 if extension else 0)["BZERO"] == 32768


class Camera:
    """A camera's truth: an integer dark with a column pattern and warm pixels, a flat (gain gradient
    0.9-1.1 across the field, dust rings and spots a few % deep, 1 % pixel response) of mean 1 over the
    good pixels, hot pixels stuck at 65535 and dead ones at 0."""

    def __init__(self, shape=(N, N), seed=0):
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
        self.dark = np.round(DARK_LEVEL + 30 * np.sin(x / 3.0) + rng.integers(-5, 6, shape))
        self.warm = (rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5))
        self.dark[self.warm] += 3000                      # dark current: removed by the dark, never flagged
        flat = (0.9 + 0.2 * x / (shape[1] - 1)) * (1 + 0.01 * rng.standard_normal(shape))
        for cy, cx in rng.uniform(10, shape[0] - 10, size=(3, 2)):     # dust: dark rings and spots, 3-4 % deep
            r = np.hypot(y - cy, x - cx)
            flat *= 1 - 0.04 * np.exp(-((r - 5) / 1.5) ** 2) - 0.03 * np.exp(-(r / 2.0) ** 2)
        self.bad = np.zeros(shape, bool)
        self.hot = (rng.integers(2, shape[0] - 2, 6), rng.integers(2, shape[1] - 2, 6))
        self.dead = (rng.integers(2, shape[0] - 2, 6), rng.integers(2, shape[1] - 2, 6))
        self.bad[self.hot] = self.bad[self.dead] = True
        self.flat = flat / flat[~self.bad].mean()

    def counts(self, signal, offset=0.0):
        """What the camera records [..., Y, X] for ``signal`` (DN at unit gain), ``offset`` DN added to the
        dark: uint16 counts."""
        c = np.clip(np.round(self.dark + offset + self.flat * signal), 0, 65535)
        c[..., self.hot[0], self.hot[1]] = 65535
        c[..., self.dead[0], self.dead[1]] = 0
        return c


@pytest.fixture(scope="module")
def float_burst():
    from svrt.simulate import simulate_burst

    torch.set_num_threads(1)
    return simulate_burst("crisp8542", size=N, n_frames=L, n_objects=1, seed=2, r0_cm=15.0, wavefront="screen",
                          outer_scale_m=20.0, photons=1e4, noise=0.0, progress=False)


@pytest.fixture(scope="module")
def camera_files(float_burst, tmp_path_factory):
    """Dark frames (two cubes, +-1 DN that averages out), flat frames (three files of one frame) and the
    science frames (one file per frame, with DATE-BEG and XPOSURE) of one camera; the calibration files
    made with svrt prepare --dark / --flat."""
    d = tmp_path_factory.mktemp("camera")
    cam = Camera()
    for i, sign in enumerate((1, -1)):
        _write_uint16(d / f"dark_{i}.fits", cam.counts(np.zeros((2, N, N)), sign))
    for i in range(3):
        _write_uint16(d / f"flat_{i}.fits", cam.counts(np.full((N, N), FLAT_SIGNAL)))
    for i in range(L):
        # numbers compared by value: frame 10 would come after frame 9
        _write_uint16(d / f"wb_{i}.fits", cam.counts(SIGNAL * float_burst.frames[0, i]),
                      {"DATE-BEG": f"2024-06-01T09:30:0{i}.000", "XPOSURE": EXPOSURE, "NSUMEXP": 1})
    fits.PrimaryHDU(cam.bad.astype(np.uint8)).writeto(d / "badpix.fits")
    res = run("prepare", "--dark", *sorted(d.glob("dark_*.fits")), "-o", d / "dark.fits", "-q")
    assert res.exit_code == 0, res.output
    res = run("prepare", "--flat", *sorted(d.glob("flat_*.fits")), "--dark", d / "dark.fits", "-o", d / "gain.fits",
              "-q")
    assert res.exit_code == 0, res.output
    return d, cam


def _config(d, name, camera="", prepare=""):
    path = d / name
    path.write_text(f'[prepare]\n{prepare}\n[[prepare.camera]]\nname = "wb"\nfiles = "wb_*.fits"\n'
                    f'instrument = "crisp8542"\n{camera}\n')
    return path


def _prepared(d, name, camera, prepare=""):
    from svrt.fileio import read_burst

    cfg = _config(d, name + ".toml", camera, prepare)
    out = d / (name + ".fits")
    res = run("prepare", "--config", cfg, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    return out, read_burst(out, allow_nonfinite=True, check=False)


CALIBRATED = 'dark = "dark.fits"\ngain = "gain.fits"'


def _bound(cam, frames):
    """The largest |prepared / SIGNAL - calibrated| the quantisation allows, per pixel. The counts are
    rounded (|e| <= 0.5 DN), the dark is exact (integers; the +-1 DN of its frames average out), the flat
    frames are rounded too (0.5 DN of FLAT_SIGNAL) and the flat's normalising mean moves by at most that:
    relative error <= 0.5 / (flat SIGNAL F) + 0.5 / (flat FLAT_SIGNAL) + 0.5 / FLAT_SIGNAL, to first order."""
    f = cam.flat
    rel = 0.5 / (f * SIGNAL * frames) + 0.5 / (f * FLAT_SIGNAL) + 0.5 / FLAT_SIGNAL
    return 1.01 * rel * frames                                  # 1 %: the second-order terms


def test_calibration_files(camera_files):
    from svrt.fileio import read_array

    d, cam = camera_files
    dark, dh = read_array(d / "dark.fits")
    gain, gh = read_array(d / "gain.fits")
    np.testing.assert_array_equal(dark[~cam.bad], cam.dark[~cam.bad])   # 4 frames of +-1 DN: the exact dark
    assert dh["CALTYPE"] == "DARK" and dh["NAVERAGE"] == 4 and dh["NFILES"] == 2
    assert gh["CALTYPE"] == "GAIN" and gh["NAVERAGE"] == 3
    assert set(zip(*np.nonzero(gain == 0))) == set(zip(*np.nonzero(cam.bad)))   # hot and dead, not warm
    good = ~cam.bad
    np.testing.assert_allclose(1 / gain[good], cam.flat[good], rtol=2 * 0.5 / (0.8 * FLAT_SIGNAL))
    assert (1 / gain[good]).mean() == pytest.approx(1.0, abs=1e-6)


def test_prepared_frames_equal_the_calibrated_ones(camera_files, float_burst):
    d, cam = camera_files
    _, burst = _prepared(d, "calibrated", CALIBRATED)
    truth = float_burst.frames[0].astype(np.float64)
    got = burst.frames[0].astype(np.float64) / SIGNAL
    assert burst.frames.shape == (1, L, N, N) and burst.instruments == ["crisp8542"]
    good = ~cam.bad
    err = np.abs(got - truth)[:, good]
    bound = _bound(cam, truth)[:, good]
    assert (err <= bound).all(), (err.max(), bound.min())
    raw = np.abs(cam.counts(SIGNAL * truth) / SIGNAL - truth)[:, good]
    assert raw.max() > 100 * bound.max()          # the dark and flat are far above the quantisation
    # bad pixels: the median of their good 3x3 neighbours (none of the hot/dead pixels touch)
    for y, x in zip(*np.nonzero(cam.bad)):
        box = (slice(y - 1, y + 2), slice(x - 1, x + 2))
        want = np.median(truth[:, box[0], box[1]][:, good[box]], axis=-1)
        np.testing.assert_allclose(got[:, y, x], want, atol=3 * bound.max())
    h = burst.header
    assert h["DATE-BEG"] == h["DATE-OBS"] == "2024-06-01T09:30:00.000"
    assert h["DATE-END"] == "2024-06-01T09:30:03.012"
    assert h["XPOSURE"] == pytest.approx(L * EXPOSURE) and h["NSUMEXP"] == L and h["TEXPOSUR"] == EXPOSURE
    assert h["CAM0"] == "wb" and h["CALIB0"] == "dark gain bad=12 fill" and h["BUNIT"] == "DN"
    assert h["WAVELNTH"] == 8542.0 and h["CDELT1"] == 0.059


def test_bad_pixels_as_nan(camera_files):
    d, cam = camera_files
    _, burst = _prepared(d, "nan", CALIBRATED, 'bad_pixels = "nan"')
    nan = ~np.isfinite(burst.frames[0])
    assert (nan == cam.bad[None]).all()


def test_restoration_of_prepared_frames(camera_files, float_burst, tmp_path):
    """The default svrt deconvolve (patch iterations cut to 15: ~10 s per restoration on one core) of the
    prepared burst is within 2 % (NMSE_var) of that of the float burst; without dark and gain (bad pixels
    still filled from the map) it is measurably worse."""
    from svrt.benchmarks.metrics import score_restoration
    from svrt.checks import SvrtWarning
    from svrt.fileio import read_restoration, write_burst
    from svrt.instruments import get_instrument

    d, _ = camera_files
    float_path = tmp_path / "float.fits"
    write_burst(float_path, float_burst)
    prepared, _ = _prepared(d, "restore", CALIBRATED)
    raw, _ = _prepared(d, "uncalibrated", 'bad_pixel_map = "badpix.fits"')
    cut = get_instrument("crisp8542").cutoff_cycles_per_pixel
    scores = {}
    for name, path in (("float", float_path), ("prepared", prepared), ("uncalibrated", raw)):
        out = tmp_path / f"r_{name}.fits"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SvrtWarning)
            res = run("deconvolve", path, "-o", out, "--no-png", "-q", "--patch-iterations", 15)
        assert res.exit_code == 0, res.output
        pattern = any("fixed pattern" in str(w.message) for w in caught) or "fixed pattern" in res.output
        assert pattern == (name == "uncalibrated"), (name, res.output)     # svrt's own check says so
        restored = read_restoration(out).objects[0]
        scores[name] = score_restoration(restored, float_burst.truth[0], cut)["nmse_variance"]
    print("NMSE_var", scores)        # float 0.0595, prepared 0.0591, uncalibrated 0.315 (one core, 35 s)
    assert abs(scores["prepared"] - scores["float"]) <= 0.02 * scores["float"], scores
    assert scores["uncalibrated"] > 1.2 * scores["float"], scores


def test_objects_diversity_alignment_and_cube_in_an_extension(tmp_path):
    """Three cameras: wide band, its phase-diversity camera (object 0), a narrow-band camera (object 1)
    with an alignment map; cubes in an image extension, frames selected and a region clipped."""
    rng = np.random.default_rng(1)
    for name in ("wb", "pd", "nb"):
        _write_uint16(tmp_path / f"{name}.fits", rng.integers(900, 1100, (6, 20, 24)), {
            "DATE-BEG": "2024-06-01T09:30:00", "DATE-END": "2024-06-01T09:30:01.5", "EXPTIME": 0.01,
            "NSUMEXP": 2}, extension="CAMERA")
    cfg = tmp_path / "scan.toml"
    cfg.write_text('[solver]\ngrid = 8\n[prepare]\nframes = "1-4"\n'
                   '[[prepare.camera]]\nfiles = "wb.fits"\ninstrument = "crisp8542"\nclip = "3,18,17,2"\n'
                   '[[prepare.camera]]\nfiles = ["pd.fits"]\ninstrument = "crisp8542"\ndiversity = 1.0\n'
                   'clip = "3,18,17,2"\n'
                   '[[prepare.camera]]\nfiles = "nb.fits"\ninstrument = "crisp8542"\nobject = 1\n'
                   'align = "0.5, -1, 0.1, 1"\nclip = "3,18,17,2"\nframes = "0,2-4"\n')
    from svrt.fileio import read_burst
    from svrt.optics.diversity import read_diversity
    from svrt.settings import read_table

    assert read_table(cfg, "solver") == {"grid": 8}        # svrt deconvolve --config reads the same file
    out = tmp_path / "burst.fits"
    res = run("prepare", "--config", cfg, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    b = read_burst(out, check=False)
    assert b.frames.shape == (3, 4, 16, 16)
    wb = fits.getdata(tmp_path / "wb.fits", "CAMERA").astype(float)
    np.testing.assert_array_equal(b.frames[0], wb[1:5, 16:0:-1, 2:18])      # y flipped (y1 > y2), 1-based
    nb = fits.getdata(tmp_path / "nb.fits", "CAMERA").astype(float)
    np.testing.assert_array_equal(b.frames[2], nb[[0, 2, 3, 4]][:, 16:0:-1, 2:18])
    h = b.header
    assert h["DIVOBJ1"] == 0 and h["DIVERS1"] == 1.0 and "DIVOBJ2" not in h
    assert read_diversity(h, b.instruments).groups == [[0, 1], [2]]
    assert h["ALIGN2"] == "0.5,-1,0.1,1"
    from svrt.runtime.camera_alignment import parse_alignment

    assert parse_alignment(h["ALIGN2"], "ALIGN2").rotation_deg == 0.1          # the solver reads the card
    assert h["XPOSURE"] == pytest.approx(4 * 0.02) and h["NSUMEXP"] == 8 and h["TEXPOSUR"] == 0.01
    assert h["DATE-END"] == "2024-06-01T09:30:01.500" and h["CALIB2"] == "bad=0"


@pytest.fixture
def scan(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        _write_uint16(tmp_path / f"{name}.fits", rng.integers(900, 1100, (3, 16, 16)))
    fits.PrimaryHDU(np.zeros((16, 20), np.float32)).writeto(tmp_path / "dark20.fits")
    nan = np.ones((16, 16), np.float32)
    nan[3, 4] = np.nan
    fits.PrimaryHDU(nan).writeto(tmp_path / "nan.fits")
    zero = np.ones((16, 16), np.float32)
    zero[5, 5] = 0
    fits.PrimaryHDU(zero).writeto(tmp_path / "flat0.fits")
    _write_uint16(tmp_path / "small.fits", rng.integers(900, 1100, (3, 12, 16)))
    return tmp_path


def _scan_error(d, camera, *needles, second=""):
    cfg = d / "bad.toml"
    cfg.write_text(f'[prepare]\n[[prepare.camera]]\nfiles = "a.fits"\ninstrument = "crisp8542"\n{camera}\n'
                   + (f'[[prepare.camera]]\ninstrument = "crisp8542"\n{second}\n' if second else ""))
    res = run("prepare", "--config", cfg, "-o", d / "out.fits", "-q")
    one_sentence(res, *needles)
    assert not (d / "out.fits").exists()


@pytest.mark.parametrize("camera, second, needles", [
    ('dark = "nodark.fits"', "", ["nodark.fits", "does not exist"]),
    ('dark = "dark20.fits"', "", ["dark20.fits", "16x16", "expected the dark"]),
    ('gain = "nan.fits"', "", ["nan.fits", "NaN"]),
    ('flat = "flat0.fits"', "", ["flat0.fits", "1 pixels <= 0", "bad_pixel_map"]),
    ('instrument = "crisp9999"', "", ["unknown instrument 'crisp9999'", "camera 0"]),
    ("exposure = 3", "", ["no setting 'exposure'", "[[prepare.camera]] 0"]),
    ('frames = "0-7"', "", ["frames = '0-7'", "0..2"]),
    ("diversity = 1.0", "", ["only defocused cameras", "object 0"]),
    ('align = "1,2,0,1"', "", ["channel 0 is the reference"]),
    ("", 'files = "small.fits"', ["camera 1", "12x16", "expected every camera to give the same"]),
    ("", 'files = "c_*.fits"', ["no file matches", "c_*.fits"]),
    ("", 'files = "b.fits"\nalign = "1,2"', ["align of camera 1", "dy,dx,rotation_deg,scale"]),
])
def test_bad_input_is_one_sentence(scan, camera, second, needles):
    if camera.startswith("instrument"):
        cfg = scan / "bad.toml"
        cfg.write_text(f'[prepare]\n[[prepare.camera]]\nfiles = "a.fits"\n{camera}\n')
        one_sentence(run("prepare", "--config", cfg, "-o", scan / "out.fits"), *needles)
        return
    _scan_error(scan, camera, *needles, second=second)


def test_a_flat_instead_of_a_gain(scan):
    """A flat from elsewhere is divided by; its zero is allowed where the bad-pixel map flags it."""
    from svrt.fileio import read_burst

    bad = np.zeros((16, 16), np.uint8)
    bad[5, 5] = 1
    fits.PrimaryHDU(bad).writeto(scan / "bad.fits")
    flat = np.full((16, 16), 2.0, np.float32)
    flat[5, 5] = 0
    fits.PrimaryHDU(flat).writeto(scan / "flat2.fits")
    cfg = scan / "flat.toml"
    cfg.write_text('[prepare]\n[[prepare.camera]]\nfiles = "a.fits"\ninstrument = "crisp8542"\nflat = "flat2.fits"\n'
                   'bad_pixel_map = "bad.fits"\n')
    res = run("prepare", "--config", cfg, "-o", scan / "out.fits", "-q")
    assert res.exit_code == 0, res.output
    got = read_burst(scan / "out.fits", check=False).frames[0]
    raw = fits.getdata(scan / "a.fits").astype(np.float32)
    good = bad == 0
    np.testing.assert_array_equal(got[:, good], raw[:, good] / 2)
    np.testing.assert_array_equal(got[:, 5, 5], np.median(raw[:, 4:7, 4:7][:, good[4:7, 4:7]], axis=-1) / 2)


def test_a_dark_of_another_exposure_is_warned_about(scan):
    from svrt.checks import SvrtWarning
    from svrt.prepare import prepare_burst
    from svrt.prepare_config import read_prepare

    _write_uint16(scan / "timed.fits", np.full((2, 16, 16), 1000), {"XPOSURE": 0.01})
    fits.PrimaryHDU(np.full((16, 16), 990.0, np.float32), header=fits.Header({"TEXPOSUR": 0.02})).writeto(
        scan / "dark02.fits")
    cfg = scan / "timed.toml"
    cfg.write_text('[prepare]\n[[prepare.camera]]\nfiles = "timed.fits"\ninstrument = "crisp8542"\n'
                   'dark = "dark02.fits"\n')
    with pytest.warns(SvrtWarning, match="exposure 0.02 s, its frames with 0.01 s"):
        burst = prepare_burst(read_prepare(cfg))
    assert (burst.frames == 10).all() and burst.header["XPOSURE"] == 0.02 and burst.header["TEXPOSUR"] == 0.01


def test_never_over_an_input_and_calibration_errors(scan):
    res = run("prepare", "--dark", scan / "a.fits", scan / "b.fits", "-o", scan / "b.fits", "--overwrite")
    one_sentence(res, "b.fits")
    res = run("prepare", "--flat", scan / "a.fits", "--dark", scan / "dark20.fits", "-o", scan / "g.fits")
    one_sentence(res, "dark20.fits", "16x20")
    res = run("prepare", "--dark", scan / "a.fits", scan / "small.fits", "-o", scan / "d.fits")
    one_sentence(res, "small.fits", "12x16")
    one_sentence(run("prepare", "-o", scan / "d.fits"), "--config", "--dark", "--flat")
    (scan / "empty.toml").write_text("[solver]\ngrid = 8\n")
    one_sentence(run("prepare", "--config", scan / "empty.toml", "-o", scan / "d.fits"), "no [prepare] table")


def test_help_has_examples():
    res = run("prepare", "--help")
    assert res.exit_code == 0 and "Examples" in res.output and "--flat flats/" in res.output
    assert "prepare" in run("--help").output


def test_fill_grows_into_clusters():
    from svrt.calibration import fill_bad_pixels

    frames = np.arange(2 * 9 * 9, dtype=float).reshape(2, 9, 9)
    bad = np.zeros((9, 9), bool)
    bad[3:6, 3:6] = True                                       # the centre has no good 3x3 neighbour
    out = fill_bad_pixels(frames, bad)
    assert np.isfinite(out).all() and (out[:, ~bad] == frames[:, ~bad]).all()
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False
    np.testing.assert_allclose(out[:, 4, 4], np.median(frames[:, ring], axis=-1))  # a linear ramp: its centre value
    edge = np.zeros((9, 9), bool)
    edge[0, 4] = True                               # its box cut at the edge: 5 neighbours, none counted twice
    assert fill_bad_pixels(frames, edge)[0, 0, 4] == np.median([3, 5, 12, 13, 14])
    error_of(lambda: fill_bad_pixels(frames, np.ones((9, 9), bool)), "every pixel")
