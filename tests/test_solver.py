"""SV-MOMFBD solver (svrt.runtime.solver) and its metrics.

Fast tests use tiny random emulators (width 4) saved to a temporary folder, images of 32x32 to 48x40,
2-3 frames and a few iterations. The frames are made by the same emulator, so the problem has an exact
solution. An "identity" emulator (head weights zero: with ``residual=True`` it returns its input
exactly) checks the photometry. The evidence test (``slow``) needs the trained model ``svce-c16``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentences import sentence

from svrt.emulator import SVCE, EmulatorConfig, save_model
from svrt.errors import SvrtError
from svrt.fileio import Burst, read_restoration, write_restoration
from svrt.runtime.engine import load_engine
from svrt.runtime.solver import SVMOMFBD, SolverConfig, grid_shape

FAST = dict(method="adam", iterations=3, grid=16, progress=False)   # most tests here pin the adam path




def _save(path, **cfg):
    torch.manual_seed(cfg.pop("seed", 0))
    model = SVCE(EmulatorConfig(width=4, **cfg))
    save_model(path, model, {"name": path.stem})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    paths = {
        "tiny": _save(d / "tiny.safetensors"),
        "one": _save(d / "one.safetensors", instruments=["crisp8542"]),
        "m10": _save(d / "m10.safetensors", n_modes=10),
    }
    torch.manual_seed(0)
    ident = SVCE(EmulatorConfig(width=4))
    with torch.no_grad():
        ident.head.weight.zero_()
        ident.head.bias.zero_()
    save_model(d / "identity.safetensors", ident, {"name": "identity"})
    paths["identity"] = d / "identity.safetensors"
    return paths


@pytest.fixture(scope="module")
def engine(models):
    return load_engine(models["tiny"])


def synthetic(engine, k=2, n_frames=2, y=32, x=32, grid=(2, 2), seed=0, level=1000.0, instrument="crisp8542"):
    """Frames made by ``engine`` from a smooth random truth and random coarse modes."""
    g = torch.Generator().manual_seed(seed)
    truth = F.avg_pool2d(torch.randn(k, 1, y + 2, x + 2, generator=g), 3, 1)[:, :, :y, :x]
    truth = level * (1 + 0.3 * truth)          # ~10 % RMS contrast, like granulation
    modes = 0.2 * torch.randn(n_frames, engine.n_modes, *grid, generator=g)
    fine = F.interpolate(modes, size=(y, x), mode="bilinear", align_corners=False)
    insts = [instrument] * k if isinstance(instrument, str) else list(instrument)
    frames = torch.stack([engine.forward(truth[i].expand(n_frames, 1, y, x).contiguous(), fine, insts[i])[:, 0]
                          for i in range(k)])
    return frames.numpy(), truth[:, 0].numpy(), modes.numpy(), insts


# ------------------------------------------------------------------------------------------ solving

def test_loss_decreases_and_shapes(engine):
    frames, truth, modes, insts = synthetic(engine, n_frames=3, y=48, x=40)
    solver = SVMOMFBD(engine, SolverConfig(method="adam", iterations=5, grid=16, progress=False))
    seen = []
    r = solver.solve(frames, insts, callback=seen.append)
    loss = r.loss["total"]
    assert loss[-1] < loss[0]
    assert r.loss["data"][-1] < r.loss["data"][0]
    assert [s["iteration"] for s in seen] == [1, 2, 3, 4, 5]
    assert r.objects.shape == (2, 48, 40) and r.objects.dtype == np.float32
    assert r.modes.shape == (3, engine.n_modes, 3, 3)          # ceil(48/16), ceil(40/16)
    assert r.model.shape == frames.shape
    assert r.frame_average.shape == (2, 48, 40)
    assert np.all(np.isfinite(r.objects)) and np.all(np.isfinite(r.modes))
    assert set(r.loss) >= {"iteration", "total", "data", "reg_object", "reg_modes", "time_s"}


def test_grid_rule():
    assert grid_shape((48, 40), 16) == (3, 3)
    assert grid_shape((48, 40), 0) == (1, 1)
    assert grid_shape((64, 64), 64) == (1, 1)
    assert grid_shape((50, 33), 8) == (7, 5)
    with pytest.raises(SvrtError) as e:
        grid_shape((32, 32), 40)
    sentence(e.value)


@pytest.mark.parametrize("grid", [0, 32])
def test_spatially_invariant_baseline(engine, grid):
    frames, _, _, insts = synthetic(engine)
    r = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=grid, progress=False)).solve(frames, insts)
    assert r.modes.shape == (2, engine.n_modes, 1, 1)
    assert r.header["GRID_Y"] == 1 and r.header["GRID_X"] == 1
    assert np.all(np.isfinite(r.objects))


def test_sizes_not_multiple_of_16(engine):
    frames, _, _, insts = synthetic(engine, k=1, y=37, x=45)
    r = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=10, progress=False)).solve(frames, insts)
    assert r.objects.shape == (1, 37, 45) and r.modes.shape == (2, engine.n_modes, 4, 5)
    assert np.all(np.isfinite(r.model))


def test_masked_pixels_have_no_influence(engine):
    frames, _, _, insts = synthetic(engine, k=1, n_frames=3)
    mask = np.ones(frames.shape, dtype=bool)
    mask[0, 1, 5:12, 7:20] = False
    mask[0, 2, 20:, 25:] = False
    solver = SVMOMFBD(engine, SolverConfig(**FAST))
    a = frames.copy()
    b = frames.copy()
    a[~mask] = np.nan
    b[~mask] = 1e6
    ra = solver.solve(a, insts, mask=mask)
    rb = solver.solve(Burst(frames=b, instruments=insts, mask=mask))
    np.testing.assert_allclose(ra.objects, rb.objects, rtol=1e-5, atol=1e-5 * np.abs(ra.objects).max())
    np.testing.assert_allclose(ra.modes, rb.modes, rtol=1e-5, atol=1e-6)
    assert ra.header["NMASKED"] == int((~mask).sum())
    # the masked region of the unmasked frames is not constrained like the rest: the result differs
    rc = solver.solve(b, insts)
    assert not np.allclose(rc.objects, rb.objects)


def test_tiptilt_mean_is_zero(engine):
    frames, _, _, insts = synthetic(engine, n_frames=3)
    r = SVMOMFBD(engine, SolverConfig(**FAST)).solve(frames, insts)
    tt = r.modes[:, :2].mean(axis=0)
    assert np.abs(tt).max() < 1e-5
    assert np.abs(r.modes[:, :2]).max() > 1e-3  # the tip-tilts themselves are not zero
    r2 = SVMOMFBD(engine, SolverConfig(method="adam", iterations=3, grid=16, progress=False, tiptilt=False)).solve(
        frames, insts
    )
    assert np.abs(r2.modes[:, :2].mean(axis=0)).max() > 1e-4


def test_photometry_identity_emulator(models):
    eng = load_engine(models["identity"])
    frames, _, _, insts = synthetic(eng, n_frames=3, level=2500.0)
    r = SVMOMFBD(eng, SolverConfig(method="adam", iterations=4, grid=16, progress=False)).solve(frames, insts)
    for k in range(2):
        assert r.objects[k].mean() == pytest.approx(frames[k].mean(), rel=2e-3)
        assert r.model[k].mean() == pytest.approx(frames[k].mean(), rel=2e-3)


def test_photometry_scale_equivariant(engine):
    """The normalisation does not change the photometry: c * frames gives c * the result."""
    frames, _, _, insts = synthetic(engine, k=1)
    solver = SVMOMFBD(engine, SolverConfig(**FAST))
    r1 = solver.solve(frames, insts)
    r2 = solver.solve(frames * 37.0, insts)
    np.testing.assert_allclose(r2.objects, 37.0 * r1.objects, rtol=1e-4, atol=1e-4 * 37 * np.abs(r1.objects).max())
    # Adam divides by sqrt(v): 1-ulp differences of the scaled data grow over the iterations (seen: 3e-3 rad)
    np.testing.assert_allclose(r2.modes, r1.modes, atol=1e-2)


def test_frame_batches_give_the_same_gradient(engine):
    frames, _, _, insts = synthetic(engine, n_frames=3)
    ra = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False, max_batch=6)).solve(
        frames, insts
    )
    rb = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False, max_batch=1)).solve(
        frames, insts
    )
    rc = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False)).solve(frames, insts)
    assert ra.plan.batch == 6 and rb.plan.batch == 1 and rc.plan.batch == 2     # CPU default: at most 2
    np.testing.assert_allclose(rb.objects, ra.objects, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(rb.loss["total"], ra.loss["total"], rtol=1e-4)


def test_sample_coarse_is_the_bilinear_upsampling():
    from svrt.mode_grid import sample_coarse

    c = torch.randn(2, 3, 5, 4)
    fine = F.interpolate(c, size=(37, 29), mode="bilinear", align_corners=False)
    got = sample_coarse(c, torch.arange(37.0), torch.arange(29.0), (37, 29))
    assert torch.allclose(got, fine, atol=1e-5)


def test_checkpointing_gives_the_same_result(engine):
    frames, _, _, insts = synthetic(engine, k=1)
    ra = SVMOMFBD(
        engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False, checkpointing="off")
    ).solve(frames, insts)
    rb = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False, checkpointing="on")).solve(
        frames, insts
    )
    assert rb.plan.checkpointing and not ra.plan.checkpointing
    np.testing.assert_allclose(rb.objects, ra.objects, rtol=1e-5, atol=1e-3)


def test_tiles_cover_the_field(engine):
    frames, _, _, insts = synthetic(engine, k=1, n_frames=2, y=48, x=40)
    cfg = SolverConfig(method="adam", iterations=2, grid=8, progress=False, tile_size=32, tile_overlap=8)
    r = SVMOMFBD(engine, cfg).solve(frames, insts)
    assert r.plan.tiled and len(r.plan.tiles) == 4
    assert r.header["NTILES"] == 4
    assert r.objects.shape == (1, 48, 40) and r.modes.shape == (2, engine.n_modes, 6, 5)
    assert np.all(np.isfinite(r.objects)) and np.all(np.isfinite(r.model))
    assert abs(r.modes[:, :2].mean(axis=0)).max() < 1e-5


def test_memory_bound_forces_tiles(engine):
    solver = SVMOMFBD(engine, SolverConfig(method="adam", progress=False, memory_mb=120.0))
    plan = solver.plan(2, 12, (256, 256))
    assert plan.tiled and plan.batch >= 1
    assert plan.bytes_per_sample * plan.batch <= plan.bound_bytes
    mid = SVMOMFBD(engine, SolverConfig(method="adam", progress=False, memory_mb=400.0, max_batch=24)).plan(
        2, 12, (256, 256)
    )
    assert not mid.tiled and 1 <= mid.batch < 24 and mid.bytes_per_sample * mid.batch <= mid.bound_bytes
    big = SVMOMFBD(engine, SolverConfig(method="adam", progress=False, memory_mb=4096))
    assert not big.plan(2, 12, (256, 256)).tiled
    with pytest.raises(SvrtError) as e:
        SVMOMFBD(engine, SolverConfig(method="adam", progress=False, memory_mb=0.01)).plan(1, 2, (256, 256))
    sentence(e.value)


@pytest.mark.parametrize("options", [dict(apodization="hann"), dict(apodization="none"), dict(weights="noise"),
                                     dict(scaling="global", init_modes_std=0.05)])
def test_options_run(engine, options):
    frames, _, _, insts = synthetic(engine)
    r = SVMOMFBD(engine, SolverConfig(method="adam", iterations=2, grid=16, progress=False, **options)).solve(
        frames, insts
    )
    assert np.all(np.isfinite(r.objects))
    for key, value in options.items():
        assert r.header[key.upper()] == value


def test_two_instruments_share_the_wavefront(engine):
    frames, _, _, _ = synthetic(engine, instrument=["crisp8542", "crisp6302"])
    r = SVMOMFBD(engine, SolverConfig(**FAST)).solve(frames, ["crisp8542", "crisp6302"])
    assert r.instruments == ["crisp8542", "crisp6302"]
    assert r.header["MODES_WAVELNTH"] == 8542.0


def test_engine_per_instrument(models, engine):
    one = load_engine(models["one"])
    frames, _, _, _ = synthetic(engine, instrument=["crisp8542", "crisp6302"])
    solver = SVMOMFBD({"crisp8542": one, "crisp6302": engine}, SolverConfig(**FAST))
    r = solver.solve(frames, ["crisp8542", "crisp6302"])
    assert "OBJ0_ENGINE" in r.header and r.header["OBJ0_ENGINE"].startswith("one:")


def test_warm_start_from_previous_result(engine):
    frames, _, _, insts = synthetic(engine)
    solver = SVMOMFBD(engine, SolverConfig(**FAST))
    r1 = solver.solve(frames, insts)
    r2 = solver.solve(frames, insts, init=r1)
    assert r2.loss["total"][0] < r1.loss["total"][0]


def test_restoration_file_round_trip(engine, tmp_path):
    frames, truth, _, insts = synthetic(engine)
    burst = Burst(
        frames=frames, instruments=insts, truth=truth, header={"DATE-OBS": "2024-06-01T08:30:00", "CDELT1": 0.059}
    )
    r = SVMOMFBD(engine, SolverConfig(**FAST)).solve(burst)
    for suffix in (".fits", ".h5"):
        path = tmp_path / f"r{suffix}"
        write_restoration(path, r.to_restoration(burst.header))
        back = read_restoration(path)
        np.testing.assert_array_equal(back.objects, r.objects)
        np.testing.assert_array_equal(back.modes, r.modes)
        np.testing.assert_array_equal(back.model, r.model)
        np.testing.assert_allclose(back.loss["total"], r.loss["total"])
        h = back.header
        assert back.instruments == insts
        assert h["DATE-OBS"] == "2024-06-01T08:30:00"
        assert h["ITERATIONS"] == 3 and h["GRID"] == 16
        assert h["LR_OBJECTS"] == pytest.approx(10 ** -1.7)
        assert h["LR_MODES"] == pytest.approx(10 ** -0.5)
        assert h["LAMBDA_OBJ"] == 1.0 and h["LAMBDA_MODES"] == 0.01 and h["LR_NODES"] == 0.1
        assert h["FILTER_WIDTH"] == 1.8 and h["FILTER_SHARPNESS"] == 20.0 and h["APODIZATION"] == "mirror"
        assert h["ENGINE_MODEL"] == "tiny" and h["ENGINE_BACKEND"] == "torch" and h["ENGINE_HASH"]
        assert h["SVRT_VERSION"] and h["T_ITER"] > 0 and h["PEAK_MB"] > 0
        assert h["GRID_Y"] == 2 and h["MAX_BATCH"] == "auto"


# ------------------------------------------------------------------------------------------ bad input

def test_bad_inputs(engine, models):
    solver = SVMOMFBD(engine, SolverConfig(**FAST))
    frames, _, _, insts = synthetic(engine)
    cases = [
        (lambda: solver.solve(frames[0, 0], insts[:1]), "[K, L, Y, X]"),
        (lambda: solver.solve(frames[None], insts), "[K, L, Y, X]"),
        (lambda: solver.solve(frames[..., :8, :8], insts), "too small"),
        (lambda: solver.solve(np.where(np.arange(32) == 3, np.nan, frames).astype(np.float32), insts), "NaN"),
        (lambda: solver.solve(frames, ["crisp8542"] * 3), "instruments"),
        (lambda: solver.solve(frames, None), "instrument"),
        (lambda: solver.solve(frames, ["crisp8542", "chromis3934"]), "pixel scales"),
        (lambda: solver.solve(frames, insts, mask=np.ones((2, 2, 32, 31), bool)), "mask"),
        (lambda: solver.solve(frames, insts, mask=np.zeros(frames.shape, bool)), "no valid pixel"),
        (lambda: solver.solve(frames, insts, init={"modes": np.zeros((2, 10, 2, 2), np.float32)}), "modes"),
        (lambda: solver.solve(frames, insts, init={"objects": np.zeros((2, 30, 30), np.float32)}), "init objects"),
        (lambda: solver.solve(frames, insts, weights=np.ones((3, 2))), "weights"),
        (
            lambda: SVMOMFBD(engine, SolverConfig(method="adam", grid=40, progress=False)).solve(frames, insts),
            "grid factor",
        ),
        (
            lambda: SVMOMFBD(load_engine(models["one"]), SolverConfig(**FAST)).solve(
                frames, ["crisp8542", "crisp6302"]
            ),
            "crisp6302",
        ),
        (lambda: SVMOMFBD([engine, load_engine(models["m10"])]), "numbers of modes"),
        (lambda: SolverConfig(method="adam", iterations=0), "iterations"),
        (lambda: SolverConfig(method="adam", apodization="cosine"), "apodization"),
        (lambda: SVMOMFBD(object()), "Engine"),
    ]
    for fn, needle in cases:
        with pytest.raises(SvrtError) as e:
            fn()
        assert needle in sentence(e.value), (needle, str(e.value))


# ------------------------------------------------------------------------------------------ metrics

def test_metrics():
    from svrt.metrics import (
        compare,
        contrast,
        diffraction_limited,
        nmse_variance,
        power_spectrum,
        spectral_distance,
    )

    rng = np.random.default_rng(0)
    img = 1 + 0.1 * rng.standard_normal((64, 64))
    assert float(nmse_variance(img, img)) == 0.0
    assert float(nmse_variance(np.full_like(img, img.mean()), img)) == pytest.approx(1.0)
    assert float(contrast(img)) == pytest.approx(img.std() / img.mean())
    dl = diffraction_limited(img, 0.2)
    assert dl.shape == img.shape and dl.mean() == pytest.approx(img.mean(), rel=1e-3)
    f, p = power_spectrum(dl)
    assert f[0] > 0 and f[-1] == pytest.approx(0.5) and p[f > 0.3].mean() < 1e-3 * p[f < 0.15].mean()
    assert float(spectral_distance(img, img, 0.3)) == 0.0
    figs = compare(img[None], {"same": img[None], "flat": np.full((1, 64, 64), img.mean())}, 0.3)
    assert figs["same"]["nmse_variance"][0] == 0.0 and figs["flat"]["nmse_variance"][0] == pytest.approx(1.0, rel=0.05)


# ------------------------------------------------------------------------------------------ evidence (slow)

def _evidence(engine, seed=3, grids=(8, 0), metric="nmse_variance_registered"):
    """NMSE to the truth (filtered, registered: the object's position is not determined by the data) of
    the frame average and of the restorations at each grid P, for the burst of ``seed``."""
    from svrt.benchmarks.evidence import evidence_case

    case = evidence_case(engine, seed=seed, size=96, frames=6, objects=1, grids=grids)
    return {k: v[metric][0] for k, v in case["figures"].items() if metric in v}


# The paper's joint AdamW is not a convex fit: the thread count alone moves one burst's NMSE by up to 15 %
# (seed 3: P = 8 0.204 / 0.190 and P = 0 0.196 / 0.223 with 1 / 2 threads, 2-core EPYC). Figures that do not
# depend on rounding are therefore means over several bursts. Measured with 1 and 2 threads over seeds 3-7:
# P = 8 / average <= 0.33 on every burst; the mean over the 5 seeds of P = 8 / P = 0 is 0.910 (1 thread) and
# 0.893 (2 threads), and the least favourable combination of the per-seed ratios seen (each seed's worse
# thread count) gives 0.932.
EVIDENCE_SEEDS = (3, 4, 5, 6, 7)


@pytest.mark.slow
def test_evidence_exact_optics_restoration_beats_average_and_invariant():
    """The SV-MOMFBD algorithm itself: with the exact optics as forward model (PSFs interpolated
    between grid nodes), the spatially variant restoration (P = 8) of a simulated anisoplanatic burst
    is far closer to the truth than the frame average on every burst, and closer than the spatially
    invariant solution on the mean over five bursts (the margins are argued above EVIDENCE_SEEDS: every
    burst < 0.5 x the average where 0.33 is the worst measured; mean ratio < 1 where 0.93 is the worst)."""
    engine = load_engine(None, backend="psf-interpolation")
    ratios = []
    for seed in EVIDENCE_SEEDS:
        nmse = _evidence(engine, seed=seed)
        assert nmse["P=8"] < 0.5 * nmse["average"], (seed, nmse)
        ratios.append(nmse["P=8"] / nmse["P=0"])
    assert np.mean(ratios) < 1.0, ratios


@pytest.mark.slow
def test_evidence_engine_restoration_beats_average_and_matches_invariant():
    """With the shipped engine (the PSF-basis emulator psfb-crisp8542) as forward model of the paper's joint
    AdamW, the spatially variant restoration (P = 8) is far closer to the truth than the frame average on
    every burst and as close as the spatially invariant solution (P = 0) to within 10 % on the mean over three
    bursts. Measured with 1 and 2 threads (the same figures to 3 digits: the engine's PSFs are smooth in the
    modes, unlike the U-Net's), seeds 3-5: P = 8 / average 0.32, 0.41, 0.45; P = 8 / P = 0 0.92, 0.98, 1.05
    (mean 0.985). The bounds 0.6 and 1.1 leave 30 % and 10 %. (The U-Net svce-c16 held the same bounds at 1.6x
    the time; its figures are in docs/evidence/emulator and docs/ENGINE.md.)"""
    engine = load_engine("psfb-crisp8542")
    ratios = []
    for seed in EVIDENCE_SEEDS[:3]:
        nmse = _evidence(engine, seed=seed)
        assert nmse["P=8"] < 0.6 * nmse["average"], (seed, nmse)
        ratios.append(nmse["P=8"] / nmse["P=0"])
    assert np.mean(ratios) < 1.1, ratios


def test_memory_bound_is_respected_on_cpu(models, tmp_path):
    """Peak resident memory of a solve (a fresh process, after a warm-up) stays within memory_mb."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        import numpy as np
        from svrt.runtime.engine import load_engine
        from svrt.runtime.solver import SVMOMFBD, SolverConfig, _peak_rss_mb
        eng = load_engine({str(models["tiny"])!r})
        rng = np.random.default_rng(0)
        frames = (1 + 0.1 * rng.standard_normal((1, 6, 160, 160))).astype(np.float32)
        small = frames[:, :1, :32, :32]
        SVMOMFBD(eng, SolverConfig(method="adam", iterations=1, progress=False)).solve(small, "crisp8542")
        base = _peak_rss_mb()
        cfg = SolverConfig(method="adam", iterations=1, progress=False, memory_mb=110.0, max_batch=6)
        r = SVMOMFBD(eng, cfg).solve(frames, "crisp8542")
        print(r.plan.batch, len(r.plan.tiles), _peak_rss_mb() - base)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    batch, tiles, growth = out.stdout.split()
    assert int(batch) < 6                      # the bound limited the batch (unbounded: all 6 frames at once)
    assert float(growth) <= 110.0, out.stdout
