"""Watching a batch (:mod:`svrt.runtime.batch`) while it runs: a line per burst as it starts and as it
ends, a batch progress bar, and per-iteration log lines that reach the burst's log file as they happen.

Three parts, one per side of a batch:

- **In the worker** (the process that restores a burst): :func:`burst_started` announces a burst as it
  starts. In a Dask worker the announcement is a Dask event (``Worker.log_event`` on topic
  :data:`TOPIC`), which the scheduler forwards to the client that subscribed to it; in the batch's own
  process (``workers=0``) it goes straight to the watches registered there. :class:`IterationLog` is the
  solve ``callback`` that writes one log line per iteration and flushes it at once, so that
  ``tail -f logs/<burst>.log`` follows the solve.
- **In the process that runs the batch**: :class:`BatchWatch` prints the lines to stderr (flushed: a
  pipeline's log or a terminal sees them at once) and keeps a ``tqdm.auto`` bar of finished bursts
  (a widget in a notebook; off when stderr is not a terminal, where the lines say the same). Give
  :meth:`BatchWatch.ended` as ``on_outcome`` and :meth:`BatchWatch.attach` as ``on_client`` of
  :func:`~svrt.runtime.batch.run_batch`.

The lines (``elapsed``: time since the batch started, h:mm:ss)::

          start   burst_0002  on tcp://127.0.0.1:40233  (burst 2 of 4, 0:00:01 into the batch)
    [1/4] done    burst_0002    39.1 s  wrote restored/burst_0002.fits  (23 iterations, loss 3.2e+03 -> 1.1e+02, ...)

Nothing here imports Dask or tqdm until it is used.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import IO, Any, Callable, Sequence

__all__ = ["TOPIC", "BatchWatch", "IterationLog", "burst_started", "format_elapsed"]

#: topic of the Dask events a worker sends as a burst starts
TOPIC = "svrt-batch"

_WATCHERS: list[Callable[[dict], Any]] = []  # the watches of this process (workers=0: no Dask in between)
_WATCHERS_LOCK = threading.Lock()


def _dask_worker():
    """The Dask worker this code runs in, or None (the batch's own process, or Dask not installed)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # ValueError: "No worker found"
        return None


def burst_started(name: str) -> None:
    """Announce that burst ``name`` starts in this process: to the batch's client through the Dask
    scheduler inside a Dask worker, else to the :class:`BatchWatch` of this process. Never raises: a
    watch that cannot be told must not fail a burst."""
    worker = _dask_worker()
    where = str(worker.address) if worker is not None else f"{socket.gethostname()}:{os.getpid()}"
    event = {"event": "start", "name": name, "worker": where, "time": time.time()}
    try:
        if worker is not None:
            worker.log_event(TOPIC, event)
            return
        with _WATCHERS_LOCK:
            watchers = list(_WATCHERS)
        for watcher in watchers:
            watcher(event)
    except Exception:  # progress is a convenience; the restoration goes on without it
        pass


class IterationLog:
    """The solve ``callback`` of a batch burst: one line per iteration in ``logger``'s files, flushed as
    it is written (``tail -f`` shows the solve as it runs, and a killed worker leaves every finished
    iteration in the log). Keeps the count of lines written (``count``) and the last record (``last``)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.count = 0
        self.last: dict = {}

    def __call__(self, rec: dict) -> None:
        self.count += 1
        self.last = dict(rec)
        self.logger.info(
            "iteration %s: total %.5e data %.5e (%.3f s)",
            rec.get("iteration"),
            float(rec.get("total", float("nan"))),
            float(rec.get("data", float("nan"))),
            float(rec.get("time_s", float("nan"))),
        )
        for handler in self.logger.handlers:  # FileHandler flushes per record today; say so here, not by luck
            handler.flush()


def format_elapsed(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds: ``format_elapsed(3725.2) == '1:02:05'``."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class BatchWatch:
    """Progress of one batch, printed as it happens: a start line per burst (from :func:`burst_started`,
    in this process or through the Dask client given to :meth:`attach`), an end line per burst
    (:meth:`ended`, the batch's ``on_outcome``), and a ``tqdm.auto`` bar of finished bursts.

    names: the burst names of the batch, in order (the start line says "burst i of N").
    stream: where the lines go [default: sys.stderr]; every line is flushed.
    bar: True / False, or None: a bar only when ``stream`` is a terminal (or in a notebook).
    quiet: no lines and no bar (the watch still counts).

    A context manager: entering it starts the clock and listens to this process's bursts; leaving it
    closes the bar and stops listening.
    """

    def __init__(self, names: Sequence[str], stream: IO[str] | None = None, bar: bool | None = None,
                 quiet: bool = False):
        self.index = {name: i + 1 for i, name in enumerate(names)}
        self.total = len(names)
        self.stream = stream
        self.bar_wanted = bar
        self.quiet = quiet
        self.name_width = min(40, max((len(n) for n in names), default=1))
        self.count_width = len(str(self.total))
        self.t0 = time.perf_counter()
        self.started_names: list[str] = []
        self.lines: list[str] = []  # every line printed, in order (for callers and tests)
        self._bar = None
        self._client = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- life
    def __enter__(self) -> "BatchWatch":
        self.t0 = time.perf_counter()
        if not self.quiet and self.bar_wanted is not False:
            from tqdm.auto import tqdm

            # disable=None: tqdm turns itself off when the stream is not a terminal (logs, SLURM output)
            self._bar = tqdm(total=self.total, unit="burst", desc="svrt batch", file=self._out(),
                             disable=None if self.bar_wanted is None else False, dynamic_ncols=True)
        with _WATCHERS_LOCK:
            _WATCHERS.append(self._on_event)
        return self

    def __exit__(self, *exc) -> bool:
        with _WATCHERS_LOCK:
            if self._on_event in _WATCHERS:
                _WATCHERS.remove(self._on_event)
        if self._client is not None:
            try:
                self._client.unsubscribe_topic(TOPIC)
            except Exception:  # the client may already be closed
                pass
            self._client = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return False

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    # ---------------------------------------------------------------- hooks
    def attach(self, client) -> None:
        """Follow the bursts of the Dask workers of ``client`` (the batch's ``on_client``), and print
        the address of the cluster's dashboard (or why there is none)."""
        from svrt.runtime.cluster import dashboard_line

        self._client = client
        client.subscribe_topic(TOPIC, lambda event: self._on_event(event[1]))
        self.say(dashboard_line(client))

    def _on_event(self, event: dict) -> None:
        if event.get("event") != "start":
            return
        name = str(event.get("name", "?"))
        with self._lock:
            self.started_names.append(name)
        i = self.index.get(name, 0)
        pad = " " * (2 * self.count_width + 3)
        self.say(f"{pad} start   {name:<{self.name_width}}  on {event.get('worker', '?')}  "
                 f"(burst {i} of {self.total}, {format_elapsed(time.perf_counter() - self.t0)} into the batch)")

    def ended(self, outcome, n: int, total: int) -> None:
        """The end line of one burst (``on_outcome`` of :func:`~svrt.runtime.batch.run_batch`): the
        finished count, status, name, its time in the worker, the message and, for a restored burst,
        its iterations, first and last loss and solve time; moves the bar."""
        t = f"{outcome.seconds:7.1f} s" if outcome.status != "skipped" else " " * 9
        line = (f"[{n:>{self.count_width}}/{total}] {outcome.status:<7} {outcome.name:<{self.name_width}} {t}  "
                f"{outcome.message}")
        fit = _fit_summary(outcome)
        elapsed = f"{format_elapsed(time.perf_counter() - self.t0)} into the batch"
        self.say(f"{line}  ({fit}, {elapsed})" if fit else f"{line}  ({elapsed})")
        if self._bar is not None:
            with self._lock:
                self._bar.update(1)

    def say(self, line: str) -> None:
        """Print one line on the stream, above the bar, and flush it."""
        with self._lock:
            self.lines.append(line)
            if self.quiet:
                return
            out = self._out()
            if self._bar is not None and not self._bar.disable:
                self._bar.write(line, file=out)  # clears the bar, writes, redraws it
            else:
                out.write(line + "\n")
            out.flush()


def _fit_summary(outcome) -> str:
    """'23 iterations, loss 3.2e+03 -> 1.1e+02, solve 37.0 s' of a restored burst ('' otherwise): what
    the solve did, without a truth to score against."""
    if outcome.status != "done" or not outcome.iterations:
        return ""
    extra = outcome.extra or {}
    parts = [f"{outcome.iterations} iterations"]
    if "loss_first" in extra and "loss_last" in extra:
        parts.append(f"loss {extra['loss_first']:.2e} -> {extra['loss_last']:.2e}")
    if outcome.solve_seconds == outcome.solve_seconds:  # not NaN
        parts.append(f"solve {outcome.solve_seconds:.1f} s")
    return ", ".join(parts)
