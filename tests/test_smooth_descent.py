"""Nesterov descent with the measured curvature (runtime/smooth_descent.py): the curvature against a known
spectrum, convergence on a quadratic against its rate, and the property it is there for: a perturbation of
the data moves the result in proportion, where the line search of L-BFGS does not."""

import numpy as np
import pytest
import torch

from svrt.runtime.smooth_descent import NesterovDescent, largest_curvature


def _quadratic(eigenvalues, seed=0):
    """A symmetric matrix with the given spectrum in a random orthonormal basis [n, n], float64."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def _fit(loss_of, x0, steps, **kwargs):
    x = x0.clone().requires_grad_(True)
    opt = NesterovDescent([x], steps=steps, **kwargs)

    def closure():
        opt.zero_grad()
        loss = loss_of(x)
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach(), opt


def test_largest_curvature_of_a_quadratic():
    # spectrum 1, 2, 3, 10: power iteration converges as (3/10)^n, 2e-5 after 9 products; the difference
    # quotient is exact on a quadratic up to float64 rounding, so 1e-4 is the bound
    a = _quadratic([1.0, 2.0, 3.0, 10.0])
    x = torch.randn(4, dtype=torch.float64)
    v = torch.ones(4, dtype=torch.float64) / 2
    lam, vec = largest_curvature(lambda z: a @ z, x, a @ x, v, iterations=9)
    assert lam == pytest.approx(10.0, rel=1e-4)
    assert torch.allclose(a @ vec, 10.0 * vec, atol=1e-3)      # and the vector is the eigenvector


def test_converges_on_a_strongly_convex_quadratic():
    # condition number 10: with the fixed momentum 0.9 the error contracts about as sqrt(0.9) = 0.95 per step,
    # 0.95^200 = 4e-5 of the start; 1e-3 leaves a factor 25 for the transient
    a = _quadratic([1.0, 2.0, 5.0, 10.0], seed=1)
    b = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    x_star = torch.linalg.solve(a, b)
    x0 = torch.zeros(4, dtype=torch.float64)
    x, opt = _fit(lambda z: 0.5 * z @ a @ z - b @ z, x0, steps=200)
    assert float((x - x_star).norm() / x_star.norm()) < 1e-3
    assert opt.curvatures[0] == pytest.approx(10.0, rel=0.05)   # the step is 1 / lambda_max


def test_zero_steps_leave_the_start():
    x0 = torch.tensor([0.5, -0.25], dtype=torch.float64)
    x, _ = _fit(lambda z: (z ** 4).sum(), x0, steps=0)
    assert torch.equal(x, x0)


def _double_wells(b):
    """A non-convex metric with 2^n minima (x_i = +-sqrt(b_i)), coupled, saddles in between: [n] -> []."""
    return lambda z: 0.25 * ((z ** 2 - b) ** 2).sum() + 0.1 * (z[1:] * z[:-1]).sum()


def test_a_perturbation_of_the_data_moves_the_result_in_proportion():
    # the property the solver uses it for (docs/QUALITY.md, "Rounding"): every operation is continuous in
    # the data, so a 1e-6 change of b moves the result by about its own size (the local condition number, a
    # few here); 1e-4 is a hundred times that and a hundred times below a jump to another well (~1)
    gen = torch.Generator().manual_seed(2)
    b = 1.0 + torch.rand(16, generator=gen, dtype=torch.float64)
    x0 = 0.3 * torch.randn(16, generator=gen, dtype=torch.float64)
    x_a, _ = _fit(_double_wells(b), x0, steps=150)
    x_b, _ = _fit(_double_wells(b * (1 + 1e-6 * torch.randn(16, generator=gen, dtype=torch.float64))), x0, steps=150)
    assert float((x_a - x_b).norm() / x_a.norm()) < 1e-4
    # and the fit has left the saddle at 0 for the wells (|x_i| near sqrt(b_i) >= 1, shifted by the coupling by
    # up to 0.2 / 2), so the test is not vacuous: the start had every |x_i| below 1
    assert np.abs(x0.numpy()).max() < 1.0 and np.abs(x_a.numpy()).min() > 0.9


def test_refuses_more_than_one_tensor():
    with pytest.raises(ValueError, match="one parameter tensor"):
        NesterovDescent([torch.zeros(2), torch.zeros(2)], steps=1)
