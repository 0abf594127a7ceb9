"""One stopping rule and one monitor (runtime/solver_monitor.py) for both methods and the object solve, and the
object-prior interface (runtime/object_prior.py) that a second prior would implement."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest
import torch

from svrt.runtime.object_prior import ObjectPrior, PowerLaw, fit_object_power
from svrt.runtime.solver_config import SolverConfig
from svrt.runtime.solver_monitor import HISTORY_KEYS, LBFGS, Monitor, StoppingRule, lbfgs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_stopping_rule_deadline_and_convergence():
    assert not StoppingRule().out_of_time()
    assert StoppingRule(time.perf_counter() - 1.0).out_of_time()
    assert not StoppingRule(time.perf_counter() + 60.0).out_of_time()
    assert StoppingRule.of(SolverConfig(), 100.0).deadline is None
    assert StoppingRule.of(SolverConfig(time_budget=5.0), 100.0).deadline == 105.0
    assert StoppingRule.converged(10.0, 9.995, 1e-3) and not StoppingRule.converged(10.0, 9.9, 1e-3)
    assert StoppingRule.converged(10.0, 10.5, 1e-3)            # a rise is no progress either


def test_monitor_records_saves_when_due_then_calls_back():
    events = []
    monitor = Monitor(lambda row: events.append(("callback", row)), tile="tile 1/2", checkpoint_every=2, last=5)
    for it in range(1, 6):
        row = monitor.row(total=10.0 / it, data=9.0 / it, reg_object=0.5, reg_modes=0.5 / it, time_s=0.01)
        assert row["iteration"] == it
        monitor.end_iteration(row, save=lambda it=it: events.append(("save", it)))
    saves = [e[1] for e in events if e[0] == "save"]
    assert saves == [2, 4]                                     # every 2 but not the last: the result is written
    at = events.index(("save", 2))
    assert events[at + 1][0] == "callback" and events[at + 1][1]["iteration"] == 2   # saved, then called back
    rows = [e[1] for e in events if e[0] == "callback"]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5] and all(r["tile"] == "tile 1/2" for r in rows)
    assert set(rows[0]) == set(HISTORY_KEYS) | {"tile"}
    arrays = monitor.arrays()
    assert arrays["iteration"].dtype == np.int64 and arrays["total"].dtype == np.float64
    assert np.allclose(arrays["total"], [10.0 / i for i in range(1, 6)])


def test_the_checkpoint_is_on_disk_before_the_callback_of_its_iteration():
    """A callback that stops the solve (a batch cancelled, a test's interrupt) finds the checkpoint written."""
    seen = []
    monitor = Monitor(lambda row: seen.append((row["iteration"], list(saved))), checkpoint_every=1, last=3)
    saved: list = []
    for _ in range(2):
        monitor.end_iteration(monitor.row(1.0, 1.0, 0.0, 0.0, 0.0), save=lambda: saved.append(len(saved) + 1))
    assert seen == [(1, [1]), (2, [1, 2])]


def test_monitor_resumes_a_checkpoints_table():
    monitor = Monitor()
    monitor.resume({"iteration": np.array([1, 2]), "total": np.array([3.0, 2.0]), "data": [3.0, 2.0],
                    "reg_object": [0.0, 0.0], "reg_modes": [0.0, 0.0], "time_s": [0.1, 0.1]})
    assert monitor.row(1.0, 1.0, 0.0, 0.0, 0.1)["iteration"] == 3


def test_lbfgs_settings_have_one_home():
    """The L-BFGS history sizes and tolerances of the patch stage and the SV refinement are LBFGS, not literals."""
    opt = lbfgs([torch.zeros(3, requires_grad=True)], 7, "patch")
    group = opt.param_groups[0]
    assert group["max_iter"] == 7 and group["history_size"] == LBFGS["patch"]["history_size"]
    assert group["tolerance_grad"] == 1e-9 and group["line_search_fn"] == "strong_wolfe"
    for name in ("patch_mfbd.py", "method_momfbd.py", "method_adam.py", "object_solve.py"):
        assert "tolerance_grad" not in (ROOT / "runtime" / name).read_text(), name


def test_adam_stops_at_the_time_budget(tiny_model):
    """One stopping rule for both methods: adam honours time_budget too (it ran every iteration regardless)."""
    from svrt.runtime.engine import load_engine
    from svrt.runtime.solver import SVMOMFBD

    engine = load_engine(tiny_model)
    frames = 1.0 + 0.05 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    config = SolverConfig(method="adam", iterations=50, grid=16, progress=False, time_budget=1e-6)
    result = SVMOMFBD(engine, config).solve(frames.numpy(), "crisp8542", callback=rows.append)
    assert len(result.loss["total"]) == 1 and len(rows) == 1
    assert result.header["STOP"] == "time budget"
    free = SVMOMFBD(engine, SolverConfig(method="adam", iterations=3, grid=16, progress=False)).solve(
        frames.numpy(), "crisp8542")
    assert len(free.loss["total"]) == 3 and not free.header.get("STOP")


# ------------------------------------------------------------------------------ the object prior

class _FlatPrior:
    """A second prior: white (the same power at every frequency)."""

    def __init__(self, power: float):
        self.power = power

    def __call__(self, nu):
        return torch.full_like(nu, self.power)

    def cards(self) -> dict:
        return {"POWER_FLAT": self.power}


def test_the_power_law_is_an_object_prior():
    law = PowerLaw(2.0, 3.0, 0.01)
    assert isinstance(law, ObjectPrior) and isinstance(_FlatPrior(1.0), ObjectPrior)
    assert law.cards() == {"POWER_SLOPE": 3.0}


def test_the_patch_problem_takes_a_second_prior():
    from svrt.instruments import get_instrument
    from svrt.runtime.patch_mfbd import PatchProblem, patch_layout

    frames = 1.0 + 0.05 * torch.randn(1, 2, 64, 64, generator=torch.Generator().manual_seed(1))
    layout = patch_layout((64, 64), (1, 1), 64)
    alpha = torch.zeros(2, 1, 1, 44)
    calls = []

    def flat_fit(frame_power, mtf2, noise_var, window_power, cutoff):
        calls.append(cutoff)
        return _FlatPrior(1e-3)

    problem = PatchProblem(frames, [get_instrument("crisp8542")], 44, layout, torch.tensor([1e-4]), prior_fit=flat_fit)
    problem.refit_object_power(alpha)
    assert calls and isinstance(problem.powers[0], _FlatPrior)
    assert torch.allclose(problem.gamma[0], torch.full_like(problem.nu, 1e-4 / 1e-3))
    default = PatchProblem(frames, [get_instrument("crisp8542")], 44, layout, torch.tensor([1e-4]))
    assert default.prior_fit is fit_object_power
    default.refit_object_power(alpha)
    assert isinstance(default.powers[0], PowerLaw) and float(default.metric(alpha)) != float(problem.metric(alpha))


@pytest.mark.parametrize("module", ["method_momfbd.py", "method_adam.py", "object_solve.py"])
def test_the_methods_and_the_object_solve_share_the_rule_and_the_monitor(module):
    text = (ROOT / "runtime" / module).read_text()
    assert "solver_monitor import" in text
    assert "time.perf_counter() > " not in text           # the deadline test lives in StoppingRule
    assert "tqdm(" not in text                             # the bar lives in Monitor
