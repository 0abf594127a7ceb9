"""The uncalibrated-frames check: a fixed pattern common to all frames beyond the diffraction cutoff."""

import warnings

import numpy as np
import pytest
import torch

from svrt.checks import FIXED_PATTERN_WARN, SvrtWarning, check_calibration, fixed_pattern_fraction


@pytest.fixture(scope="module")
def clean_burst():
    from svrt.simulate import simulate_burst

    torch.set_num_threads(1)
    return simulate_burst("crisp8542", size=64, n_frames=4, n_objects=1, seed=5, r0_cm=10.0, theta0_arcsec=None,
                          noise=0.01, progress=False, psf_size=48)


def _flat(shape, seed=0, gain_rms=0.01, dust=6):
    """A synthetic flat field: 1 % pixel-gain noise and a few dust shadows (10 % deep, ~2 px)."""
    rng = np.random.default_rng(seed)
    flat = 1 + gain_rms * rng.standard_normal(shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in rng.uniform(8, shape[0] - 8, size=(dust, 2)):
        flat *= 1 - 0.1 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
    return flat


def test_clean_frames_raise_no_alarm(clean_burst):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SvrtWarning)
        (c,) = check_calibration(clean_burst.frames, clean_burst.instruments)
    assert abs(c) < 0.05                                      # noise only: ~0 common power


def test_a_flat_field_left_in_is_found(clean_burst, tmp_path):
    from svrt.fileio import read_burst, write_burst

    b = clean_burst
    dirty = b.frames * _flat(b.shape)[None, None].astype(np.float32)
    with pytest.warns(SvrtWarning, match="fixed pattern"):
        (c,) = check_calibration(dirty, b.instruments, "dirty.fits")
    assert c > 3 * FIXED_PATTERN_WARN
    # read_burst runs it
    b.frames = dirty
    write_burst(tmp_path / "dirty.fits", b)
    with pytest.warns(SvrtWarning, match="calibrate them first"):
        read_burst(tmp_path / "dirty.fits")


def test_fraction_is_one_for_a_pure_pattern_and_unknown_when_it_cannot_tell():
    from svrt.instruments import get_instrument

    rng = np.random.default_rng(1)
    pattern = 1 + 0.01 * rng.standard_normal((64, 64))
    cut = get_instrument("crisp8542").cutoff_cycles_per_pixel
    assert fixed_pattern_fraction(np.stack([pattern] * 4), cut) == pytest.approx(1.0, abs=1e-6)
    noise = 1 + 0.01 * rng.standard_normal((4, 64, 64))
    assert abs(fixed_pattern_fraction(noise, cut)) < 0.05
    assert fixed_pattern_fraction(noise[:2], cut) is None                       # too few frames
    assert fixed_pattern_fraction(noise, 0.65) is None                          # almost nothing beyond the cutoff
