"""The solver's speed with each forward model, side by side in one run (issue 20, item 5).

``python -m svrt.benchmarks.engine_speed --burst b128.fits --burst b256.fits --onnx crisp8542.onnx --out-dir DIR``
restores each burst with the default method (momfbd, default settings) through

- ``exact``: exact optics, the ``psf-interpolation`` back end (the default of ``svrt deconvolve``);
- ``torch``: an emulator in PyTorch (``--model``, default the U-Net ``svce-c16``; ``psfb-crisp8542`` the
  PSF-basis emulator, whose export is then ``--onnx``);
- ``onnxruntime``: the exported graphs in ONNX Runtime as the back end loads them now (``--engine X.onnx``);
- ``onnxruntime-ort-defaults`` (``--with-ort-defaults``): the same graphs in sessions with ONNX Runtime's own
  CPU defaults (one thread per core, spinning), as the back end loaded them before; by default timed on the
  steps only (``--steps-only``: a whole restoration took over 10 minutes at 128^2 on the shared machine),

and times, per engine, the whole restoration (and its stages from the restoration header: ``T_PATCH``, the
per-patch wavefront stage, and ``T_TOTAL``) and the two steps the solver repeats, through its own forward
model (:class:`svrt.runtime.forward_model.ForwardModel`, the solver's margin): a
*wavefront step* (the model frames and the gradient of the data term with respect to the coarse modes) and an
*object step* (the same with respect to the object), in engine calls of as many frames as the solver's plan
makes on the CPU (``CPU_MAX_BATCH``). Each step is the shortest of ``--repeats`` rounds after a warm-up (the
engines take turns in each round, so a passing load hits all), every engine at the modes of the first
engine's restoration; torch runs on ``--threads`` threads (default 1), the same budget as ONNX Runtime's
sessions. The engine calls of each restoration are counted and timed (:class:`CallCounter`). Writes
``engine_speed.json``; ratios are to the torch emulator's time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def ort_default_engine(onnx_path):
    """The exported graphs in ONNX Runtime sessions with its own CPU defaults (the back end's loading
    before issue 20: no thread count, spinning pools), for the comparison only."""
    import onnxruntime as ort

    from svrt.runtime.backends.gradient_companion import find_companion
    from svrt.runtime.backends.onnxruntime_backend import OnnxRuntimeEngine

    def session(p):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(p), sess_options=options, providers=["CPUExecutionProvider"])

    fwd = session(onnx_path)
    vjp_path = find_companion(onnx_path, None)
    meta = dict(fwd.get_modelmeta().custom_metadata_map)
    return OnnxRuntimeEngine(fwd, meta, onnx_path, torch.device("cpu"), session(vjp_path), vjp_path)


def load(name: str, onnx_path, model: str = "svce-c16"):
    from svrt.runtime.solver import load_solver_engine

    if name == "exact":
        return load_solver_engine(None, backend="psf-interpolation")
    if name == "torch":
        return load_solver_engine(model)
    if name == "onnxruntime":
        return load_solver_engine(onnx_path)
    return ort_default_engine(onnx_path)


def _best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class CallCounter:
    """Counts and times the engine calls the solver makes (``forward``, ``vjp``, ``apply`` and, for exact
    optics, ``apply_coarse``) by wrapping them on the instance; :meth:`summary` gives calls and seconds.
    For the torch emulator ``apply`` runs the forward pass only (its backward runs inside autograd)."""

    METHODS = ("forward", "vjp", "apply", "apply_coarse")

    def __init__(self, engine):
        self.calls = {m: 0 for m in self.METHODS}
        self.seconds = {m: 0.0 for m in self.METHODS}
        for name in self.METHODS:
            if hasattr(engine, name):
                setattr(engine, name, self._wrap(name, getattr(engine, name)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls[name] += 1
                self.seconds[name] += time.perf_counter() - t0
        return timed

    def summary(self) -> dict:
        return {f"{m}_{what}": round(v, 2) if what == "s" else v
                for m in self.METHODS if self.calls[m]
                for what, v in (("calls", self.calls[m]), ("s", self.seconds[m]))}


def step_functions(engine, burst, restoration_modes, margin: int) -> dict:
    """The wavefront step and the object step over every frame of object 0 (see the module doc)."""
    from svrt.runtime.forward_model import ForwardModel
    from svrt.runtime.plan import batches
    from svrt.runtime.solver_config import CPU_MAX_BATCH

    fm = ForwardModel(engine, burst.instruments[0], 1.0, kernels="torch")
    frames = torch.as_tensor(burst.frames[0])                         # [L, Y, X]
    size = tuple(frames.shape[-2:])
    obj = F.pad(frames.mean(0)[None, None], (margin,) * 4, mode="reflect")[0, 0]
    calls = [idx for _, idx in batches(1, frames.shape[0], CPU_MAX_BATCH)]

    def wavefront():
        a = restoration_modes.clone().requires_grad_(True)
        for idx in calls:            # gradients accumulated call by call, as the solver does
            loss = 0.5 * (fm.predict(obj, a, idx, size) - frames[idx]).pow(2).sum()
            loss.backward()

    def object_step():
        o = obj.clone().requires_grad_(True)
        for idx in calls:
            loss = 0.5 * (fm.predict(o, restoration_modes, idx, size) - frames[idx]).pow(2).sum()
            loss.backward()

    return {"wavefront_step_s": wavefront, "object_step_s": object_step}


def step_times(engines: dict, burst, modes, margin: int, repeats: int) -> dict:
    """Per engine, the shortest time of each step over ``repeats`` rounds after a warm-up; the engines take
    turns within each round, so that a load that comes and goes on a shared machine hits all of them."""
    steps = {name: step_functions(e, burst, modes, margin) for name, e in engines.items()}
    best = {name: {k: float("inf") for k in fns} for name, fns in steps.items()}
    for fns in steps.values():
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fns in steps.items():
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[name][key] = min(best[name][key], time.perf_counter() - t0)
    return {name: {k: round(v, 3) for k, v in b.items()} for name, b in best.items()}


def run(bursts, onnx_path, out_dir, names, repeats: int = 2, threads: int = 1, steps_only=(),
        model: str = "svce-c16") -> dict:
    from svrt.benchmarks.validate import machine_info
    from svrt.fileio import read_burst
    from svrt.records import write_json
    from svrt.runtime.solver import SVMOMFBD, SolverConfig

    torch.set_num_threads(threads)
    report = {"command": shlex.join([Path(sys.executable).name, "-m", "svrt.benchmarks.engine_speed", *sys.argv[1:]]),
              "machine": machine_info(), "threads": threads, "engines": list(names), "runs": []}
    config = SolverConfig()
    for path in bursts:
        burst = read_burst(path)
        size = burst.frames.shape[-1]
        rows = {}
        modes = None          # every engine's steps run at the first restoration's modes (same inputs)
        entry = {"burst": str(path), "size": int(size), "frames": int(burst.frames.shape[1]), "engines": rows}
        report["runs"].append(entry)
        for name in names:
            if name in steps_only:
                continue
            engine = load(name, onnx_path, model)
            counter = CallCounter(engine)
            t0 = time.perf_counter()
            result = SVMOMFBD(engine, config).solve(burst)
            h = result.header
            rows[name] = {"restoration_s": round(time.perf_counter() - t0, 2), "T_PATCH": h.get("T_PATCH"),
                          "T_TOTAL": h.get("T_TOTAL"), "iterations": int(len(result.loss["iteration"])),
                          "ort_threads": (engine.identity.extra or {}).get("threads"), **counter.summary()}
            modes = torch.as_tensor(result.modes) if modes is None else modes
            print(f"{size}^2 {name}: {rows[name]}", flush=True)
            engine.close()
            write_json(Path(out_dir) / "engine_speed.json", report)
        if modes is None:
            # no restoration here (every engine --steps-only): the burst's true modes on the solver's grid
            from svrt.mode_grid import grid_shape

            if burst.modes is None:
                raise SystemExit(f"{path}: no engine restores it and it has no MODES to drive the steps")
            modes = F.adaptive_avg_pool2d(torch.as_tensor(burst.modes), grid_shape(burst.frames.shape[-2:],
                                                                                   config.grid))
            entry["step_modes"] = "the burst's MODES averaged onto the solver's grid"
        engines = {name: load(name, onnx_path, model) for name in names}
        for name, times in step_times(engines, burst, modes, config.margin, repeats).items():
            rows.setdefault(name, {"ort_threads": (engines[name].identity.extra or {}).get("threads")}).update(times)
            print(f"{size}^2 {name} steps: {times}", flush=True)
        ref = rows.get("torch")
        if ref:
            for row in rows.values():
                for key in ("restoration_s", "wavefront_step_s", "object_step_s"):
                    if key in row and key in ref:
                        row[f"{key}_over_torch"] = round(row[key] / ref[key], 3)
        write_json(Path(out_dir) / "engine_speed.json", report)
    return report


def profile_graph(path, batch: int = 2, size: int = 160, runs: int = 3, threads: int = 1) -> dict:
    """Share of ONNX Runtime's kernel time per operator type (its profiler, ``enable_profiling``) of one
    graph (forward or VJP) on random inputs ``[batch, ., size, size]``: ``{op: [seconds per run, %]}``."""
    import collections
    import json
    import tempfile

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    shapes = {i.name: i.shape for i in session.get_inputs()}
    feeds = {name: rng.standard_normal((batch, shape[1] if isinstance(shape[1], int) else 1, size, size),
                                       dtype=np.float32) for name, shape in shapes.items()}
    feeds["obj"] = 1.0 + 0.1 * np.abs(feeds["obj"])
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"].get("op_name")] += e["dur"] * 1e-6 / runs
    total = sum(per_op.values())
    return {op: [round(t, 4), round(100 * t / total, 1)] for op, t in per_op.most_common()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m svrt.benchmarks.engine_speed", description=__doc__.split("\n")[0])
    p.add_argument("--burst", action="append", help="burst to restore (repeat: one per size)")
    p.add_argument("--onnx", required=True, help="forward graph from 'svrt export' (its .vjp.onnx beside it)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--engines", default="exact,torch,onnxruntime")
    p.add_argument("--model", default="svce-c16", help="the torch engine's model (bundled name or .safetensors)")
    p.add_argument("--with-ort-defaults", action="store_true",
                   help="also time ONNX Runtime with its own CPU defaults (the loading before issue 20)")
    p.add_argument("--steps-only", default="onnxruntime-ort-defaults",
                   help="engines timed on the steps only, not a whole restoration (comma-separated)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true",
                   help="only ONNX Runtime's per-operator profile of the forward and VJP graphs (B 2, 160^2)")
    args = p.parse_args(argv)
    if args.profile:
        from svrt.records import write_json
        from svrt.runtime.backends.gradient_companion import find_companion

        prof = {"command": shlex.join([Path(sys.executable).name, "-m", "svrt.benchmarks.engine_speed",
                                       *sys.argv[1:]]),
                "forward": profile_graph(args.onnx), "vjp": profile_graph(find_companion(args.onnx, None))}
        write_json(Path(args.out_dir) / "ort_profile.json", prof)
        for graph in ("forward", "vjp"):
            print(graph, dict(list(prof[graph].items())[:6]))
        return 0
    if not args.burst:
        p.error("--burst is required (except with --profile)")
    names = args.engines.split(",") + (["onnxruntime-ort-defaults"] if args.with_ort_defaults else [])
    run(args.burst, args.onnx, args.out_dir, names, args.repeats, args.threads, tuple(args.steps_only.split(",")),
        model=args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
