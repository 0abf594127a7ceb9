"""When a solve stops and who watches it: one stopping rule and one monitor for both methods and the object solve.

**The stopping rule** (:class:`StoppingRule`): every iterative stage stops at the first of

* its iteration count (a setting: ``iterations``, ``patch_iterations``, ``object_iterations``,
  ``refine_iterations``);
* convergence: the loss fell by less than ``tolerance`` (relative) in an iteration (:meth:`StoppingRule.converged`,
  the object solve);
* the time budget: ``time_budget`` seconds after the solve started (:meth:`StoppingRule.out_of_time`; checked
  after every object-solve iteration, before every refinement round of method momfbd and after every step of
  method adam).

The wavefront fits (the patch wavefronts, the SV refinement) use Nesterov descent by default
(:mod:`svrt.runtime.smooth_descent`): no stopping test, two gradient steps per iteration of the setting
(:func:`wavefront_optimizer`). With ``wavefront_optimizer = "lbfgs"`` they stop inside torch's L-BFGS: its history
sizes and tolerances are :data:`LBFGS`, here rather than typed at each call (:func:`lbfgs`).

**The monitor** (:class:`Monitor`): the loss table (``history``: iteration, total, data, reg_object, reg_modes,
time_s), the callback of :meth:`svrt.runtime.solver.SVMOMFBD.solve` with every row as it is recorded, the tqdm
progress bar (iterations or stages) and the checkpoint cadence (every ``checkpoint_every`` iterations but the
last). At the end of an iteration :meth:`Monitor.end_iteration` does all of it, in that order.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["HISTORY_KEYS", "StoppingRule", "Monitor", "LBFGS", "lbfgs", "wavefront_optimizer"]

#: the columns of the loss table (the restoration's LOSS)
HISTORY_KEYS = ("iteration", "total", "data", "reg_object", "reg_modes", "time_s")

#: L-BFGS settings of each stage (the iteration count is a setting): the patch stage keeps a longer history
#: (many modes, a smooth metric); the refinement's gradient tolerance is finer (its data term is larger)
LBFGS = {"patch": dict(history_size=20, tolerance_grad=1e-9, tolerance_change=1e-12),
         "refine": dict(history_size=10, tolerance_grad=1e-10, tolerance_change=1e-12)}


def lbfgs(params: list, max_iter: int, stage: str) -> torch.optim.LBFGS:
    """torch's L-BFGS with a strong-Wolfe line search, ``max_iter`` iterations and the :data:`LBFGS` of
    ``stage`` ('patch' or 'refine')."""
    return torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", **LBFGS[stage])


#: gradient steps of Nesterov descent per iteration of the settings: an L-BFGS iteration costs 1.2-1.5
#: evaluations with its line search and moves further, so two steps per iteration keep the settings' meaning
NESTEROV_STEPS_PER_ITERATION = 2

def wavefront_optimizer(params: list, max_iter: int, stage: str, kind: str = "nesterov"):
    """The optimizer of a wavefront fit (``stage`` 'patch' or 'refine'): ``kind`` 'nesterov' (the default: a
    path that is a continuous function of the data, :class:`~svrt.runtime.smooth_descent.NesterovDescent`)
    or 'lbfgs' (:func:`lbfgs`, the earlier default, kept for comparison: its line search follows rounding)."""
    if kind == "lbfgs":
        return lbfgs(params, max_iter, stage)
    from svrt.runtime.smooth_descent import NesterovDescent

    return NesterovDescent(params, steps=NESTEROV_STEPS_PER_ITERATION * max_iter)


class StoppingRule:
    """The deadline of a solve (``time.perf_counter()`` seconds, None: none) and the convergence test."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline

    @classmethod
    def of(cls, config: Any, t_start: float) -> "StoppingRule":
        """The rule of a solve that started at ``t_start`` under ``config.time_budget``."""
        return cls(None if config.time_budget is None else t_start + float(config.time_budget))

    def out_of_time(self) -> bool:
        """Whether the time budget is spent."""
        return self.deadline is not None and time.perf_counter() > self.deadline

    @staticmethod
    def converged(previous: float, current: float, tolerance: float) -> bool:
        """Whether the loss fell from ``previous`` to ``current`` by less than ``tolerance`` (relative)."""
        return previous - current <= tolerance * abs(previous)


class Monitor:
    """The loss table, the callback, the progress bar and the checkpoint cadence of one solve (or tile).

    callback: called with every row (the :data:`HISTORY_KEYS` and ``tile``) as it is recorded, or None.
    tile: the tile's label ('' for the whole field). checkpoint_every: the cadence of :meth:`end_iteration`'s
    ``save`` (None: never); last: the last iteration (no checkpoint there: the result is written instead)."""

    def __init__(self, callback: Callable[[dict], Any] | None = None, tile: str = "",
                 checkpoint_every: int | None = None, last: int | None = None):
        self.history: dict = {key: [] for key in HISTORY_KEYS}
        self.callback, self.tile = callback, tile
        self.checkpoint_every, self.last = checkpoint_every, last
        self.bar = None
        self.desc = ""

    # ------------------------------------------------------------------ progress
    def open_progress(self, enabled: bool, desc: str, total: int | None = None, initial: int = 0) -> None:
        """A tqdm bar on stderr: of iterations (``total``) or, without a total, of stages (:meth:`stage`)."""
        self.desc = desc
        if not enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it" if total else "stage", leave=False,
                        dynamic_ncols=True, file=sys.stderr)

    def stage(self, name: str) -> None:
        """A stage begins (the bar's description names it)."""
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: {name}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ------------------------------------------------------------------ the loss table
    def resume(self, saved: dict) -> None:
        """The rows of a checkpoint (``saved[key]``, sequences) as the table so far."""
        for key in HISTORY_KEYS:
            self.history[key] = list(saved.get(key, []))

    def row(self, total: float, data: float, reg_object: float, reg_modes: float, time_s: float) -> dict:
        """The next row of the table (numbered after the last)."""
        return {"iteration": len(self.history["iteration"]) + 1, "total": float(total), "data": float(data),
                "reg_object": float(reg_object), "reg_modes": float(reg_modes), "time_s": float(time_s)}

    def checkpoint_due(self, iteration: int) -> bool:
        """Whether the checkpoint is written after ``iteration``."""
        return (self.checkpoint_every is not None and iteration % self.checkpoint_every == 0
                and (self.last is None or iteration < self.last))

    def end_iteration(self, row: dict, save: Callable[[], Any] | None = None) -> None:
        """Record ``row`` (:data:`HISTORY_KEYS`), advance an iteration bar, write the checkpoint when due
        (``save()``), then call the callback: a callback that stops the solve finds the checkpoint on disk."""
        for key in HISTORY_KEYS:
            self.history[key].append(row[key])
        if self.bar is not None and self.bar.total:
            self.bar.set_postfix(total=f"{row['total']:.3e}", data=f"{row['data']:.3e}",
                                 reg_o=f"{row['reg_object']:.2e}", reg_m=f"{row['reg_modes']:.2e}", refresh=False)
            self.bar.update(1)
        if save is not None and self.checkpoint_due(row["iteration"]):
            save()
        if self.callback is not None:
            self.callback({key: self.history[key][-1] for key in HISTORY_KEYS} | {"tile": self.tile})

    def arrays(self) -> dict:
        """The table as numpy arrays (iteration int64, the rest float64)."""
        return {key: np.asarray(v, dtype=np.int64 if key == "iteration" else np.float64)
                for key, v in self.history.items()}
