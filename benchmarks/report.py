"""Tables, the Fig. 6-like plot and the results page of a benchmark run."""

from __future__ import annotations

import re
from pathlib import Path

METHOD_ORDER = {"emulator": 0, "overlap-add": 1, "exact": 2}


def _ms(s) -> str:
    if s is None:
        return "-"
    v = s * 1e3
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _rows(records: list) -> list:
    conv = [r for r in records if r.get("kind") == "convolution"]
    conv.sort(key=lambda r: (r["size"], METHOD_ORDER.get(r["method"], 9), r["backend"], r["precision"], r["batch"]))
    rows = []
    for r in conv:
        note = ""
        if not r["measured"]:
            note = f"extrapolated from {r.get('extrapolated_from')}^2"
        elif r["method"] == "overlap-add":
            note = f"{r.get('tiles')} tiles of ~{r.get('patch')} px"
        rows.append([r["method"], r["backend"], r["precision"], f"{r['size']}", f"{r['batch']}",
                     _ms(r["per_image_s"]), _ms(r.get("median_s")) if r["measured"] else "-",
                     _ms(r.get("iqr_s")) if r["measured"] and r.get("repeats", 0) > 1 else "-",
                     "-" if r.get("flops_per_s") is None else f"{r['flops_per_s'] / 1e9:.1f}",
                     _pct(r.get("peak_fraction")), _pct(r.get("roofline_fraction")), note])
    return rows


CONV_HEADER = ["method", "back end", "prec", "size", "batch", "ms/image", "median ms", "IQR ms", "GFLOP/s",
               "% peak", "% roofline", "note"]
REST_HEADER = ["back end", "prec", "case", "s/iteration", "GFLOP/s", "% peak", "peak MiB", "growth MiB", "batch",
               "memory measured as"]


def _render(header: list, rows: list, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_table(records: list, markdown: bool = False) -> str:
    """Convolution timings: one row per method / back end / precision / size / batch."""
    return _render(CONV_HEADER, _rows(records), markdown)


def format_restoration_table(records: list, markdown: bool = False) -> str:
    rest = [r for r in records if r.get("kind") == "restoration"]
    if not rest:
        return ""
    rows = []
    for r in rest:
        case = f"{r['size']}^2 x {r['frames']} fr x {r['objects']} obj, {r['grid_nodes']}^2 modes"
        rows.append([r["backend"], r["precision"], case, f"{r['per_iteration_s']:.3f}",
                     "-" if r.get("flops_per_s") is None else f"{r['flops_per_s'] / 1e9:.1f}",
                     _pct(r.get("peak_fraction")), f"{r['peak_mb']:.0f}",
                     f"{r['growth_mb']:.0f}", f"{r['batch']}", r["memory_kind"].split(":")[0] + (
                         " RSS" if r["memory_kind"].startswith("cpu") else " allocated")])
    return _render(REST_HEADER, rows, markdown)


def format_summary(result: dict) -> list:
    """Headline lines: peaks, per-pixel cost of the exact method, speed-ups, fraction of peak."""
    lines = []
    peaks = result.get("peaks", {})
    for key, p in peaks.items():
        if key.startswith("matmul"):
            lines.append(f"peak: {p['flops_per_s'] / 1e9:.1f} GFLOP/s ({p['what']})")
    if "bandwidth" in peaks:
        lines.append(f"bandwidth: {peaks['bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s ({peaks['bandwidth']['what']})")
    records = result.get("records", [])
    model = result.get("model", {})
    if model.get("flops_per_pixel"):
        lines.append(f"emulator work: {model['flops_per_pixel'] / 1e3:.1f} kFLOP per pixel (width "
                     f"{model.get('width')}, counted from its convolutions), "
                     f"{model['bytes_per_pixel']['memory'] / 1e3:.1f} kB per pixel "
                     "through memory-bound operations")
    exact = [r for r in records if r.get("method") == "exact" and r.get("measured")]
    if exact:
        ref = max(exact, key=lambda r: r["size"])
        lines.append(f"exact per-pixel method: {ref['per_pixel_s'] * 1e3:.3f} ms per pixel (measured at "
                     f"{ref['size']}^2, PSF {ref.get('psf_size')} px), {100 * (ref.get('peak_fraction') or 0):.2f} % "
                     "of the matmul peak")
    for row in result.get("speedups", []):
        parts = []
        best = row["emulator_best"]
        if "speedup_exact_over_torch_b1" in row:
            parts.append(f"emulator (torch fp32, batch 1: {row['emulator_torch_b1_s'] * 1e3:.1f} ms) is "
                         f"{row['speedup_exact_over_torch_b1']:,.0f}x faster than the exact method "
                         f"({row['exact_s']:.1f} s{'' if row['exact_measured'] else ', extrapolated'})")
        if "speedup_exact_over_best" in row:
            parts.append(f"best emulator ({best['backend']} {best['precision']}, batch {best['batch']}: "
                         f"{best['per_image_s'] * 1e3:.1f} ms/image) {row['speedup_exact_over_best']:,.0f}x")
        if "speedup_overlap_add_over_best" in row:
            parts.append(f"overlap-add {row['overlap_add_s'] * 1e3:.1f} ms "
                         f"({row['speedup_overlap_add_over_best']:.2g}x the best emulator time)")
        if parts:
            lines.append(f"{row['size']}^2: " + "; ".join(parts))
    if any(row["size"] == 256 for row in result.get("speedups", [])):
        lines.append("paper (Sect. 2.4, Fig. 6), 256^2 on a CPU: ~100 ms emulated (C = 64) against ~12 min for the "
                     "per-pixel method, ~3000x (7200x by those two numbers)")
    for r in (r for r in records if r.get("kind") == "restoration"):
        lines.append(f"SV-MOMFBD {r['size']}^2 x {r['frames']} frames x {r['objects']} objects, {r['grid_nodes']}^2 "
                     f"modes, {r['backend']} {r['precision']}: {r['per_iteration_s']:.3f} s per iteration, peak "
                     f"{r['peak_mb']:.0f} MiB ({r['memory_kind'].split(':')[0]}; +{r['growth_mb']:.0f} MiB during the "
                     "solve)")
    if any(r.get("kind") == "restoration" and (r["size"], r["frames"], r["objects"]) == (512, 12, 2) for r in records):
        lines.append("paper (Sect. 3.3), 512^2 x 12 frames x 2 objects on an RTX 4090: 0.75 s per iteration (C = 64)")
    emu = [r for r in records if r.get("method") == "emulator" and r.get("peak_fraction") is not None]
    if emu:
        best = max(emu, key=lambda r: r["peak_fraction"])
        lines.append(f"emulator at best {100 * best['peak_fraction']:.1f} % of the matmul peak and "
                     f"{100 * (best.get('roofline_fraction') or 0):.1f} % of its roofline floor "
                     f"({best['backend']} {best['precision']}, {best['size']}^2, batch {best['batch']})")
    return lines


# --------------------------------------------------------------------------- plot

def plot(result: dict, path) -> None:
    """Fig. 6-like figure: (a) time per convolution vs image size, log-log, one line per method / back
    end / precision / batch (extrapolated exact-method points dashed, open markers); (b) achieved FLOP/s
    as a fraction of the measured matmul peak; (c) SV-MOMFBD seconds per iteration when measured."""
    import matplotlib

    from svrt.pictures import save_png, subplots

    records = result.get("records", [])
    conv = [r for r in records if r.get("kind") == "convolution"]
    rest = [r for r in records if r.get("kind") == "restoration"]
    ncols = 3 if rest else 2
    fig, axes = subplots(1, ncols, figsize=(6.0 * ncols, 5.0))
    ax_t, ax_f = axes[0], axes[1]
    groups = {}
    for r in conv:
        key = (r["method"], r["backend"], r["precision"], r["batch"])
        groups.setdefault(key, []).append(r)
    colours = {}
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    batches = sorted({k[3] for k in groups})
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for key in sorted(groups, key=lambda k: (METHOD_ORDER.get(k[0], 9), k[1], k[2], k[3])):
        method, backend, precision, batch = key
        ckey = (method, backend, precision)
        colours.setdefault(ckey, "k" if method == "exact" else "0.45" if method == "overlap-add"
                           else palette[len([c for c in colours if c[0] == 'emulator']) % len(palette)])
        colour = colours[ckey]
        pts = sorted(groups[key], key=lambda r: r["size"])
        marker = markers[batches.index(batch) % len(markers)]
        name = method if method != "emulator" else f"SVCE {backend}"
        label = f"{name} {precision}" + (f" B={batch}" if method == "emulator" else "")
        meas = [r for r in pts if r["measured"]]
        extra = [r for r in pts if not r["measured"]]
        if meas:
            ax_t.loglog([r["size"] for r in meas], [r["per_image_s"] for r in meas], marker=marker, color=colour,
                        label=label, lw=1.5)
            fr = [r for r in meas if r.get("peak_fraction") is not None]
            if fr:
                ax_f.loglog([r["size"] for r in fr], [100 * r["peak_fraction"] for r in fr], marker=marker,
                              color=colour, label=label, lw=1.5)
        if extra:
            xs = ([meas[-1]["size"]] if meas else []) + [r["size"] for r in extra]
            ys = ([meas[-1]["per_image_s"]] if meas else []) + [r["per_image_s"] for r in extra]
            ax_t.loglog(xs, ys, ls="--", color=colour, lw=1.2)
            ax_t.loglog([r["size"] for r in extra], [r["per_image_s"] for r in extra], ls="none", marker=marker,
                        mfc="none", color=colour, label=f"{label} (extrapolated)")
    sizes = sorted({r["size"] for r in conv})
    for ax in (ax_t, ax_f):
        if sizes:
            ax.set_xticks(sizes)
            ax.set_xticklabels([str(s) for s in sizes])
            ax.minorticks_off()
        ax.set_xlabel("image size [pixels per side]")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("time per convolution [s]")
    dev = result.get("machine", {})
    where = dev.get("gpu") or f"{dev.get('cpu', 'CPU')} ({dev.get('cpus_usable')} cores)"
    ax_t.set_title(f"(a) time per image, {where}", fontsize=9)
    ax_t.legend(fontsize=7, loc="best")
    ax_f.set_ylabel("achieved FLOP/s / measured matmul peak [%]")
    peak = result.get("peaks", {}).get("matmul_fp32", {})
    ax_f.set_title(f"(b) fraction of peak ({peak.get('flops_per_s', 0) / 1e9:.0f} GFLOP/s fp32 matmul)", fontsize=9)
    ax_f.legend(fontsize=7)
    if rest:
        ax_r = axes[2]
        labels = [f"{r['backend']} {r['precision']}\n{r['size']}^2 x{r['frames']}x{r['objects']}" for r in rest]
        ax_r.bar(range(len(rest)), [r["per_iteration_s"] for r in rest], color="C0")
        ax_r.set_xticks(range(len(rest)))
        ax_r.set_xticklabels(labels, fontsize=7)
        ax_r.set_ylabel("SV-MOMFBD time per iteration [s]")
        ax_r.set_title("(c) restoration", fontsize=9)
        ax_r.grid(True, axis="y", which="both", alpha=0.3)
        for i, r in enumerate(rest):
            ax_r.annotate(f"{r['peak_mb']:.0f} MiB", (i, r["per_iteration_s"]), ha="center", va="bottom", fontsize=7)
    model = result.get("model", {})
    fig.suptitle(f"svrt bench: {model.get('name')} (width {model.get('width')})"
                 + (" random weights" if model.get("random_init") else "") + f", {result.get('created', '')}",
                 fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


# --------------------------------------------------------------------------- results page

PAGE_HEAD = """# svrt benchmark results

Latest figures per machine, written by `svrt bench --results-page benchmarks/RESULTS.md` (each run
replaces its machine's section). Times are medians after warm-up; `% peak` is the achieved FLOP/s
over the machine's measured float32 matrix-product FLOP/s, `% roofline` the time floor (FLOPs at
that peak plus the memory-bound operations' bytes at the measured copy bandwidth) over the measured
time. The matmul peak is a measured, practical ceiling: convolution libraries can beat it (and a
busy machine lowers it), so values a little above 100 % happen. Exact-method rows marked
*extrapolated* scale the measured cost per pixel of the largest measured size. Each section links
its figure (`bench.png`, Fig. 6-like) and its `bench.json` holds every record. See
`svrt bench --help` and `benchmarks/suite.py`.
"""


def section_markdown(result: dict, png_path=None, page_dir=None) -> str:
    m = result.get("machine", {})
    v = result.get("versions", {})
    git = result.get("git", {})
    model = result.get("model", {})
    lines = [
        f"## {result.get('label')}",
        "",
        f"- date: {result.get('created')}",
        f"- command: `{result.get('command')}`",
        f"- machine: {m.get('cpu')}, {m.get('cpus_usable')} usable cores of {m.get('cpu_count')}, "
        f"{m.get('memory_gib')} GiB"
        + (f"; GPU {m.get('gpu')} ({m.get('gpu_memory_gib')} GiB)" if m.get("gpu") else "; no GPU"),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- commit: {git.get('commit', 'unknown')}" + (" (with local changes)" if git.get("dirty") else ""),
        f"- model: {model.get('name')} (width {model.get('width')}, {model.get('parameters')} parameters)"
        + (" - random weights, the bundled model was not installed" if model.get("random_init") else ""),
        f"- elapsed: {result.get('elapsed_s', 0):.0f} s",
        "",
    ]
    for n in result.get("notes", []):
        lines.append(f"> note: {n}")
    if result.get("notes"):
        lines.append("")
    lines += [f"- {s}" for s in format_summary(result)]
    lines += ["", format_table(result.get("records", []), markdown=True), ""]
    rt = format_restoration_table(result.get("records", []), markdown=True)
    if rt:
        lines += [rt, ""]
    for s in result.get("skipped", []):
        lines.append(f"- skipped: {s['what']}: {s['reason']}")
    if png_path is not None:
        rel = Path(png_path)
        if page_dir is not None:
            try:
                rel = Path(png_path).resolve().relative_to(Path(page_dir).resolve())
            except ValueError:
                rel = Path(png_path)
        lines += ["", f"![{result.get('label')}]({rel.as_posix()})"]
    return "\n".join(lines).rstrip() + "\n"


def update_results_page(page, result: dict, png_path=None) -> None:
    """Replace (or append) this machine's section of the Markdown ``page``, between markers."""
    from svrt.fileio import atomic_write

    page = Path(page)
    label = result.get("label", "machine")
    begin, end = f"<!-- bench:{label}:begin -->", f"<!-- bench:{label}:end -->"
    body = f"{begin}\n{section_markdown(result, png_path, page.parent)}{end}\n"
    text = page.read_text() if page.exists() else PAGE_HEAD
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body, text)
    else:
        text = text.rstrip() + "\n\n" + body
    with atomic_write(page) as tmp:
        Path(tmp).write_text(text)
