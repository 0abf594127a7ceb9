"""The PSF-basis emulator (svrt.psf_emulator, trainer/psf_basis.py, the psf-basis back end): its exact parts
against the physics (the tilt is an exact Fourier shift of the centred PSF; flux; linearity in the object),
its gradients against finite differences, its files, its training command, and the shipped model against
exact optics on wavefronts it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svrt.errors import SvrtError
from svrt.optics.psf import PSFModel
from svrt.psf_emulator import (
    PSFBasisConfig,
    PSFBasisEmulator,
    load_psf_emulator,
    save_psf_emulator,
    shift_crop,
    shift_image,
)
from svrt.trainer.psf_basis import CentredOptics, draw_coefficients

INSTRUMENT = "crisp8542"


@pytest.fixture(scope="module")
def optics():
    return CentredOptics(INSTRUMENT, 44, 64)


def test_tilt_factoring_reproduces_the_exact_psfs(optics):
    # the PSF of a wavefront = its centred PSF (wavefront minus its least-squares tilt) moved by the tilt's
    # image motion: exact for a Nyquist-sampled PSF (CRISP 8542 samples lambda/D with 3 px), up to float32
    # FFT rounding (~1e-7 per value, 1e-14 in the squared relative error) and the halo the shift would bring
    # in from beyond the 64-px work box, which stays below 1e-8 while the motion is under the 8-px margin
    exact = PSFModel(INSTRUMENT, 44, psf_size=48)
    a = torch.from_numpy(draw_coefficients(200, "ao", np.random.default_rng(1)))
    assert float((a @ optics.tilt).abs().max()) < 8
    box = shift_image(optics.centred_psfs(a), a @ optics.tilt)[..., 8:56, 8:56]    # centre 32 -> 24
    emulated = box / box.sum((-2, -1), keepdim=True)
    truth = exact(a)
    err = (emulated - truth).pow(2).sum((-2, -1)) / truth.pow(2).sum((-2, -1))
    assert float(err.max()) < 1e-8


def test_tilt_is_the_geometric_image_motion(optics):
    # KL 1 is Noll's Z2 = 2 rho cos(theta) (unit RMS): a coefficient of 1 rad tilts the wavefront by 2 / R per
    # unit length, i.e. (2 / pi) lambda / D, which is (2 / pi) x sampling camera pixels. The least-squares ramp
    # on the discrete (obscured) pupil grid may differ by the grid's discretisation: 2 % (a 35-px pupil box)
    from svrt.instruments import get_instrument

    expected = 2 / np.pi * get_instrument(INSTRUMENT).sampling
    assert float(optics.tilt[0, 0]) == pytest.approx(expected, rel=0.02)
    assert float(optics.tilt[1, 1]) == pytest.approx(expected, rel=0.02)
    assert float(optics.tilt[0, 1].abs()) < 1e-6 and float(optics.tilt[1, 0].abs()) < 1e-6


def test_shift_image_moves_a_band_limited_image_exactly():
    y, x = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                          indexing="ij")

    def gauss(cx, cy):
        return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.5 ** 2))

    moved = shift_image(gauss(16, 16), torch.tensor([1.3, -0.7], dtype=torch.float64))
    assert float((moved - gauss(17.3, 15.3)).abs().max()) < 1e-6   # the Gaussian's tails at the box edge


def test_shift_crop_equals_the_fourier_shift_and_has_exact_gradients():
    # the emulator's matrix form (Dirichlet kernel, exportable without a DFT) against the reference, the
    # Fourier phase ramp followed by the crop, on a band-limited image (Nyquist row and column zero):
    # the same operator, so the same numbers to float64 rounding
    g = torch.Generator().manual_seed(0)
    img = torch.randn(4, 32, 32, generator=g, dtype=torch.float64)
    spec = torch.fft.fft2(img)
    spec[..., 16, :] = 0
    spec[..., :, 16] = 0
    img = torch.fft.ifft2(spec).real
    shift = torch.tensor([[0.0, 0.0], [1e-6, -2.0], [3.7, 0.25], [-5.5, 4.0]], dtype=torch.float64)
    reference = shift_image(img, shift)[..., 4:28, 4:28]
    assert float((shift_crop(img, shift, 24) - reference).abs().max()) < 1e-9 * float(img.abs().max())
    probe = shift.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: shift_crop(img[:2], t[:2], 24), (probe,), eps=1e-6, atol=1e-6,
                                    fast_mode=True)


def _small_emulator(seed: int = 0, n_modes: int = 6) -> PSFBasisEmulator:
    """An untrained emulator with a random orthonormal basis and the diffraction-limited mean: the exact
    parts (shift, crop, convolution) do not depend on training."""
    g = torch.Generator().manual_seed(seed)
    model = PSFBasisEmulator(PSFBasisConfig(INSTRUMENT, n_modes=n_modes, psf_size=16, work_size=24, n_basis=5,
                                            hidden=16, depth=2))
    mean = PSFModel(INSTRUMENT, n_modes, psf_size=24).diffraction_limited()
    q, _ = torch.linalg.qr(torch.randn(24 * 24, 5, generator=g))
    model.mean.copy_(mean)
    model.basis.copy_(1e-3 * q.T.reshape(5, 24, 24))
    model.tilt.copy_(CentredOptics(INSTRUMENT, n_modes, 24).tilt)
    for p in model.net.parameters():
        p.data = 0.5 * torch.randn(p.shape, generator=g)
    return model.eval()


def test_emulated_psfs_have_unit_flux_and_the_convolution_is_linear_in_the_object():
    model = _small_emulator()
    g = torch.Generator().manual_seed(3)
    a = 0.4 * torch.randn(7, 6, generator=g)
    assert torch.allclose(model(a).sum((-2, -1)), torch.ones(7), atol=1e-5)
    o1, o2 = 1 + 0.1 * torch.randn(2, 1, 20, 20, generator=g)
    modes = 0.3 * torch.randn(1, 6, 20, 20, generator=g)
    with torch.no_grad():
        lhs = model.convolve(2 * o1 - 0.5 * o2, modes)
        rhs = 2 * model.convolve(o1, modes) - 0.5 * model.convolve(o2, modes)
    assert float((lhs - rhs).abs().max()) < 1e-5 * float(rhs.abs().max())
    with pytest.raises(SvrtError, match=r"obj \[N, Y, X\] and modes \[N, M, Y, X\]"):
        model.convolve(o1, modes[:, :, :10])


def test_emulator_gradients_agree_with_finite_differences():
    model = _small_emulator().double()
    g = torch.Generator().manual_seed(4)
    a = (0.3 * torch.randn(3, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: model(v), (a,), eps=1e-6, atol=1e-7, rtol=1e-4, fast_mode=True)


def test_files_round_trip_and_are_checked(tmp_path):
    from svrt.emulator import load_model

    model = _small_emulator()
    path = tmp_path / "psfb.safetensors"
    meta = save_psf_emulator(path, model, {"name": "psfb-test"})
    assert meta["kind"] == "psf-basis" and (tmp_path / "psfb.json").exists()
    loaded, read = load_psf_emulator(path)
    a = 0.2 * torch.randn(4, 6)
    assert torch.equal(loaded(a), model(a)) and read["sha256"] == meta["sha256"]
    with pytest.raises(SvrtError, match="is a psf-basis model, not the U-Net emulator"):
        load_model(path)
    with pytest.raises(SvrtError, match="metadata 'kind' is 'absent'; expected 'psf-basis'"):
        load_psf_emulator("svce-c16")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF                                       # a flipped bit in the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(SvrtError, match="hash"):
        load_psf_emulator(bad)


def test_the_back_end_is_picked_from_the_metadata_and_keeps_the_engine_contract(tmp_path):
    from svrt.optics.psf_interpolation import interpolated_psf_convolve
    from svrt.runtime.engine import backend_for, load_engine

    path = tmp_path / "psfb.safetensors"
    model = _small_emulator()
    save_psf_emulator(path, model, {"name": "psfb-test"})
    assert backend_for(path) == "psf-basis" and backend_for("svce-c16") == "torch"
    engine = load_engine(path)
    assert engine.identity.backend == "psf-basis" and engine.wants_coarse_modes and engine.linear_in_object
    g = torch.Generator().manual_seed(5)
    obj = 1 + 0.1 * torch.randn(1, 1, 24, 24, generator=g)
    coarse = 0.3 * torch.randn(1, 6, 2, 2, generator=g)
    out = engine.apply_coarse(obj, coarse, INSTRUMENT)
    assert torch.equal(out[:, 0], interpolated_psf_convolve(obj[:, 0], coarse, engine.model))
    with pytest.raises(SvrtError, match="not 'hifi'"):
        engine.apply_coarse(obj, coarse, "hifi")
    # the Engine interface (per-pixel modes): VJP against finite differences
    modes = torch.nn.functional.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=False)
    w = torch.randn(obj.shape, generator=g)
    _, gm = engine.vjp(obj, modes, INSTRUMENT, w)
    v = torch.randn(modes.shape, generator=g)
    t = 1e-2

    def loss(m):
        return float((w.double() * engine.forward(obj, m, INSTRUMENT).double()).sum())

    fd = (loss(modes + t * v) - loss(modes - t * v)) / (2 * t)
    assert fd == pytest.approx(float((gm * v).sum()), rel=1e-2)


def test_training_command_writes_a_validated_model_and_resumes(tmp_path):
    from click.testing import CliRunner

    from svrt.cli import cli

    out = tmp_path / "tiny.safetensors"
    args = ["train-psf-basis", "-o", str(out), "--n-train", "1000", "--n-val", "20", "--steps", "30",
            "--hidden", "16", "--n-basis", "8", "--checkpoint-every", "10", "--val-grids", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "gradient cosine" in result.output
    _, meta = load_psf_emulator(out)
    assert meta["step"] == 30 and set(meta["validation"]) == {"ao", "open"}
    assert meta["recipe"]["n_basis"] == 8 and 0 < meta["basis_explained_variance"] <= 1
    # a second run finds the training set and the finished checkpoint: no new training steps
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "resuming from" in again.output and "training set from" in again.output


def test_shipped_psf_basis_emulator_against_exact_optics():
    # the bundled emulator on wavefronts of seed streams its training never used (training: seed 0; its
    # validation: 10 000 +): the paper's forward metric (Eq. 12) on a granulation scene against issue 20's
    # 1e-4 (measured 1.2e-7: a bad basis or a broken shift gives 1e-3 and more), and the cosine of the mode
    # gradient of a spatially variant fit with exact optics' (issue 20: 0.99). Measured on this stream and the
    # next: AO median 0.994 / 0.996, uncorrected full-strength seeing 0.960 / 0.930; the K = 48 model, which
    # restored as well but whose basis leaves 4-7 % of the derivative out, had 0.93 / 0.90 and fails here
    from svrt.trainer.psf_basis import validate
    from svrt.trainer.psf_basis_config import PSFBasisTrainConfig

    model, meta = load_psf_emulator("psfb-crisp8542")
    cfg = PSFBasisTrainConfig(**{**meta["recipe"], "seed": 555, "n_val": 60})
    result = validate(model, cfg, n_grid=3, size=64)
    assert result["ao"]["nmse_power_median"] < 1e-4
    assert result["ao"]["gradient_cosine_median"] >= 0.98
    assert result["open"]["gradient_cosine_median"] >= 0.9
