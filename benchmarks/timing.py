"""Wall-clock measurement with warm-up, repetitions and robust statistics.

:func:`measure` calls ``fn`` ``warmup`` times untimed, then ``repeats`` timed times, and reports the
median and the interquartile range of the per-call times. On CPU each call is timed with
``time.perf_counter``. On CUDA each call is bracketed by CUDA events on the current stream and the
host waits for the end event, so the time is the device's time for the work queued by ``fn``
(kernels launched asynchronously are counted; the queue is drained with ``torch.cuda.synchronize``
before the first timed call). ``inner`` repeats ``fn`` back to back inside one sample and divides, for
calls too short for the timer's resolution.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Timing:
    """Per-call times (seconds) of one measurement."""

    median: float
    q1: float
    q3: float
    minimum: float
    times: list = field(default_factory=list)
    warmup: int = 0
    repeats: int = 0
    inner: int = 1
    timer: str = "perf_counter"

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["iqr"] = self.iqr
        return d


def _quartiles(values: list) -> tuple[float, float, float]:
    v = sorted(values)
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def measure(fn, warmup: int = 1, repeats: int = 5, device="cpu", inner: int = 1) -> Timing:
    """Median (and quartiles) of ``repeats`` timed calls of ``fn()`` after ``warmup`` untimed ones.

    ``device``: where ``fn`` runs ("cpu", "cuda", "cuda:1"...): CUDA uses device events and
    synchronisation, CPU ``time.perf_counter``. ``inner`` calls per sample (the sample is divided by it).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}.")
    cuda = _is_cuda(device)
    for _ in range(max(0, warmup)):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) / inner)
    q1, med, q3 = _quartiles(times)
    return Timing(median=med, q1=q1, q3=q3, minimum=min(times), times=times, warmup=max(0, warmup),
                  repeats=repeats, inner=inner, timer="cuda-events" if cuda else "perf_counter")
