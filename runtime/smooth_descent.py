"""Nesterov's accelerated gradient descent with its step from the measured curvature: a fit whose path is a
smooth function of the data.

Why it is here (issue 22, docs/QUALITY.md "Rounding"): the whole-field wavefront fit is non-convex and
stopped early on purpose (its converged optimum fits noise into the high modes). Stopped early by L-BFGS with
a strong-Wolfe line search, it ends where a chain of yes/no decisions sent it (accept this step, try a
shorter one, drop this curvature pair), and late in a mode step those decisions compare changes of the metric
as small as its rounding: a perturbation of the frames in the eighth digit moved the fitted wavefronts by
2-15 % and NMSE_var by 3-6 %. This method makes no decision that depends on the data: a fixed number of
steps, a step size ``1 / lambda_max`` from a power iteration on the Hessian (re-measured every
``remeasure_every`` steps, so it follows the curvature as the wavefront grows; shortened at once by the secant
of the last step) and a fixed momentum. Every operation is then a continuous function of the data: a 1e-6
perturbation of the frames moved NMSE_var by at most 0.03 % (0.05 % with the mode prior) on the 18 bursts of
the 128^2 peer matrix, where L-BFGS moved it by 3-6 %.

Why the step is re-measured, and shortened by the secant of every step: a step fitted to the start only is
too long once the fit has moved into stiffer parts of the metric, and Nesterov's iteration then oscillates in
the stiff direction and becomes as sensitive to rounding as the line search (measured: 18 % spread on the
r0 = 7 cm, no-AO, seed-1 peer burst with the start's step; 22 % on a 96^2 r0 = 7 cm burst with
re-measurement every 5 steps but no secant, 0.0 % with it).

Its cost: two gradient evaluations per L-BFGS iteration of the settings plus the curvature's, about 1.4x the
CPU time of a 128^2 restoration with L-BFGS (docs/QUALITY.md, "Rounding").

The interface is torch.optim's ``step(closure)``/``zero_grad()`` on one parameter tensor, so a stage can use
it in place of :class:`torch.optim.LBFGS`. The closure must zero the gradient, evaluate the loss, call
``backward()`` and return the loss (as for L-BFGS).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["NesterovDescent", "largest_curvature"]


def largest_curvature(gradient: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor,
                      v: torch.Tensor, iterations: int, probe: float = 1e-2) -> tuple[float, torch.Tensor]:
    """The largest |eigenvalue| of the Hessian at ``x`` by power iteration, with Hessian-vector products from
    differences of gradients: ``H v ~ (grad(x + probe v) - grad(x)) / probe``.

    gradient: x -> the gradient at x (same shape as x); g: the gradient at x; v: the unit start vector;
    probe: the length of the difference step in the parameters' units (radians for wavefronts: 1e-2 rad
    is small against the wavefront's scale, a radian, so the difference sees the local curvature, and large
    against float32's rounding of the gradient, ~1e-7 of it, so the quotient keeps ~5 digits).
    Returns (lambda, the unit vector it converged toward), the vector to warm-start the next measurement."""
    lam = 0.0
    for _ in range(max(1, iterations)):
        hv = (gradient(x + probe * v) - g) / probe
        lam = float(hv.norm())
        if lam <= 0.0 or lam != lam:
            break
        v = hv / lam
    return lam, v


class NesterovDescent:
    """Nesterov's accelerated gradient descent on one parameter tensor, for a fixed number of steps.

    ``y_t`` the look-ahead point, ``x_{t+1} = y_t - eta grad(y_t)``, ``y_{t+1} = x_{t+1} + momentum (x_{t+1} - x_t)``,
    ``eta = 1 / max(lambda_max, secant)``: ``lambda_max`` from :func:`largest_curvature` (``power_iterations`` at
    the start from a fixed seeded vector, two more every ``remeasure_every`` steps, warm-started; the secant
    guards the steps between, so 4 and 10 serve: on the 18 bursts of the 128^2 peer matrix 8 and 5 cost 17 %
    more time and left one burst rounding-sensitive, 2.2 %, against at most 0.03 % with 4 and 10, though one
    96^2 strong-seeing burst moved 3 % with 4 and 10 and 0.01 % with 8 and 5; the patch stage's Kolmogorov mode
    prior, ``mode_prior``, now holds it to 0.2 % with 4 and 10), ``secant`` =
    ``|grad(y_t) - grad(y_{t-1})| / |y_t - y_{t-1}|`` the curvature met along the last step. No line search, no
    stopping test: the result is a continuous function of the data (module docstring).

    params: ``[p]``, the one tensor to fit (requires_grad); steps: gradient steps (each one evaluation of the
    closure; the curvature costs ``power_iterations + 2 * (steps // remeasure_every)`` more)."""

    def __init__(self, params: list, steps: int, momentum: float = 0.9, power_iterations: int = 4,
                 remeasure_every: int = 10, seed: int = 123):
        if len(params) != 1:
            raise ValueError("NesterovDescent fits one parameter tensor")
        self.param = params[0]
        self.steps, self.momentum = int(steps), float(momentum)
        self.power_iterations, self.remeasure_every = int(power_iterations), int(remeasure_every)
        self.seed = seed
        self.curvatures: list[float] = []

    def zero_grad(self) -> None:
        self.param.grad = None

    def step(self, closure: Callable[[], torch.Tensor]) -> float:
        """Run every step; the parameter ends at the last ``x``. Returns the loss at the start."""
        p = self.param

        def gradient(at: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                p.copy_(at)
            closure()
            return p.grad.detach().clone()

        x0 = p.detach().clone()
        loss = closure()
        f0 = float(loss.detach() if torch.is_tensor(loss) else loss)
        g0 = p.grad.detach().clone()
        if self.steps <= 0:
            return f0
        # a fixed start vector (not the gradient): the measurement must not hinge on the data's rounding
        gen = torch.Generator().manual_seed(self.seed)
        v = torch.randn(x0.shape, generator=gen).to(x0)
        lam, v = largest_curvature(gradient, x0, g0, v / v.norm(), self.power_iterations)
        self.curvatures.append(lam)
        if not lam > 0.0:                      # a flat (or non-finite) metric: nothing to descend
            with torch.no_grad():
                p.copy_(x0)
            return f0
        x_prev, y = x0.clone(), x0.clone()
        g = g0
        y_last = g_last = None
        for t in range(self.steps):
            if t:
                g = gradient(y)
                if t % self.remeasure_every == 0:
                    lam_t, v = largest_curvature(gradient, y, g, v, 2)
                    if lam_t > 0.0:
                        lam = lam_t
                        self.curvatures.append(lam)
            step_curvature = lam
            if y_last is not None:
                # the curvature along the last step, free from the two gradients: where the fit enters a stiffer
                # region between measurements the step shortens at once (a max of continuous functions: still
                # continuous in the data)
                moved = float((y - y_last).norm())
                if moved > 0.0:
                    step_curvature = max(lam, float((g - g_last).norm()) / moved)
            y_last, g_last = y, g
            x_next = y - g / step_curvature
            y = x_next + self.momentum * (x_next - x_prev)
            x_prev = x_next
        with torch.no_grad():
            p.copy_(x_prev)
        return f0
