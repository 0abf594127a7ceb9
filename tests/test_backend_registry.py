"""Back ends come from one registry (``svrt.runtime.engine.BACKENDS``) that refuses options a back end does not
take, and the exact-optics back end (the default forward model) keeps the Engine contract that the emulator
back ends keep in tests/test_engines.py: forward and VJP consistent with finite differences and with
autograd through ``Engine.apply``, its declared capabilities true (issue 21)."""

from __future__ import annotations

import pytest
import torch

from svrt.errors import SvrtError
from svrt.runtime.engine import BACKENDS, load_engine

INSTRUMENT = "crisp8542"
M = 10   # a few low-order modes keep the per-pixel exact convolution fast


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_option_the_back_end_does_not_take_is_refused(backend, tmp_path):
    # refused before the file is opened: the same sentence whatever the path
    with pytest.raises(SvrtError, match=f"the {backend} back end takes no option tread"):
        load_engine(tmp_path / "engine.file", backend=backend, tread=2)


def test_the_options_a_back_end_names_still_work():
    assert load_engine(None, backend="psf-interpolation", psf_size=32).psf_size == 32
    assert load_engine(None, backend="torch", precision="fp32").identity.precision == "fp32"


@pytest.fixture(scope="module")
def exact():
    from svrt.runtime.backends.psf_interpolation_backend import PSFInterpolationEngine

    return PSFInterpolationEngine(n_modes=M, psf_size=32)


def _inputs(seed: int, size=(24, 24)):
    gen = torch.Generator().manual_seed(seed)
    obj = 1 + 0.1 * torch.randn((1, 1, *size), generator=gen)
    coarse = 0.3 * torch.randn((1, M, 2, 2), generator=gen)
    modes = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return obj, modes


def test_exact_optics_identity_and_capabilities(exact):
    ident = exact.identity
    assert ident.backend == "psf-interpolation" and ident.model == "exact-optics" and ident.n_modes == M
    assert INSTRUMENT in exact.instruments and exact.wants_coarse_modes and exact.linear_in_object
    o1, modes = _inputs(0)
    o2, _ = _inputs(1)
    lhs = exact.forward(2.0 * o1 - 0.5 * o2, modes, INSTRUMENT)
    rhs = 2.0 * exact.forward(o1, modes, INSTRUMENT) - 0.5 * exact.forward(o2, modes, INSTRUMENT)
    assert torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-5)   # linear in the object, as declared


def test_exact_optics_gradient_agrees_with_finite_differences_and_autograd(exact):
    obj, modes = _inputs(2)
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(obj.shape, generator=gen)
    go, gm = exact.vjp(obj, modes, INSTRUMENT, w)

    def loss(o, m):
        return (w.double() * exact.forward(o, m, INSTRUMENT).double()).sum().item()

    t = 1e-3
    for grad, in_obj in ((go, True), (gm, False)):
        v = grad / grad.abs().max() * (1 + 0.5 * torch.rand(grad.shape, generator=gen))
        if in_obj:
            fd = (loss(obj + t * v, modes) - loss(obj - t * v, modes)) / (2 * t)
        else:
            fd = (loss(obj, modes + t * v) - loss(obj, modes - t * v)) / (2 * t)
        analytic = (grad.double() * v.double()).sum().item()
        assert abs(fd - analytic) <= 1e-2 * abs(analytic), (in_obj, fd, analytic)
    o2, m2 = obj.clone().requires_grad_(True), modes.clone().requires_grad_(True)
    (w * exact.apply(o2, m2, INSTRUMENT)).sum().backward()
    assert torch.allclose(o2.grad, go, rtol=1e-5, atol=1e-7) and torch.allclose(m2.grad, gm, rtol=1e-5, atol=1e-9)
