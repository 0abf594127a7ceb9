"""Why the emulator engine does not restore, in figures (issue 20, item 1).

``python -m svrt.benchmarks.engine_diagnosis --burst b7.fits --restoration r7.fits ... --out-dir DIR``
measures the emulator (default the shipped ``svce-c16``) on the inputs the solver gives it: the per-pixel
modes of screen + AO bursts (their true ``MODES``, and the ``MODES`` an exact-optics ``svrt deconvolve``
converged to, i.e. the amplitudes the solver visits), objects with the solver's margin (the burst's
``TRUTH``, the frame average, point sources), and writes ``engine_diagnosis.json`` and PNGs:

a. ``forward``: NMSE_power (Eq. 12, the paper's Fig. 5 metric) and NMSE_var of the emulator against the
   exact per-pixel convolution of Eq. 1 (:func:`svrt.optics.convolution.spatially_variant_convolve`), and
   per Fourier band (:data:`BANDS`, in units of the cutoff D/lambda) the ratio of error power to signal
   power (:func:`band_error_ratios`). Exact optics as the solver runs it (``psf-interpolation``: PSFs
   interpolated between the grid nodes) is measured the same way, as the yardstick.
b. ``linearity``: :func:`linearity_error` of ``f(a o1 + b o2)`` for the steps of the object solve (the frame
   average plus a small high-frequency update); an exact convolution gives ~1e-7.
c. ``gradient``: the gradient of ``1/2 ||f(o, alpha) - data||^2`` with respect to the coarse mode grid (the
   solver's variables) through the emulator and through exact optics (``psf-interpolation`` at the solver's
   grid, which is the solver's own exact forward model; torch autograd through both), compared by
   :func:`gradient_agreement` (cosine, relative error); and the Jacobians alone, both pulled back with
   exact optics' residual (``same_residual_*``), which separates a wrong Jacobian from a wrong forward.
d. ``otf``: for an isoplanatic wavefront (the same modes at every pixel) the emulator's effective OTF
   relative to the exact one, ``sqrt(P_emulator / P_exact)`` of the azimuthally averaged power spectra
   (:func:`otf_ratio`), against frequency in units of the cutoff.

Geometry: every object carries a margin of :data:`MARGIN` = 24 pixels on each side (mirrored where the
true surroundings are unknown); the emulator sees object + margin with the margin's modes those of the
nearest field pixel (as :class:`svrt.runtime.forward_model.ForwardModel` does in the solver), the exact
per-pixel method the same object with ``boundary="valid"``; both are compared on the field only.
Everything runs on one CPU thread and is sized to take minutes (``--frames``: frames per burst).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.metrics import nmse_power, nmse_variance, power_spectrum
from svrt.windows import hann

# frequency bands in units of the diffraction cutoff D/lambda; None: up to the Nyquist frequency
BANDS = ((0.0, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.0), (1.0, None))
PSF_SIZE = 48          # per-pixel PSF of the exact method and of psf-interpolation (the solver's default)
MARGIN = PSF_SIZE // 2  # object margin: the exact method needs S - 1 - S//2 = 23 before and 24 after


# --------------------------------------------------------------------------------------------- metrics

def band_key(band) -> str:
    lo, hi = band
    return f"{lo:g}-{'nyq' if hi is None else f'{hi:g}'}"


def band_error_ratios(estimate, reference, cutoff_cycles_per_pixel: float, bands=BANDS) -> dict:
    """Per band of ``|nu| / cutoff``: ``sum |F(w (e - r))|^2 / sum |F(w (r - <r>))|^2`` over the band's
    frequencies, w a 2-D Hann window (the images are not periodic). ``estimate``, ``reference``
    ``[Y, X]``. Zero for identical images; the zero frequency is left out of every band (the mean is
    not a spatial structure). Returns ``{band_key: ratio}`` (NaN where the band holds no frequency)."""
    e = torch.as_tensor(np.asarray(estimate), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    if e.shape != r.shape or e.dim() != 2:
        raise SvrtError(f"band_error_ratios needs two [Y, X] images of one shape; got {tuple(e.shape)} and "
                        f"{tuple(r.shape)}.")
    y, x = r.shape
    win = hann((y, x))
    err = torch.fft.fft2((e - r) * win).abs().pow(2)
    sig = torch.fft.fft2((r - r.mean()) * win).abs().pow(2)
    fy = torch.fft.fftfreq(y, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(x, dtype=torch.float64)[None, :]
    nu = torch.sqrt(fy * fy + fx * fx) / cutoff_cycles_per_pixel
    out = {}
    for lo, hi in bands:
        sel = (nu > lo) & (nu > 0)
        if hi is not None:
            sel &= nu <= hi
        den = float(sig[sel].sum())
        out[band_key((lo, hi))] = float(err[sel].sum()) / den if sel.any() and den > 0 else float("nan")
    return out


def forward_errors(estimate, reference, cutoff_cycles_per_pixel: float) -> dict:
    """NMSE_power (Eq. 12), NMSE_var and the band ratios of ``estimate`` against ``reference`` ``[Y, X]``."""
    e = torch.as_tensor(np.asarray(estimate), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    return {"nmse_power": float(nmse_power(e, r)), "nmse_variance": float(nmse_variance(e, r)),
            "band_error_ratio": band_error_ratios(e, r, cutoff_cycles_per_pixel)}


def linearity_error(f, o1: torch.Tensor, o2: torch.Tensor, a: float, b: float) -> dict:
    """How far ``f`` is from linear in the object: with ``d = f(a o1 + b o2) - a f(o1) - b f(o2)``,
    ``relative_to_output = ||d|| / ||f(a o1 + b o2)||`` (the issue's figure) and
    ``relative_to_update = ||d|| / ||b f(o2) - <b f(o2)>||`` (the error against the part of the model
    that the update ``b o2`` itself contributes: what an object step relies on). ``f`` maps an object
    like ``o1`` to an image; a linear ``f`` gives ~1e-7 in float32."""
    whole = f(a * o1 + b * o2).double()
    part = b * f(o2).double()
    d = whole - a * f(o1).double() - part
    norm = float(d.norm())
    update = float((part - part.mean()).norm())
    return {"a": float(a), "b": float(b), "relative_to_output": norm / max(float(whole.norm()), 1e-300),
            "relative_to_update": norm / max(update, 1e-300)}


def gradient_agreement(g: torch.Tensor, g_ref: torch.Tensor) -> dict:
    """``cosine`` of the angle between two gradients and ``relative_error = ||g - g_ref|| / ||g_ref||``;
    ``norm_ratio = ||g|| / ||g_ref||``."""
    a, r = g.double().reshape(-1), g_ref.double().reshape(-1)
    nr = float(r.norm())
    return {"cosine": float(a @ r) / max(float(a.norm()) * nr, 1e-300),
            "relative_error": float((a - r).norm()) / max(nr, 1e-300),
            "norm_ratio": float(a.norm()) / max(nr, 1e-300)}


def otf_ratio(estimate, reference, cutoff_cycles_per_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """``(nu / cutoff, sqrt(P_estimate / P_reference))``: the ratio of the azimuthally averaged amplitude
    spectra (:func:`svrt.benchmarks.metrics.power_spectrum`, Hann window, mean removed) of two images
    ``[..., Y, X]`` of one object: the estimate's effective OTF relative to the reference's."""
    f, pe = power_spectrum(estimate)
    _, pr = power_spectrum(reference)
    return f / cutoff_cycles_per_pixel, np.sqrt(pe / np.maximum(pr, 1e-300))


# --------------------------------------------------------------------------------------------- engines

class Engines:
    """The three forward models on the solver's inputs: ``emulator`` and ``psf_interpolation`` through
    :class:`svrt.runtime.forward_model.ForwardModel` (as in the solver), ``exact`` the per-pixel
    convolution. Objects ``[Y + 2 MARGIN, X + 2 MARGIN]``, coarse modes ``[B, M, Yg, Xg]``; outputs
    ``[B, Y, X]`` (the field)."""

    def __init__(self, model: str, instrument: str, n_modes: int = 44):
        from svrt.optics.psf import PSFModel
        from svrt.runtime.backends.psf_interpolation_backend import PSFInterpolationEngine
        from svrt.runtime.engine import load_engine
        from svrt.runtime.forward_model import ForwardModel

        self.instrument = instrument
        self.emulator_engine = load_engine(model)
        self.exact_engine = PSFInterpolationEngine(n_modes=n_modes, psf_size=PSF_SIZE)
        self.fm = {"emulator": ForwardModel(self.emulator_engine, instrument, 1.0, kernels="torch"),
                   "psf_interpolation": ForwardModel(self.exact_engine, instrument, 1.0, kernels="torch")}
        self.psf_model = PSFModel(instrument, n_modes, psf_size=PSF_SIZE)

    def model(self, name: str, obj: torch.Tensor, coarse: torch.Tensor, size) -> torch.Tensor:
        """``name`` in ``emulator``, ``psf_interpolation``: differentiable in ``obj`` and ``coarse``."""
        return self.fm[name].predict(obj, coarse, list(range(coarse.shape[0])), size)

    def exact(self, obj: torch.Tensor, coarse: torch.Tensor, size) -> torch.Tensor:
        """Exact per-pixel convolution (Eq. 1) of ``obj [Y + 2 MARGIN, X + 2 MARGIN]`` (or ``[K, ...]``)
        with the bilinear per-pixel modes of ``coarse [M, Yg, Xg]`` -> ``[Y, X]`` (or ``[K, Y, X]``)."""
        from svrt.mode_grid import per_pixel_modes
        from svrt.optics.convolution import spatially_variant_convolve

        y, x = size
        s = PSF_SIZE
        lo = MARGIN - (s - 1 - s // 2)
        inner = obj[..., lo:lo + y + s - 1, lo:lo + x + s - 1]
        with torch.no_grad():
            return spatially_variant_convolve(inner, per_pixel_modes(coarse, (y, x)), self.psf_model,
                                              boundary="valid")


def with_margin(image, margin: int = MARGIN) -> torch.Tensor:
    """``[Y, X] -> [Y + 2m, X + 2m]``, mirrored across the edges (the solver's start of o*)."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    return F.pad(t[None, None], (margin,) * 4, mode="reflect")[0, 0]


def _objects(burst, seed: int) -> dict:
    """The objects of the diagnosis, each ``[Y + 2m, X + 2m]``: the solar scene (the burst's TRUTH),
    the frame average, and point sources on a 5 % floor (point-like: the emulator's named weakness)."""
    from svrt.scenes import point_sources

    y, x = burst.frames.shape[-2:]
    truth = burst.truth[0]
    points = point_sources((y + 2 * MARGIN, x + 2 * MARGIN), seed, n_sources=12, margin=MARGIN)
    points = float(truth.mean()) * (0.05 + points / max(float(points.max()), 1e-12))
    return {"scene": with_margin(truth), "frame_average": with_margin(burst.frames[0].mean(axis=0)),
            "points": torch.as_tensor(points, dtype=torch.float32)}


# --------------------------------------------------------------------------------------------- parts

def part_forward(eng: Engines, objects: dict, mode_sets: dict, size, cutoff: float) -> list:
    """a. Forward errors of the emulator and psf-interpolation against the exact per-pixel convolution,
    per (mode set, frame, object). ``mode_sets``: name -> coarse modes ``[L, M, Yg, Xg]``."""
    rows = []
    names = list(objects)
    stack = torch.stack([objects[n] for n in names])
    for set_name, coarse in mode_sets.items():
        for l_idx in range(coarse.shape[0]):
            c = coarse[l_idx:l_idx + 1]
            t0 = time.perf_counter()
            exact = eng.exact(stack, c[0], size)                     # [K, Y, X], one PSF per pixel
            t_exact = time.perf_counter() - t0
            for k, name in enumerate(names):
                for model in ("emulator", "psf_interpolation"):
                    with torch.no_grad():
                        out = eng.model(model, objects[name], c, size)[0]
                    rows.append({"modes": set_name, "frame": l_idx, "object": name, "model": model,
                                 "rms_rad": float(c.pow(2).sum(1).mean().sqrt()), "exact_seconds": round(t_exact, 1),
                                 **forward_errors(out, exact[k], cutoff)})
    return rows


def part_linearity(eng: Engines, objects: dict, coarse: torch.Tensor, size) -> list:
    """b. Linearity of the emulator and of psf-interpolation in the object, at the solver's modes
    ``coarse [1, M, Yg, Xg]``: an object step (the frame average plus a fraction of the high-frequency
    update truth - frame average), and two different objects added."""
    avg, scene, points = objects["frame_average"], objects["scene"], objects["points"]
    cases = [("frame_average + b (scene - frame_average)", avg, scene - avg, 1.0, b) for b in (0.01, 0.1, 1.0)]
    cases.append(("scene + points", scene, points, 1.0, 1.0))
    cases.append(("0.7 scene + 0.3 frame_average", scene, avg, 0.7, 0.3))
    rows = []
    for label, o1, o2, a, b in cases:
        for model in ("emulator", "psf_interpolation"):
            def f(o, _m=model):
                with torch.no_grad():
                    return eng.model(_m, o, coarse, size)[0]
            rows.append({"case": label, "model": model, **linearity_error(f, o1, o2, a, b)})
    return rows


def part_gradient(eng: Engines, obj: torch.Tensor, coarse: torch.Tensor, data: torch.Tensor, size,
                  seed: int) -> list:
    """c. The gradient of ``1/2 ||f(obj, alpha) - data||^2`` with respect to the coarse modes ``alpha
    [1, M, Yg, Xg]`` through the emulator and through exact optics (psf-interpolation), at the points
    below (the object is the solver's)."""
    gen = torch.Generator().manual_seed(seed)
    m = coarse.shape[1]
    low = torch.zeros(1, m, 1, 1)
    low[:, :10] = 1.0
    start = torch.zeros(1, m, 1, 1)
    start[:, :35] = 1.0
    # where the solver goes: its converged modes (exact optics' gradient ~0 there, the emulator's is its
    # own model error), a random step from them (0.3 rad RMS over all modes; 0.5 rad over KL 1-10, the
    # modes the patch stage fits first), and its start (random, 0.3 rad RMS over KL 1-35, --start-rms)
    points = {"solver_modes": coarse,
              "solver_modes + 0.3 rad": coarse + 0.3 / math.sqrt(m) * torch.randn(coarse.shape, generator=gen),
              "solver_modes + 0.5 rad KL 1-10": coarse + 0.5 / math.sqrt(10) * low * torch.randn(
                  coarse.shape, generator=gen),
              "start 0.3 rad KL 1-35": 0.3 / math.sqrt(35) * start * torch.randn(coarse.shape, generator=gen)}
    rows = []
    for label, alpha in points.items():
        grads, outs, inputs = {}, {}, {}
        for model in ("emulator", "psf_interpolation"):
            a = alpha.clone().requires_grad_(True)
            outs[model], inputs[model] = eng.model(model, obj, a, size)[0], a
            (grads[model],) = torch.autograd.grad(0.5 * (outs[model] - data).pow(2).sum(), a, retain_graph=True)
        agree = gradient_agreement(grads["emulator"], grads["psf_interpolation"])
        # low-order modes (KL 1-10) carry most of the gradient the wavefront fit follows
        low = gradient_agreement(grads["emulator"][:, :10], grads["psf_interpolation"][:, :10])
        # the Jacobians alone: both pulled back with exact optics' residual (no forward-model error in it)
        resid = (outs["psf_interpolation"] - data).detach()
        (g_same,) = torch.autograd.grad(outs["emulator"], inputs["emulator"], resid)
        same = gradient_agreement(g_same, grads["psf_interpolation"])
        rows.append({"point": label, **agree, "cosine_kl1_10": low["cosine"],
                     "relative_error_kl1_10": low["relative_error"],
                     "same_residual_cosine": same["cosine"], "same_residual_relative_error": same["relative_error"]})
    return rows


def part_gradient_reference(eng: Engines, obj: torch.Tensor, coarse: torch.Tensor, data: torch.Tensor,
                            seed: int, field: int = 64) -> dict:
    """The reference of c checked: on the central ``field``^2 of the burst (a 2 x 2 grid, the solver's
    P = 32), the gradient with respect to the coarse modes through the exact per-pixel convolution of
    Eq. 1 (autograd through :func:`spatially_variant_convolve`, one PSF per pixel) against
    psf-interpolation's and the emulator's, at the solver's modes plus a 0.3 rad random step."""
    from svrt.mode_grid import per_pixel_modes
    from svrt.optics.convolution import spatially_variant_convolve

    y = data.shape[-1]
    c0 = (y - field) // 2
    o = obj[c0:c0 + field + 2 * MARGIN, c0:c0 + field + 2 * MARGIN]
    d = data[c0:c0 + field, c0:c0 + field]
    node = F.adaptive_avg_pool2d(coarse, 2)                        # [1, M, 2, 2]
    gen = torch.Generator().manual_seed(seed + 1)
    alpha = node + 0.3 / math.sqrt(node.shape[1]) * torch.randn(node.shape, generator=gen)
    lo = MARGIN - (PSF_SIZE - 1 - PSF_SIZE // 2)
    inner = o[lo:lo + field + PSF_SIZE - 1, lo:lo + field + PSF_SIZE - 1]
    grads = {}
    for name in ("exact_per_pixel", "psf_interpolation", "emulator"):
        a = alpha.clone().requires_grad_(True)
        if name == "exact_per_pixel":
            out = spatially_variant_convolve(inner, per_pixel_modes(a[0], (field, field)), eng.psf_model,
                                             boundary="valid")
        else:
            out = eng.model(name, o, a, (field, field))[0]
        (grads[name],) = torch.autograd.grad(0.5 * (out - d).pow(2).sum(), a)
    return {"field": field, "grid": [2, 2],
            "psf_interpolation_vs_exact": gradient_agreement(grads["psf_interpolation"], grads["exact_per_pixel"]),
            "emulator_vs_exact": gradient_agreement(grads["emulator"], grads["exact_per_pixel"])}


def part_otf(eng: Engines, objects: dict, coarse_iso: dict, size, cutoff: float) -> dict:
    """d. Effective OTF of the emulator relative to exact optics for isoplanatic wavefronts
    (``coarse_iso``: name -> ``[1, M, 1, 1]``): ``sqrt(P_emulator / P_exact)`` per ring."""
    from svrt.optics.convolution import fft_convolve

    out = {}
    y, x = size
    for wname, c in coarse_iso.items():
        psf = eng.psf_model(c[0, :, 0, 0])
        for oname in ("scene", "points"):
            o = objects[oname]
            exact = fft_convolve(o, psf)[MARGIN:MARGIN + y, MARGIN:MARGIN + x]
            with torch.no_grad():
                emu = eng.model("emulator", o, c, size)[0]
            nu, ratio = otf_ratio(emu, exact, cutoff)
            out[f"{wname}/{oname}"] = {"nu_over_cutoff": nu.round(4).tolist(), "ratio": ratio.round(4).tolist(),
                                       **{f"mean_ratio_{band_key(b)}": _band_mean(nu, ratio, b) for b in BANDS}}
    return out


def _band_mean(nu: np.ndarray, ratio: np.ndarray, band) -> float:
    lo, hi = band
    sel = (nu > lo) & ((nu <= hi) if hi is not None else True)
    return float(np.mean(ratio[sel])) if np.any(sel) else float("nan")


# --------------------------------------------------------------------------------------------- figures

def plot(report: dict, out_dir: Path) -> list:
    """``engine_forward_bands.png`` (a: error/signal per band) and ``engine_otf.png`` (d)."""
    from svrt.pictures import save_png, subplots

    paths = []
    fig, axes = subplots(1, 2, figsize=(11, 4), layout="constrained")
    labels = [band_key(b) for b in BANDS]
    xs = np.arange(len(labels))
    colours = {"scene": "C0", "frame_average": "C1", "points": "C2"}
    for ax, model in zip(axes, ("emulator", "psf_interpolation")):
        for obj, colour in colours.items():
            for modes, style in (("true", "-"), ("solver", "--")):
                rows = [r for r in report["forward"] if (r["model"], r["object"], r["modes"]) == (model, obj, modes)]
                if not rows:
                    continue
                ys = [_median([r["band_error_ratio"][k] for r in rows]) for k in labels]
                ax.semilogy(xs, ys, style, color=colour, marker="o", ms=3,
                            label=f"{obj}, {modes} modes (median of {len(rows)})")
        ax.axhline(1e-4, color="k", lw=0.8)
        ax.set_xticks(xs, labels)
        ax.set_xlabel("band, |nu| / cutoff D/lambda")
        ax.set_ylabel("error power / signal power")
        ax.set_title(f"{model} vs exact per-pixel convolution")
    axes[0].legend(fontsize=7)
    paths.append(save_png(fig, out_dir / "engine_forward_bands.png", dpi=90))

    fig, ax = subplots(1, 1, figsize=(6, 4), layout="constrained")
    for key, v in report["otf"].items():
        ax.semilogy(v["nu_over_cutoff"], v["ratio"], label=key)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("|nu| / cutoff D/lambda")
    ax.set_ylabel("|F(emulator)| / |F(exact)|, azimuthal")
    ax.set_title("effective OTF of the emulator, isoplanatic wavefronts")
    ax.legend(fontsize=6)
    paths.append(save_png(fig, out_dir / "engine_otf.png", dpi=90))
    return paths


# --------------------------------------------------------------------------------------------- driver

def run(bursts: list, restorations: list, out_dir, model: str = "svce-c16", frames: int = 1, seed: int = 0,
        parts=("forward", "linearity", "gradient", "otf"), log=print) -> dict:
    """Every part on every (burst, restoration) pair; writes ``engine_diagnosis.json`` and the PNGs."""
    from svrt.fileio import read_burst, read_restoration
    from svrt.instruments import get_instrument
    from svrt.records import write_json

    if len(bursts) != len(restorations):
        raise SvrtError(f"give one --restoration per --burst; got {len(bursts)} bursts and {len(restorations)} "
                        "restorations.")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    report = {"command": shlex.join([Path(sys.executable).name, "-m", "svrt.benchmarks.engine_diagnosis",
                                     *sys.argv[1:]]),
              "model": model, "psf_size": PSF_SIZE, "margin": MARGIN, "torch_threads": torch.get_num_threads(),
              "bands_over_cutoff": [band_key(b) for b in BANDS], "inputs": [],
              "forward": [], "linearity": [], "gradient": [], "otf": {}}
    t_all = time.perf_counter()
    engines = None
    for bpath, rpath in zip(bursts, restorations):
        burst, rest = read_burst(bpath), read_restoration(rpath)
        if burst.truth is None or burst.modes is None:
            raise SvrtError(f"{bpath}: needs TRUTH and MODES (a simulated burst, 'svrt simulate').")
        inst = burst.instruments[0]
        if engines is None:
            engines = Engines(model, inst, n_modes=int(burst.modes.shape[1]))
        size = tuple(burst.frames.shape[-2:])
        cutoff = get_instrument(inst).cutoff_cycles_per_pixel
        tag = Path(bpath).stem
        objects = _objects(burst, seed)
        n = min(frames, burst.frames.shape[1])
        true_modes = torch.as_tensor(burst.modes[:n])
        solver_modes = torch.as_tensor(rest.modes[:n])
        report["inputs"].append({"burst": str(bpath), "restoration": str(rpath), "header_r0": burst.header.get("R0"),
                                 "size": list(size), "true_grid": list(true_modes.shape[-2:]),
                                 "solver_grid": list(solver_modes.shape[-2:]),
                                 "rms_true_rad": float(true_modes.pow(2).sum(1).mean().sqrt()),
                                 "rms_solver_rad": float(solver_modes.pow(2).sum(1).mean().sqrt())})
        log(f"{tag}: {size[0]}x{size[1]}, {n} frame(s), cutoff {cutoff:.3f} cycles/px")
        if "forward" in parts:
            t0 = time.perf_counter()
            rows = part_forward(engines, objects, {"true": true_modes, "solver": solver_modes}, size, cutoff)
            report["forward"] += [{"burst": tag, **r} for r in rows]
            log(f"  forward {time.perf_counter() - t0:.0f} s")
        if "linearity" in parts:
            rows = part_linearity(engines, objects, solver_modes[:1], size)
            report["linearity"] += [{"burst": tag, **r} for r in rows]
        if "gradient" in parts:
            obj = with_margin(rest.objects[0])
            data = torch.as_tensor(burst.frames[0, 0])
            rows = part_gradient(engines, obj, solver_modes[:1], data, size, seed)
            report["gradient"] += [{"burst": tag, **r} for r in rows]
            if "gradient_reference" not in report:
                report["gradient_reference"] = {"burst": tag, **part_gradient_reference(
                    engines, obj, solver_modes[:1], data, seed)}
                log(f"  gradient reference: {report['gradient_reference']}")
        if "otf" in parts:
            iso = {f"{tag} mean solver modes": solver_modes[:1].mean(dim=(-2, -1), keepdim=True),
                   f"{tag} diffraction-limited": torch.zeros(1, solver_modes.shape[1], 1, 1)}
            report["otf"].update(part_otf(engines, objects, iso, size, cutoff))
        log(f"  done at {time.perf_counter() - t_all:.0f} s")
    report["summary"] = summary(report)
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    write_json(out_dir / "engine_diagnosis.json", report)
    report["png"] = plot(report, out_dir) if report["forward"] and report["otf"] else []
    return report


def _median(values) -> float:
    v = [x for x in values if x == x]
    return float(np.median(v)) if v else float("nan")


def summary(report: dict) -> dict:
    """Medians over bursts, frames and objects, per model (and mode set for the forward errors)."""
    out = {}
    for model in ("emulator", "psf_interpolation"):
        fw = [r for r in report["forward"] if r["model"] == model]
        s = {"forward_nmse_power_median": _median([r["nmse_power"] for r in fw]),
             "forward_nmse_variance_median": _median([r["nmse_variance"] for r in fw])}
        for b in report["bands_over_cutoff"]:
            s[f"band_{b}_median"] = _median([r["band_error_ratio"][b] for r in fw])
        for obj in ("scene", "frame_average", "points"):
            s[f"forward_nmse_power_median_{obj}"] = _median([r["nmse_power"] for r in fw if r["object"] == obj])
        lin = [r for r in report["linearity"] if r["model"] == model]
        s["linearity_relative_to_output_max"] = max([r["relative_to_output"] for r in lin], default=float("nan"))
        s["linearity_relative_to_update_max"] = max([r["relative_to_update"] for r in lin], default=float("nan"))
        out[model] = s
    g = report["gradient"]
    out["gradient_cosine_median"] = _median([r["cosine"] for r in g])
    out["gradient_relative_error_median"] = _median([r["relative_error"] for r in g])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.engine_diagnosis", description=__doc__.split("\n")[0])
    p.add_argument("--burst", action="append", required=True, help="simulated burst (TRUTH, MODES); repeat")
    p.add_argument("--restoration", action="append", required=True,
                   help="svrt deconvolve's restoration of the same burst (its MODES, OBJECT); repeat")
    p.add_argument("--out-dir", required=True, help="folder of engine_diagnosis.json and the PNGs")
    p.add_argument("--model", default="svce-c16", help="emulator (bundled name or .safetensors)")
    p.add_argument("--frames", type=int, default=1, help="frames per burst in part a")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="forward,linearity,gradient,otf")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        report = run(args.burst, args.restoration, args.out_dir, args.model, args.frames, args.seed,
                     tuple(args.parts.split(",")))
    except SvrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for model, s in report["summary"].items():
        print(model, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
