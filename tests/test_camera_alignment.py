"""Camera alignment: a known shift, rotation and scale between two channels, recovered from the data.

Tolerances, argued: on a field of half-side R pixels, a rotation error dt moves the corners by R dt and
a scale error ds by R ds. With R = 48 (a 96^2 field), 0.05 deg and 1e-3 move no point by more than 0.05 px,
so with the shift error < 0.05 px the whole field is registered to < 0.1 px.
"""

import math

import numpy as np
import pytest
import torch

from svrt.runtime.camera_alignment import Alignment, align_burst, apply_alignment, estimate_alignment, parse_alignment


def _blur(image, sigma):
    y, x = image.shape[-2:]
    fy, fx = np.meshgrid(np.fft.fftfreq(y), np.fft.fftfreq(x), indexing="ij")
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))).real


@pytest.fixture(scope="module")
def scene():
    from svrt.scenes import make_objects

    big = make_objects("granulation", 1, (160, 160), 0.059, 4)[0]
    return _blur(big, 1.5)                                     # a frame average: seeing-blurred


def _channel(scene, truth: Alignment, noise: float, rng):
    """Reference (the centre 96^2) and the channel that recorded reference pixel p at q(p) of ``truth``:
    channel(q) = reference(p), i.e. the scene sampled through the inverse transform."""
    warped = apply_alignment(scene, truth.inverse()).numpy()
    ref = scene[32:128, 32:128]
    img = warped[32:128, 32:128]
    # pixels of the 96^2 crop map through q about the crop's centre, which is the big image's centre
    return (ref + noise * rng.standard_normal(ref.shape), img + noise * rng.standard_normal(img.shape))


@pytest.mark.parametrize("truth", [Alignment(1.3, -2.7, 0.6, 1.012), Alignment(-4.2, 0.4, -1.5, 0.985)])
def test_known_misalignment_is_recovered(scene, truth):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ref, img = _channel(scene, truth, 0.01 * scene.std(), rng)
    got = estimate_alignment(img, ref)
    assert abs(got.dy - truth.dy) < 0.05 and abs(got.dx - truth.dx) < 0.05
    assert abs(got.rotation_deg - truth.rotation_deg) < 0.05
    assert abs(got.scale - truth.scale) < 1e-3
    # the worst displacement over the field, from all four errors together
    r = 48.0
    worst = (
        math.hypot(got.dy - truth.dy, got.dx - truth.dx)
        + r * abs(math.radians(got.rotation_deg - truth.rotation_deg))
        + r * abs(got.scale - truth.scale)
    )
    assert worst < 0.1


def test_aligned_burst_matches_the_reference_and_a_given_map_is_used(scene):
    from svrt.runtime.problem import ValidatedBurst

    torch.set_num_threads(1)
    truth = Alignment(0.8, 1.7, 0.4, 1.008)
    rng = np.random.default_rng(1)
    ref, img = _channel(scene, truth, 0.0, rng)
    frames = torch.as_tensor(np.stack([ref, img])[:, None], dtype=torch.float32).repeat(1, 2, 1, 1)
    vb = ValidatedBurst(frames=frames, valid=torch.ones_like(frames, dtype=torch.bool), instruments=["crisp8542"] * 2,
                        labels=["crisp8542"] * 2, insts=[None, None], engines=[None, None], gamma=None, header={})
    aligned, cards = align_burst(vb)
    inner = (slice(16, 80), slice(16, 80))
    before = np.abs(img - ref)[inner].mean()
    after = np.abs(aligned.frames[1, 0].numpy() - ref)[inner].mean()
    assert after < 0.1 * before
    assert parse_alignment(cards["ALIGN1"], "ALIGN1").dx == pytest.approx(truth.dx, abs=0.05)
    # a map in the header is used as given
    given = dict(vb.header, ALIGN1="0,0,0,1")
    same, cards = align_burst(ValidatedBurst(**{**vb.__dict__, "header": given}))
    assert cards["ALIGN1"].startswith("0.0000,0.0000,0.00000,1.000000")
    assert torch.allclose(same.frames[1], frames[1], atol=1e-4 * float(frames.abs().max()))
    with pytest.raises(Exception, match="ALIGN1 must be"):
        parse_alignment("1,2", "ALIGN1")


def test_solver_aligns_the_channels_and_records_the_map(scene):
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

    torch.set_num_threads(1)
    truth = Alignment(-1.1, 2.3, 0.0, 1.0)
    ref, img = _channel(scene, truth, 0.0, np.random.default_rng(2))
    frames = np.stack([ref, img])[:, None].repeat(2, axis=1).astype(np.float32)[:, :, :64, :64]
    engine = load_solver_engine(None, backend="psf-interpolation")
    cfg = SolverConfig(
        grid=0, fit_modes=3, patch_iterations=2, object_iterations=2, align_channels=True, progress=False
    )
    res = SVMOMFBD(engine, cfg).solve(frames, ["crisp8542", "crisp8542"])
    got = parse_alignment(res.header["ALIGN1"], "ALIGN1")
    assert abs(got.dy - truth.dy) < 0.1 and abs(got.dx - truth.dx) < 0.1
