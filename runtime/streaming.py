"""Streaming restoration for real-time pipelines: bursts in as they come, restorations out, with
back-pressure and a warm start from the previous burst.

A :class:`Restorer` loads the engine once and keeps one :class:`~svrt.runtime.solver.SVMOMFBD` (its
engine, plans and caches stay warm between bursts). Bursts reach it three ways:

- ``restore(burst)``: in the calling thread, one at a time.
- ``submit(burst)`` / ``results()``: a worker thread restores them in order; ``submit`` blocks while
  ``max_pending`` bursts already wait (back-pressure: a camera reader cannot run ahead of the solver
  and fill the memory), or with ``timeout=0`` returns False at once so a real-time producer can drop
  the burst instead.
- ``stream(source)``: ``source`` is an iterable of bursts (or burst file paths) or a ``queue.Queue``
  ended by ``None``; a feeder thread reads the next burst while the current one is solved, and the
  restorations are yielded in order.

Warm start (``warm_start``), when consecutive bursts are alike (same K, L, Y, X and instruments;
``Restored.warm`` says whether it was used):

- ``"all"`` (or True): each burst starts from the previous result (``init=previous``): its objects and
  its wavefront modes, frame l from frame l.
- ``"objects"``: the previous objects only; the wavefronts start from zero as in a cold start.
- ``"off"`` (or False, the default): the frame average and zero modes, as ``svrt deconvolve``.

What it gains depends on how alike consecutive bursts are. The objects of a time series of one field
change slowly, but bursts taken seconds apart see independent wavefronts (the seeing decorrelates in
milliseconds): frame l of one burst says nothing about frame l of the next. ``python -m
svrt.benchmarks.streaming`` measures both cases (docs/PIPELINE.md): with a frozen atmosphere "all"
saves ~10 % of the solver's iterations at equal quality; with independent seeing it misleads the
wavefront fit (NMSE 10x worse), and "objects" saves ~3 % of the iterations at a measured loss of
quality. So the default is ``"off"``: choose ``"all"`` when consecutive bursts share their
wavefronts (a frozen or very slowly changing wavefront, re-restoring a burst with other settings),
``"objects"`` to try on a slowly evolving field.

A burst that fails (bad file, solver error) gives a :class:`Restored` with ``error`` set (one
sentence) and the stream goes on; the warm start then continues from the last good result.

Example::

    from svrt.runtime.streaming import Restorer
    from svrt.settings import load_settings   # [solver] of a settings file (svrt config > run.toml)

    # None: the default forward model of every entry point (svrt.runtime.forward_choice); or "svce-c16", an .onnx
    with Restorer(None, load_settings("run.toml"), max_pending=2, warm_start="all") as restorer:
        for item in restorer.stream(camera_bursts()):          # an iterator of Burst objects
            if item.error is None:
                item.write(f"restored/{item.name}.fits")
            print(item.name, f"{item.latency_s:.2f} s", "warm" if item.warm else "cold")

Measured warm-start gains and latencies: docs/PIPELINE.md, section 3.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from svrt.errors import SvrtError, one_sentence
from svrt.runtime.restore import burst_stem

__all__ = ["Restored", "Restorer"]

_log = logging.getLogger("svrt.streaming")

_END = object()


@dataclass
class Restored:
    """One burst of a stream, restored (or not).

    index: position in the stream (0, 1, ...). name: the burst file's name without its suffix, or
    ``burst<index>``. result: the :class:`~svrt.runtime.solver.SolveResult` (None when it failed).
    error: one sentence when it failed. warm: whether it started from the previous result.
    wait_s: seconds it waited in the queue; solve_s: seconds of the solve; latency_s: from submission
    to the result (wait + solve). header: the burst's header cards; instruments: its labels; input:
    the burst file's name (written as INPUT), or ``name``; source: the burst file's path ('' for a burst
    given in memory), which :meth:`write` never overwrites. plan: the line ``svrt deconvolve`` prints
    before the work (memory and time; :func:`svrt.runtime.plan.plan_summary`), also logged to
    ``svrt.streaming`` at INFO; '' when the burst could not be read.
    """

    index: int
    name: str
    input: str = ""
    result: Any = None
    error: str | None = None
    warm: bool = False
    wait_s: float = 0.0
    solve_s: float = 0.0
    latency_s: float = 0.0
    header: dict = field(default_factory=dict)
    instruments: list = field(default_factory=list)
    source: str = ""
    plan: str = ""

    @property
    def iterations(self) -> int:
        """Solver iterations recorded (rows of the loss table)."""
        return 0 if self.result is None else int(len(self.result.loss["total"]))

    def restoration(self):
        """The :class:`svrt.fileio.Restoration` that ``svrt deconvolve`` would write for this burst."""
        from svrt.runtime.restore import restoration_of

        if self.result is None:
            raise SvrtError(f"burst {self.name} was not restored ({self.error}); there is nothing to write.")
        return restoration_of(self.result, self.header, self.input or self.name)

    def write(self, path: str | os.PathLike, overwrite: bool = False):
        """Write the restoration file (FITS or HDF5 by suffix) as ``svrt deconvolve`` does; returns it. Never over
        the burst file this item was read from, whatever ``overwrite`` says or however ``path`` is spelt."""
        from svrt.runtime.restore import write_restoration_file

        if self.result is None:
            raise SvrtError(f"burst {self.name} was not restored ({self.error}); there is nothing to write.")
        return write_restoration_file(path, self.result, self.header, self.input or self.name,
                                      inputs=(self.source,) if self.source else (), overwrite=overwrite)


@dataclass
class _Item:
    index: int
    name: str
    burst: Any
    t_submit: float


@dataclass
class _Loaded:
    """A burst the feeder read from ``path`` (the name recorded as INPUT)."""

    burst: Any
    path: str


@dataclass
class _Unread:
    """A burst file the feeder could not read: the worker reports it in order, as a failed burst."""

    path: str
    exc: BaseException


def _name_of(source: Any, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return burst_stem(source)
    return f"burst{index}"


class Restorer:
    """Restore a stream of bursts with one warm solver.

    engine: an :class:`~svrt.runtime.engine.Engine` (or a list / mapping of them, as
        :class:`~svrt.runtime.solver.SVMOMFBD` takes), or an engine file / bundled model name loaded
        here once with ``backend``, ``device`` and the config's precision; None: the default forward model
        (:func:`svrt.runtime.forward_choice.default_forward_model`), as ``svrt deconvolve`` and ``svrt batch``.
    config: the :class:`~svrt.runtime.solver.SolverConfig` (default settings when None); its progress
        bar is turned off.
    warm_start: "off" (default; False), "all" (objects and wavefronts; True) or "objects": how each burst
        starts from the previous result when they are alike (see the module doc).
    max_pending: bursts that may wait in the input queue before ``submit`` blocks (back-pressure).
    read_options: keyword arguments of :func:`svrt.fileio.read_burst` for bursts given as paths.
    """

    def __init__(
        self,
        engine,
        config=None,
        *,
        warm_start: str | bool = "off",
        max_pending: int = 2,
        backend: str | None = None,
        device: str = "cpu",
        read_options: dict | None = None,
    ):
        import dataclasses

        from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

        if not isinstance(max_pending, int) or max_pending < 1:
            raise SvrtError(f"max_pending must be an integer >= 1 (bursts waiting in the queue); got {max_pending!r}.")
        config = dataclasses.replace(config or SolverConfig(), progress=False)
        if engine is None or isinstance(engine, (str, os.PathLike)):
            engine = load_solver_engine(engine, backend=backend, device=device, precision=config.precision,
                                        method=config.method)
        self.solver = SVMOMFBD(engine, config)
        modes = {True: "all", False: "off", "all": "all", "objects": "objects", "off": "off"}
        if not isinstance(warm_start, (bool, str)) or warm_start not in modes:
            raise SvrtError(f"warm_start must be 'objects', 'all' or 'off'; got {warm_start!r}.")
        self.warm_start = modes[warm_start]
        self.max_pending = max_pending
        self.read_options = dict(read_options or {})
        self._previous = None          # (SolveResult, signature) of the last good burst
        self._inbox: queue.Queue | None = None
        self._outbox: queue.Queue | None = None
        self._worker: threading.Thread | None = None
        self._count = 0
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ one burst, this thread
    @staticmethod
    def _signature(burst) -> tuple:
        return (tuple(burst.frames.shape), tuple(burst.instruments))

    def reset(self) -> None:
        """Forget the previous result: the next burst starts cold (e.g. after the telescope moved)."""
        self._previous = None

    def warmup(self, burst) -> float:
        """Restore ``burst`` once and throw the result away (first-call costs: allocations, kernels);
        the warm-start state is not touched. Returns the seconds it took."""
        t0 = time.perf_counter()
        self.solver.solve(self._load(burst))
        return time.perf_counter() - t0

    def _load(self, burst):
        if isinstance(burst, _Loaded):
            return self._load(burst.burst)
        if isinstance(burst, _Unread):
            raise burst.exc
        from svrt.fileio import Burst, read_burst

        if isinstance(burst, (str, os.PathLike)) and os.fspath(burst):
            return read_burst(burst, **self.read_options)
        if not isinstance(burst, Burst):
            raise SvrtError(f"a stream item is a {type(burst).__name__} ({str(burst)[:60]!r}); expected a "
                            "svrt.fileio.Burst or the path of a burst file.")
        return burst

    def _solve(self, item: _Item) -> Restored:
        from svrt.runtime.plan import plan_summary

        t_start = time.perf_counter()
        source = item.burst.path if isinstance(item.burst, (_Loaded, _Unread)) else item.burst
        is_file = isinstance(source, (str, os.PathLike))
        out = Restored(index=item.index, name=item.name, wait_s=t_start - item.t_submit,
                       input=Path(source).name if is_file else item.name, source=os.fspath(source) if is_file else "")
        try:
            burst = self._load(item.burst)
            out.header, out.instruments = dict(burst.header), list(burst.instruments)
            # as svrt deconvolve: the plan before the work, and a burst that cannot fit fails here, not mid-solve
            out.plan = plan_summary(self.solver, burst.frames.shape, out.input)
            _log.info("%s: %s", item.name, out.plan)
            sig = self._signature(burst)
            init = None
            if self.warm_start != "off" and self._previous is not None and self._previous[1] == sig:
                previous = self._previous[0]
                init = previous if self.warm_start == "all" else {"objects": previous.objects_unfiltered}
            result = self.solver.solve(burst, init=init)
            out.result, out.warm = result, init is not None
            self._previous = (result, sig)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad burst does not end the stream
            out.error = one_sentence(exc)
        t_end = time.perf_counter()
        out.solve_s = t_end - t_start
        out.latency_s = t_end - item.t_submit
        return out

    def restore(self, burst, name: str | None = None) -> Restored:
        """Restore one burst (a :class:`~svrt.fileio.Burst` or a file path) in this thread, warm-started
        from the previous one; never raises for a bad burst (see ``Restored.error``)."""
        with self._lock:
            index = self._count
            self._count += 1
        return self._solve(_Item(index, name or _name_of(burst, index), burst, time.perf_counter()))

    # ------------------------------------------------------------------ a worker thread and its queues
    def start(self) -> "Restorer":
        """Start the worker thread (``submit`` and ``stream`` start it themselves)."""
        if self._worker is None or not self._worker.is_alive():
            self._inbox = queue.Queue(maxsize=self.max_pending)
            self._outbox = queue.Queue()
            self._worker = threading.Thread(target=self._run, name="svrt-restorer", daemon=True)
            self._closed = False
            self._worker.start()
        return self

    def _run(self) -> None:
        assert self._inbox is not None and self._outbox is not None
        while True:
            item = self._inbox.get()
            if item is _END:
                self._outbox.put(_END)
                return
            self._outbox.put(self._solve(item))

    def submit(self, burst, name: str | None = None, timeout: float | None = None) -> bool:
        """Queue ``burst`` (a Burst or a file path) for the worker thread. Blocks while ``max_pending``
        bursts wait (back-pressure); with ``timeout`` (seconds, 0: do not wait) returns False when the
        queue stayed full (the burst was not taken: a real-time producer may drop it). True when queued."""
        self.start()
        with self._lock:
            index = self._count
            item = _Item(index, name or _name_of(burst, index), burst, time.perf_counter())
            try:
                self._inbox.put(item, block=timeout != 0, timeout=None if timeout in (None, 0) else timeout)
            except queue.Full:
                return False
            self._count += 1
        return True

    def close(self) -> None:
        """No more bursts: the worker finishes those queued, then ``results`` ends."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive() and self._inbox is not None and not self._closed:
                self._closed = True
                self._inbox.put(_END)

    def results(self, timeout: float | None = None) -> Iterator[Restored]:
        """The restorations in submission order, as they are ready, until :meth:`close` and the queue is
        drained. ``timeout``: seconds to wait for each one (``queue.Empty`` past it)."""
        if self._outbox is None:
            return
        while True:
            item = self._outbox.get(timeout=timeout)
            if item is _END:
                self._worker.join()
                return
            yield item

    def stream(self, source: Iterable | queue.Queue) -> Iterator[Restored]:
        """Restore every burst of ``source`` (an iterable of Bursts or paths, or a ``queue.Queue`` whose
        producer puts ``None`` at the end) and yield the restorations in order. A feeder thread moves
        the bursts into the bounded queue (reading the next file while the current burst is solved)."""
        self.start()
        failure: list[BaseException] = []

        def bursts() -> Iterator:
            if isinstance(source, queue.Queue):
                while (burst := source.get()) is not None:
                    yield burst
            else:
                yield from source

        def feed() -> None:
            try:
                for burst in bursts():
                    name = _name_of(burst, self._count)
                    if isinstance(burst, (str, os.PathLike)):
                        path = os.fspath(burst)
                        try:   # read here, while the worker solves the previous burst
                            loaded = _Loaded(self._load(path), path)
                        except Exception as exc:
                            loaded = _Loaded(_Unread(path, exc), path)
                        self.submit(loaded, name=name)
                    else:
                        self.submit(burst, name=name)
            except BaseException as exc:  # the source itself broke: report it after what was restored
                failure.append(exc)
            finally:
                self.close()

        feeder = threading.Thread(target=feed, name="svrt-restorer-feed", daemon=True)
        feeder.start()
        yield from self.results()
        feeder.join()
        if failure:
            exc = failure[0]
            yield Restored(index=self._count, name=f"burst{self._count}", error="the burst source failed: "
                                                                                f"{one_sentence(exc)}")

    def __enter__(self) -> "Restorer":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        if self._worker is not None:
            self._worker.join(timeout=None if exc[0] is None else 0.1)
        return False
