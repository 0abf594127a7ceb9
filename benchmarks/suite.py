"""``svrt bench``: the whole benchmark, as one function.

:func:`run_benchmark` measures the machine's ceilings (matrix-product FLOP/s, copy bandwidth), runs
the Fig. 6 convolution timings (:mod:`svrt.benchmarks.convolution`) and the SV-MOMFBD iteration
timings (:mod:`svrt.benchmarks.restoration`) for every back end present, and writes
``bench.json`` and ``bench.png`` into ``out_dir``; optionally it updates the machine's section of a
results page (``benchmarks/RESULTS.md``).

The quick default finishes in a few minutes on two CPU cores; ``full=True`` goes to 1024^2 images,
batches up to 16 and the paper's restoration case (512^2, 12 frames, 2 objects, 64x64 modes).
"""

from __future__ import annotations

import datetime
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from svrt.benchmarks import convolution as conv
from svrt.benchmarks import restoration as rest
from svrt.benchmarks.engines import _cpu_copy, benchmark_model, build_engines, cuda_available
from svrt.benchmarks.machine import git_info, machine_info, machine_label, versions
from svrt.benchmarks.roofline import EmulatorCostModel, measure_bandwidth, measure_peak_flops
from svrt.errors import SvrtError

SCHEMA = "svrt-bench/1"


@dataclass
class BenchSettings(conv.ConvolutionSettings):
    """Everything that selects what is run: the convolution timings' settings (sizes, batches, exact sizes,
    repeats, warm-up, overlap-add patch, instrument) and the rest; the presets are :meth:`quick` and
    :meth:`full`."""

    backends: tuple = ("torch", "onnxruntime")
    precisions: tuple = ("fp32",)
    restoration: tuple = rest.QUICK_CASES          # (size, frames, objects, grid nodes per side)
    iterations: int = 3
    peak_n: int | None = None                      # matrix side for the peak FLOP/s (default per device)
    bandwidth_mb: int | None = None                # buffer for the bandwidth (default per device)
    time_budget_s: float = 20.0                    # per emulator case: fewer repeats (>= 3) past this
    threads: int | None = None                     # CPU threads for torch and ONNX Runtime (None: their defaults)

    @classmethod
    def quick(cls, device="cpu") -> "BenchSettings":
        if torch.device(device).type == "cuda":
            return cls(sizes=(64, 128, 256, 512), backends=("torch", "onnxruntime", "tensorrt"),
                       precisions=("fp32", "fp16"), repeats=10, warmup=3)
        return cls()

    @classmethod
    def full(cls, device="cpu") -> "BenchSettings":
        gpu = torch.device(device).type == "cuda"
        return cls(sizes=(64, 128, 256, 512, 1024), batches=(1, 2, 4, 8, 16),
                   exact_sizes=(64, 128, 256, 512) if gpu else (64, 128, 256),
                   backends=("torch", "torch-compiled", "onnxruntime", "tensorrt"),
                   precisions=("fp32", "fp16") if gpu else ("fp32",), repeats=10 if gpu else 5,
                   warmup=3 if gpu else 1, restoration=rest.FULL_CASES, iterations=4 if gpu else 3)

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _adaptive(settings: BenchSettings, seconds: float) -> int:
    """Repeats for a case whose warm-up call took ``seconds``: at most ``repeats``, at least 3."""
    if seconds <= 0:
        return settings.repeats
    return int(max(min(settings.repeats, 3), min(settings.repeats, settings.time_budget_s // seconds)))


def run_benchmark(
    out_dir,
    *,
    model=None,
    device: str = "cpu",
    full: bool = False,
    settings: BenchSettings | None = None,
    command: str | None = None,
    progress: bool = True,
    results_page=None,
    label: str | None = None,
    echo=print,
) -> dict:
    """Run the benchmark and write ``out_dir/bench.json`` and ``out_dir/bench.png``; returns the JSON dict.

    model: a bundled model name or a .safetensors path (default the bundled ``svce-c16``, or a random
    width-16 network when it is not installed); device: "cpu" or "cuda[:i]"; settings: overrides the
    quick / full preset; results_page: a Markdown file whose section for this machine is replaced by
    this run's tables; label: the machine's name in that page (default from the hardware).
    ``settings.threads`` changes torch's thread count for the run; it is restored afterwards.
    """
    threads_before = torch.get_num_threads()
    try:
        return _run(out_dir, model=model, device=device, full=full, settings=settings, command=command,
                    progress=progress, results_page=results_page, label=label, echo=echo)
    finally:
        torch.set_num_threads(threads_before)


def _run(out_dir, *, model, device, full, settings, command, progress, results_page, label, echo) -> dict:
    t_start = time.perf_counter()
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvrtError(
            f"--device {device} was asked for but torch sees no CUDA GPU on this machine; use --device cpu."
        )
    settings = settings or (BenchSettings.full(device) if full else BenchSettings.quick(device))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes, skipped = [], []
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    machine = machine_info(device)
    result = {"schema": SCHEMA, "created": _now(), "command": command or "python: svrt.benchmarks.suite.run_benchmark",
              "preset": "full" if full else "quick", "machine": machine, "versions": versions(), "git": git_info(),
              "settings": settings.to_dict()}
    if not torch.cuda.is_available():
        notes.append("no CUDA GPU on this machine: GPU columns (torch CUDA, ONNX Runtime CUDA, TensorRT) not measured.")
    bm = _load_model(model, machine, result, notes, echo)
    with tempfile.TemporaryDirectory(prefix="svrt-bench-") as work:
        engines = _build_engines(bm, settings, device, Path(work), result, skipped, echo)
        # the ceilings are measured again at the end; the better of the two is kept
        echo("measuring the machine's peaks (matrix product, copy bandwidth)...")
        peak_precisions = settings.precisions if cuda_available(device) else ("fp32",)
        peak_info = _measure_peaks(device, settings, peak_precisions)
        ctx = _work_counts(bm, settings, device, result)
        try:
            records = _timed_cases(engines, settings, ctx, skipped, progress, echo)
        finally:
            for e in engines:
                if e.engine is not None:
                    e.engine.close()
        result["peaks"] = _with_ceilings(records, peak_info, _measure_peaks(device, settings, peak_precisions),
                                         peak_precisions)
    if "torch-compiled" not in settings.backends and not full:
        notes.append("torch-compiled is left out of the quick run (compiling takes about a minute per shape on a "
                     "2-core CPU); add it with --backends torch,torch-compiled,... or run --full.")
    result.update(records=records, speedups=conv.speedups(records), skipped=skipped, notes=notes,
                  elapsed_s=time.perf_counter() - t_start, label=label or machine_label(machine))
    _write_and_report(result, out_dir, results_page, echo)
    return result


def _load_model(model, machine: dict, result: dict, notes: list, echo):
    """The emulator to time (:func:`benchmark_model`), recorded in ``result["model"]``."""
    bm = benchmark_model(model)
    result["model"] = bm.info
    if bm.info["random_init"]:
        echo(f"note: {bm.info['note']}")
        notes.append(bm.info["note"])
    echo(f"machine: {machine['cpu']} ({machine['cpus_usable']} usable cores, torch {torch.get_num_threads()} threads)"
         + (f", GPU {machine['gpu']}" if machine.get("gpu") else "") + f"; model {bm.info['name']} "
         f"(width {bm.info['width']}, {bm.info['parameters'] / 1e6:.2f} M parameters)")
    return bm


def _build_engines(bm, settings: BenchSettings, device: str, work: Path, result: dict, skipped: list, echo) -> list:
    """One engine per back end and precision, sized for every case; those that cannot run are skipped."""
    sizes = list(settings.sizes) + [c[0] for c in settings.restoration]
    engines = build_engines(bm, settings.backends, settings.precisions, device, settings.instrument, work,
                            max_batch=max(list(settings.batches) + [c[1] * c[2] for c in settings.restoration] or [1]),
                            min_size=min(sizes), max_size=max(sizes), vjp=bool(settings.restoration),
                            threads=settings.threads, echo=echo)
    skipped += [{"what": f"emulator back end {e.label} on {device}", "reason": e.skip} for e in engines if e.skip]
    result["engines"] = [{"backend": e.backend, "precision": e.precision, "setup_s": e.setup_s,
                          "identity": e.engine.identity.to_dict() if e.engine is not None else None,
                          "skip": e.skip} for e in engines]
    return engines


def _work_counts(bm, settings: BenchSettings, device: str, result: dict) -> dict:
    """The work of one image (the emulator's FLOPs and bytes, the exact convolution's PSFs), recorded in
    ``result``; returns the context of the timed cases."""
    from svrt.optics.psf import PSFModel

    cost_model = EmulatorCostModel(_cpu_copy(bm.model), settings.instrument)
    result["model"]["flops_per_pixel"] = cost_model.conv_macs_per_pixel * 2
    result["model"]["linear_macs_per_image"] = cost_model.linear_macs_per_image
    result["model"]["bytes_per_pixel"] = {"compute": cost_model.bytes_compute_per_pixel,
                                          "memory": cost_model.bytes_memory_per_pixel}
    psf_model = PSFModel(settings.instrument, bm.model.config.n_modes, device=torch.device(device))
    exact_bpp = conv.exact_bytes_per_pixel(psf_model) if settings.exact_sizes else 0.0
    result["psf"] = {"instrument": settings.instrument, "psf_size": psf_model.psf_size, "fft": psf_model.n_fft,
                     "pupil_box": psf_model.box, "note": conv.PSF_NOTE}
    return {"device": device, "peaks": None, "cost_model": cost_model, "psf_model": psf_model,
            "n_modes": bm.model.config.n_modes, "exact_bytes_per_pixel": exact_bpp}


def _restoration_engines(settings: BenchSettings, engines: list, skipped: list, echo) -> tuple[list, list]:
    """The restoration cases and the engines that can run them (a gradient graph; no compiling on a CPU)."""
    rcases = [rest.RestorationCase(*c) for c in settings.restoration]
    ok, why = rest.solver_available()
    if rcases and not ok:
        skipped.append({"what": "restoration benchmark", "reason": why})
        echo(f"skipped the restoration benchmark: {why}")
        rcases = []
    grad_engines = [e for e in engines if e.engine is not None and _has_gradient(e.engine)]
    for e in engines:
        if e.engine is not None and e not in grad_engines and rcases:
            skipped.append({"what": f"restoration with {e.label}", "reason": "the engine has no gradient graph"})
    if rcases and any(e.backend == "torch-compiled" for e in grad_engines) and not torch.cuda.is_available():
        grad_engines = [e for e in grad_engines if e.backend != "torch-compiled"]
        skipped.append({"what": "restoration with torch-compiled on CPU",
                        "reason": "compiling the backward pass for every shape takes minutes on a CPU"})
    return rcases, grad_engines


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _timed_cases(engines: list, settings: BenchSettings, ctx: dict, skipped: list, progress: bool, echo) -> list:
    """The records of the convolution cases (Fig. 6, the exact ones extrapolated where too slow) and of
    the restorations; a case that fails (out of memory, ...) is skipped with its reason."""
    own = {f.name: getattr(settings, f.name) for f in fields(conv.ConvolutionSettings)}
    cs = conv.ConvolutionSettings(**dict(own, sizes=tuple(settings.sizes), batches=tuple(settings.batches),
                                         exact_sizes=tuple(s for s in settings.exact_sizes if s in settings.sizes)))
    cases = conv.convolution_cases(cs, engines)
    rcases, grad_engines = _restoration_engines(settings, engines, skipped, echo)
    records = []
    bar = _progress(len(cases) + len(rcases) * len(grad_engines), progress, echo)
    try:
        for case in cases:
            method, entry, size, batch = case
            bar.set_description(f"{method} {entry.label if entry else ''} {size}^2 B={batch}".replace("  ", " "))
            try:
                records.append(_timed_emulator(case, cs, ctx, settings) if method == "emulator"
                               else conv.run_case(case, cs, ctx))
            except (RuntimeError, MemoryError, SvrtError) as exc:
                skipped.append({"what": f"{method} {entry.label if entry else ''} {size}^2 batch {batch}",
                                "reason": _first_line(exc)})
                bar.write(f"skipped {method} {size}^2 batch {batch}: {_first_line(exc)}")
            bar.update(1)
        records += conv.extrapolate_exact(records, cs, None, ctx["psf_model"], ctx["device"],
                                          ctx["exact_bytes_per_pixel"])
        for rc in rcases:
            for e in grad_engines:
                bar.set_description(f"SV-MOMFBD {e.label} {rc.size}^2 x{rc.frames}x{rc.objects}")
                try:
                    rec = rest.run_restoration_case(e, rc, settings.iterations, ctx["device"], settings.instrument)
                    flops = ctx["cost_model"].cost(rc.size).flops
                    rec["emulator_flops_per_iteration"] = 2 * rc.objects * rc.frames * flops
                    records.append(rec)
                except (RuntimeError, MemoryError, SvrtError) as exc:
                    skipped.append({"what": f"restoration {rc.label} with {e.label}", "reason": _first_line(exc)})
                    bar.write(f"skipped restoration {rc.label} with {e.label}: {_first_line(exc)}")
                bar.update(1)
    finally:
        bar.close()
    return records


def _with_ceilings(records: list, peak_info: dict, again: dict, peak_precisions) -> dict:
    """The better of the peaks measured at the start and at the end (both kept), and every record's
    roofline ceiling and fraction of peak under them; returns the peaks."""
    for key, info in again.items():
        first = peak_info[key]
        value = "flops_per_s" if "flops_per_s" in info else "bytes_per_s"
        best = info if info[value] > first[value] else first
        peak_info[key] = dict(best, start=first[value], end=info[value])
    peaks = conv.Peaks({p: peak_info[f"matmul_{p}"]["flops_per_s"] for p in peak_precisions},
                       peak_info["bandwidth"]["bytes_per_s"])
    conv.apply_ceilings(records, peaks)
    for r in records:
        if r.get("kind") == "restoration" and r.get("per_iteration_s"):
            r["flops_per_s"] = r["emulator_flops_per_iteration"] / r["per_iteration_s"]
            r["peak_fraction"] = r["flops_per_s"] / peaks.peak(r["precision"])
    return peak_info


def _write_and_report(result: dict, out_dir: Path, results_page, echo) -> None:
    """Write bench.json and bench.png (and the results page's section), and print the tables."""
    from svrt.benchmarks.report import format_restoration_table, format_summary, format_table, plot, update_results_page
    from svrt.records import write_json

    json_path = out_dir / "bench.json"
    png_path = out_dir / "bench.png"
    write_json(json_path, result)
    plot(result, png_path)
    result["files"] = [str(json_path), str(png_path)]
    echo("")
    echo(format_table(result["records"]))
    rt = format_restoration_table(result["records"])
    if rt:
        echo("")
        echo(rt)
    echo("")
    for line in format_summary(result):
        echo(line)
    for s in result["skipped"]:
        echo(f"skipped: {s['what']}: {s['reason']}")
    for n in result["notes"]:
        echo(f"note: {n}")
    if results_page:
        update_results_page(results_page, result, png_path)
        echo(f"updated {results_page} (section {result['label']})")
    echo(f"wrote {json_path} and {png_path} in {result['elapsed_s']:.0f} s")


def _measure_peaks(device, settings: BenchSettings, precisions) -> dict:
    out = {}
    for p in precisions:
        out[f"matmul_{p}"] = measure_peak_flops(device, n=settings.peak_n, precision=p)
    out["bandwidth"] = measure_bandwidth(device, mbytes=settings.bandwidth_mb)
    return out


def _has_gradient(engine) -> bool:
    return bool(getattr(engine, "has_gradient", True))


def _timed_emulator(case, cs, ctx, settings: BenchSettings) -> dict:
    """Emulator case with repeats adapted to the cost of one call (long calls get fewer, at least 3)."""
    method, entry, size, batch = case
    obj, modes = conv.make_inputs(size, batch, ctx["n_modes"], ctx["device"])
    from svrt.benchmarks.timing import synchronize

    t0 = time.perf_counter()
    entry.engine.forward(obj, modes, cs.instrument)
    synchronize(ctx["device"])
    first = time.perf_counter() - t0
    del obj, modes
    reps = _adaptive(settings, first)
    local = conv.ConvolutionSettings(**{**asdict(cs), "repeats": reps, "warmup": max(0, cs.warmup - 1)})
    rec = conv.run_case(case, local, ctx)
    rec["first_call_s"] = first
    return rec


class _NoBar:
    def __init__(self, echo=print):
        self.echo = echo

    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def write(self, line):
        self.echo(line)

    def close(self):
        pass


def _progress(total: int, enabled: bool, echo=print):
    if not enabled:
        return _NoBar(echo)
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="case", dynamic_ncols=True, leave=False)
