"""Triton vs PyTorch timings of the custom kernels, with bytes moved and achieved bandwidth.

``run_kernel_benchmark(device="cuda")`` times, with CUDA events after a warm-up (medians):

* mode upsampling ``[B, M, Yg, Xg] -> [B, M, Y, X]``: forward, adjoint (what the backward runs) and
  forward + backward through autograd (default B=12 frames, M=44 modes, 64x64 -> 512x512, plus an
  8x8 and a per-pixel grid);
* the erf Fourier filter (default K=2 objects of 512x512): the fused spectrum multiply alone
  (Triton computing H on the fly vs PyTorch building H with ``erf_filter`` and multiplying, and
  vs PyTorch with H cached) and the whole ``fourier_filter`` with apodisation, forward + backward.

Bytes are the compulsory traffic of each operation (every input read once, every output written
once), so ``GBps = bytes / time`` is an effective bandwidth and ``peak_share`` compares it with the
device's copy bandwidth measured in the same run (a large device-to-device ``copy_``, read + write);
``nominal_share`` compares it with the datasheet bandwidth of the card (:func:`nominal_bandwidth_GBps`,
from the device name; None for a card not in :data:`NOMINAL_GBPS`). Inputs that fit in L2
(``fits_in_l2``) can exceed either. For ``fourier_filter`` the FFTs make
several passes; its GB/s shows how far the whole operation is from one pass over memory.

``impl="auto"`` in :mod:`svrt.kernels` prefers Triton on CUDA without timing anything; the
``speedup`` entries here (torch time / triton time) say where that holds. Needs CUDA: elsewhere the
function returns ``{"status": "skipped", "reason": ...}``.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

__all__ = ["run_kernel_benchmark", "DEFAULT_SIZES", "NOMINAL_GBPS", "nominal_bandwidth_GBps",
           "measure_copy_bandwidth"]

DEFAULT_SIZES = {
    "upsample": [
        {"B": 12, "M": 44, "grid": (64, 64), "size": (512, 512)},
        {"B": 12, "M": 44, "grid": (8, 8), "size": (512, 512)},
        {"B": 2, "M": 44, "grid": (512, 512), "size": (512, 512)},
    ],
    "filter": [
        {"K": 2, "size": (512, 512)},
        {"K": 12, "size": (1024, 1024)},
    ],
}


#: Datasheet memory bandwidth in GB/s by a piece of the name torch reports; the first match wins, so
#: the more specific names come first ("GH200" before "H200", "H100 PCIe" before "H100").
NOMINAL_GBPS = (
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("RTX 4090", 1008.0),
)


def nominal_bandwidth_GBps(name: str | None) -> float | None:
    """Datasheet bandwidth (GB/s) of the card called ``name`` (e.g. "NVIDIA H200": 4800), or None."""
    low = (name or "").lower()
    for piece, gbps in NOMINAL_GBPS:
        if piece.lower() in low:
            return gbps
    return None


def _skipped(reason: str, device) -> dict:
    return {"status": "skipped", "reason": reason, "device": str(device), "results": [], "speedups": {}}


def _time_ms(fn, repeats: int, warmup: int, inner: int = 1, device="cuda") -> float:
    """Median over ``repeats`` of the per-call time in ms of ``inner`` back-to-back calls (CUDA events:
    :func:`svrt.benchmarks.timing.measure`)."""
    from svrt.benchmarks.timing import measure

    return measure(fn, warmup, repeats, device, inner).median * 1e3


def _inner_for(fn, target_ms: float = 2.0) -> int:
    """Calls per timed sample so that a sample lasts ~``target_ms`` (amortises event overhead)."""
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    ms = max(start.elapsed_time(end), 1e-3)
    return int(min(100, max(1, math.ceil(target_ms / ms))))


def measure_copy_bandwidth(device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write counted) with a ``nbytes`` buffer."""
    free = torch.cuda.mem_get_info(device)[0]
    nbytes = int(min(nbytes, free // 4))
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src), repeats, warmup=3)
    del src, dst
    return 2.0 * n * 4 / (ms * 1e-3) / 1e9


def _entry(op, case, dtype, impl, ms, nbytes, peak, l2, nominal=None) -> dict:
    gbps = nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")
    return {"op": op, "case": case, "dtype": str(dtype).replace("torch.", ""), "impl": impl,
            "ms": round(ms, 5), "bytes": int(nbytes), "GBps": round(gbps, 2),
            "peak_share": round(gbps / peak, 4) if peak else None,
            "nominal_share": round(gbps / nominal, 4) if nominal else None,
            "fits_in_l2": bool(l2 and nbytes < l2)}


def run_kernel_benchmark(device="cuda", sizes: dict | None = None, repeats: int = 20, warmup: int = 5,
                         dtypes=(torch.float32, torch.float16), peak_copy_GBps: float | None = None) -> dict:
    """Time Triton against PyTorch for the kernels of :mod:`svrt.kernels` on ``device``.

    ``sizes`` as :data:`DEFAULT_SIZES` (either key may be omitted to skip that operator). Returns
    ``{"status": "ok", "device", "peak_copy_GBps", "results": [...], "speedups": {...}}`` with one
    result per (op, case, dtype, impl) -- ``ms`` (median), ``bytes``, ``GBps``, ``peak_share`` -- and
    ``speedups[f"{op}|{case}|{dtype}"] = torch ms / triton ms``. ``peak_copy_GBps``: a copy bandwidth
    measured before (several calls then share one measurement); None measures it. Without CUDA (or
    Triton) returns ``{"status": "skipped", "reason": ..., "results": []}``.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return _skipped("the kernel benchmark needs a CUDA device (torch.cuda.is_available() is "
                        f"{torch.cuda.is_available()}, device={device!r}).", device)
    try:
        import triton
    except Exception as exc:  # noqa: BLE001
        return _skipped(f"triton does not import ({type(exc).__name__}: {exc}).", device)
    if triton.knobs.runtime.interpret:
        return _skipped("TRITON_INTERPRET is set: unset it to time the compiled kernels.", device)

    sizes = DEFAULT_SIZES if sizes is None else sizes
    props = torch.cuda.get_device_properties(dev)
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    peak = float(peak_copy_GBps) if peak_copy_GBps else measure_copy_bandwidth(dev)
    name = torch.cuda.get_device_name(dev)
    nominal = nominal_bandwidth_GBps(name)
    results: list[dict] = []

    def bench(op, case, dtype, impl, fn, nbytes):
        ms = _time_ms(fn, repeats, warmup, _inner_for(fn))
        results.append(_entry(op, case, dtype, impl, ms, nbytes, peak, l2, nominal))

    gen = torch.Generator(device=dev).manual_seed(0)
    for cfg in sizes.get("upsample", []):
        _bench_upsample(cfg, dtypes, dev, gen, bench)
    for cfg in sizes.get("filter", []):
        _bench_filter(cfg, dev, gen, bench)
    speedups = _speedups(results)
    return {
        "status": "ok",
        "device": name,
        "torch": torch.__version__,
        "triton": getattr(triton, "__version__", "?"),
        "peak_copy_GBps": round(peak, 1),
        "nominal_GBps": nominal,
        "l2_bytes": l2,
        "repeats": repeats,
        "results": results,
        "speedups": speedups,
    }


def _bench_upsample(cfg: dict, dtypes, dev, gen, bench) -> None:
    """Time the bilinear mode upsampling (forward, adjoint, forward + backward) of one size, torch against
    Triton, in every dtype; ``bench(op, case, dtype, impl, fn, nbytes)`` records a timing."""
    import svrt.kernels as K

    b, m = int(cfg["B"]), int(cfg["M"])
    (yg, xg), (y, x) = cfg["grid"], cfg["size"]
    case = f"B{b} M{m} {yg}x{xg}->{y}x{x}"
    for dtype in dtypes:
        es = torch.tensor([], dtype=dtype).element_size()
        coarse = torch.randn(b, m, yg, xg, device=dev, generator=gen).to(dtype)
        grad = torch.randn(b, m, y, x, device=dev, generator=gen).to(dtype)
        nc, nf = coarse.numel() * es, grad.numel() * es
        for impl in ("torch", "triton"):
            with torch.no_grad():
                bench("upsample_forward", case, dtype, impl,
                      lambda: K.upsample_modes(coarse, (y, x), impl=impl), nc + nf)
                bench("upsample_adjoint", case, dtype, impl,
                      lambda: K.upsample_modes_adjoint(grad, (yg, xg), impl=impl), nf + nc)
            leaf = coarse.clone().requires_grad_(True)

            def fwd_bwd(leaf=leaf, impl=impl):
                leaf.grad = None
                K.upsample_modes(leaf, (y, x), impl=impl).backward(grad)

            bench("upsample_forward_backward", case, dtype, impl, fwd_bwd, 2 * (nc + nf))
        del coarse, grad
        torch.cuda.empty_cache()


def _bench_filter(cfg: dict, dev, gen, bench) -> None:
    """Time the erf filter's spectrum product (Triton, torch, torch with a cached H) and the Fourier
    filter (forward, forward + backward), torch against Triton, for one size."""
    import svrt.kernels as K
    from svrt.kernels import triton_filter
    from svrt.optics.filters import erf_filter

    k = int(cfg["K"])
    y, x = cfg["size"]
    case = f"K{k} {y}x{x}"
    cutoff = 0.21
    obj = torch.randn(k, y, x, device=dev, generator=gen)
    win = torch.rand(y, x, device=dev, generator=gen) + 0.5
    spec = torch.fft.rfft2(obj)
    out = torch.empty_like(spec)
    h_cached = erf_filter((y, x), cutoff, real=True, device=dev)
    n_spec = spec.numel() * 8
    with torch.no_grad():
        bench("spectrum_multiply", case, torch.float32, "triton",
              lambda: triton_filter.erf_filter_spectrum(spec, (y, x), cutoff, out=out), 2 * n_spec)
        bench("spectrum_multiply", case, torch.float32, "torch",
              lambda: torch.mul(spec, erf_filter((y, x), cutoff, real=True, device=dev), out=out),
              2 * n_spec)
        bench("spectrum_multiply", case, torch.float32, "torch_cached_H",
              lambda: torch.mul(spec, h_cached, out=out), 2 * n_spec)
    n_img = obj.numel() * 4
    for impl in ("torch", "triton"):
        with torch.no_grad():
            bench("fourier_filter_forward", case, torch.float32, impl,
                  lambda: K.fourier_filter(obj, cutoff, 1.8, 20.0, win, impl=impl), 2 * n_img + win.numel() * 4)
        leaf = obj.clone().requires_grad_(True)

        def filt_fwd_bwd(leaf=leaf, impl=impl):
            leaf.grad = None
            K.fourier_filter(leaf, cutoff, 1.8, 20.0, win, impl=impl).backward(obj)

        bench("fourier_filter_forward_backward", case, torch.float32, impl, filt_fwd_bwd,
              4 * n_img + 2 * win.numel() * 4)
    del obj, spec, out
    torch.cuda.empty_cache()


def _speedups(results: list[dict]) -> dict:
    """``{"op|case|dtype": torch ms / triton ms}`` for every timing measured with both."""
    by_key: dict = {}
    for r in results:
        by_key.setdefault((r["op"], r["case"], r["dtype"]), {})[r["impl"]] = r["ms"]
    return {f"{op}|{case}|{dt}": round(d["torch"] / d["triton"], 3)
            for (op, case, dt), d in by_key.items() if "torch" in d and "triton" in d and d["triton"] > 0}


def _format(res: dict) -> str:
    if res.get("status") != "ok":
        return f"kernel benchmark skipped: {res.get('reason')}"
    nominal = res.get("nominal_GBps")
    lines = [f"{res['device']}  (copy peak {res['peak_copy_GBps']} GB/s, datasheet "
             f"{f'{nominal:.0f} GB/s' if nominal else 'unknown'}, torch {res['torch']}, triton {res['triton']})",
             f"{'op':34s} {'case':26s} {'dtype':8s} {'impl':15s} {'ms':>10s} {'GB/s':>9s} {'copy':>6s} {'sheet':>6s}"]

    def pct(v):
        return f"{100 * v:.0f}%" if v is not None else "-"

    for r in res["results"]:
        lines.append(f"{r['op']:34s} {r['case']:26s} {r['dtype']:8s} {r['impl']:15s} "
                     f"{r['ms']:10.4f} {r['GBps']:9.1f} {pct(r['peak_share']):>6s} {pct(r.get('nominal_share')):>6s}"
                     + ("  (L2)" if r["fits_in_l2"] else ""))
    lines.append("speedup (torch ms / triton ms):")
    lines += [f"  {k}: {v}" for k, v in res["speedups"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Time the svrt Triton kernels against PyTorch (needs CUDA).")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    res = run_kernel_benchmark(args.device, repeats=args.repeats, warmup=args.warmup)
    print(_format(res))
    if args.json:
        from svrt.records import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
