"""Fig. 6 of the paper: time per spatially variant convolution against image size and batch size.

Three methods, timed in the same run on the same inputs (an object and per-pixel KL coefficients
varying smoothly across the field):

* ``emulator``: the SVCE through :meth:`Engine.forward` for every back end (torch eager and compiled,
  ONNX Runtime, TensorRT; FP32 and, on GPUs, FP16), for every batch size;
* ``exact``: the per-pixel method of Eq. 1 (:func:`svrt.optics.convolution.spatially_variant_convolve`):
  one PSF per pixel from its coefficients, then one S x S dot product per pixel. Its cost is
  linear in the number of pixels, so it is measured on the small sizes only and *extrapolated* to
  the others from the measured cost per pixel of the largest measured size (records with
  ``measured: false``);
* ``overlap-add``: spatially invariant tiles blended with a raised-cosine partition of unity
  (:func:`svrt.optics.overlap_add.overlap_add_convolve`), the way MOMFBD treats anisoplanatism.

The exact and overlap-add methods compute one PSF (or one per tile) per image from that image's
coefficients; a batch of B images costs B times one image, so they are timed at batch 1 and their
time per image holds for every batch. Each record also carries the work done (FLOPs: counted from
the network's layers for the emulator, analytic for the other two) and the ceiling it implies on
this machine (:mod:`svrt.benchmarks.roofline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from svrt.benchmarks.roofline import count_bytes, roofline_time
from svrt.benchmarks.timing import measure
from svrt.mode_grid import per_pixel_modes

PSF_NOTE = ("PSFs from svrt.optics.psf.PSFModel with its default field for the instrument "
            "(the exact method's cost is dominated by computing one PSF per pixel)")


def make_inputs(size: int, batch: int, n_modes: int, device="cpu", seed: int = 0, rms: float = 0.3):
    """An object ``[B, 1, Y, X]`` (positive, textured) and per-pixel coefficients ``[B, M, Y, X]`` that vary
    smoothly across the field (bilinear upsampling of an 8 x 8 grid, ``rms`` radians per mode)."""
    g = torch.Generator().manual_seed(1000 * seed + 7 * size + batch)
    obj = 1.0 + 0.2 * torch.rand(batch, 1, size, size, generator=g)
    coarse = torch.randn(batch, n_modes, 8, 8, generator=g) * rms
    modes = per_pixel_modes(coarse, (size, size))
    return obj.to(device), modes.to(device)


@dataclass
class ConvolutionSettings:
    """What the convolution timings (Fig. 6) run: sizes, batches, the exact method's sizes, repeats and warm-up,
    the overlap-add patch and overlap, the instrument."""

    sizes: tuple = (64, 128, 256)
    batches: tuple = (1, 4)
    exact_sizes: tuple = (64, 128)
    overlap_add_sizes: tuple | None = None     # None: every size
    warmup: int = 1
    repeats: int = 5
    exact_repeats: int = 1
    patch: int = 64
    overlap: int = 32
    instrument: str = "crisp8542"


class Peaks:
    """The machine's measured ceilings: FLOP/s per precision and the copy bandwidth."""

    def __init__(self, flops: dict, bandwidth: float):
        self.flops, self.bandwidth = flops, bandwidth

    def peak(self, precision: str) -> float:
        return self.flops.get(precision) or self.flops.get("fp32") or 0.0


def _ceiling_fields(flops: float, memory_bytes: float, seconds: float, peaks: Peaks | None, precision: str) -> dict:
    """Work and, when ``peaks`` are known, the ceilings: achieved FLOP/s, its fraction of the measured
    matmul peak, and the roofline floor over the measured time."""
    out = {"flops": flops, "bytes_memory_bound": memory_bytes, "flops_per_s": flops / seconds if seconds else None}
    if peaks is not None:
        peak = peaks.peak(precision)
        floor = roofline_time(flops, memory_bytes, peak, peaks.bandwidth)
        out.update({"peak_flops_per_s": peak, "bandwidth_bytes_per_s": peaks.bandwidth,
                    "peak_fraction": out["flops_per_s"] / peak if peak and seconds else None,
                    "roofline_s": floor, "roofline_fraction": floor / seconds if seconds else None})
    return out


def apply_ceilings(records: list, peaks: Peaks) -> None:
    """(Re)compute every convolution record's ceiling fields with the final ``peaks``."""
    for r in records:
        if r.get("kind") == "convolution" and r.get("flops") is not None:
            r.update(_ceiling_fields(r["flops"], r.get("bytes_memory_bound") or 0.0, r["per_image_s"] * r["batch"],
                                     peaks, r["precision"]))


def _record(method, backend, device, precision, size, batch, timing=None, per_image=None, **extra) -> dict:
    rec = {"kind": "convolution", "method": method, "backend": backend, "device": str(device), "precision": precision,
           "size": size, "batch": batch, "measured": timing is not None}
    if timing is not None:
        rec.update({"median_s": timing.median, "iqr_s": timing.iqr, "q1_s": timing.q1, "q3_s": timing.q3,
                    "min_s": timing.minimum, "repeats": timing.repeats, "warmup": timing.warmup, "timer": timing.timer,
                    "per_image_s": timing.median / batch})
    else:
        rec.update({"median_s": per_image * batch, "per_image_s": per_image})
    rec["per_pixel_s"] = rec["per_image_s"] / (size * size)
    rec.update(extra)
    return rec


def convolution_cases(settings: ConvolutionSettings, engines) -> list:
    """The list of (method, entry, size, batch) to run, in order (for the progress bar)."""
    cases = []
    live = [e for e in engines if e.engine is not None]
    ola_sizes = settings.sizes if settings.overlap_add_sizes is None else settings.overlap_add_sizes
    for size in settings.sizes:
        for batch in settings.batches:
            for e in live:
                if getattr(e.engine, "max_batch", None) and batch > e.engine.max_batch:
                    continue
                cases.append(("emulator", e, size, batch))
        if size in settings.exact_sizes:
            cases.append(("exact", None, size, 1))
        if size in ola_sizes:
            cases.append(("overlap-add", None, size, 1))
    return cases


def run_case(case, settings: ConvolutionSettings, ctx: dict) -> dict:
    """Time one case. ``ctx``: device, peaks, cost_model (emulator), psf_model, n_modes, exact_bytes_per_pixel."""
    from svrt.optics.convolution import spatially_variant_convolve
    from svrt.optics.overlap_add import exact_flops_per_pixel, overlap_add_convolve, overlap_add_flops

    method, entry, size, batch = case
    device, peaks = ctx["device"], ctx.get("peaks")
    obj, modes = make_inputs(size, batch, ctx["n_modes"], device)
    if method == "emulator":
        eng, inst = entry.engine, settings.instrument
        t = measure(
            lambda: eng.forward(obj, modes, inst), warmup=settings.warmup, repeats=settings.repeats, device=device
        )
        cost = ctx["cost_model"].cost(size, batch)
        return _record(method, entry.backend, device, entry.precision, size, batch, t,
                       flops_source="counted (conv + linear MACs from forward hooks) x 2",
                       **_ceiling_fields(cost.flops, cost.bytes_memory, t.median, peaks, entry.precision))
    pm = ctx["psf_model"]
    o, a = obj[0], modes[0]
    if method == "exact":
        t = measure(
            lambda: spatially_variant_convolve(o, a, pm), warmup=0, repeats=settings.exact_repeats, device=device
        )
        flops = exact_flops_per_pixel(pm) * size * size
        mem = ctx["exact_bytes_per_pixel"] * size * size
        return _record(method, "torch", device, "fp32", size, 1, t, flops_source="analytic (PSF FFTs + S^2 dot "
                                                                                 "products)",
                       psf_size=pm.psf_size, **_ceiling_fields(flops, mem, t.median, peaks, "fp32"))
    if method == "overlap-add":
        run = lambda: overlap_add_convolve(o, a, pm, patch=settings.patch, overlap=settings.overlap)  # noqa: E731
        counted, _ = count_bytes(run)                           # the warm-up run, counting its traffic
        t = measure(run, warmup=max(0, settings.warmup - 1), repeats=settings.repeats, device=device)
        work = overlap_add_flops((size, size), 1, pm, settings.patch, settings.overlap)
        mem = counted.bytes.get("memory", 0)
        return _record(method, "torch", device, "fp32", size, 1, t, flops_source="analytic (tile FFTs + one PSF per "
                                                                                 "tile)",
                       psf_size=pm.psf_size, patch=settings.patch, overlap=settings.overlap, tiles=work["tiles"],
                       fft_side=work["fft_side"], **_ceiling_fields(work["flops"], mem, t.median, peaks, "fp32"))
    raise ValueError(method)


def exact_bytes_per_pixel(psf_model, probe: int = 16) -> float:
    """Traffic of the memory-bound operations of the exact method per pixel, counted on a small image."""
    from svrt.optics.convolution import spatially_variant_convolve

    obj = torch.rand(1, probe, probe, device=psf_model.device)
    coef = torch.zeros(psf_model.n_modes, probe, probe, device=psf_model.device)
    counted, _ = count_bytes(spatially_variant_convolve, obj, coef, psf_model)
    return counted.bytes.get("memory", 0) / (probe * probe)


def extrapolate_exact(records: list, settings: ConvolutionSettings, peaks: Peaks | None, psf_model, device,
                      bytes_per_pixel: float) -> list:
    """Records for the sizes where the exact method was not run, from the measured cost per pixel of the
    largest size where it was (``measured: false``, ``extrapolated_from``)."""
    from svrt.optics.overlap_add import exact_flops_per_pixel

    measured = [r for r in records if r["method"] == "exact" and r["measured"]]
    if not measured:
        return []
    ref = max(measured, key=lambda r: r["size"])
    out = []
    for size in settings.sizes:
        if any(r["size"] == size for r in measured):
            continue
        per_image = ref["per_pixel_s"] * size * size
        flops = exact_flops_per_pixel(psf_model) * size * size
        out.append(_record("exact", "torch", device, "fp32", size, 1, None, per_image=per_image,
                           extrapolated_from=ref["size"], psf_size=psf_model.psf_size,
                           flops_source="analytic (PSF FFTs + S^2 dot products)",
                           note=f"extrapolated from {ref['size']}^2 (cost linear in pixels)",
                           **_ceiling_fields(flops, bytes_per_pixel * size * size, per_image, peaks, "fp32")))
    return out


def speedups(records: list) -> list:
    """Per size: exact and overlap-add time per image over the fastest emulator time per image (any back
    end, any batch) and over torch FP32 batch 1."""
    out = []
    sizes = sorted({r["size"] for r in records if r.get("kind") == "convolution"})
    for size in sizes:
        at = [r for r in records if r.get("kind") == "convolution" and r["size"] == size]
        emu = [r for r in at if r["method"] == "emulator"]
        exact = next((r for r in at if r["method"] == "exact"), None)
        ola = next((r for r in at if r["method"] == "overlap-add"), None)
        if not emu:
            continue
        best = min(emu, key=lambda r: r["per_image_s"])
        base = next((r for r in emu if r["backend"] == "torch" and r["precision"] == "fp32" and r["batch"] == 1), None)
        row = {"size": size, "emulator_best": {k: best[k] for k in ("backend", "precision", "batch", "per_image_s")}}
        if base:
            row["emulator_torch_b1_s"] = base["per_image_s"]
        if exact:
            row["exact_s"] = exact["per_image_s"]
            row["exact_measured"] = exact["measured"]
            row["speedup_exact_over_best"] = exact["per_image_s"] / best["per_image_s"]
            if base:
                row["speedup_exact_over_torch_b1"] = exact["per_image_s"] / base["per_image_s"]
        if ola:
            row["overlap_add_s"] = ola["per_image_s"]
            row["speedup_overlap_add_over_best"] = ola["per_image_s"] / best["per_image_s"]
        out.append(row)
    return out
