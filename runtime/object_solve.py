"""The objects given the wavefronts: a Wiener-preconditioned conjugate-gradient solve (any forward model).

With the wavefronts fixed, the loss in the objects ``o [K, Yp, Xp]`` is ::

    J(o) = sum_kl w_kl |i_kl - f(o_k, alpha_l)|^2  +  sum_k sum_nu R_k(nu) |O_k(nu)|^2 / N

(``w_kl`` the inverse noise variance of frame (k, l), 0 on masked pixels; ``R_k = 1 / P_O`` the Wiener
prior of :mod:`svrt.runtime.object_prior`; N = Yp Xp). For exact optics f is linear in o and J is a
quadratic whose minimiser is the spatially variant Wiener estimate; the emulator is linear in o up to
its own error (it is trained to be a convolution). Conjugate gradients need only the gradient (one
vector-Jacobian product per frame) and the model of the search direction, ``A d = f(o + d) - f(o)``,
for the exact step along it, so every :class:`~svrt.runtime.engine.Engine` can drive it.

The preconditioner is the spatially invariant version of the normal operator, diagonal in Fourier
space: ``2 (sum_l w_kl |S_kl(nu)|^2 + R_k(nu))`` with ``S_kl`` the OTF of frame l's field-mean wavefront;
with one wavefront per frame it is the exact inverse of the Hessian up to the field edges, so CG
converges in a few iterations (Polak-Ribiere directions, restarted when they stop descending).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from svrt.runtime.solver_config import solver_default
from svrt.runtime.solver_monitor import StoppingRule

__all__ = ["ObjectSolveResult", "solve_objects", "prior_value", "fourier_precondition"]


@dataclass
class ObjectSolveResult:
    objects: torch.Tensor                     # [K, Yp, Xp]
    iterations: int
    stop_reason: str
    history: list = field(default_factory=list)   # (J, data term, prior term) after each iteration


def prior_value(o: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``sum_k sum_nu R_k |O_k|^2 / N`` for ``o [K, Yp, Xp]``, ``prior [K, Yp, Xp]`` (full FFT grid)."""
    n = o.shape[-2] * o.shape[-1]
    return (prior * torch.fft.fft2(o).abs().pow(2)).sum() / n


def fourier_precondition(g: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``F^-1 (F g / denominator)`` per object: ``g [K, Yp, Xp]``, ``denominator [K, Yp, Xp]`` > 0."""
    return torch.fft.ifft2(torch.fft.fft2(g) / denominator).real


def solve_objects(data_value_and_grad: Callable, model: Callable, o0: torch.Tensor, prior: torch.Tensor,
                  denominator: torch.Tensor, weighted_sq: Callable,
                  iterations: int = solver_default("object_iterations"),
                  tolerance: float = solver_default("tolerance"), deadline: float | None = None,
                  on_row: Callable[[float, float, float], Any] | None = None) -> ObjectSolveResult:
    """Minimise J(o) by preconditioned conjugate gradients.

    data_value_and_grad(o) -> (data term, its gradient [K, Yp, Xp], the model f(o) [K, L, Y, X]);
    model(o) -> f(o) without gradients; weighted_sq(r) -> sum w r^2 for a model difference r;
    prior [K, Yp, Xp] = R_k on the fft2 grid; denominator [K, Yp, Xp] the preconditioner's Fourier
    diagonal; stops after ``iterations``, when J falls by less than ``tolerance`` (relative) in an
    iteration, or at the ``deadline`` (time.perf_counter(); :class:`~svrt.runtime.solver_monitor.StoppingRule`). ``on_row(J, data, prior)`` is called as each
    accepted iteration's row joins the history (the method's loss table and callback, live).
    """
    stop = StoppingRule(deadline)
    o = o0.detach().clone()
    best = best_j = None
    d = g_prev = z_prev = None
    step = 0.0
    shrinks = 0
    history: list = []
    reason = "iterations"
    it = 0
    for it in range(1, iterations + 1):
        data, g_data, f_o = data_value_and_grad(o)
        oo = o.detach().requires_grad_(True)
        with torch.enable_grad():
            p = prior_value(oo, prior)
            (g_prior,) = torch.autograd.grad(p, oo)
        j = float(data) + float(p.detach())
        if best_j is not None and not (j <= best_j):
            # the step overshot (a forward model that is not exactly linear): shorten it
            shrinks += 1
            if shrinks > 4:
                o, reason = best, "line search"
                break
            step *= 0.25
            o = best + step * d
            continue
        history.append((j, float(data), float(p.detach())))
        if on_row is not None:
            on_row(*history[-1])
        if best_j is not None and stop.converged(best_j, j, tolerance):
            best, best_j, reason = o, j, "converged"
            break
        best, best_j, shrinks = o, j, 0
        if stop.out_of_time():
            reason = "time budget"
            break
        g = g_data + g_prior
        z = fourier_precondition(g, denominator)
        if d is None:
            d = -z
        else:
            beta = max(0.0, float(((g - g_prev) * z).sum() / (g_prev * z_prev).sum().clamp_min(1e-300)))
            d = -z + beta * d
            if float((g * d).sum()) >= 0:           # not a descent direction: restart
                d = -z
        ad = model(o + d) - f_o
        curvature = weighted_sq(ad) + float(prior_value(d, prior))
        slope = float((g * d).sum())
        if not (curvature > 0 and math.isfinite(curvature)):
            reason = "no curvature"
            break
        step = -slope / (2.0 * curvature)
        o = best + step * d
        g_prev, z_prev = g, z
    else:
        o = best if best is not None else o
    return ObjectSolveResult(objects=o, iterations=it, stop_reason=reason, history=history)
