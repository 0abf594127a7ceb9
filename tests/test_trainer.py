"""Tests of svrt.trainer: training pairs (Sect. 2.3), the loss of Eq. 11, NMSE (Eq. 12), the learning-rate
schedule, a tiny training run with resume, and ``svrt validate --quick``.

Fast (< 60 s on 2 busy cores): tiny models, white-noise or constant images where the real image mix is
not the point, one thread.
"""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from svrt.atmosphere import kl_standard_deviations, kolmogorov_coefficients
from svrt.emulator import SVCE, EmulatorConfig, load_model, save_model
from svrt.errors import SvrtError
from svrt.metrics import nmse_power
from svrt.optics.convolution import fft_convolve
from svrt.trainer import pairs as pairs_module
from svrt.trainer.images import SOURCES
from svrt.trainer.loss import LAMBDA_FLUX, LAMBDA_GRAD, emulator_loss
from svrt.trainer.pairs import APODIZATION, CROP, R0_RANGE, WEAK_FRACTION, PairGenerator, fixed_set
from svrt.trainer.train import TrainConfig, learning_rate, train

INSTRUMENTS = ["crisp8542", "hifi6563"]




def constant_image(rng, size):
    return np.ones((size, size), np.float32), "constant"


def centred_point(rng, size):
    img = np.zeros((size, size), np.float32)
    img[size // 2, size // 2] = 1.0
    return img, "point"


def white_noise(rng, size):
    return rng.random((size, size), dtype=np.float32), "noise"


# ------------------------------------------------------------------------------------ pairs

def test_pair_shapes_and_fields():
    gen = PairGenerator(INSTRUMENTS)
    rng = np.random.default_rng(3)
    for _ in range(2):
        p = gen.sample(rng)
        assert p["obj"].shape == p["target"].shape == (1, CROP, CROP)
        assert p["obj"].dtype == p["target"].dtype == torch.float32
        assert p["coefficients"].shape == (44,)
        assert p["instrument"] in range(len(INSTRUMENTS))
        assert R0_RANGE[0] <= p["r0"]                       # weak wavefronts: r0 beyond the range
        assert p["source"] in SOURCES
        assert 0.0 <= float(p["obj"].min()) and float(p["obj"].max()) <= 1.0
        assert torch.isfinite(p["target"]).all() and float(p["target"].min()) > -1e-4
    assert gen.size == CROP and gen.boundary == "reflect" and gen.weak_fraction == WEAK_FRACTION
    assert PairGenerator(INSTRUMENTS, boundary="apodize").size == CROP + 2 * APODIZATION
    with pytest.raises(ValueError, match="boundary"):
        PairGenerator(INSTRUMENTS, boundary="zero")
    s = fixed_set(gen, 3, seed=5)
    assert s["obj"].shape == (3, 1, CROP, CROP) and s["coefficients"].shape == (3, 44)
    assert s["instrument"].shape == s["r0"].shape == (3,) and len(s["source"]) == 3


def test_fixed_set_is_a_function_of_its_seed(monkeypatch):
    """A held-out set must not depend on what the process generated before it (the training validation set,
    ``svrt validate``'s pairs, a resumed run). Seed 3 draws a solar image first. The first call starts from
    an empty solar-scene cache, as in a fresh process."""
    from svrt.trainer import images

    if hasattr(images, "_SOLAR_POOL"):
        monkeypatch.setattr(images, "_SOLAR_POOL", [])
    gen = PairGenerator(INSTRUMENTS)
    first = fixed_set(gen, 4, seed=3)
    for seed in range(30, 36):                                 # other work in between
        fixed_set(gen, 2, seed=seed)
    again = fixed_set(gen, 4, seed=3)
    assert "solar" in first["source"]
    assert first["source"] == again["source"]
    assert torch.equal(first["obj"], again["obj"])


@pytest.mark.parametrize("weak", [0.0, 1.0])
def test_pair_coefficients_are_kolmogorov_draws(monkeypatch, weak):
    """The coefficients are exactly kolmogorov_coefficients(instrument, r0) drawn from the pair's stream.
    weak_fraction = 1: every one of them is then scaled by u ~ U(0, 1), reported as the equivalent r0
    u^(-6/5) (variance ~ r0^(-5/3))."""
    monkeypatch.setattr(pairs_module, "random_image", constant_image)
    gen = PairGenerator(INSTRUMENTS, weak_fraction=weak)
    rng = np.random.default_rng(11)
    for _ in range(3):
        shadow = copy.deepcopy(rng)
        p = gen.sample(rng)
        index = int(shadow.integers(len(INSTRUMENTS)))
        r0 = float(shadow.uniform(*R0_RANGE))
        coef = kolmogorov_coefficients(INSTRUMENTS[index], r0, 44, rng=shadow)
        u = float(shadow.uniform()) if shadow.random() < weak else 1.0
        assert p["instrument"] == index and p["r0"] == pytest.approx(r0 * u ** -1.2, rel=1e-12)
        np.testing.assert_allclose(p["coefficients"].numpy(), coef * u, rtol=1e-6)


def test_pair_coefficient_statistics(monkeypatch):
    """Whitened by the KL standard deviations of their (instrument, r0), the coefficients of 150 pairs are
    standard normal: 6600 values, so mean within 0.06 (5 sigma) and std within 0.05 (5.7 sigma)."""
    monkeypatch.setattr(pairs_module, "random_image", constant_image)
    gen = PairGenerator(INSTRUMENTS, weak_fraction=0.0)
    rng = np.random.default_rng(12)
    z, r0s, idx = [], [], []
    for _ in range(150):
        p = gen.sample(rng)
        sd = kl_standard_deviations(INSTRUMENTS[p["instrument"]], p["r0"], 44)
        z.append(p["coefficients"].numpy() / sd)
        r0s.append(p["r0"])
        idx.append(p["instrument"])
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.06 and abs(z.std() - 1) < 0.05
    assert min(r0s) < 4.5 and max(r0s) > 13.5                   # the whole 3-15 cm range is used
    assert set(idx) == {0, 1}


def test_weak_wavefronts_share(monkeypatch):
    """About 30 % of the wavefronts are weak by default."""
    monkeypatch.setattr(pairs_module, "random_image", constant_image)
    gen = PairGenerator(INSTRUMENTS)
    rng = np.random.default_rng(22)
    weak = sum(gen.sample(rng)["r0"] > R0_RANGE[1] for _ in range(200))
    # binomial(200, 0.3 x P(u^-1.2 r0 > 15)); P > 0.6 at worst: expect >= 36, sd ~ 6; no weak ones if broken
    assert 20 <= weak <= 80


def test_reflect_targets_are_a_function_of_the_object(monkeypatch):
    """The default targets: the crop itself convolved with a mirrored boundary, nothing from outside it;
    a uniform object stays exactly uniform (no dark borders), whatever the PSF's size."""
    gen = PairGenerator(INSTRUMENTS)
    rng = np.random.default_rng(23)
    p = gen.sample(rng)
    psf = gen.psf_model(INSTRUMENTS[p["instrument"]])(p["coefficients"])
    torch.testing.assert_close(p["target"], fft_convolve(p["obj"], psf, boundary="reflect"), rtol=0, atol=1e-6)
    monkeypatch.setattr(pairs_module, "random_image", constant_image)
    for _ in range(3):
        # float32 FFT of 255^2 points: rounding ~1e-7 x log N of values ~1, tolerance 1e-5
        np.testing.assert_allclose(gen.sample(rng)["target"].numpy(), 1.0, atol=1e-5)


def test_pair_point_source_flux_and_centre(monkeypatch):
    """The paper's recipe (boundary="apodize"). A point at the centre of the apodised field: the target is
    the PSF itself (128 px, centred at 64 = the crop's 64), so all its flux lands inside the crop:
    sum(target) = 1 to float precision. Tests the unit sum of the PSF, flux conservation of the
    convolution and the centring of the crop."""
    monkeypatch.setattr(pairs_module, "random_image", centred_point)
    gen = PairGenerator(INSTRUMENTS, boundary="apodize")
    rng = np.random.default_rng(13)
    for _ in range(3):
        p = gen.sample(rng)
        psf = gen.psf_model(INSTRUMENTS[p["instrument"]])(p["coefficients"])
        assert abs(float(p["target"].sum()) - 1.0) < 1e-5
        assert float(p["obj"].sum()) == 1.0
        torch.testing.assert_close(p["target"][0], psf, rtol=0, atol=1e-6)


def test_pair_flux_within_crop_tolerance(monkeypatch):
    """The paper's recipe (boundary="apodize"): target flux against object flux for a uniform object (1 in
    the crop, the Hanning taper outside).

    The crop exchanges flux with what lies outside it: for a PSF shift k, the crop's sum changes by at most
    max(O) C (|kx| + |ky|) (the pixels that enter minus those that leave), so
    |sum(target) - sum(obj)| <= max(O) C (E|kx| + E|ky|) with E over the PSF: relative to C^2 for a uniform
    object, (E|kx| + E|ky|) / C. Outside the crop the object is <= 1, so the target can only lose flux.
    (This loss is real and large at small r0: the PSF, tip/tilt included, reaches past the 12-px taper into
    the zeros: 5-40 % for r0 = 3-15 cm.)"""
    monkeypatch.setattr(pairs_module, "random_image", constant_image)
    gen = PairGenerator(INSTRUMENTS, boundary="apodize")
    rng = np.random.default_rng(14)
    k = torch.arange(gen.psf_field, dtype=torch.float64) - gen.psf_field // 2
    for _ in range(6):
        p = gen.sample(rng)
        psf = gen.psf_model(INSTRUMENTS[p["instrument"]])(p["coefficients"]).double()
        spread = float((psf.sum(0) * k.abs()).sum() + (psf.sum(1) * k.abs()).sum())   # E|kx| + E|ky|
        deficit = 1.0 - float(p["target"].double().sum() / p["obj"].double().sum())
        assert -1e-5 <= deficit <= spread / CROP + 1e-5, (p["r0"], deficit, spread / CROP)


# ------------------------------------------------------------------------------------ loss, NMSE

def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 32, 32, generator=g)


def test_loss_is_zero_for_identical_images():
    t = _images()
    terms = emulator_loss(t.clone(), t)
    for k in ("total", "mse", "grad", "flux"):
        assert float(terms[k]) == 0.0, k


def test_loss_constant_offset_moves_flux_not_gradient():
    t = _images()
    terms = emulator_loss(t + 0.1, t)
    assert float(terms["grad"]) < 1e-10                 # Sobel kernels sum to zero: blind to offsets
    assert float(terms["flux"]) == pytest.approx(0.01, rel=1e-4)
    assert float(terms["mse"]) == pytest.approx(0.01, rel=1e-4)
    assert float(terms["total"]) == pytest.approx(0.01 + LAMBDA_FLUX * 0.01, rel=1e-4)


def test_loss_shifted_edge_moves_gradient_not_flux():
    """A bright bar moved by one pixel: same flux, different edges."""
    t = torch.zeros(1, 1, 32, 32)
    t[..., 10:20] = 1.0
    y = torch.roll(t, 1, dims=-1)
    terms = emulator_loss(y, t)
    assert float(terms["flux"]) == 0.0
    assert float(terms["grad"]) > 0.1 and float(terms["mse"]) > 0
    assert LAMBDA_GRAD == 10.0 and LAMBDA_FLUX == 1.0                       # the paper's choice
    assert float(terms["total"]) == pytest.approx(float(terms["mse"]) + LAMBDA_GRAD * float(terms["grad"]), rel=1e-6)
    # a blur (smoothing an edge) is also seen mainly by the gradient term
    blurred = torch.nn.functional.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)
    bt = emulator_loss(blurred, t)
    assert LAMBDA_GRAD * float(bt["grad"]) > float(bt["mse"])


def test_nmse_power_is_eq12():
    def nmse(y, t):
        return nmse_power(y, t, dims=(-3, -2, -1))

    t = torch.ones(3, 1, 8, 8)
    y = t * torch.tensor([1.0, 1.1, 0.5]).view(3, 1, 1, 1)
    s = nmse(y, t)
    assert s.shape == (3,)
    torch.testing.assert_close(s, torch.tensor([0.0, 0.01, 0.25]))
    a, b = _images(1), _images(2)
    ref = ((a - b) ** 2).sum(dim=(1, 2, 3)) / (b ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(nmse(a, b), ref)
    torch.testing.assert_close(nmse(7 * a, 7 * b), nmse(a, b))   # scale-free
    assert not torch.allclose(nmse(a, b), nmse(b, a))             # normalised by the target


def test_learning_rate_cosine():
    cfg = TrainConfig(steps=1000, lr_start=3e-4, lr_end=6e-5)
    assert learning_rate(0, cfg) == pytest.approx(3e-4)
    assert learning_rate(500, cfg) == pytest.approx((3e-4 + 6e-5) / 2)
    assert learning_rate(1000, cfg) == pytest.approx(6e-5)
    assert learning_rate(5000, cfg) == pytest.approx(6e-5)          # stays at lr_end after the schedule
    assert learning_rate(250, cfg) == pytest.approx(6e-5 + 0.5 * 2.4e-4 * (1 + math.cos(math.pi / 4)))
    lrs = [learning_rate(s, cfg) for s in range(0, 1001, 50)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # a wall-clock budget: the schedule follows whichever of steps and minutes is further along
    timed = TrainConfig(steps=1000, lr_start=3e-4, lr_end=6e-5, minutes=10)
    assert learning_rate(0, timed, seconds=300) == pytest.approx((3e-4 + 6e-5) / 2)
    assert learning_rate(500, timed, seconds=60) == pytest.approx((3e-4 + 6e-5) / 2)
    assert learning_rate(10, timed, seconds=600) == pytest.approx(6e-5)


def test_init_from_copies_weights_and_refuses_another_architecture(tmp_path):
    from svrt.trainer.train import _initialise

    torch.manual_seed(1)
    source = SVCE(EmulatorConfig(width=4, instruments=INSTRUMENTS))
    save_model(tmp_path / "a.safetensors", source, {"step": 7, "command": "made here"})
    torch.manual_seed(2)
    fresh = SVCE(EmulatorConfig(width=4, instruments=INSTRUMENTS))
    info = _initialise(fresh, TrainConfig(width=4, instruments=INSTRUMENTS, init_from=str(tmp_path / "a.safetensors")))
    for (k, a), b in zip(source.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert info["step"] == 7 and info["command"] == "made here" and len(info["file_sha256"]) == 64
    other = SVCE(EmulatorConfig(width=8, instruments=INSTRUMENTS))
    with pytest.raises(SvrtError, match="architecture"):
        _initialise(other, TrainConfig(width=8, instruments=INSTRUMENTS, init_from=str(tmp_path / "a.safetensors")))


# ------------------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """40 steps of a width-4 model on white-noise images (generated pairs, workers=0, seed 2).

    Why white noise: with the real image mix, 40 steps of a width-4 net move the validation loss by about
    1 %, up or down depending on the seed (measured for seeds 0-3): learning to blur and shift textures
    takes thousands of steps. White noise makes the loss at the start large (the untrained residual net is
    close to the identity, whose loss against a blurred noise field is dominated by the gradient term) and
    its first descent direction simple: damp the residual's high frequencies.
    Why seed 2: the eval-mode loss of a net whose BatchNorm statistics come from batches of 4 is jumpy, and
    for seeds 0 and 1 some settings gained only 1 % in 40 steps. Seed 2 fell monotonically at every check in
    every setting tried (lr 3e-3 and 5e-3, 40 and 60 steps, the mean and the 8-norm input normalisation of
    the emulator): by 21-32 %; the test asks for 10 %. Everything is seeded (torch, the pair stream, the
    held-out set), so on one machine the run is deterministic; the margin covers other BLAS builds.
    """
    mp = pytest.MonkeyPatch()
    mp.setattr(pairs_module, "random_image", white_noise)
    root = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(width=4, steps=40, batch=4, lr_start=3e-3, lr_end=6e-4, val_size=16, val_every=10,
                      checkpoint_every=10, workers=0, seed=2, instruments=INSTRUMENTS)
    logs = []
    state = train(cfg, root / "m.safetensors", root / "run", command="pytest", log=logs.append)
    yield {"cfg": cfg, "state": state, "root": root, "logs": logs, "mp": mp}
    mp.undo()


def test_training_reduces_validation_loss(trained):
    h = trained["state"]["history"]
    assert [e["step"] for e in h] == [10, 20, 30, 40]
    first, best = h[0]["loss"], min(e["loss"] for e in h)
    assert best < 0.9 * first, [e["loss"] for e in h]
    assert trained["state"]["best"] == best


def test_training_writes_weights_with_recipe_and_validation(trained):
    out = trained["root"] / "m.safetensors"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["recipe"]["width"] == 4 and meta["recipe"]["steps"] == 40 and meta["recipe"]["lr_start"] == 3e-3
    assert meta["recipe"]["instruments"] == INSTRUMENTS
    assert meta["command"] == "pytest" and "Eq. 11" in meta["loss"]
    v = meta["validation"]
    assert set(v["per_instrument"]) <= set(INSTRUMENTS) and v["nmse_power_mean"] > 0 and v["per_r0_bin"]
    assert v["loss"] == pytest.approx(trained["state"]["best"])
    model, meta2 = load_model(out)
    assert meta2 == meta and model.config.width == 4 and model.config.instruments == INSTRUMENTS


def test_training_resumes_from_checkpoint(trained):
    from safetensors import safe_open

    run = trained["root"] / "run"
    ckpt = run / "checkpoint.safetensors"

    def checkpoint_step():        # a safetensors file: nothing to unpickle
        with safe_open(str(ckpt), framework="pt") as f:
            assert any(k.startswith("model.") for k in f.keys()) and any(k.startswith("optim.") for k in f.keys())
            return json.loads(f.metadata()["state"])["step"]

    assert checkpoint_step() == 40
    assert not list(run.glob("*.pt"))
    cfg = dataclasses.replace(trained["cfg"], steps=50)
    logs = []
    state = train(cfg, trained["root"] / "m2.safetensors", trained["root"] / "run", log=logs.append)
    assert any("resuming" in s and "step 40" in s for s in logs), logs
    assert state["step"] == 50
    assert [e["step"] for e in state["history"]] == [10, 20, 30, 40, 50]
    assert checkpoint_step() == 50


# ------------------------------------------------------------------------------------ validate

def _cli(args):
    from click.testing import CliRunner

    from svrt.benchmarks.validate import validate_command

    return CliRunner().invoke(validate_command, [str(a) for a in args], catch_exceptions=False)


def test_validate_quick_small(trained, tmp_path):
    """``svrt validate --quick`` with the sizes turned down (64^2, 8 pairs, 2 realisations, no simulation)."""
    res = _cli([trained["root"] / "m.safetensors", "--quick", "--size", 64, "--pairs", 8, "--realisations", 2,
                "--skip", "simulate", "--out-dir", tmp_path / "val"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert report["quick"] and report["model"]["width"] == 4 and len(report["model"]["file_sha256"]) == 64
    assert report["held_out"]["n_pairs"] == 8 and report["held_out"]["seed"] == 20_000
    d = report["defocus"]
    assert d["size"] == 64 and len(d["positions"]) == 1 and d["defocus_kl_mode"] == 3
    assert d["psf_truncation_nmse_power"] < 1e-4
    assert report["timing"]["exact_per_pixel_s"] > 0 and report["timing"]["speedup"] > 0
    assert [r["r0_cm"] for r in report["psf"]["per_r0"]] == [3.0, 5.0, 8.0, 12.0, 15.0]
    assert "skipped" in report["simulate"] and report["targets"]["simulate_below_target"] is None
    for png in ("defocus.png", "psf.png"):
        assert (tmp_path / "val" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets" in res.output and "defocus" in res.output


def test_validate_quick_as_shipped(trained, tmp_path):
    """The plain ``--quick`` (128^2, 48 pairs, the simulation when svrt.simulate exists): 7-18 s on 2 cores
    (idle to loaded), so not marked slow."""
    res = _cli([trained["root"] / "m.safetensors", "--quick", "--out-dir", tmp_path])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["defocus"]["size"] == 128 and report["held_out"]["n_pairs"] == 48
    assert (tmp_path / "defocus.png").exists() and (tmp_path / "psf.png").exists()


def test_defocus_mode_is_found_from_the_kl_basis():
    from svrt.optics.kl import defocus_mode_index, kl_basis

    k = defocus_mode_index(44)
    row = np.abs(kl_basis(44).coefficients[k])
    assert row.argmax() == 4 - 2 and row[2] / np.linalg.norm(row) > 0.95


def test_simulate_part_is_skipped_without_svrt_simulate(monkeypatch):
    import sys

    from svrt.benchmarks.validate import simulate_test

    monkeypatch.setitem(sys.modules, "svrt.simulate", None)     # import fails
    torch.manual_seed(0)
    out = simulate_test(SVCE(EmulatorConfig(width=4, instruments=INSTRUMENTS)).eval())
    assert "skipped" in out


def test_validate_rejects_bad_arguments(tmp_path):
    from svrt.benchmarks.validate import run_validation

    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_model(path, SVCE(EmulatorConfig(width=4, instruments=INSTRUMENTS)))
    with pytest.raises(SvrtError, match="multiple of 16"):
        run_validation(path, tmp_path / "v", size=50, log=lambda s: None)
    with pytest.raises(SvrtError, match="not found"):
        run_validation(tmp_path / "missing.safetensors", tmp_path / "v", log=lambda s: None)


class _DiffractionOnly(SVCE):
    """A stand-in emulator that ignores the modes: the diffraction-limited convolution (CRISP 8542, 48 px)."""

    def __init__(self):
        from svrt.optics.psf import PSFModel

        super().__init__(EmulatorConfig(width=4, instruments=INSTRUMENTS))
        self.psf = PSFModel("crisp8542", 44, psf_size=48).diffraction_limited()

    def forward(self, obj, modes, condition):
        from svrt.optics.convolution import fft_convolve

        return fft_convolve(obj, self.psf)


class _ExactInvariant(SVCE):
    """A stand-in emulator that is exact for spatially constant modes (training's 128-px PSF)."""

    def __init__(self):
        from svrt.optics.psf import PSFModel

        super().__init__(EmulatorConfig(width=4, instruments=INSTRUMENTS))
        self.psf_model = PSFModel("crisp8542", 44, field=128)

    def forward(self, obj, modes, condition):
        from svrt.optics.convolution import fft_convolve

        return fft_convolve(obj[:, 0], self.psf_model(modes[:, :, 0, 0]))[:, None]


def test_psf_test_scores_an_exact_emulator_at_zero():
    from svrt.benchmarks.validate import psf_test

    summary, images = psf_test(_ExactInvariant().eval(), r0_values=(5.0, 12.0), realisations=2)
    for row in summary["per_r0"]:
        assert max(row["nmse_power"]) < 1e-10 and row["flux_ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert images["rows"][0]["exact"].max() == pytest.approx(1.0)


def test_defocus_test_geometry():
    """An emulator that ignores the defocus must score exactly the defocus effect (residual / effect = 1):
    the emulator's margin, crop and normalisation line up with the exact method's pixels."""
    from svrt.benchmarks.validate import defocus_test

    summary, images = defocus_test(_DiffractionOnly().eval(), size=64, positions=[32], repeats=1)
    row = summary["positions"][0]
    assert row["residual_over_effect"] == pytest.approx(1.0, abs=1e-4)
    assert row["nmse_power"] == pytest.approx(row["defocus_effect_nmse_power"], rel=1e-4)
    assert 1e-5 < row["defocus_effect_nmse_power"] < 1e-2           # the bump changes the image, not by much
    assert summary["defocus_kl_mode"] == 3 and summary["psf_truncation_nmse_power"] < 1e-5
    assert float(images["rows"][0]["exact"].max()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ pair cache

def test_pair_cache_round_trip_and_refusals(monkeypatch, tmp_path):
    """The cache holds exactly the pairs the generator makes from its seed stream; a cache made with
    other settings, or a file that is not one, is refused with the file's name."""
    from svrt.trainer.pair_cache import CachedPairs, write_pair_cache

    monkeypatch.setattr(pairs_module, "random_image", white_noise)
    gen = PairGenerator(INSTRUMENTS)
    path = write_pair_cache(tmp_path / "pairs.h5", gen, 5, seed=4, progress=False)
    cached = CachedPairs(path, gen)
    assert len(cached) == 5
    rng = np.random.default_rng([4, 7])
    for i in range(5):
        p, q = gen.sample(rng), cached[i]
        for k in ("obj", "target", "coefficients"):
            assert p[k].dtype == q[k].dtype and torch.equal(p[k], q[k]), k
        assert (p["instrument"], p["r0"], p["source"]) == (q["instrument"], q["r0"], q["source"])
    with pytest.raises(SvrtError, match="weak_fraction"):
        CachedPairs(path, PairGenerator(INSTRUMENTS, weak_fraction=0.5))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(SvrtError, match="bad.h5"):
        CachedPairs(bad, gen)


def test_training_from_a_pair_cache(monkeypatch, tmp_path):
    """--pair-cache: the cache is made on first use, then training cycles through it (8 pairs, batch 4,
    6 steps: three epochs) and records it in the metadata."""
    monkeypatch.setattr(pairs_module, "random_image", white_noise)
    cfg = TrainConfig(width=4, steps=6, batch=4, val_size=4, val_every=6, workers=0, seed=1, instruments=INSTRUMENTS,
                      pair_cache=str(tmp_path / "pairs.h5"), cache_pairs=8)
    state = train(cfg, tmp_path / "m.safetensors", tmp_path / "run", log=lambda s: None)
    assert state["step"] == 6 and (tmp_path / "pairs.h5").exists()
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["pair_cache"] == {"path": "pairs.h5", "pairs": 8}
