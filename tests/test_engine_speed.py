"""The call counter of the speed benchmark (benchmarks/engine_speed.py) counts and times what it wraps."""

import time

from svrt.benchmarks.engine_speed import CallCounter


class _Engine:
    def forward(self, x):
        time.sleep(0.01)
        return x + 1

    def vjp(self, x, g):
        return g


def test_call_counter_counts_times_and_passes_results_through():
    engine = _Engine()
    counter = CallCounter(engine)
    assert engine.forward(1) == 2 and engine.forward(2) == 3
    assert engine.vjp(0, 5) == 5
    s = counter.summary()
    assert s["forward_calls"] == 2 and s["vjp_calls"] == 1
    assert s["forward_s"] >= 0.02
    assert "apply_calls" not in s and "apply_coarse_calls" not in s   # methods the engine lacks stay out
