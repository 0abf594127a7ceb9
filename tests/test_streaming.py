"""The streaming restorer: warm start from the previous burst, order, back-pressure, failures that do
not end the stream, queue and iterator sources (tiny random emulator, 32x32, 2 frames, adam x 2)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from svrt.errors import SvrtError
from svrt.fileio import Burst, read_restoration, write_burst
from svrt.runtime.solver import SolverConfig
from svrt.runtime.streaming import Restorer

FAST = SolverConfig(method="adam", iterations=2, grid=0, progress=False)


@pytest.fixture(scope="module")
def engine(tiny_model):
    return tiny_model


def _series(n=3, size=32, seed=0):
    """One scene seen through the same blur with new noise each time: consecutive bursts alike."""
    rng = np.random.default_rng(seed)
    scene = 1000 * (1 + 0.1 * rng.standard_normal((2, 1, size, size)))
    return [Burst(frames=(scene + 10 * rng.standard_normal((2, 2, size, size))).astype(np.float32),
                  instruments=["crisp8542"] * 2, header={"DATE-OBS": f"2024-06-01T08:30:{i:02d}", "CDELT1": 0.059})
            for i in range(n)]


def test_restore_warm_starts_from_the_previous_burst(engine):
    bursts = _series(3)
    cold = Restorer(engine, FAST)                               # the default: no warm start
    warm = Restorer(engine, FAST, warm_start=True)              # objects and modes ("all")
    objects = Restorer(engine, FAST, warm_start="objects")      # the previous objects only
    a = [warm.restore(b) for b in bursts]
    c = [cold.restore(b) for b in bursts]
    o = [objects.restore(b) for b in bursts]
    assert [r.warm for r in a] == [False, True, True] == [r.warm for r in o] and not any(r.warm for r in c)
    assert all(r.error is None and r.latency_s >= r.solve_s > 0 for r in a)
    # started from the previous burst's objects (and modes), the second burst begins far lower
    assert a[1].result.loss["total"][0] < c[1].result.loss["total"][0]
    assert o[1].result.loss["total"][0] < c[1].result.loss["total"][0]
    with pytest.raises(SvrtError, match="warm_start"):
        Restorer(engine, FAST, warm_start="modes")
    other = warm.restore(_series(1, size=48)[0])              # another shape: a cold start, not an error
    assert other.error is None and not other.warm
    with pytest.raises(SvrtError, match="max_pending"):
        Restorer(engine, FAST, max_pending=0)


def test_stream_paths_in_order_through_a_bad_file(engine, tmp_path):
    paths = []
    for i, b in enumerate(_series(2)):
        paths.append(tmp_path / f"b{i}.fits")
        write_burst(paths[-1], b)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = not a fits file")
    with Restorer(engine, FAST, max_pending=1, warm_start="all") as restorer:
        items = list(restorer.stream([paths[0], bad, paths[1]]))
    assert [i.name for i in items] == ["b0", "bad", "b1"] and [i.index for i in items] == [0, 1, 2]
    assert items[1].error and "bad.fits" in items[1].error and items[1].result is None
    assert items[2].error is None and items[2].warm          # the failure did not reset the warm start
    rest = items[0].write(tmp_path / "r0.fits")
    back = read_restoration(tmp_path / "r0.fits")
    assert back.header["INPUT"] == "b0.fits" and back.header["DATE-OBS"] == "2024-06-01T08:30:00"
    assert back.config["METHOD"] == "adam" and rest.objects.shape == (2, 32, 32)
    # a queue.Queue source, ended by None
    q: queue.Queue = queue.Queue()
    for b in _series(2):
        q.put(b)
    q.put(None)
    with Restorer(engine, FAST, warm_start="objects") as restorer:
        items = list(restorer.stream(q))
    assert [i.name for i in items] == ["burst0", "burst1"] and items[1].warm


def test_submit_blocks_or_refuses_when_the_queue_is_full(engine):
    restorer = Restorer(engine, FAST, max_pending=1)
    started, release = threading.Event(), threading.Event()

    def slow_solve(burst, init=None):                            # holds the worker until released
        started.set()
        release.wait(10)
        return None

    restorer.solver.solve = slow_solve
    bursts = _series(3, size=16)
    assert restorer.submit(bursts[0])                            # taken by the worker at once
    assert started.wait(10)
    assert restorer.submit(bursts[1], timeout=5)                 # waits in the queue (max_pending = 1)
    assert restorer.submit(bursts[2], timeout=0) is False        # full: refused, the producer may drop it
    assert restorer.submit(bursts[2], timeout=0.05) is False
    release.set()
    restorer.close()
    names = [r.name for r in restorer.results(timeout=10)]
    assert names == ["burst0", "burst1"]


def test_each_burst_carries_the_plan_line_and_one_that_cannot_fit_fails_alone(engine, caplog):
    """As ``svrt deconvolve``: the plan (memory, time) is made before each burst's work, kept on the item and
    logged; a burst whose estimate exceeds the memory bound fails in one sentence before the solve, and the next
    burst, which fits, is restored."""
    import dataclasses
    import logging

    restorer = Restorer(engine, FAST)
    with caplog.at_level(logging.INFO, logger="svrt.streaming"):
        item = restorer.restore(_series(1)[0], name="b0")
    assert item.error is None and item.plan.startswith("plan: 2 object(s) x 2 frames of 32x32, whole field")
    assert any(r.getMessage() == f"b0: {item.plan}" for r in caplog.records)
    restorer.solver.config = dataclasses.replace(restorer.solver.config, memory_mb=1)
    solved = []
    restorer.solver.solve = lambda burst, init=None: solved.append(burst)
    big = restorer.restore(Burst(frames=np.ones((2, 2, 512, 512), np.float32), instruments=["crisp8542"] * 2))
    assert big.result is None and "memory bound" in big.error and "\n" not in big.error and not solved
