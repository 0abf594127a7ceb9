"""Tests of svrt.fileio: burst/restoration round trips, validations, atomic writes."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio import (
    Burst,
    Restoration,
    atomic_write,
    check_not_input,
    read_array,
    read_burst,
    read_restoration,
    write_array,
    write_burst,
    write_restoration,
)

FORMATS = ["fits", "h5"]


def ramp(shape, dtype=np.float32):
    """Non-constant frames (constant ones are dead frames, refused by read_burst)."""
    return (1 + np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(dtype)


def make_burst(k=2, n_frames=3, y=16, x=12, m=5, grid=4, seed=0):
    rng = np.random.default_rng(seed)
    return Burst(
        frames=rng.random((k, n_frames, y, x), dtype=np.float32),
        instruments=["crisp6302", "crisp8542"][:k] if k <= 2 else ["crisp6302"] * k,
        truth=rng.random((k, y, x), dtype=np.float32),
        modes=rng.normal(size=(n_frames, m, grid, grid)).astype(np.float32),
        header={
            "DATE-OBS": "2024-06-01T08:30:00.5",
            "TELESCOP": "SST",
            "WAVELNTH": 6302.5,
            "CDELT1": 0.059,
            "CDELT2": 0.059,
            "R0": 7,
            "lr_objects": 0.0199526231496888,  # long key, lower case
            "engine_weights_path": "/data/models/" + "x" * 90 + ".safetensors",  # long key, long value
            "NOISY": True,
            "SEED": None,  # left out
        },
    )


def make_restoration(k=2, n_frames=3, y=16, x=12, m=5, grid=4, n_iter=7):
    rng = np.random.default_rng(1)
    loss = {
        "iteration": np.arange(n_iter),
        "total": rng.random(n_iter),
        "data": rng.random(n_iter),
        "reg_object": rng.random(n_iter),
        "reg_modes": rng.random(n_iter),
        "lr": np.full(n_iter, 0.02),
    }
    return Restoration(
        objects=rng.random((k, y, x)).astype(np.float64),  # converted to float32
        modes=rng.normal(size=(n_frames, m, grid, grid)).astype(np.float32),
        model=rng.random((k, n_frames, y, x), dtype=np.float32),
        loss=loss,
        header={"ENGINE": "torch", "LAMBDA_O": 0.1, "ITERS": n_iter, "engine_identity": "svce-crisp-c64"},
        instruments=["crisp6302", "crisp8542"],
    )


#: the cards svrt.fileio.standard adds where a header lacks them (WCS, times, ORIGIN, LEVEL, seeing)
STANDARD_KEYS = {"CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "DATE-BEG", "DATE-END",
                 "DATE-AVG", "DATEREF", "XPOSURE", "NSUMEXP", "ORIGIN", "LEVEL", "ATMOS_R0", "AO_NMODE"}

EXPECTED_HEADER = {
    "DATE-OBS": "2024-06-01T08:30:00.5",
    "TELESCOP": "SST",
    "WAVELNTH": 6302.5,
    "CDELT1": 0.059,
    "CDELT2": 0.059,
    "R0": 7,
    "LR_OBJECTS": 0.0199526231496888,
    "ENGINE_WEIGHTS_PATH": "/data/models/" + "x" * 90 + ".safetensors",
    "NOISY": True,
}


@pytest.mark.parametrize("ext", FORMATS)
def test_burst_round_trip(tmp_path, ext):
    burst = make_burst()
    path = tmp_path / f"burst.{ext}"
    write_burst(path, burst)
    back = read_burst(path)
    assert back.frames.dtype == np.float32 and back.frames.shape == (2, 3, 16, 12)
    np.testing.assert_array_equal(back.frames, burst.frames)
    np.testing.assert_array_equal(back.truth, burst.truth)
    np.testing.assert_array_equal(back.modes, burst.modes)
    assert back.truth.dtype == np.float32 and back.modes.dtype == np.float32
    assert back.instruments == ["crisp6302", "crisp8542"]
    assert {key: back.header[key] for key in EXPECTED_HEADER} == EXPECTED_HEADER
    assert set(back.header) - set(EXPECTED_HEADER) <= STANDARD_KEYS  # svrt.fileio.standard's, where they were missing
    assert back.mask is None
    assert (back.n_objects, back.n_frames, back.shape, back.n_modes) == (2, 3, (16, 12), 5)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


def test_burst_fits_layout(tmp_path):
    path = tmp_path / "burst.fits"
    write_burst(path, make_burst())
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FRAMES", "TRUTH", "MODES"]
        hdr = hdul[0].header
        assert hdr["INSTR0"] == "crisp6302" and hdr["INSTR1"] == "crisp8542"
        assert hdr["NOBJ"] == 2 and hdr["NFRAMES"] == 3
        assert "CDELT1" not in hdr                          # no WCS on the data-less primary (FITS 4.0, 8.1)
        assert "arcsec" in hdul["FRAMES"].header.comments["CDELT1"]
        assert hdr["LR_OBJECTS"] == pytest.approx(0.0199526231496888)
        assert hdul["MODES"].header["BUNIT"] == "rad"
        assert hdul["FRAMES"].data.shape == (2, 3, 16, 12)


def test_burst_without_truth_and_gz(tmp_path):
    burst = Burst(frames=ramp((1, 2, 8, 8)), instruments="hifi6563")
    path = tmp_path / "obs.fits.gz"
    write_burst(path, burst)
    back = read_burst(path)
    assert back.truth is None and back.modes is None and back.instruments == ["hifi6563"]
    np.testing.assert_array_equal(back.frames, burst.frames)


@pytest.mark.parametrize("ext", FORMATS)
def test_restoration_round_trip(tmp_path, ext):
    rest = make_restoration()
    path = tmp_path / f"restored.{ext}"
    write_restoration(path, rest)
    back = read_restoration(path)
    for name in ("objects", "modes", "model"):
        assert getattr(back, name).dtype == np.float32
        np.testing.assert_array_equal(getattr(back, name), getattr(rest, name))
    assert list(back.loss) == ["iteration", "total", "data", "reg_object", "reg_modes", "lr"]
    assert back.loss["iteration"].dtype == np.int64
    for key in rest.loss:
        np.testing.assert_array_equal(back.loss[key], rest.loss[key])
    given = {"ENGINE": "torch", "LAMBDA_O": 0.1, "ITERS": 7, "ENGINE_IDENTITY": "svce-crisp-c64"}
    assert {key: back.header[key] for key in given} == given
    assert set(back.header) - set(given) <= STANDARD_KEYS
    assert back.instruments == ["crisp6302", "crisp8542"]
    assert back.n_iterations == 7


def test_restoration_fits_has_loss_table(tmp_path):
    path = tmp_path / "restored.fits"
    write_restoration(path, make_restoration())
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "OBJECT0", "OBJECT1", "OBJECT", "MODES", "MODEL", "LOSS", "CONFIG"]
        assert isinstance(hdul["LOSS"], fits.BinTableHDU)


def test_restoration_validation():
    rest = make_restoration()
    with pytest.raises(SvrtError, match="reg_modes"):
        Restoration(rest.objects, rest.modes, rest.model, {k: v for k, v in rest.loss.items() if k != "reg_modes"})
    with pytest.raises(SvrtError, match="equal lengths"):
        Restoration(rest.objects, rest.modes, rest.model, {**rest.loss, "total": np.zeros(3)})
    with pytest.raises(SvrtError, match="model"):
        Restoration(rest.objects, rest.modes, rest.model[:, :, :8], rest.loss)


@pytest.mark.parametrize("ext", FORMATS)
def test_array_round_trip(tmp_path, ext):
    arr = np.arange(24, dtype=np.int16).reshape(4, 6)
    path = tmp_path / f"obj.{ext}"
    write_array(path, arr, header={"CDELT1": 0.059, "INSTR0": "crisp6302"})
    back, hdr = read_array(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, arr)
    assert hdr["CDELT1"] == 0.059
    keyed = tmp_path / f"modes.{ext}"
    write_array(keyed, np.zeros((2, 5, 3, 3)), key="MODES")
    back, _ = read_array(keyed, key="modes")
    assert back.shape == (2, 5, 3, 3)
    with pytest.raises(SvrtError, match="OTHER"):
        read_array(keyed, key="OTHER")


def test_read_array_needs_key_when_several(tmp_path):
    path = tmp_path / "burst.fits"
    write_burst(path, make_burst())
    with pytest.raises(SvrtError, match="several arrays"):
        read_array(path)
    truth, hdr = read_array(path, key="TRUTH")
    assert truth.shape == (2, 16, 12) and hdr["TELESCOP"] == "SST"


def test_read_array_nan(tmp_path):
    path = tmp_path / "obj.fits"
    arr = np.ones((5, 5), np.float32)
    arr[0, :3] = np.nan
    write_array(path, arr)
    with pytest.raises(SvrtError, match="3 NaN"):
        read_array(path)
    back, _ = read_array(path, allow_nonfinite=True)
    assert np.isnan(back).sum() == 3


@pytest.mark.parametrize("ext", FORMATS)
def test_truncated_file(tmp_path, ext):
    path = tmp_path / f"cut.{ext}"
    write_burst(path, make_burst(y=64, x=64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for reader in (read_burst, read_restoration, read_array):
        with pytest.raises(SvrtError, match="cut"):
            reader(path)
    with pytest.raises(SvrtError, match="truncated"):
        read_burst(path)


@pytest.mark.parametrize("cut", [100, 2880 + 40, 2 * 2880, 4 * 2880 + 1000])
def test_truncated_fits_anywhere(tmp_path, cut):
    path = tmp_path / "cut.fits"
    write_burst(path, make_burst(y=64, x=64))
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(SvrtError, match="cut.fits"):
        read_burst(path)


def test_corrupt_fits_data_checksum(tmp_path):
    path = tmp_path / "bad.fits"
    write_burst(path, make_burst())
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits in the last data block
    path.write_bytes(bytes(data))
    with pytest.raises(SvrtError, match="bad.fits.*corrupt"):
        read_burst(path)


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(SvrtError, match="does not exist"):
        read_burst(tmp_path / "nope.fits")
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(SvrtError, match="empty"):
        read_burst(tmp_path / "empty.fits")
    (tmp_path / "text.fits").write_text("hello world")
    with pytest.raises(SvrtError, match="text.fits"):
        read_burst(tmp_path / "text.fits")
    with pytest.raises(SvrtError, match="extension"):
        write_burst(tmp_path / "burst.txt", make_burst())


@pytest.mark.parametrize("ext", FORMATS)
def test_nan_frames_rejected_then_masked(tmp_path, ext):
    burst = make_burst()
    burst.frames[0, 1, 2, 3] = np.nan
    burst.frames[1, 0, 0, :2] = np.inf
    path = tmp_path / f"nan.{ext}"
    write_burst(path, burst)
    with pytest.raises(SvrtError, match=r"FRAMES in .*nan\.\w+ has 3 NaN or infinite pixels"):
        read_burst(path)
    back = read_burst(path, allow_nonfinite=True)
    assert back.mask.dtype == bool and back.mask.shape == back.frames.shape
    assert (~back.mask).sum() == 3 and not back.mask[0, 1, 2, 3]
    assert np.isnan(back.frames[0, 1, 2, 3])


def test_no_frames_key_names_found_keys(tmp_path):
    path = tmp_path / "other.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((2, 2), np.float32), name="IMAGE")]).writeto(path)
    with pytest.raises(SvrtError, match="no FRAMES.*PRIMARY, IMAGE"):
        read_burst(path, instrument="crisp6302")
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = np.ones((2, 2))
    with pytest.raises(SvrtError, match="no FRAMES.*data"):
        read_burst(h5)


def _fits_with_frames(path, data, **cards):
    hdr = fits.Header()
    for key, value in cards.items():
        hdr[key] = value
    fits.HDUList([fits.PrimaryHDU(header=hdr), fits.ImageHDU(data, name="FRAMES")]).writeto(path)


def test_dimensions(tmp_path):
    three = tmp_path / "three.fits"
    _fits_with_frames(three, ramp((4, 8, 8), np.float64), INSTR0="crisp6302")
    burst = read_burst(three)
    assert burst.frames.shape == (1, 4, 8, 8) and burst.frames.dtype == np.float32
    two = tmp_path / "two.fits"
    _fits_with_frames(two, np.arange(64, dtype=np.uint16).reshape(8, 8), INSTR0="crisp6302")
    assert read_burst(two).frames.shape == (1, 1, 8, 8)
    five = tmp_path / "five.fits"
    _fits_with_frames(five, np.ones((1, 1, 1, 8, 8), np.float32), INSTR0="crisp6302")
    with pytest.raises(SvrtError, match="five.fits.*5 dimensions"):
        read_burst(five)


def test_truth_and_modes_shapes(tmp_path):
    path = tmp_path / "bad.fits"
    hdus = [
        fits.PrimaryHDU(header=fits.Header([("INSTR0", "crisp6302")])),
        fits.ImageHDU(np.ones((1, 3, 8, 8), np.float32), name="FRAMES"),
        fits.ImageHDU(np.ones((1, 8, 9), np.float32), name="TRUTH"),
    ]
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(SvrtError, match="TRUTH.*bad.fits"):
        read_burst(path)
    hdus[2] = fits.ImageHDU(np.ones((2, 5, 3, 3), np.float32), name="MODES")
    fits.HDUList(hdus).writeto(path, overwrite=True)
    with pytest.raises(SvrtError, match="MODES.*L = 3"):
        read_burst(path)


def test_missing_instrument_card(tmp_path):
    path = tmp_path / "noinstr.fits"
    _fits_with_frames(path, ramp((2, 3, 8, 8)), INSTR0="crisp8542")
    with pytest.raises(SvrtError, match="noinstr.fits has no INSTR1 card.*instrument="):
        read_burst(path)
    burst = read_burst(path, instrument=["crisp8542", "crisp6302"])
    assert burst.instruments == ["crisp8542", "crisp6302"]
    with pytest.raises(SvrtError, match="INSTR0 = 'crisp8542'"):
        read_burst(path, instrument="crisp6302")
    one = tmp_path / "one.fits"
    _fits_with_frames(one, ramp((3, 8, 8)))
    assert read_burst(one, instrument="chromis3934").instruments == ["chromis3934"]


@pytest.mark.parametrize("ext", FORMATS)
def test_existing_output_needs_overwrite(tmp_path, ext):
    path = tmp_path / f"out.{ext}"
    write_burst(path, make_burst(seed=1))
    with pytest.raises(SvrtError, match="already exists"):
        write_burst(path, make_burst(seed=2))
    with pytest.raises(SvrtError, match="already exists"):
        write_restoration(path, make_restoration())
    with pytest.raises(SvrtError, match="already exists"):
        write_array(path, np.ones((2, 2)))
    write_burst(path, make_burst(seed=2), overwrite=True)
    np.testing.assert_array_equal(read_burst(path).frames, make_burst(seed=2).frames)


def test_bad_header_values(tmp_path):
    burst = make_burst()
    burst.header = {"BAD": [1, 2]}
    with pytest.raises(SvrtError, match="BAD.*expected str, int, float or bool"):
        write_burst(tmp_path / "b.fits", burst)
    burst.header = {"NANKEY": float("nan")}
    with pytest.raises(SvrtError, match="NANKEY"):
        write_burst(tmp_path / "b.h5", burst)
    assert not list(tmp_path.iterdir())


def test_atomic_write_success_and_failure(tmp_path):
    target = tmp_path / "result.fits"
    with atomic_write(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".fits")
        assert not target.exists()
        with open(tmp, "w") as fh:
            fh.write("new")
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "new"  # pre-existing file unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["result.fits"]

    fresh = tmp_path / "fresh.h5"
    with pytest.raises(ValueError):
        with atomic_write(fresh) as tmp:
            with h5py.File(tmp, "w") as f:
                f["x"] = np.ones(3)
            raise ValueError("boom")
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["result.fits"]


def test_atomic_write_suffix(tmp_path):
    with atomic_write(tmp_path / "a.fits.gz") as tmp:
        assert tmp.endswith(".fits.gz")
        open(tmp, "w").close()
    with atomic_write(tmp_path / "a.fits", suffix=".png") as tmp:
        assert tmp.endswith(".png")
        open(tmp, "w").close()


def test_check_not_input(tmp_path):
    inp = tmp_path / "in.fits"
    inp.write_bytes(b"x")
    check_not_input(tmp_path / "out.fits", inp, None)
    with pytest.raises(SvrtError, match="in.fits"):
        check_not_input(tmp_path / "sub" / ".." / "in.fits", tmp_path / "other.fits", inp)
    link = tmp_path / "link.fits"
    link.symlink_to(inp)
    with pytest.raises(SvrtError, match="never overwrites an input"):
        check_not_input(link, str(inp))


def test_short_reprs_name_shapes_and_instruments_not_arrays():
    burst, rest = make_burst(), make_restoration()
    assert repr(burst) == "Burst(K=2, L=3, 16x12, crisp6302+crisp8542, modes [3, 5, 4, 4], truth, 10 cards)"
    assert repr(rest) == "Restoration(K=2, L=3, 16x12, crisp6302+crisp8542, modes [3, 5, 4, 4], 7 iterations, 4 cards)"
    assert len(repr(Burst(np.zeros((1, 100, 512, 512), np.float32), "crisp8542"))) < 80
