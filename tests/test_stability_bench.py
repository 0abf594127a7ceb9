"""The rounding-stability probe (benchmarks/stability.py) and the fixed-work scaling benchmark
(benchmarks/stage_scaling.py): their pieces, fast (the measurements themselves are benchmarks, not tests)."""

import numpy as np
import pytest

from svrt.benchmarks import stability, stage_scaling
from svrt.fileio import Burst
from svrt.runtime.solver_config import SolverConfig


def test_perturbed_is_relative_seeded_and_leaves_the_input_alone():
    frames = np.full((1, 2, 8, 8), 1000.0, np.float32)
    burst = Burst(frames=frames.copy(), instruments=["crisp8542"])
    a, b = stability.perturbed(burst, 1), stability.perturbed(burst, 1)
    np.testing.assert_array_equal(a.frames, b.frames)                   # seeded
    assert np.array_equal(burst.frames, frames)                          # the input is untouched
    rel = a.frames / frames - 1
    # 1e-6 of 1000 is about 16 units in float32's last place (6.1e-5 at 1000), so the change survives the cast
    assert 0 < np.abs(rel).max() < 1e-5
    assert not np.array_equal(stability.perturbed(burst, 2).frames, a.frames)


def test_spread_is_range_over_median():
    assert stability.spread([1.0, 1.02, 0.99]) == pytest.approx(0.03)
    assert stability.spread([2.0, 2.0]) == 0.0


def test_set_parses_solver_settings_and_refuses_unknown_names():
    assert stability._parse_sets(["refine_rounds=0", "tolerance=1e-5", "fit_modes=None"]) == {
        "refine_rounds": 0, "tolerance": 1e-5, "fit_modes": None}
    with pytest.raises(SystemExit, match="no solver setting 'refine_round'"):
        stability._parse_sets(["refine_round=0"])


def test_fixed_work_is_valid_settings():
    # every fixed setting is a real SolverConfig field, so the benchmark cannot silently run the defaults
    config = SolverConfig(**stage_scaling.FIXED)
    assert all(getattr(config, k) == v for k, v in stage_scaling.FIXED.items())


@pytest.mark.parametrize("size", ["0", "1", "-1e-6"])
def test_relative_out_of_range_is_refused_before_any_work(size, capsys):
    with pytest.raises(SystemExit) as exc:
        stability.main(["no-such-burst.fits", f"--relative={size}"])
    assert exc.value.code == 2
    assert "--relative takes a size between 0 and 1" in capsys.readouterr().err
