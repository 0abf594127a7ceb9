"""The cost curve of ``svrt deconvolve``: wall time and peak resident memory of one default restoration per
field size, on this machine, with the time per pixel relative to 256^2 (issue 23: it must not grow faster than
the number of pixels).

Each size is restored by ``svrt deconvolve`` in a fresh process (``python -m svrt.cli``), so its peak memory is
its own: ``ru_maxrss`` of that child alone (``os.wait4``), not the running maximum over all children that
``resource.getrusage(RUSAGE_CHILDREN)`` gives. The wall time and the CPU time (user + system, ``os.wait4``)
include reading, the solve and writing; the time per pixel is from the CPU time, which other work on a shared
machine does not stretch (with one thread, ``OMP_NUM_THREADS=1``, it equals the wall time of an idle machine).

The bursts come from :func:`svrt.simulate.simulate_burst` (``wavefront="screen"``, data that do not follow the
solver's model) up to ``--simulate-up-to`` (default 1024; the 1024^2 x 12 x 2 simulation takes about 50 min of
one core); larger fields are the largest simulated burst mirror-tiled (its frames, truth and noise reflected
across the edges: a camera-sized field at a fraction of the simulation's cost). Mirror-tiled bursts measure cost
only: a reflected frame holds a reflected wavefront whose tip-tilt changes sign at each seam, which no smooth
wavefront model fits, and the solve over-restores them (docs/COST.md).

Every size writes ``cost-<size>.json`` into the output folder as soon as it is done; the curve (``cost_curve.json``,
``cost_curve.png``) is made from all of them, so sizes run apart (a long 1024^2 run in the background) join one
curve, and ``--report-only`` remakes it.

``--peer-sizes 256,512`` also restores the burst of those sizes with a peer (``--peer``, default torchmfbd's
patch-wise MOMFBD, the ``[peers]`` extra) in a fresh process of its own (``--peer-restore``, this module as the
child), timed and measured the same way: the method is the peer harness's (:func:`svrt.benchmarks.peers.parse_method`,
settings of torchmfbd's example spot_8542), which restores every object of the burst in one run, their frames
sharing the wavefronts (torchmfbd's objects), as svrt does. ``peer-<name>-<size>.json`` per size; the curve gives
the ratios svrt / peer at each size both ran.

Usage::

    python -m svrt.benchmarks.cost_curve --sizes 128,256,512,1024 --frames 12 --objects 2 --out-dir cost/ \
        --peer-sizes 256,512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["mirror_tile", "burst_for", "run_size", "run_peer", "peer_restore", "collect", "markdown", "main"]

REFERENCE_SIZE = 256   # the time per pixel is given relative to this size
DEFAULT_PEER = "torchmfbd"


def mirror_tile(burst, size: int):
    """The ``[K, L, size, size]`` burst made of ``burst`` (square, side s) and its mirror images: rows and columns
    reflected about the edges (s, 2s, ...) as often as needed, then cropped. MODES is dropped (the reflected
    wavefront's tip-tilt would change sign); TRUTH, the header and the instruments are kept."""
    from svrt.fileio import Burst

    def tile(a):
        reps = -(-size // a.shape[-1])
        row = np.concatenate([a if i % 2 == 0 else a[..., ::-1] for i in range(reps)], axis=-1)
        out = np.concatenate([row if i % 2 == 0 else row[..., ::-1, :] for i in range(reps)], axis=-2)
        return np.ascontiguousarray(out[..., :size, :size])

    truth = None if burst.truth is None else tile(burst.truth)
    return Burst(frames=tile(burst.frames), instruments=list(burst.instruments), truth=truth,
                 header=dict(burst.header) | {"MIRRORED": f"from {burst.frames.shape[-1]}^2"})


def burst_for(size: int, frames: int, objects: int, seed: int, simulate_up_to: int, folder: Path) -> Path:
    """The burst file of one size in ``folder`` (made once and kept): simulated up to ``simulate_up_to``, the
    largest simulated one mirror-tiled beyond."""
    from svrt.fileio import read_burst, write_burst

    path = folder / f"burst-{size}x{frames}x{objects}-s{seed}.fits"
    if path.exists():
        return path
    if size <= simulate_up_to:
        from svrt.simulate import simulate_burst

        burst = simulate_burst(size=size, n_frames=frames, n_objects=objects, seed=seed, wavefront="screen",
                               progress=False)
    else:
        burst = mirror_tile(read_burst(burst_for(simulate_up_to, frames, objects, seed, simulate_up_to, folder)),
                            size)
    write_burst(path, burst)
    return path


def _stage_times(restoration) -> dict:
    """Seconds per stage from the restoration's cards and loss table: the patch stage (T_PATCH), the object
    solves and refinements (the loss table's rows) and the rest (reading, plan, writing within T_TOTAL)."""
    cfg = restoration.config or restoration.header
    t_total = float(cfg.get("T_TOTAL", float("nan")))
    t_patch = float(cfg.get("T_PATCH", float("nan")))
    t_rows = float(np.nansum(restoration.loss.get("time_s", [])))
    return {"t_total_solver_s": t_total, "t_patch_s": t_patch, "t_iterations_s": t_rows,
            "t_other_s": t_total - t_patch - t_rows, "iterations": int(len(restoration.loss.get("total", []))),
            "obj_iters": cfg.get("OBJ_ITERS"), "patch_evals": cfg.get("PATCH_EVALS"), "rounds": cfg.get("ROUNDS")}


def _run_child(cmd: list, log: Path) -> dict:
    """Run ``cmd`` with its output in ``log``; its wall time, its own CPU time and peak RSS (``os.wait4``: the
    child's rusage, where ``RUSAGE_CHILDREN`` is the maximum over every child so far) and its output."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = log.read_text()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed (exit {code}), log {log}: {out.strip()[-2000:]}")
    peak_mb = usage.ru_maxrss / 1024.0 if sys.platform != "darwin" else usage.ru_maxrss / 2 ** 20
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(peak_mb, 1), "output": out}


def _nmse(objects, burst) -> list:
    """NMSE_var of each restored object ``[K, Y, X]`` against the burst's truth (the one score of svrt.metrics,
    the same for svrt and the peer); empty without a truth."""
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration

    if burst.truth is None:
        return []
    return [round(float(score_restoration(objects[k], burst.truth[k],
                                          get_instrument(s).cutoff_cycles_per_pixel)["nmse_variance"]), 5)
            for k, s in enumerate(burst.instruments)]


def run_size(size: int, frames: int, objects: int, seed: int, simulate_up_to: int, out_dir: Path,
             extra_args=()) -> dict:
    """Restore the burst of one size with ``svrt deconvolve`` in a fresh process; its wall time, its own peak RSS,
    the plan line it printed, the stage times and the score; written to ``cost-<size>.json``."""
    from svrt.fileio import read_burst, read_restoration
    from svrt.records import write_json

    burst_path = burst_for(size, frames, objects, seed, simulate_up_to, out_dir)
    output = out_dir / f"restored-{size}.fits"
    cmd = [sys.executable, "-m", "svrt.cli", "deconvolve", str(burst_path), "-o", str(output), "--no-png", "-q",
           "--overwrite", *extra_args]
    run = _run_child(cmd, out_dir / f"deconvolve-{size}.log")
    out = run.pop("output")
    rest = read_restoration(output)
    cfg = rest.config or rest.header
    plan_line = next((line for line in out.splitlines() if line.startswith("plan:")), "")
    burst = read_burst(burst_path)
    record = {"size": size, "frames": frames, "objects": objects, "seed": seed,
              "burst": burst_path.name, "mirrored": size > simulate_up_to, "command": " ".join(cmd[1:]), **run,
              "peak_mb_at_solve_end": float(cfg.get("PEAK_MB", float("nan"))),
              "plan": plan_line, "nmse_var": _nmse(rest.objects, burst),
              "frame_average_nmse_var": _nmse(burst.frames.mean(axis=1), burst),
              "threads": os.environ.get("OMP_NUM_THREADS"), **_stage_times(rest)}
    write_json(out_dir / f"cost-{size}.json", record)
    return record


def peer_restore(burst_path: Path, output: Path, peer: str = DEFAULT_PEER) -> None:
    """The child of :func:`run_peer`: restore the burst with the peer harness's method ``peer`` (``NAME`` or
    ``NAME=key:value,...``), write its objects ``[K, Y, X]`` to ``output`` (FITS, atomically) and what the method
    reported (torchmfbd: patch, stride, number of patches) to :func:`_info_path` of it."""
    from svrt.benchmarks.peers import parse_method
    from svrt.fileio import read_burst, write_array
    from svrt.records import write_json

    runner = parse_method(peer)
    runner.prepare()
    objects = runner.restore(read_burst(burst_path))
    write_array(output, objects, header={"PEER": runner.kind}, overwrite=True)
    write_json(_info_path(output), runner.info)


def _info_path(output: Path) -> Path:
    return output.with_name(output.name.split(".")[0] + "-info.json")


def run_peer(size: int, frames: int, objects: int, seed: int, simulate_up_to: int, out_dir: Path,
             peer: str = DEFAULT_PEER) -> dict:
    """Restore the burst of one size with ``peer`` in a fresh process (this module with ``--peer-restore``): its
    wall and CPU time, its own peak RSS and its NMSE_var, as :func:`run_size` for svrt; written to
    ``peer-<name>-<size>.json``."""
    from svrt.benchmarks.peers import parse_method
    from svrt.fileio import read_array, read_burst
    from svrt.records import write_json

    runner = parse_method(peer)       # a bad spec fails here, in one sentence, before the child starts
    name = runner.kind
    burst_path = burst_for(size, frames, objects, seed, simulate_up_to, out_dir)
    output = out_dir / f"restored-{name}-{size}.fits"
    cmd = [sys.executable, "-m", "svrt.benchmarks.cost_curve", "--peer-restore", str(burst_path),
           "--peer-output", str(output), "--peer", peer, "--out-dir", str(out_dir)]
    run = _run_child(cmd, out_dir / f"{name}-{size}.log")
    run.pop("output")
    restored, _ = read_array(output)
    record = {"size": size, "frames": frames, "objects": objects, "seed": seed, "peer": name, "spec": peer,
              "settings": runner.describe()["options"], "info": json.loads(_info_path(output).read_text()),
              "burst": burst_path.name, "mirrored": size > simulate_up_to, "command": " ".join(cmd[1:]), **run,
              "nmse_var": _nmse(restored, read_burst(burst_path)), "threads": os.environ.get("OMP_NUM_THREADS")}
    write_json(out_dir / f"peer-{name}-{size}.json", record)
    return record


def collect(out_dir: Path) -> dict:
    """The curve from every ``cost-<size>.json`` in ``out_dir``: per size the time per pixel and (object, frame)
    relative to :data:`REFERENCE_SIZE` (or the smallest size when it is absent)."""
    rows = sorted((json.loads(p.read_text()) for p in out_dir.glob("cost-*.json")), key=lambda r: r["size"])
    peers = sorted((json.loads(p.read_text()) for p in out_dir.glob("peer-*.json")),
                   key=lambda r: (r["peer"], r["size"]))
    if not rows:
        return {"rows": [], "peers": peers}
    ref = next((r for r in rows if r["size"] == REFERENCE_SIZE), rows[0])

    def per_sample(r):   # CPU time: other work on a shared machine stretches the wall time, not the CPU time
        return r["cpu_s"] / (r["size"] ** 2 * r["frames"] * r["objects"])

    for r in rows:
        burst_path = out_dir / r["burst"]
        if "frame_average_nmse_var" not in r and burst_path.exists():    # records made before the column
            from svrt.fileio import read_burst

            burst = read_burst(burst_path)
            r["frame_average_nmse_var"] = _nmse(burst.frames.mean(axis=1), burst)
    for r in rows + peers:
        r["us_per_pixel_sample"] = round(1e6 * per_sample(r), 2)
    for r in rows:
        r["relative_to_ref"] = round(per_sample(r) / per_sample(ref), 3)
    svrt_at = {(r["size"], r["frames"], r["objects"]): r for r in rows}
    for p in peers:
        # svrt / peer: below 1, svrt is cheaper (or, for NMSE_var, better); only for the same burst
        s = svrt_at.get((p["size"], p["frames"], p["objects"]))
        p["svrt_over_peer"] = None if s is None else {
            "cpu": round(s["cpu_s"] / p["cpu_s"], 3), "wall": round(s["wall_s"] / p["wall_s"], 3),
            "peak_rss": round(s["peak_rss_mb"] / p["peak_rss_mb"], 3),
            "nmse_var": [round(a / b, 3) for a, b in zip(s["nmse_var"], p["nmse_var"])]}
    return {"reference_size": ref["size"], "rows": rows, "peers": peers}


def markdown(curve: dict) -> str:
    """The curve as the table of docs/COST.md."""
    ref = curve["reference_size"]
    lines = [f"| field | burst | CPU time [s] | wall [s] | peak RSS [MiB] | us per pixel and frame | vs {ref}^2 | "
             "patch stage, wall [s] | objects + refinement, wall [s] | NMSE_var (objects) | frame average | "
             "plan line's estimate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in curve["rows"]:
        est = r["plan"].split("estimated peak memory ")[-1].split(" (")[0] if r["plan"] else ""
        when = r["plan"].split("about ")[-1].split(" on ")[0] if "about " in r["plan"] else ""
        average = " / ".join(f"{v:.4f}" for v in r.get("frame_average_nmse_var", [])) or "-"
        kind = "mirrored" if r["mirrored"] else "simulated"
        lines.append(f"| {r['size']}^2 x {r['frames']} x {r['objects']} | {kind} | {r['cpu_s']:.0f} "
                     f"| {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['us_per_pixel_sample']:.1f} "
                     f"| {r['relative_to_ref']:.2f} | {r['t_patch_s']:.0f} | {r['t_iterations_s']:.0f} "
                     f"| {' / '.join(f'{v:.4f}' for v in r['nmse_var'])} "
                     f"| {average} | {est}, {when} |")
    if curve.get("peers"):
        lines += ["", "| field | peer | CPU time [s] | wall [s] | peak RSS [MiB] | us per pixel and frame "
                  "| NMSE_var (objects) | svrt / peer: CPU | wall | peak RSS | NMSE_var |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in curve["peers"]:
            q = p.get("svrt_over_peer") or {}
            ratio = (f"{q['cpu']:.2f} | {q['wall']:.2f} | {q['peak_rss']:.2f} | "
                     f"{' / '.join(f'{v:.2f}' for v in q['nmse_var'])}") if q else "- | - | - | -"
            lines.append(f"| {p['size']}^2 x {p['frames']} x {p['objects']} | {p['peer']} | {p['cpu_s']:.0f} "
                         f"| {p['wall_s']:.0f} | {p['peak_rss_mb']:.0f} | {p['us_per_pixel_sample']:.1f} "
                         f"| {' / '.join(f'{v:.4f}' for v in p['nmse_var'])} | {ratio} |")
    return "\n".join(lines)


def plot(curve: dict, path: Path) -> None:
    from svrt.pictures import save_png, subplots

    rows = curve["rows"]
    n = np.array([r["size"] ** 2 for r in rows], dtype=float)
    fig, axes = subplots(1, 3, figsize=(13, 4))
    axes[0].loglog(n, [r["cpu_s"] for r in rows], "o-", label="svrt deconvolve")
    axes[0].loglog(n, rows[0]["cpu_s"] * n / n[0], "k:", label="linear in pixels")
    axes[0].set_xlabel("pixels per frame")
    axes[0].set_ylabel("CPU time [s]")
    axes[1].semilogx(n, [r["relative_to_ref"] for r in rows], "o-")
    axes[1].axhline(1.2, color="r", ls=":", label="1.2x (issue 23)")
    axes[1].set_xlabel("pixels per frame")
    axes[1].set_ylabel(f"time per pixel / that at {curve['reference_size']}^2")
    axes[1].legend(fontsize=8)
    axes[2].loglog(n, [r["peak_rss_mb"] / 1024 for r in rows], "o-", label="svrt deconvolve")
    for name in sorted({p["peer"] for p in curve.get("peers", [])}):
        mine = [p for p in curve["peers"] if p["peer"] == name]
        pn = np.array([p["size"] ** 2 for p in mine], dtype=float)
        axes[0].loglog(pn, [p["cpu_s"] for p in mine], "s--", label=name)
        axes[2].loglog(pn, [p["peak_rss_mb"] / 1024 for p in mine], "s--", label=name)
    axes[0].legend(fontsize=8)
    axes[2].axhline(16, color="r", ls=":", label="16 GiB")
    axes[2].set_xlabel("pixels per frame")
    axes[2].set_ylabel("peak RSS [GiB]")
    axes[2].legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"svrt deconvolve, {r0['objects']} objects x {r0['frames']} frames, one run per size", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m svrt.benchmarks.cost_curve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128,256,512,1024", help="field sides, comma-separated")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--simulate-up-to", type=int, default=1024,
                    help="simulate bursts up to this side; larger ones mirror-tile that burst")
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--report-only", action="store_true", help="only remake the curve from the cost-*.json there")
    ap.add_argument("--peer-sizes", default="", help="field sides also restored by the peer, comma-separated "
                    "(after svrt's sizes; e.g. 256,512)")
    ap.add_argument("--peer", default=DEFAULT_PEER, help="the peer harness's method (benchmarks/peers.py), NAME or "
                    "NAME=key:value,...")
    ap.add_argument("--peer-restore", type=Path, help=argparse.SUPPRESS)   # the peer's child process: this burst
    ap.add_argument("--peer-output", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer_restore is not None:
        if args.peer_output is None:
            ap.error("--peer-restore needs --peer-output, the file of the restored objects")
        peer_restore(args.peer_restore, args.peer_output, args.peer)
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        peer_sizes = [int(s) for s in args.peer_sizes.split(",") if s.strip()]
        for size in sizes:
            rec = run_size(size, args.frames, args.objects, args.seed, args.simulate_up_to, args.out_dir)
            print(f"{size}^2: {rec['cpu_s']:.1f} s CPU ({rec['wall_s']:.1f} s wall), peak RSS "
                  f"{rec['peak_rss_mb']:.0f} MiB, NMSE_var {rec['nmse_var']}", flush=True)
        for size in peer_sizes:
            rec = run_peer(size, args.frames, args.objects, args.seed, args.simulate_up_to, args.out_dir, args.peer)
            print(f"{size}^2 {rec['peer']}: {rec['cpu_s']:.1f} s CPU ({rec['wall_s']:.1f} s wall), peak RSS "
                  f"{rec['peak_rss_mb']:.0f} MiB, NMSE_var {rec['nmse_var']}", flush=True)
    from svrt.records import write_json

    curve = collect(args.out_dir)
    if curve["rows"]:
        write_json(args.out_dir / "cost_curve.json", curve)
        plot(curve, args.out_dir / "cost_curve.png")
        print(markdown(curve))
        for r in curve["rows"]:
            print(f"{r['size']:5d}^2  {r['cpu_s']:8.1f} s CPU  {r['peak_rss_mb']:8.0f} MiB  "
                  f"{r['us_per_pixel_sample']:6.1f} us/pixel-sample  x{r['relative_to_ref']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
