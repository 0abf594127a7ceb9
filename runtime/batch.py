"""Batches of bursts: many burst files in, one restoration file per burst out, in this process or on
a Dask cluster.

What a batch guarantees:

- **Idempotent.** A burst whose output already exists is skipped (outputs are written atomically,
  see :func:`svrt.fileio.atomic_write`, so an existing output is a finished one): a batch that was
  killed resumes where it stopped when run again with the same arguments.
- **One failure stops nothing.** A bad file, a solver error or a worker that dies marks that burst
  ``failed`` (with one sentence, and the traceback in its log) and the others go on.
- **One log file per burst** (``<out-dir>/logs/<name>.log``, stdlib :mod:`logging`): the settings,
  the burst's shape, the engine, every solver iteration, the outcome or the traceback.
- **One status line per burst** as it finishes (``on_outcome``), and a summary at the end
  (:func:`summary_table`; ``<out-dir>/batch-summary.tsv`` holds one row per burst).

Where it runs (:func:`run_batch`):

- ``workers=0``: in this process, one burst after another.
- ``workers=N``: a :class:`distributed.LocalCluster` of N worker processes with one thread each
  (torch set to ``threads`` intra-op threads per worker, 1 by default: N workers on N cores).
- ``scheduler="tcp://host:8786"`` (or the path of a scheduler file): an existing Dask cluster
  (``dask scheduler`` / ``dask worker``, or SLURM/PBS through dask-jobqueue, see docs/PIPELINE.md).
  The burst, output and engine paths must be the same on every worker (a shared file system);
  relative paths are made absolute here.
- ``device="cuda"`` with ``workers=N``: a ``dask_cuda.LocalCUDACluster`` (one GPU per worker) when
  dask-cuda is installed, otherwise a LocalCluster whose workers share the GPU.

Each worker process loads the engine once (:func:`cached_solver`, keyed by the engine files, back
end, device and precision) and keeps its solver, so the cost of loading is paid once per worker, not
once per burst. On a CPU worker without ``memory_mb`` the solver plans within half of the worker's
Dask memory limit (a LocalCluster gives each of N workers 1/N of the RAM), not half of the host's RAM.
Dask is imported only when a cluster is used (``pip install 'svrt[cluster]'``).

Python API::

    from svrt.runtime.batch import EngineSpec, find_bursts, plan_jobs, run_batch, summary_table
    from svrt.settings import load_settings   # [solver] of a settings file (svrt config > run.toml)

    jobs = plan_jobs(find_bursts(["night/*.fits"]), "restored/")
    outcomes = run_batch(jobs, EngineSpec(), load_settings("run.toml"), workers=2)  # the default forward model
    print(summary_table(outcomes))
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from svrt.errors import SvrtError, one_sentence
from svrt.pictures import png_beside
from svrt.runtime.batch_progress import IterationLog, burst_started
from svrt.runtime.restore import burst_stem, restore_file
from svrt.runtime.solver_config import SolverConfig

__all__ = ["EngineSpec", "Job", "Outcome", "cached_solver", "find_bursts", "plan_jobs", "read_manifest",
           "restore_burst", "run_batch", "summary_table", "write_summary"]

_GLOB_CHARS = set("*?[")


# ------------------------------------------------------------------------------------------ jobs

@dataclass(frozen=True)
class EngineSpec:
    """Which engine every worker loads: emulator files (one per instrument) or a bundled model name (neither:
    the default forward model, :func:`svrt.runtime.forward_choice.default_forward_model`), the back end (None:
    from the suffix), the device ('cpu', 'cuda', 'cuda:N') and the precision
    ('auto': FP16 on CUDA, FP32 on CPU). Hashable: the key of the per-worker engine cache."""

    paths: tuple[str, ...] = ()
    model: str | None = None
    backend: str | None = None
    device: str = "cpu"
    precision: str = "auto"


@dataclass(frozen=True)
class Job:
    """One burst of a batch: its file, the restoration file it becomes, its log file and its name."""

    input: str
    output: str
    log: str
    name: str


@dataclass
class Outcome:
    """What became of one burst. ``status``: 'done', 'skipped' (its output existed) or 'failed'.
    ``seconds``: wall time of the burst in its worker (read, solve, write); ``solve_seconds``: the
    solver's own (T_TOTAL); ``message``: the output written, or one sentence saying why it failed;
    ``worker``: the Dask worker's address (or host:pid); ``extra`` (restored bursts): engine_loads (engines
    this worker process has loaded so far: 1), pid, t_start / t_end (epoch seconds), cpu_s (the
    process's CPU seconds for this burst) and loss_first / loss_last (the solve's first and last total loss)."""

    name: str
    input: str
    output: str
    status: str
    seconds: float = 0.0
    solve_seconds: float = float("nan")
    iterations: int = 0
    message: str = ""
    worker: str = ""
    log: str = ""
    extra: dict = field(default_factory=dict)


def read_manifest(path: str | os.PathLike) -> list[Path]:
    """Burst paths of a manifest: a text file with one path per line; blank lines and lines starting
    with '#' are skipped; relative paths are relative to the manifest's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SvrtError(f"manifest {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SvrtError(f"cannot read manifest {path} as text ({exc}); expected one burst path per line.") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        q = Path(line).expanduser()
        out.append(q if q.is_absolute() else p.parent / q)
    if not out:
        raise SvrtError(f"manifest {path} lists no burst; expected one burst path per line.")
    return out


def find_bursts(patterns: Iterable[str | os.PathLike] = (), manifest: str | os.PathLike | None = None,
                exclude: str | os.PathLike | None = None) -> list[Path]:
    """The burst files of a batch, in order, without repeats: each pattern is a path or a glob
    (``night/*.fits``, ``**`` recursive; sorted), then the paths of ``manifest`` (see
    :func:`read_manifest`). A glob that matches nothing is an error; a listed path that does not
    exist is kept (that burst fails, the others run). ``exclude``: a folder (the batch's output folder)
    whose files a glob never matches, so ``'night/**/*.fits' -o night/restored`` does not take the
    restorations of an earlier run for bursts."""
    skip = None if exclude is None else Path(os.path.abspath(os.path.expanduser(os.fspath(exclude))))
    found: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)
                             if os.path.isfile(m) and not (skip is not None and _inside(m, skip)))
            if not matches:
                raise SvrtError(f"no burst file matches {text!r}; check the pattern (quote it so the shell does not "
                                "expand it).")
            found.extend(matches)
        else:
            found.append(Path(text).expanduser())
    if manifest is not None:
        found.extend(read_manifest(manifest))
    if not found:
        raise SvrtError("no burst given; name burst files, a quoted glob such as 'night/*.fits', or --manifest FILE.")
    seen, out = set(), []
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(Path(key))
    return out


def _inside(path: str | os.PathLike, folder: Path) -> bool:
    return folder in Path(os.path.abspath(path)).parents


def plan_jobs(bursts: Sequence[str | os.PathLike], out_dir: str | os.PathLike, fmt: str = "fits") -> list[Job]:
    """One :class:`Job` per burst: ``<out_dir>/<burst name>.fits`` (or ``.h5`` with ``fmt='h5'``) and
    ``<out_dir>/logs/<burst name>.log``. Two bursts of the same name (from different folders) would
    write one output: that is an error naming both."""
    if fmt not in ("fits", "h5"):
        raise SvrtError(f"output format must be fits or h5; got {fmt!r}.")
    out = Path(os.path.abspath(out_dir))
    jobs, by_output = [], {}
    for b in bursts:
        src = Path(os.path.abspath(b))
        name = burst_stem(src)
        target = out / f"{name}.{fmt}"
        if target in by_output:
            raise SvrtError(f"bursts {by_output[target]} and {src} would both be written to {target}; "
                            "give them different names or restore them into different --out-dir.")
        if target == src:
            raise SvrtError(f"the output of {src} would overwrite it; choose another --out-dir.")
        by_output[target] = src
        jobs.append(Job(str(src), str(target), str(out / "logs" / f"{name}.log"), name))
    return jobs


# ------------------------------------------------------------------------------------------ one worker

_CACHE_LOCK = threading.Lock()
_ENGINES: dict[EngineSpec, Any] = {}
_SOLVERS: dict[tuple, Any] = {}
_THREADS: list[int] = []
_LOADS = [0]  # engines loaded by this process (a test checks: once per worker)


def cached_solver(spec: EngineSpec, config: dict):
    """The :class:`~svrt.runtime.solver.SVMOMFBD` of this process for ``spec`` and ``config`` (a
    :meth:`SolverConfig.to_dict`): the engine is loaded on the first call and kept, so a worker
    loads it once whatever the number of bursts it restores."""
    from svrt.runtime.solver import SVMOMFBD, load_solver_engine  # torch: only where a solver is made

    key = (spec, json.dumps(config, sort_keys=True, default=str))
    with _CACHE_LOCK:
        solver = _SOLVERS.get(key)
        if solver is not None:
            return solver
        engines = _ENGINES.get(spec)
        if engines is None:
            if spec.paths and spec.model:
                raise SvrtError("give either engine files or a model name, not both.")
            names = list(spec.paths) or [spec.model]
            for p in spec.paths:
                if not Path(p).exists():
                    raise SvrtError(f"engine file {p} does not exist on worker {socket.gethostname()}.")
            engines = [
                load_solver_engine(n, backend=spec.backend, device=spec.device, precision=spec.precision,
                                   method=config.get("method")) for n in names
            ]
            _ENGINES[spec] = engines
            _LOADS[0] += 1
        solver = SVMOMFBD(engines if len(engines) > 1 else engines[0], SolverConfig(**config))
        _SOLVERS[key] = solver
        return solver


def _set_threads(threads: int | None) -> None:
    if threads and _THREADS != [threads]:
        import torch

        torch.set_num_threads(int(threads))
        _THREADS[:] = [threads]


def _worker_memory_limit() -> int | None:
    """The Dask memory limit of this worker in bytes (None outside a worker or without a limit)."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
        return int(limit) if limit else None
    except Exception:
        return None


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:  # not in a Dask worker (or Dask not installed)
        return f"{socket.gethostname()}:{os.getpid()}"


def _burst_logger(job: Job) -> tuple[logging.Logger, logging.Handler]:
    """A logger of its own (not registered: 20 000 bursts leave no 20 000 loggers behind) writing to
    the burst's log file, appending (a resumed batch keeps the earlier attempts)."""
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.Logger(f"svrt.batch.{job.name}", level=logging.INFO)
    handler = logging.FileHandler(job.log, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger, handler


def restore_burst(job: Job, spec: EngineSpec, config: dict, options: dict | None = None) -> Outcome:
    """Restore one burst (what a worker runs): read ``job.input``, solve with the process's cached
    solver, write ``job.output`` as ``svrt deconvolve`` does, log to ``job.log``. Never raises for a
    bad burst: the :class:`Outcome` says 'failed' with one sentence, and the log has the traceback.

    ``options``: instrument (labels for files that lack INSTRk), allow_nonfinite, drop_dead_frames,
    overwrite, png (write the quick look next to the output), threads (torch intra-op threads)."""
    opts = dict(options or {})
    t0, epoch, cpu0 = time.perf_counter(), time.time(), time.process_time()
    worker = _worker_name()
    base = dict(name=job.name, input=job.input, output=job.output, worker=worker, log=job.log)
    if os.path.exists(job.output) and not opts.get("overwrite"):
        return Outcome(status="skipped", message=f"{job.output} exists", **base)
    logger, handler = _burst_logger(job)
    burst_started(job.name)  # the batch's start line (svrt.runtime.batch_progress)
    try:
        logger.info("burst %s -> %s on %s (pid %d)", job.input, job.output, worker, os.getpid())
        logger.info("engine %s", json.dumps(asdict(spec)))
        logger.info("settings %s", json.dumps(config, default=str))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _restore(job, spec, config, opts, logger)
        for w in caught:
            logger.warning("%s", w.message)
        loss = result.loss["total"]
        seconds = time.perf_counter() - t0
        msg = f"wrote {job.output}"
        logger.info("%s: %d iterations, loss %.4e -> %.4e, solve %.2f s, total %.2f s", msg, len(loss),
                    float(loss[0]) if len(loss) else float("nan"), float(loss[-1]) if len(loss) else float("nan"),
                    float(result.header.get("T_TOTAL", float("nan"))), seconds)
        extra = {"engine_loads": _LOADS[0], "pid": os.getpid(), "t_start": epoch, "t_end": time.time(),
                 "cpu_s": time.process_time() - cpu0,
                 "loss_first": float(loss[0]) if len(loss) else float("nan"),  # the end line's fit summary
                 "loss_last": float(loss[-1]) if len(loss) else float("nan")}
        return Outcome(status="done", seconds=seconds, solve_seconds=float(result.header.get("T_TOTAL", float("nan"))),
                       iterations=len(loss), message=msg, extra=extra, **base)
    except KeyboardInterrupt:
        logger.error("interrupted")
        raise
    except Exception as exc:
        logger.error("failed: %s\n%s", one_sentence(exc), traceback.format_exc())
        return Outcome(status="failed", seconds=time.perf_counter() - t0, message=one_sentence(exc), **base)
    finally:
        handler.close()
        logger.removeHandler(handler)


def _restore(job: Job, spec: EngineSpec, config: dict, opts: dict, logger: logging.Logger):
    """Read, solve and write ``job`` through :func:`svrt.runtime.restore.restore_file` (what ``svrt deconvolve``
    runs), with this worker's memory bound and cached solver; every iteration goes to the burst's log."""
    _set_threads(opts.get("threads"))
    if not os.path.exists(job.input):
        raise SvrtError(f"burst file {job.input} does not exist.")
    limit = _worker_memory_limit()
    if config.get("memory_mb") is None and limit and not str(spec.device).startswith("cuda"):
        # N workers on one host: each solver plans within half its worker's share, not half the host's RAM
        config = {**config, "memory_mb": round(0.5 * limit / 2 ** 20, 1)}
        logger.info("memory bound %.0f MiB (half of this Dask worker's memory limit)", config["memory_mb"])

    def make_solver(burst):
        from svrt.runtime.plan import plan_summary

        logger.info("frames [K, L, Y, X] = [%d, %d, %d, %d], instruments %s", burst.n_objects, burst.n_frames,
                    *burst.shape, ", ".join(burst.instruments))
        solver = cached_solver(spec, config)
        logger.info("engine %s", ", ".join(f"{e.identity.model} ({e.identity.backend}, {e.identity.device})"
                                           for e in solver.engines))
        # the line svrt deconvolve prints: memory and time before the work; a burst that cannot fit fails here
        logger.info("%s", plan_summary(solver, burst.frames.shape, job.input))
        return solver

    done = restore_file(job.input, job.output, make_solver, config=SolverConfig(**config),
                        png=str(png_beside(job.output)) if opts.get("png") else None,
                        instrument=opts.get("instrument") or None, allow_nonfinite=bool(opts.get("allow_nonfinite")),
                        drop_dead_frames=bool(opts.get("drop_dead_frames")), overwrite=bool(opts.get("overwrite")),
                        callback=IterationLog(logger), quiet=True)
    return done.result


# ------------------------------------------------------------------------------------------ the batch

def _config_dict(config) -> dict:
    if config is None:
        config = SolverConfig()
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d["progress"] = False  # many workers' bars would be noise: the log has every iteration
    SolverConfig(**d)      # a wrong setting fails here, before any worker starts
    return d


def run_batch(
    jobs: Sequence[Job],
    spec: EngineSpec,
    config=None,
    *,
    workers: int = 0,
    scheduler: str | None = None,
    threads: int | None = None,
    options: dict | None = None,
    on_outcome: Callable[[Outcome, int, int], Any] | None = None,
    cluster_info: dict | None = None,
    on_client: Callable[[Any], Any] | None = None,
) -> list[Outcome]:
    """Restore ``jobs`` (see :func:`plan_jobs`) and return one :class:`Outcome` per job, in the order
    they finished. Finished outputs are skipped before anything starts. ``on_outcome(outcome, n_done,
    n_total)`` is called as each burst finishes (status lines). ``cluster_info``, when given, receives
    ``start_s`` (seconds to start the cluster and connect), ``workers`` and ``kind``; ``on_client(client)``
    is called with the Dask client once connected (e.g. :meth:`~svrt.runtime.batch_progress.BatchWatch.attach`,
    the start lines of the workers' bursts and the dashboard address). See the module doc
    for ``workers`` and ``scheduler``. ``threads``: torch intra-op threads per worker (default 1 on Dask
    workers; in this process torch's own default); ``options``: see :func:`restore_burst`."""
    cfg = _config_dict(config)
    opts = dict(options or {})
    if threads:
        opts["threads"] = threads
    todo, outcomes = [], []
    total = len(jobs)

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome, len(outcomes), total)

    for job in jobs:
        if os.path.exists(job.output) and not opts.get("overwrite"):
            report(Outcome(job.name, job.input, job.output, "skipped", message=f"{job.output} exists", log=job.log))
        else:
            todo.append(job)
    if not todo:
        return outcomes
    if workers < 0:
        raise SvrtError(f"workers must be 0 (this process) or a positive number of Dask workers; got {workers}.")
    if workers == 0 and scheduler is None:
        for job in todo:
            report(restore_burst(job, spec, cfg, opts))
        return outcomes
    opts["threads"] = threads or 1
    with _client(workers, scheduler, threads or 1, spec.device, cluster_info) as client:
        from distributed import as_completed

        if on_client is not None:
            on_client(client)
        futures = {}
        for i, job in enumerate(todo):
            fut = client.submit(restore_burst, job, spec, cfg, opts, key=f"svrt-batch-{i}-{job.name}", pure=False)
            futures[fut] = job
        try:
            for fut in as_completed(list(futures)):
                job = futures.pop(fut)
                try:
                    outcome = fut.result()
                except Exception as exc:  # the worker died (memory, segfault, killed): this burst only
                    outcome = Outcome(job.name, job.input, job.output, "failed",
                                      message=f"its worker failed ({one_sentence(exc)})", log=job.log)
                report(outcome)
        finally:
            for fut in futures:
                fut.cancel()
    return outcomes


class _client:
    """Context manager: a Dask client on a new LocalCluster (or LocalCUDACluster), or on ``scheduler``."""

    def __init__(self, workers, scheduler, threads, device, info):
        self.workers, self.scheduler, self.threads, self.device, self.info = workers, scheduler, threads, device, info
        self.cluster = self.client = None

    def __enter__(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise SvrtError("a batch on Dask workers needs Dask distributed (pip install 'svrt[cluster]'); install it "
                            "or run in this process with --workers 0.") from None
        t0 = time.perf_counter()
        kind = "scheduler"
        if self.scheduler is not None:
            try:
                if os.path.isfile(self.scheduler):  # a scheduler file (dask scheduler --scheduler-file ...)
                    self.client = Client(scheduler_file=self.scheduler, timeout="20s")
                else:
                    self.client = Client(self.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise SvrtError(f"cannot reach the Dask scheduler at {self.scheduler} ({one_sentence(exc)}); start it "
                                "with `dask scheduler` or check the address.") from None
        else:
            self.cluster, kind = self._local_cluster(LocalCluster)
            self.client = Client(self.cluster)
        if self.info is not None:
            self.info.update(start_s=time.perf_counter() - t0, kind=kind,
                             workers=len(self.client.scheduler_info().get("workers", {})))
        return self.client

    def _local_cluster(self, LocalCluster):
        kw = dict(n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                  silence_logs=logging.ERROR)
        # worker processes start with one OpenMP/BLAS thread per intra-op thread asked for
        env = {name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        if str(self.device).startswith("cuda"):
            try:
                from dask_cuda import LocalCUDACluster  # one GPU per worker (CUDA_VISIBLE_DEVICES)

                kw.pop("processes")
                return LocalCUDACluster(env=env, **kw), "LocalCUDACluster"
            except ImportError:
                from svrt.checks import warn

                warn(f"dask-cuda is not installed: the {self.workers} workers share one GPU (pip install dask-cuda for "
                     "one GPU per worker).")
        import dask

        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            return LocalCluster(**kw), "LocalCluster"

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


# ------------------------------------------------------------------------------------------ summary

def summary_table(outcomes: Sequence[Outcome], wall_s: float | None = None, workers: int | None = None,
                  max_rows: int = 30) -> str:
    """A text table: one row per burst (up to ``max_rows``; then the failed ones only), the counts per
    status and, with ``wall_s``, the throughput in bursts per hour."""
    lines = []
    rows = list(outcomes) if len(outcomes) <= max_rows else [o for o in outcomes if o.status == "failed"]
    if rows:
        width = max(len(o.name) for o in rows)
        lines.append(f"{'burst':<{width}}  {'status':<7}  {'time [s]':>8}  note")
        for o in rows:
            t = f"{o.seconds:8.1f}" if o.status != "skipped" else " " * 8
            lines.append(f"{o.name:<{width}}  {o.status:<7}  {t}  {o.message}")
        if len(rows) < len(outcomes):
            lines.append(f"({len(outcomes) - len(rows)} more bursts done or skipped: see batch-summary.tsv)")
        lines.append("")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    done = [o for o in outcomes if o.status == "done"]
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    if done:
        mean = sum(o.seconds for o in done) / len(done)
        text += f"; {mean:.1f} s per restored burst in its worker"
    if wall_s and done:
        text += f"; wall {wall_s:.1f} s = {3600 * len(done) / wall_s:.0f} bursts/hour"
        if workers:
            text += f" on {workers} worker{'s' if workers != 1 else ''}"
    lines.append(text)
    return "\n".join(lines)


def write_summary(path: str | os.PathLike, outcomes: Sequence[Outcome]) -> None:
    """``batch-summary.tsv``: one row per burst (name, status, seconds, solve seconds, iterations,
    worker, input, output, log, message), written atomically."""
    from svrt.fileio import atomic_write

    cols = ("name", "status", "seconds", "solve_seconds", "iterations", "worker", "input", "output", "log", "message")
    lines = ["\t".join(cols)]
    for o in outcomes:
        values = [str(getattr(o, c)) if not isinstance(getattr(o, c), float) else f"{getattr(o, c):.3f}" for c in cols]
        lines.append("\t".join(v.replace("\t", " ").replace("\n", " ") for v in values))
    with atomic_write(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
