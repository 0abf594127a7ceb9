"""``svrt validate``: how well a trained emulator reproduces exact convolutions (paper Sect. 2.4).

Five checks, all written to ``validation.json`` (with the command, the model's hashes and the machine)
and, where a picture says more, to PNG:

a. ``held_out``: NMSE (Eq. 12) on held-out spatially invariant training-like pairs
   (:class:`svrt.trainer.pairs.PairGenerator`, seed 20000 + seed, disjoint from the training
   stream (seed*1000 + step) and from the training validation set (10000 + seed)), per instrument,
   per r0 bin and per image source (:func:`svrt.trainer.train.evaluate`).
b. ``defocus`` (Fig. 4-5): a granulation scene at the CRISP 8542 pixel scale, every KL coefficient zero
   except defocus, which is a Gaussian bump (amplitude ``--defocus-rad``, sigma ``--sigma-px``) centred
   at points of the diagonal. Emulator (conditioned on crisp8542) against the exact per-pixel
   convolution of Eq. 1 (:func:`svrt.optics.convolution.spatially_variant_convolve`). The object carries
   a margin of the PSF size and the exact method runs with ``boundary="valid"``, so every compared pixel
   is physical; the emulator sees the same margin-extended object and is cropped to the same pixels.
   Images are normalised to the maximum of the exact image (as the paper's "normalised to 1").
c. ``psf`` (Fig. 7-8): one point source convolved with Kolmogorov wavefronts at several r0 (constant
   coefficients, so an FFT convolution with the PSFModel PSF is exact), NMSE against r0.
d. ``timing``: emulator vs exact per-pixel convolution, same CPU, same image (from b).
e. ``simulate``: the headline claim, emulated frames of the true object and true per-pixel modes
   against the exact frames of :func:`svrt.simulate.simulate_burst` (noiseless); skipped with a
   note where ``svrt.simulate`` is absent.

Everything heavy is imported inside functions; matplotlib with the Agg back end.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.metrics import nmse_power
from svrt.mode_grid import per_pixel_modes
from svrt.optics.kl import defocus_mode_index
from svrt.records import file_sha256

HELD_OUT_SEED = 20_000          # + seed; training uses seed*1000+step and 10_000+seed
DEFOCUS_INSTRUMENT = "crisp8542"
PSF_SIZE = 48                   # side of the per-pixel PSF of the exact method (see defocus_test)
R0_VALUES = (3.0, 5.0, 8.0, 12.0, 15.0)   # cm at 5000 A
TARGET_NMSE = 1e-3              # the target for b and e
PAPER_DEFOCUS_NMSE = 1.6e-4     # the paper's Fig. 5
PAPER_TIMING = {"exact_s": 12 * 60.0, "emulator_s": 0.1, "speedup": 3000, "size": 256}
PARTS = ("pairs", "defocus", "psf", "simulate")


# --------------------------------------------------------------------------------------------- helpers

def nmse_value(y: torch.Tensor, t: torch.Tensor) -> float:
    """:func:`~svrt.metrics.nmse_power` (Eq. 12) over a whole array, float64 sums."""
    return float(nmse_power(y.double(), t.double(), dims=tuple(range(y.dim()))))


def _training_nmse_power_mean(meta: dict):
    """The training loop's held-out mean Eq. 12 NMSE from a model's metadata (key ``nmse_mean`` before
    the NMSEs were named by their normalisation, as in the shipped svce-c16)."""
    v = meta.get("validation") or {}
    return v.get("nmse_power_mean", v.get("nmse_mean"))


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn, device, repeats: int) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls after one warm-up call; returns (seconds, last result).
    The minimum, not the median: on a shared machine other processes only ever add time."""
    out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), out


def _emulator(model, device):
    """``run(obj [B,1,Y,X], modes [B,M,Y,X], instrument) -> [B,1,Y,X]`` on CPU tensors, no autograd."""
    from svrt.emulator import emulate

    def run(obj, modes, instrument):
        cond = model.one_hot(instrument, batch=obj.shape[0], device=device)
        with torch.inference_mode():
            return emulate(model, obj.to(device), modes.to(device), cond).float().cpu()
    return run


def machine_info() -> dict:
    """What the timings ran on."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------------------------- a. pairs

def held_out_pairs(model, n: int, seed: int = 0, device="cpu") -> dict:
    """NMSE (Eq. 12) on ``n`` held-out spatially invariant pairs from seed ``HELD_OUT_SEED + seed``."""
    from svrt.trainer.pairs import PairGenerator, fixed_set
    from svrt.trainer.train import evaluate

    t0 = time.perf_counter()
    generator = PairGenerator(list(model.config.instruments), model.config.n_modes)
    val = fixed_set(generator, n, seed=HELD_OUT_SEED + seed)
    out = evaluate(model, val, torch.device(device))
    out.update(n_pairs=n, seed=HELD_OUT_SEED + seed, seconds=round(time.perf_counter() - t0, 2),
               description="spatially invariant Kolmogorov pairs made as training's (trainer/pairs.py defaults: "
                           "r0 3-15 cm at 5000 A, 30 % of the wavefronts scaled towards the diffraction limit "
                           "(bin 15-inf), mirrored borders), a seed disjoint from the training stream and the "
                           "training validation set; NMSE of Eq. 12 per pair, so [0, 1] images with high contrast "
                           "score far higher than a granulation scene with 12 % contrast for the same absolute error")
    return out


# --------------------------------------------------------------------------------------------- b. defocus

def defocus_field(shape: tuple, centre: tuple, amplitude: float, sigma: float, offset: float = 0.0) -> torch.Tensor:
    """Gaussian ``amplitude exp(-r^2 / 2 sigma^2)`` on a grid ``shape`` whose pixel i is output pixel
    ``i - offset``; centred at output pixel ``centre`` (y, x)."""
    yy = torch.arange(shape[0], dtype=torch.float64)[:, None] - offset - centre[0]
    xx = torch.arange(shape[1], dtype=torch.float64)[None, :] - offset - centre[1]
    return (amplitude * torch.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2))).float()


def defocus_test(model, size: int = 256, positions=None, amplitude: float = 1.5, sigma: float = 20.0,
                 psf_size: int = PSF_SIZE, seed: int = 0, device="cpu", repeats: int = 3,
                 progress: bool = False) -> tuple[dict, dict]:
    """The paper's Fig. 4-5 test. Returns (summary for the JSON, images for the figure).

    Geometry: a granulation scene of ``size + 128`` px; the compared region is its central
    ``size`` x ``size``. The exact method gets that region plus a margin of ``psf_size - 1`` px
    (``boundary="valid"``), the emulator the region plus ``psf_size / 2`` on each side (a multiple
    of 16 when size and psf_size are), cropped back to the region.

    PSF size: for defocus amplitude a (rad RMS of the KL mode ~ Zernike 4, phase 2 sqrt(3) a rho^2),
    geometric optics gives a blur disc of radius (4 sqrt(3) a / pi) lambda/D; with CRISP 8542's
    2.99 px per lambda/D that is 9.9 px at 1.5 rad, 13 px at 2 rad. 48 px holds the disc and the first
    Airy rings (98 % of the energy; the rest are faint far wings): the measured cost of the cut, the
    NMSE between a convolution with the 48-px PSF and with training's 128-px one at the peak defocus, is
    reported as ``psf_truncation_nmse`` and is the floor below which the comparison cannot resolve.
    """
    from svrt.instruments import get_instrument
    from svrt.optics.convolution import fft_convolve
    from svrt.optics.psf import PSFModel
    from svrt.scenes import make_scene

    device = torch.device(device)
    run = _emulator(model, device)
    inst = get_instrument(DEFOCUS_INSTRUMENT)
    m = model.config.n_modes
    k_def = defocus_mode_index(m)
    if positions is None:
        positions = [round(size * f) for f in (0.2, 0.4, 0.6, 0.8)]
    s = psf_size
    big_margin = 64
    scene = torch.from_numpy(make_scene("granulation", size + 2 * big_margin, inst.pixel_arcsec, HELD_OUT_SEED + seed))
    region = slice(big_margin, big_margin + size)
    psf_model = PSFModel(DEFOCUS_INSTRUMENT, m, psf_size=s)
    diffraction = fft_convolve(scene, psf_model.diffraction_limited())[region, region]

    # the floor: 48-px cut vs training's 128-px field, at the peak defocus, spatially invariant
    peak = torch.zeros(m)
    peak[k_def] = amplitude
    wide = PSFModel(DEFOCUS_INSTRUMENT, m, field=128)
    floor = nmse_value(fft_convolve(scene, psf_model(peak))[region, region],
                       fft_convolve(scene, wide(peak))[region, region])

    rows, images = [], []
    for p in positions:
        row, image = _defocus_at(float(p), scene, big_margin, size, psf_model, k_def, amplitude, sigma, run,
                                 diffraction, device, repeats, progress)
        rows.append(row)
        images.append(image)
    nm = [r["nmse_power"] for r in rows]
    summary = {
        "instrument": DEFOCUS_INSTRUMENT, "pixel_arcsec": inst.pixel_arcsec, "size": size,
        "scene": f"granulation, svrt.scenes seed {HELD_OUT_SEED + seed}",
        "defocus_kl_index": k_def, "defocus_kl_mode": k_def + 1,
        "amplitude_rad": amplitude, "sigma_px": sigma, "psf_size": s, "psf_field": psf_model.field,
        "psf_energy_in_cut_at_peak": _energy_in(wide(peak), s), "psf_truncation_nmse_power": floor,
        "boundary": f"exact: boundary='valid' with a {s - 1 - s // 2}/{s // 2} px margin; emulator: the same object "
                    f"with a {s // 2} px margin, cropped",
        "normalisation": "images divided by the maximum of the exact image",
        "reading": "defocus_effect_nmse_power is the NMSE of the diffraction-limited image against the exact one: what "
                   "an emulator that ignored the defocus would score; residual_over_effect = ||emulated - exact||^2 / "
                   "||diffraction-limited - exact||^2 is the fraction of the defocus signal left unexplained",
        "positions": rows, "nmse_power_max": max(nm), "nmse_power_mean": float(np.mean(nm)),
        "max_abs_residual": max(r["max_abs_residual"] for r in rows),
        "target_nmse_power": TARGET_NMSE, "paper_nmse_power": PAPER_DEFOCUS_NMSE,
        "passes_target": bool(max(nm) < TARGET_NMSE), "beats_paper": bool(max(nm) <= PAPER_DEFOCUS_NMSE),
        "defocus_effect_nmse_power_min": min(r["defocus_effect_nmse_power"] for r in rows),
        "residual_over_effect_max": max(r["residual_over_effect"] for r in rows),
    }
    return summary, {"original": scene[region, region] / scene[region, region].max(), "rows": images,
                     "rows_summary": rows, "size": size, "sigma": sigma}


def _defocus_at(p: float, scene, big_margin: int, size: int, psf_model, k_def: int, amplitude: float, sigma: float,
                run, diffraction, device, repeats: int, progress: bool) -> tuple[dict, dict]:
    """One position of :func:`defocus_test`: the Gaussian defocus centred at output pixel (p, p), the exact
    convolution (with its "valid" margin), the emulator with a margin of S/2 and without one, and their
    scores; returns (the JSON row, the images of the figure)."""
    from svrt.optics.convolution import spatially_variant_convolve

    m, s = psf_model.n_modes, psf_model.psf_size
    before, after = s - 1 - s // 2, s // 2          # margin of the exact method ("valid")
    em_margin = s // 2
    region = slice(big_margin, big_margin + size)
    obj_exact = scene[big_margin - before:big_margin + size + after, big_margin - before:big_margin + size + after]
    obj_emul = scene[big_margin - em_margin:big_margin + size + em_margin,
                     big_margin - em_margin:big_margin + size + em_margin]
    centre = (p, p)
    coef_exact = torch.zeros(m, size, size)
    coef_exact[k_def] = defocus_field((size, size), centre, amplitude, sigma)
    coef_emul = torch.zeros(1, m, size + 2 * em_margin, size + 2 * em_margin)
    coef_emul[0, k_def] = defocus_field(coef_emul.shape[-2:], centre, amplitude, sigma, offset=em_margin)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=size, desc=f"exact per-pixel, defocus at ({p:g}, {p:g})", unit="row", leave=False,
                   file=sys.stderr, mininterval=1)
    t0 = time.perf_counter()
    exact = spatially_variant_convolve(obj_exact, coef_exact, psf_model, boundary="valid",
                                       rows_per_chunk=max(1, 1024 // size),
                                       progress=(lambda n: bar.update(n)) if bar else None)
    t_exact = time.perf_counter() - t0
    if bar:
        bar.close()

    t_emul, y = _time_call(lambda: run(obj_emul[None, None], coef_emul, DEFOCUS_INSTRUMENT), device, repeats)
    emulated = y[0, 0, em_margin:em_margin + size, em_margin:em_margin + size]
    # the same object without its margin (the emulator's own borders, as a user would run it)
    coef_bare = coef_emul[:, :, em_margin:em_margin + size, em_margin:em_margin + size]
    bare = run(scene[None, None, region, region], coef_bare, DEFOCUS_INSTRUMENT)[0, 0]
    t_bare, _ = _time_call(lambda: run(scene[None, None, region, region], coef_bare, DEFOCUS_INSTRUMENT),
                           device, repeats)

    norm = float(exact.max())
    e, y_, d_ = exact / norm, emulated / norm, diffraction / norm
    inner = slice(s // 2, size - s // 2)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    near = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= (2 * sigma) ** 2
    row = {
        "centre_px": [int(p), int(p)],
        "nmse_power": nmse_value(y_, e),
        "max_abs_residual": float((y_ - e).abs().max()),
        "nmse_power_within_2_sigma": nmse_value(y_[near], e[near]),
        "defocus_effect_nmse_power": nmse_value(d_, e),
        "residual_over_effect": float((y_ - e).double().pow(2).sum() / (d_ - e).double().pow(2).sum()),
        "nmse_power_without_margin": nmse_value(bare / norm, e),
        "nmse_power_without_margin_interior": nmse_value(bare[inner, inner] / norm, e[inner, inner]),
        "flux_ratio": float(emulated.double().sum() / exact.double().sum()),
        "exact_s": round(t_exact, 3),
        "emulator_s": round(t_emul, 4),
        "emulator_without_margin_s": round(t_bare, 4),
    }
    return row, {"centre": centre, "exact": e, "emulated": y_, "diffraction": d_}


def _energy_in(psf: torch.Tensor, s: int) -> float:
    n = psf.shape[-1]
    lo = n // 2 - s // 2
    return float(psf[lo:lo + s, lo:lo + s].sum() / psf.sum())


def plot_defocus(path, images: dict) -> str:
    """Fig. 5 (one row per defocus position): original, diffraction-limited, exact, emulated, residual."""
    from matplotlib.patches import Circle

    from svrt.pictures import save_png, subplots

    rows = images["rows"]
    fig, axes = subplots(len(rows), 5, figsize=(17, 3.5 * len(rows) + 0.6), squeeze=False,
                             constrained_layout=True)
    for i, (r, info) in enumerate(zip(rows, images["rows_summary"])):
        e = r["exact"]
        lo, hi = float(e.min()), 1.0
        panels = [(images["original"], "original", None), (r["diffraction"], "diffraction-limited", (lo, hi)),
                  (e, f"exact per-pixel ({info['exact_s']:.1f} s)", (lo, hi)),
                  (r["emulated"], f"emulated ({info['emulator_s'] * 1e3:.0f} ms)", (lo, hi))]
        for j, (img, title, lim) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(img.numpy(), origin="lower", cmap="gray", vmin=lim[0] if lim else None,
                           vmax=lim[1] if lim else None)
            ax.set_title(title, fontsize=10)
            if j >= 2:
                ax.add_patch(Circle((r["centre"][1], r["centre"][0]), images["sigma"], fill=False, color="tab:orange",
                                    lw=0.8, ls="--"))
            fig.colorbar(im, ax=ax, shrink=0.8)
        res = (e - r["emulated"]).numpy()
        v = float(np.abs(res).max()) or 1.0
        ax = axes[i, 4]
        im = ax.imshow(res, origin="lower", cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(
            f"exact - emulated\nNMSE {info['nmse_power']:.2e}, max |res| {info['max_abs_residual']:.3f}", fontsize=10
        )
        fig.colorbar(im, ax=ax, shrink=0.8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Defocus bump (sigma {images['sigma']:g} px, dashed) along the diagonal, CRISP 8542, "
                 f"{images['size']}x{images['size']} px; images normalised to the exact maximum")
    save_png(fig, path, dpi=90)
    return str(path)


# --------------------------------------------------------------------------------------------- c. PSFs

def psf_test(model, r0_values=R0_VALUES, realisations: int = 8, size: int = 128, seed: int = 0,
             device="cpu", instrument: str = DEFOCUS_INSTRUMENT) -> tuple[dict, dict]:
    """Fig. 7-8: a centred point source through Kolmogorov wavefronts (spatially constant coefficients).

    The exact image is the PSF itself: ``fft_convolve`` of the point with training's PSF (a 128-px
    field), which is what the per-pixel method gives when every pixel has the same coefficients.
    Returns (summary, images of realisation 0 per r0).
    """
    from svrt.atmosphere import kolmogorov_coefficients
    from svrt.optics.convolution import fft_convolve
    from svrt.optics.psf import PSFModel

    device = torch.device(device)
    run = _emulator(model, device)
    m = model.config.n_modes
    psf_model = PSFModel(instrument, m, field=128)
    obj = torch.zeros(size, size)
    obj[size // 2, size // 2] = 1.0
    rng = np.random.default_rng([HELD_OUT_SEED + seed, 7])
    per_r0, images = [], []
    for r0 in r0_values:
        coef = torch.from_numpy(kolmogorov_coefficients(instrument, float(r0), m, size=realisations, rng=rng))
        exact = fft_convolve(obj, psf_model(coef))                             # [R, Y, X]
        modes = coef[:, :, None, None].expand(-1, -1, size, size)
        emulated = run(obj.expand(realisations, 1, size, size), modes, instrument)[:, 0]
        scores = [nmse_value(emulated[i], exact[i]) for i in range(realisations)]
        flux = [float(emulated[i].sum() / exact[i].sum()) for i in range(realisations)]
        per_r0.append({"r0_cm": float(r0), "nmse_power": scores, "nmse_power_mean": float(np.mean(scores)),
                       "nmse_power_median": float(np.median(scores)), "flux_ratio_mean": float(np.mean(flux))})
        norm = float(exact[0].max())
        images.append({"r0": float(r0), "exact": exact[0] / norm, "emulated": emulated[0] / norm,
                       "nmse_power": scores[0]})
    means = [r["nmse_power_mean"] for r in per_r0]
    summary = {"instrument": instrument, "size": size, "object": "one point source at the centre",
               "r0_reference": "cm at 5000 A", "realisations": realisations,
               "exact": "fft_convolve with the PSFModel PSF (128-px field, as in training)",
               "per_r0": per_r0,
               "nmse_power_decreases_with_r0": bool(all(a >= b for a, b in zip(means, means[1:])))}
    return summary, {"rows": images, "per_r0": per_r0}


def plot_psfs(path, images: dict) -> str:
    """Fig. 7 (exact and emulated PSF per r0, square-root stretch) and Fig. 8 (NMSE against r0)."""
    from svrt.pictures import new_figure, save_png

    rows = images["rows"]
    n = len(rows)
    fig = new_figure(figsize=(3 * n + 5, 6.4), constrained_layout=True)
    grid = fig.add_gridspec(2, n + 2)
    for j, r in enumerate(rows):
        for i, (key, label) in enumerate((("exact", "exact"), ("emulated", "emulated"))):
            ax = fig.add_subplot(grid[i, j])
            img = r[key].clamp(min=0).sqrt().numpy()
            ax.imshow(img, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{label}, r0 = {r['r0']:g} cm" + (f"\nNMSE {r['nmse_power']:.2e}" if i else ""), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    ax = fig.add_subplot(grid[:, n:])
    r0 = [p["r0_cm"] for p in images["per_r0"]]
    for p in images["per_r0"]:
        ax.scatter([p["r0_cm"]] * len(p["nmse_power"]), p["nmse_power"], s=10, color="0.6")
    ax.plot(r0, [p["nmse_power_mean"] for p in images["per_r0"]], "o-", color="tab:blue", label="mean")
    ax.set_yscale("log")
    ax.set_xlabel("r0 [cm at 5000 A]")
    ax.set_ylabel("NMSE (Eq. 12)")
    ax.set_title("emulated vs exact PSF")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.suptitle("Point source through Kolmogorov wavefronts, CRISP 8542 (sqrt stretch, normalised to the exact peak)")
    save_png(fig, path, dpi=90)
    return str(path)


# --------------------------------------------------------------------------------------------- e. simulate

def simulate_test(model, size: int = 128, n_frames: int = 3, seed: int = 1, r0_cm: float = 10.0,
                  device="cpu", border: int | None = None, progress: bool = False) -> dict:
    """Emulated frames of the true object and the true per-pixel modes against the exact noiseless
    frames of ``svrt.simulate.simulate_burst``; skipped (with a note) where it does not exist."""
    try:
        from svrt.simulate import simulate_burst, truth_with_margin
    except ImportError as exc:
        return {"skipped": f"svrt.simulate.simulate_burst is not available ({exc})"}
    device = torch.device(device)
    run = _emulator(model, device)
    t0 = time.perf_counter()
    burst = simulate_burst(DEFOCUS_INSTRUMENT, size=size, n_frames=n_frames, n_objects=1, seed=seed,
                           r0_cm=r0_cm, noise=0.0, progress=progress)
    t_sim = time.perf_counter() - t0
    frames = torch.as_tensor(np.asarray(burst.frames), dtype=torch.float32)   # [K, L, Y, X]
    truth = torch.as_tensor(np.asarray(burst.truth), dtype=torch.float32)     # [K, Y, X]
    coarse = torch.as_tensor(np.asarray(burst.modes), dtype=torch.float32)    # [L, M, Yg, Xg]
    k, n_l, y, x = frames.shape
    modes = per_pixel_modes(coarse, (y, x))
    # The frames are the exact convolution of TRUTH plus a margin of the PSF size (S): the emulator gets
    # that same object, with the modes extended into the margin by repeating the edge values (the margin's
    # outputs are cropped away), so every compared pixel is physical. The bare-TRUTH figures show what a
    # user without the margin gets: the emulator's mirrored borders.
    s = int(burst.header["PSFSIZE"])
    before, after = s - 1 - s // 2, s // 2
    big = torch.as_tensor(truth_with_margin(burst), dtype=torch.float32)
    modes_big = F.pad(modes, (before, after, before, after), mode="replicate")
    if border is None:
        border = s // 2
    t0 = time.perf_counter()
    out = []
    inner = slice(border, -border) if min(y, x) > 2 * border else slice(None)
    for kk in range(k):
        inst = burst.instruments[kk]
        em = run(big[kk].expand(n_l, 1, *big.shape[-2:]), modes_big, inst)[:, 0, before:before + y, before:before + x]
        bare = run(truth[kk].expand(n_l, 1, y, x), modes, inst)[:, 0]
        out.append({"instrument": inst,
                    "nmse_power_per_frame": [nmse_value(em[i], frames[kk, i]) for i in range(n_l)],
                    "nmse_power_per_frame_without_margin": [nmse_value(bare[i], frames[kk, i]) for i in range(n_l)],
                    "nmse_power_per_frame_without_margin_interior": [
                        nmse_value(bare[i, inner, inner], frames[kk, i, inner, inner]) for i in range(n_l)]})
    t_em = time.perf_counter() - t0
    worst = max(max(o["nmse_power_per_frame"]) for o in out)
    return {"size": [y, x], "n_frames": n_l, "n_objects": k, "seed": seed, "r0_cm": r0_cm, "noise": 0.0,
            "grid": list(coarse.shape[-2:]), "objects": out, "nmse_power_max": worst, "psf_size": s,
            "boundary": f"exact: boundary='valid' on TRUTH + a {before}/{after} px margin; emulator: the same "
                        "object, modes extended into the margin by edge replication, cropped",
            "interior_border_px": border, "simulate_s": round(t_sim, 2), "emulator_s": round(t_em, 3),
            "target_nmse_power": TARGET_NMSE, "passes_target": bool(worst < TARGET_NMSE)}


# --------------------------------------------------------------------------------------------- driver

def run_validation(model_name, out_dir, quick: bool = False, seed: int = 0, device: str = "cpu",
                   size: int | None = None, n_pairs: int | None = None, realisations: int | None = None,
                   amplitude: float = 1.5, sigma: float = 20.0, skip=(), command: str = "",
                   log=print, progress: bool = False) -> dict:
    """Run the checks, write ``validation.json``, ``defocus.png`` and ``psf.png`` in ``out_dir``."""
    from svrt.emulator import load_model, resolve_model_path
    from svrt.fileio import atomic_write

    started = time.perf_counter()
    for part in skip:
        if part not in PARTS:
            raise SvrtError(f"unknown part '{part}' to skip; expected one of {', '.join(PARTS)}.")
    path = resolve_model_path(model_name)
    model, meta = load_model(path, device=device)
    out_dir = Path(out_dir)
    size = size or (128 if quick else 256)
    if size % 16 or size < 64:
        raise SvrtError(f"--size must be a multiple of 16 and at least 64; got {size}.")
    n_pairs = n_pairs or (48 if quick else 256)
    realisations = realisations or (3 if quick else 8)
    positions = [size // 2] if quick else None
    cfg = model.config
    report = {
        "svrt_validation": 1, "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "seed": seed,
        "model": {"path": str(path), "file_sha256": file_sha256(path), "sha256": meta.get("sha256"),
                  "width": cfg.width, "n_modes": cfg.n_modes, "instruments": cfg.instruments,
                  "parameters": meta.get("parameters"), "step": meta.get("step"),
                  "train_seconds": meta.get("train_seconds"),
                  "training_validation_nmse_power_mean": _training_nmse_power_mean(meta)},
        "machine": machine_info(), "device": str(device), "figures": [],
    }
    if "pairs" not in skip:
        log(f"a. held-out pairs: {n_pairs} ...")
        report["held_out"] = held_out_pairs(model, n_pairs, seed, device)
    if "defocus" not in skip:
        log(f"b. defocus bump, {size}x{size}, exact per-pixel convolution (slow by design) ...")
        summary, images = defocus_test(model, size, positions, amplitude, sigma, seed=seed, device=device,
                                       repeats=3 if quick else 5, progress=progress)
        report["defocus"] = summary
        report["figures"].append(plot_defocus(out_dir / "defocus.png", images))
        ex = [r["exact_s"] for r in summary["positions"]]
        em = [r["emulator_s"] for r in summary["positions"]]
        report["timing"] = {
            "size": size,
            "exact_per_pixel_s": float(np.median(ex)),
            "emulator_s": float(np.median(em)),
            "emulator_without_margin_s": float(
                np.median([r["emulator_without_margin_s"] for r in summary["positions"]])
            ),
            "speedup": float(np.median(ex) / np.median(em)),
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "notes": "same image, same machine; exact: one PSF (a {0}x{0} FFT) per pixel, one run; emulator: the "
            "fastest of repeated forward passes after a warm-up, on the object with its margin "
            "({1}x{1})".format(summary["psf_field"], size + summary["psf_size"]),
            "paper": PAPER_TIMING,
        }
        if hasattr(os, "getloadavg"):
            report["timing"]["load_average_1min"] = round(os.getloadavg()[0], 2)
    if "psf" not in skip:
        log(f"c. PSFs at r0 = {', '.join(f'{r:g}' for r in R0_VALUES)} cm, {realisations} realisations each ...")
        summary, images = psf_test(model, R0_VALUES, realisations, seed=seed, device=device)
        report["psf"] = summary
        report["figures"].append(plot_psfs(out_dir / "psf.png", images))
    if "simulate" not in skip:
        log("e. emulated vs exact simulated frames ...")
        report["simulate"] = simulate_test(model, 128, 1 if quick else 3, seed=1, device=device, progress=progress)
    else:
        report["simulate"] = {"skipped": "--skip simulate"}
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["figures"] = [os.path.basename(f) for f in report["figures"]]
    with atomic_write(out_dir / "validation.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def targets(report: dict) -> dict:
    """Which figures meet the issue's targets (NMSE < 1e-3 on the defocus test and the simulated frames)."""
    out = {"target_nmse_power": TARGET_NMSE, "paper_defocus_nmse_power": PAPER_DEFOCUS_NMSE}
    d = report.get("defocus")
    out["defocus_below_target"] = d["passes_target"] if d else None
    out["defocus_at_or_below_paper"] = d["beats_paper"] if d else None
    # NMSE < 1e-3 alone does not show that the defocus is reproduced: ignoring it scores defocus_effect_nmse
    # (~1e-4 on these images). This asks that less than 10 % of the defocus signal be left unexplained.
    out["defocus_residual_below_10pct_of_effect"] = bool(d["residual_over_effect_max"] < 0.1) if d else None
    out["defocus_effect_nmse_power"] = d["defocus_effect_nmse_power_min"] if d else None
    s = report.get("simulate") or {}
    out["simulate_below_target"] = s.get("passes_target") if "skipped" not in s else None
    return out


def format_table(report: dict) -> str:
    """A short human-readable summary of a validation report."""
    m = report["model"]
    lines = [f"model {m['path']} (width {m['width']}, sha256 {m['sha256']}, step {m['step']})"]
    h = report.get("held_out")
    if h:
        lines.append(f"a. held-out pairs (n={h['n_pairs']}): NMSE mean {h['nmse_power_mean']:.2e}, "
                     f"median {h['nmse_power_median']:.2e}")
        lines.append("   per instrument: " + ", ".join(f"{k} {v:.2e}" for k, v in h["per_instrument"].items()))
        lines.append("   per r0 bin [cm]: " + ", ".join(f"{k} {v:.2e}" for k, v in h["per_r0_bin"].items()))
        lines.append("   per source: " + ", ".join(f"{k} {v:.2e}" for k, v in h["per_source"].items()))
    d = report.get("defocus")
    if d:
        lines.append(f"b. defocus {d['amplitude_rad']:g} rad (KL {d['defocus_kl_mode']}), sigma {d['sigma_px']:g} px, "
                     f"{d['size']}^2, PSF cut {d['psf_size']} px (floor {d['psf_truncation_nmse_power']:.1e})")
        lines.append("   centre      NMSE   max|res|  effect  res/effect  exact[s]  emul[s]")
        for r in d["positions"]:
            lines.append(f"   ({r['centre_px'][0]:3d},{r['centre_px'][1]:3d})  {r['nmse_power']:.2e}  "
                         f"{r['max_abs_residual']:.4f}  {r['defocus_effect_nmse_power']:.1e}  "
                         f"{r['residual_over_effect']:9.3f}  {r['exact_s']:8.1f}  {r['emulator_s']:.3f}")
    t = report.get("timing")
    if t:
        lines.append(f"d. timing {t['size']}^2: exact {t['exact_per_pixel_s']:.1f} s, emulator "
                     f"{t['emulator_s'] * 1e3:.0f} ms, speed-up {t['speedup']:.0f}x "
                     f"({t['torch_threads']} threads, load average {t.get('load_average_1min', '?')}; "
                     "paper ~12 min vs ~100 ms at 256^2)")
    p = report.get("psf")
    if p:
        lines.append(
            "c. PSF NMSE vs r0: " + ", ".join(f"{r['r0_cm']:g} cm {r['nmse_power_mean']:.2e}" for r in p["per_r0"])
        )
    s = report.get("simulate") or {}
    if "skipped" in s:
        lines.append(f"e. simulated frames: skipped ({s['skipped']})")
    elif s:
        def per_frame(key):
            return ", ".join(f"{v:.2e}" for o in s["objects"] for v in o[key])
        lines.append(f"e. simulated frames {s['size'][0]}^2 (object with its margin): NMSE per frame "
                     f"{per_frame('nmse_power_per_frame')}; bare TRUTH "
                     f"{per_frame('nmse_power_per_frame_without_margin')}, "
                     f"its interior (border {s['interior_border_px']} px) "
                     f"{per_frame('nmse_power_per_frame_without_margin_interior')}")
    tg = report["targets"]

    def yn(v):
        return "n/a" if v is None else ("PASS" if v else "FAIL")
    lines.append(f"targets (NMSE < {TARGET_NMSE:g}): defocus {yn(tg['defocus_below_target'])}, "
                 f"simulated frames {yn(tg['simulate_below_target'])}; paper's 1.6e-4 on defocus: "
                 f"{yn(tg['defocus_at_or_below_paper'])}; defocus residual < 10 % of its effect: "
                 f"{yn(tg['defocus_residual_below_10pct_of_effect'])}")
    return "\n".join(lines)


@click.command("validate")
@click.argument("model", required=False, default=None)
@click.option("--out-dir", type=click.Path(file_okay=False), default="validation", show_default=True,
              help="Folder for validation.json, defocus.png and psf.png.")
@click.option("--quick", is_flag=True, help="128^2, one defocus position, 48 pairs, 3 realisations per r0.")
@click.option("--size", type=int, default=None, help="Side of the defocus test image (default 256, --quick 128).")
@click.option("--pairs", "n_pairs", type=int, default=None, help="Held-out pairs (default 256, --quick 48).")
@click.option(
    "--realisations", type=int, default=None, help="Wavefronts per r0 in the PSF test (default 8, --quick 3)."
)
@click.option(
    "--defocus-rad", type=float, default=1.5, show_default=True, help="Peak defocus (rad RMS of the KL mode)."
)
@click.option("--sigma-px", type=float, default=20.0, show_default=True, help="Width of the defocus bump.")
@click.option("--seed", type=int, default=0, show_default=True, help="Held-out seed offset (seeds 20000 + seed).")
@click.option("--device", default="cpu", show_default=True, help="Device of the emulator (cpu, cuda).")
@click.option("--skip", multiple=True, type=click.Choice(PARTS), help="Leave a part out (repeatable).")
def validate_command(model, out_dir, quick, size, n_pairs, realisations, defocus_rad, sigma_px, seed, device, skip):
    """Validate an emulator against exact convolutions (paper Sect. 2.4, Fig. 4-8).

    MODEL is a .safetensors file or the name of a bundled model (default: the shipped one).
    Reports the NMSE on held-out pairs, the moving-defocus test against the exact per-pixel
    convolution (and its timing), the PSF test against r0 and, where svrt.simulate exists, emulated
    against exact simulated frames. Writes validation.json and PNGs in --out-dir.

    \b
    Examples:
      svrt validate runs/svce-c16.safetensors --quick --out-dir /tmp/val
      svrt validate svce-c16 --out-dir validation        # full: 256^2, 4 positions (minutes)
    """
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    if argv0 == "svrt" or sys.argv[0].endswith(os.path.join("svrt", "cli.py")):
        command = "svrt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    else:   # called from Python (tests, notebooks): the parameters instead of someone else's argv
        command = f"svrt validate (from Python: {click.get_current_context().params})"
    report = run_validation(model, out_dir, quick=quick, seed=seed, device=device, size=size, n_pairs=n_pairs,
                            realisations=realisations, amplitude=defocus_rad, sigma=sigma_px, skip=skip,
                            command=command, log=lambda s: click.echo(s, err=True), progress=True)
    click.echo(format_table(report))
    click.echo(f"wrote {Path(out_dir) / 'validation.json'} and {', '.join(report['figures']) or 'no figures'} "
               f"({report['seconds']:.0f} s)")
