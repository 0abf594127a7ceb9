"""svrt.kernels: the PyTorch references, the Triton kernels under the interpreter, and on a GPU.

Interpreter. ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates a kernel; ``svrt.kernels``
therefore decorates lazily, once per (kernel, mode), with the mode read at each launch
(``svrt/kernels/_triton_runtime.py``). The ``interp`` fixture below just sets the variable with
``monkeypatch`` for the duration of a test -- whatever was imported before, by this file or by other
test files -- and :func:`test_interpreter_mode_follows_environment` checks that switch. The GPU tests
clear the variable so that they run the compiled kernels.

Tolerances (Triton vs reference):

* float32 forward, ``1e-6`` of max|ref|: both evaluate
  ``ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (...)`` with the same float32 scale and weights, so only
  operation order/FMA contraction and the erf implementation (filter) differ -- a few ulp
  (``eps32 = 6e-8``), observed <= 5e-7.
* float32 adjoint, ``2e-6 * (U^T |g|)`` elementwise: the same products summed in another order
  (two separable passes vs PyTorch's per-pixel scatter); a sum's rounding error is bounded by
  ``eps32 * (number of sequential additions) * sum |terms|``, with ~2/s additions per pass
  (s = Yg/Y, at most ~30 here) that is a worst case of ~4e-6 and a typical ``sqrt(n) eps`` ~ 5e-7
  (observed <= 2e-7); the bound is relative to the sum of |contributions|, not to the result,
  which may cancel.
* float16 storage: the reference is evaluated in float32 on the same float16 inputs; the kernel
  accumulates in float32 too, so the outputs differ by the final rounding to float16
  (half an ulp, 2^-11 = 4.9e-4 relative) plus float32 noise: ``1e-3`` of max|ref|.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import svrt.kernels as K
from svrt.errors import SvrtError
from svrt.kernels import reference as R
from svrt.optics.filters import erf_filter, erf_filter_profile

HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def np_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """W [n_out, n_in] of align_corners=False linear interpolation, written out from the formula."""
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        w[o, i0] += 1.0 - lam
        w[o, i1] += lam
    return w


def np_bilinear(coarse: np.ndarray, size) -> np.ndarray:
    y, x = size
    wy = np_bilinear_matrix(coarse.shape[-2], y)
    wx = np_bilinear_matrix(coarse.shape[-1], x)
    return np.einsum("yi,bmij,xj->bmyx", wy, coarse, wx)


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture
def interp(monkeypatch):
    """Triton's interpreter on for this test; returns the two Triton modules."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import triton

    from svrt.kernels import triton_filter, triton_upsample
    assert triton.knobs.runtime.interpret
    return triton_upsample, triton_filter


# ---------------------------------------------------------------------------------------------
# reference: bilinear upsampling and its adjoint
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid,size", [((1, 1), (7, 5)), ((3, 5), (37, 29)), ((4, 4), (16, 16)),
                                       ((37, 29), (37, 29)), ((5, 4), (3, 2))])
def test_reference_upsample_matches_numpy_and_interpolate(grid, size):
    g = torch.Generator().manual_seed(1)
    c = torch.randn(2, 3, *grid, generator=g, dtype=torch.float64)
    out = R.upsample_modes(c, size)
    assert out.shape == (2, 3, *size)
    np.testing.assert_allclose(out.numpy(), np_bilinear(c.numpy(), size), rtol=0, atol=1e-12)
    assert torch.equal(out, F.interpolate(c, size=size, mode="bilinear", align_corners=False))
    assert torch.equal(K.upsample_modes(c, size), out)          # CPU "auto" is the reference


@pytest.mark.parametrize("grid,size", [((1, 1), (9, 6)), ((3, 5), (37, 29)), ((6, 6), (6, 6))])
def test_reference_upsample_adjoint_identity(grid, size):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, *grid, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, *size, generator=g, dtype=torch.float64)
    lhs = (R.upsample_modes(x, size) * y).sum()
    rhs = (x * R.upsample_modes_adjoint(y, grid)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float((x.abs().sum() * y.abs().max()))
    # and it is what autograd gives
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(R.upsample_modes(xr, size), xr, y)
    torch.testing.assert_close(gx, R.upsample_modes_adjoint(y, grid), rtol=0, atol=1e-13)


def test_reference_upsample_gradcheck():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, 2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    f = torch.randn(1, 2, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: R.upsample_modes(t, (7, 5)), (c,))
    assert torch.autograd.gradcheck(lambda t: R.upsample_modes_adjoint(t, (3, 2)), (f,))
    assert torch.autograd.gradgradcheck(lambda t: R.upsample_modes_adjoint(t, (3, 2)), (f,))


def test_reference_bad_input_raises():
    with pytest.raises(SvrtError):
        R.upsample_modes(torch.zeros(2, 3, 4), (8, 8))
    with pytest.raises(SvrtError):
        R.upsample_modes(torch.zeros(1, 1, 2, 2), (0, 8))
    with pytest.raises(SvrtError):
        R.fourier_filter(torch.zeros(4, 4), 0.0)
    with pytest.raises(SvrtError):
        R.fourier_filter(torch.zeros(4, 4), 0.2, apodization=torch.ones(3, 4))


# ---------------------------------------------------------------------------------------------
# reference: erf Fourier filter
# ---------------------------------------------------------------------------------------------

def test_reference_filter_keeps_constant():
    obj = torch.full((2, 33, 20), 3.25, dtype=torch.float64)
    assert float(erf_filter_profile(torch.zeros((), dtype=torch.float64))) == pytest.approx(1.0, abs=1e-15)
    torch.testing.assert_close(R.fourier_filter(obj, 0.17), obj, rtol=0, atol=1e-12)


@pytest.mark.parametrize("direction", ["x", "y", "diagonal"])
def test_reference_filter_removes_beyond_cutoff(direction):
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                            indexing="ij")
    k_pass, k_stop = 3, 8                                   # cycles per image: on-grid, no leakage
    f_stop = k_stop / n * (np.sqrt(2.0) if direction == "diagonal" else 1.0)
    cutoff = f_stop / 1.12                                  # the stop-band wave sits at 1.12 x cutoff
    coord = {"x": xx, "y": yy, "diagonal": xx + yy}[direction]
    low = torch.cos(2 * np.pi * k_pass * coord / n)
    high = torch.cos(2 * np.pi * k_stop * coord / n + 0.3)
    out = R.fourier_filter((low + high)[None], cutoff)[0]
    # pass band (nu <= 0.53) kept: H = 1 to ~1e-12 there
    torch.testing.assert_close(out, low, rtol=0, atol=1e-6)
    attenuation = float(high.pow(2).sum().sqrt() / (out - low).pow(2).sum().sqrt().clamp_min(1e-300))
    assert attenuation > 1e3


def test_reference_filter_adjoint_and_gradcheck():
    g = torch.Generator().manual_seed(4)
    y, x = 9, 8
    w = torch.rand(y, x, generator=g, dtype=torch.float64) + 0.5
    obj = torch.randn(2, y, x, generator=g, dtype=torch.float64)
    v = torch.randn(2, y, x, generator=g, dtype=torch.float64)
    cut = 0.21
    lhs = (R.fourier_filter(obj, cut, apodization=w) * v).sum()
    adj_v = w * R.fourier_filter(v, cut)                    # F^T = diag(w) Filt (H real, even)
    rhs = (obj * adj_v).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * float(obj.abs().sum() * v.abs().max() * w.max())
    objr = obj.clone().requires_grad_(True)
    (gobj,) = torch.autograd.grad(R.fourier_filter(objr, cut, apodization=w), objr, v)
    torch.testing.assert_close(gobj, adj_v, rtol=0, atol=1e-12)
    o = obj[:1, :5, :6].clone().requires_grad_(True)
    ww = w[:5, :6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: R.fourier_filter(a, cut, 1.8, 20.0, b), (o, ww))


def test_reference_filter_dtypes():
    obj = torch.randn(2, 11, 10)
    out16 = R.fourier_filter(obj.half(), 0.2)
    assert out16.dtype == torch.float16
    assert rel_max(out16, R.fourier_filter(obj.half().float(), 0.2)) < 1e-3


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------

def test_cpu_path_does_not_import_triton():
    code = ("import sys, torch, svrt.kernels as K\n"
            "c = torch.randn(1, 2, 3, 3)\nK.upsample_modes(c, (8, 8)).sum()\n"
            "K.upsample_modes_adjoint(torch.randn(1, 2, 8, 8), (3, 3))\n"
            "K.fourier_filter(torch.randn(8, 8), 0.2, apodization=torch.ones(8, 8))\n"
            "assert 'triton' not in sys.modules, 'triton imported by the CPU path'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SVRT_KERNELS", "TRITON_INTERPRET")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_dispatch_choices(monkeypatch):
    monkeypatch.delenv("SVRT_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu = torch.zeros(1, 1, 2, 2)
    assert K.resolve_impl("auto", cpu) == "torch"
    assert K.resolve_impl("torch", cpu) == "torch"
    assert K.resolve_impl("auto", cpu.double()) == "torch"
    with pytest.raises(SvrtError, match="impl must be one of"):
        K.resolve_impl("cuda", cpu)
    if HAVE_TRITON:
        with pytest.raises(SvrtError, match="TRITON_INTERPRET"):
            K.upsample_modes(cpu, (4, 4), impl="triton")
        with pytest.raises(SvrtError, match="TRITON_INTERPRET"):
            K.fourier_filter(cpu[0, 0], 0.2, impl="triton")
    monkeypatch.setenv("SVRT_KERNELS", "torch")
    assert K.resolve_impl("auto", cpu) == "torch"
    assert K.available_impls()["forced"] == "torch"
    assert K.available_impls()["auto_cuda"] == "torch"
    monkeypatch.setenv("SVRT_KERNELS", "triton")
    if HAVE_TRITON:
        with pytest.raises(SvrtError):                       # forced, and impossible on CPU here
            K.upsample_modes(cpu, (4, 4))
        assert K.resolve_impl("torch", cpu) == "torch"        # an explicit impl still wins
    monkeypatch.setenv("SVRT_KERNELS", "fast")
    with pytest.raises(SvrtError, match="SVRT_KERNELS"):
        K.upsample_modes(cpu, (4, 4))


def test_available_impls(monkeypatch):
    monkeypatch.delenv("SVRT_KERNELS", raising=False)
    info = K.available_impls()
    assert info["torch"] is True
    assert info["triton"] is HAVE_TRITON
    assert info["cuda"] is torch.cuda.is_available()
    assert info["auto_cpu"] == "torch"
    assert info["auto_cuda"] == ("triton" if HAVE_TRITON else "torch")


# ---------------------------------------------------------------------------------------------
# Triton under the interpreter
# ---------------------------------------------------------------------------------------------

@needs_triton
def test_interpreter_mode_follows_environment(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    from svrt.kernels import _triton_runtime as rt
    from svrt.kernels import triton_upsample as tu
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert isinstance(rt.jit(tu._upsample_fwd_kernel), JITFunction)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert isinstance(rt.jit(tu._upsample_fwd_kernel), InterpretedFunction)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert isinstance(rt.jit(tu._upsample_fwd_kernel), JITFunction)


_MODE_SCRIPT = r"""
import os, sys
first = sys.argv[1]
if first == "interpret":
    os.environ["TRITON_INTERPRET"] = "1"
else:
    os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
from svrt.kernels import reference as R, triton_filter as tf, triton_upsample as tu
from svrt.kernels._triton_runtime import aot_compile
os.environ["TRITON_INTERPRET"] = "1"              # interpreter, whichever mode triton was imported in
c, g = torch.randn(2, 2, 3, 5), torch.randn(2, 2, 13, 11)
assert (tu.upsample_forward(c, (13, 11)) - R.upsample_modes(c, (13, 11))).abs().max() < 1e-5
assert (tu.upsample_adjoint(g, (3, 5)) - R.upsample_modes_adjoint(g, (3, 5))).abs().max() < 1e-4
o = torch.randn(2, 9, 8)
assert (tf.fourier_filter_triton(o, 0.2, 1.8, 20.0, torch.ones(9, 8)) - R.fourier_filter(o, 0.2)).abs().max() < 1e-5
os.environ.pop("TRITON_INTERPRET")                # and the compiler, likewise
for fn, args in (tu.aot_cases()[:3] + tf.aot_cases()[:1]):
    aot_compile(fn, args, arch=90)
print("ok")
"""


@needs_triton
@pytest.mark.parametrize("first", ["interpret", "compiled"])
def test_kernels_work_in_either_import_order(first):
    """Triton imported in one mode, the kernels then run in the other (fresh process each)."""
    res = subprocess.run([sys.executable, "-c", _MODE_SCRIPT, first], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


UPSAMPLE_CASES = [
    # B, M, (Yg, Xg), (Y, X), layout
    (1, 2, (1, 1), (37, 29), "contiguous"),
    (3, 2, (3, 5), (37, 29), "contiguous"),
    (3, 1, (3, 5), (37, 29), "transposed"),
    (1, 2, (37, 29), (37, 29), "sliced"),
    (2, 1, (37, 6), (37, 29), "contiguous"),                   # per-pixel rows, coarse columns
    (2, 1, (4, 29), (37, 29), "transposed"),
    (2, 3, (4, 4), (16, 16), "expanded"),
]


def _coarse(b, m, grid, layout, gen):
    if layout == "transposed":
        return torch.randn(b, m, grid[1], grid[0], generator=gen).transpose(2, 3)
    if layout == "sliced":
        return torch.randn(b, m + 1, grid[0], 2 * grid[1], generator=gen)[:, 1:, :, ::2]
    return torch.randn(b, m, *grid, generator=gen)


def _fine_grad(b, m, size, layout, gen):
    if layout == "transposed":
        return torch.randn(b, m, size[1], size[0], generator=gen).transpose(2, 3)
    if layout == "sliced":
        return torch.randn(b, m, size[0] + 3, 2 * size[1], generator=gen)[:, :, 2:-1, 1::2]
    if layout == "expanded":                                   # stride 0, as autograd hands out for sum()
        return torch.randn(1, m, *size, generator=gen).expand(b, m, *size)
    return torch.randn(b, m, *size, generator=gen)


@pytest.mark.parametrize("b,m,grid,size,layout", UPSAMPLE_CASES)
def test_triton_upsample_fp32(interp, b, m, grid, size, layout):
    tu, _ = interp
    gen = torch.Generator().manual_seed(10)
    c = _coarse(b, m, grid, layout, gen)
    g = _fine_grad(b, m, size, layout, gen)
    assert layout == "contiguous" or not (c.is_contiguous() and g.is_contiguous())
    out = tu.upsample_forward(c, size)
    ref = R.upsample_modes(c, size)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert rel_max(out, ref) <= 1e-6
    adj = tu.upsample_adjoint(g, grid)
    ref_adj = R.upsample_modes_adjoint(g, grid)
    bound = R.upsample_modes_adjoint(g.abs(), grid)
    assert bool(((adj - ref_adj).abs() <= 2e-6 * bound + 1e-30).all())
    if grid == size:                                           # per-pixel grid: the identity
        assert torch.equal(out, c.contiguous())


@pytest.mark.parametrize("b,m,grid,size", [(1, 2, (1, 1), (37, 29)), (3, 2, (3, 5), (37, 29)),
                                           (1, 1, (37, 29), (37, 29)), (1, 1, (37, 3), (37, 29))])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_upsample_low_precision(interp, b, m, grid, size, dtype):
    tu, _ = interp
    gen = torch.Generator().manual_seed(11)
    c = torch.randn(b, m, *grid, generator=gen).to(dtype)
    g = torch.randn(b, m, *size, generator=gen).to(dtype)
    out = tu.upsample_forward(c, size)
    assert out.dtype == dtype
    tol = 1e-3 if dtype == torch.float16 else 8e-3           # bfloat16: 2^-8 half-ulp
    assert rel_max(out, R.upsample_modes(c.float(), size)) <= tol
    adj = tu.upsample_adjoint(g, grid)
    assert adj.dtype == dtype
    assert rel_max(adj, R.upsample_modes_adjoint(g.float(), grid)) <= tol


def test_triton_upsample_autograd_and_adjoint_identity(interp):
    tu, _ = interp
    gen = torch.Generator().manual_seed(12)
    c = torch.randn(3, 2, 3, 5, generator=gen)
    v = torch.randn(3, 2, 37, 29, generator=gen)
    # adjoint identity of the kernel pair in float32 (accumulated in float64 for the dot products)
    lhs = (tu.upsample_forward(c, (37, 29)).double() * v.double()).sum()
    rhs = (c.double() * tu.upsample_adjoint(v, (3, 5)).double()).sum()
    assert abs(float(lhs - rhs)) <= 1e-6 * float(c.abs().sum() * v.abs().max())
    # autograd, through the public dispatch, first and second order
    ct = c.clone().requires_grad_(True)
    cr = c.clone().requires_grad_(True)
    out_t = K.upsample_modes(ct, (37, 29), impl="triton")
    out_r = K.upsample_modes(cr, (37, 29), impl="torch")
    (gt,) = torch.autograd.grad(out_t, ct, v, create_graph=True)
    (gr,) = torch.autograd.grad(out_r, cr, v, create_graph=True)
    torch.testing.assert_close(gt, gr, rtol=2e-6, atol=2e-6 * float(gr.abs().max()))
    # d/dv <grad, u> = U u: the backward of the backward is the forward kernel again
    u = torch.randn_like(c)
    vt = v.clone().requires_grad_(True)
    (gv,) = torch.autograd.grad((K.upsample_modes_adjoint(vt, (3, 5), impl="triton") * u).sum(), vt)
    assert rel_max(gv, R.upsample_modes(u, (37, 29))) <= 1e-6
    assert isinstance(K.UpsampleModes.apply(c, (37, 29)), torch.Tensor)


FILTER_CASES = [
    # batch shape, (Y, X), apodised, layout
    ((1,), (37, 29), False, "contiguous"),
    ((3,), (37, 29), True, "contiguous"),
    ((2, 3), (16, 15), True, "transposed"),
    ((3,), (20, 24), False, "sliced"),
]


def _obj(batch, size, layout, gen):
    if layout == "transposed":
        return torch.randn(*batch, size[1], size[0], generator=gen).transpose(-1, -2)
    if layout == "sliced":
        return torch.randn(*batch, size[0], 2 * size[1], generator=gen)[..., ::2]
    return torch.randn(*batch, *size, generator=gen)


@pytest.mark.parametrize("batch,size,apodised,layout", FILTER_CASES)
def test_triton_fourier_filter_fp32(interp, batch, size, apodised, layout):
    _, tf = interp
    gen = torch.Generator().manual_seed(20)
    obj = _obj(batch, size, layout, gen)
    win = (torch.rand(*size, generator=gen) + 0.5) if apodised else None
    cut = 0.19
    out = tf.fourier_filter_triton(obj, cut, 1.8, 20.0, win)
    ref = R.fourier_filter(obj, cut, 1.8, 20.0, win)
    assert out.shape == obj.shape and out.dtype == torch.float32
    assert rel_max(out, ref) <= 1e-6
    # backward (obj and window) against autograd through the reference
    g = torch.randn(obj.shape, generator=gen)
    o_t, o_r = obj.clone().requires_grad_(True), obj.clone().requires_grad_(True)
    if win is None:
        (gt,) = torch.autograd.grad(K.fourier_filter(o_t, cut, impl="triton"), o_t, g)
        (gr,) = torch.autograd.grad(R.fourier_filter(o_r, cut), o_r, g)
        assert rel_max(gt, gr) <= 1e-6
    else:
        w_t, w_r = win.clone().requires_grad_(True), win.clone().requires_grad_(True)
        gt = torch.autograd.grad(K.fourier_filter(o_t, cut, 1.8, 20.0, w_t, impl="triton"), (o_t, w_t), g)
        gr = torch.autograd.grad(R.fourier_filter(o_r, cut, 1.8, 20.0, w_r), (o_r, w_r), g)
        assert rel_max(gt[0], gr[0]) <= 1e-6
        assert rel_max(gt[1], gr[1]) <= 1e-5                # a sum over the batch of the above


def test_triton_filter_matches_erf_filter_and_adjoint(interp):
    _, tf = interp
    for size in [(37, 29), (16, 16), (1, 1), (5, 2)]:
        y, x = size
        ones = torch.ones(2, y, x // 2 + 1, dtype=torch.complex64)
        h = tf.erf_filter_spectrum(ones, size, 0.23, 1.8, 20.0)
        torch.testing.assert_close(h.real, erf_filter(size, 0.23, 1.8, 20.0, real=True).expand(2, -1, -1),
                                   rtol=0, atol=1e-6)
        assert float(h.imag.abs().max()) == 0.0
    # in place / out= / view_as_real forms agree
    gen = torch.Generator().manual_seed(21)
    spec = torch.fft.rfft2(torch.randn(3, 12, 11, generator=gen))
    want = spec * erf_filter((12, 11), 0.3, real=True)
    out = torch.empty_like(spec)
    assert rel_max(torch.view_as_real(tf.erf_filter_spectrum(spec, (12, 11), 0.3, out=out)),
                   torch.view_as_real(want)) <= 1e-6
    got_r = tf.erf_filter_spectrum(torch.view_as_real(spec), (12, 11), 0.3)
    assert rel_max(got_r, torch.view_as_real(want)) <= 1e-6
    s2 = spec.clone()
    assert tf.erf_filter_spectrum(s2, (12, 11), 0.3, inplace=True) is s2
    assert rel_max(torch.view_as_real(s2), torch.view_as_real(want)) <= 1e-6
    with pytest.raises(SvrtError):
        tf.erf_filter_spectrum(spec, (12, 12), 0.3)          # X = 12 would have 7 columns
    # adjoint identity of the whole Triton operator (window, filter) in float32
    w = torch.rand(12, 11, generator=gen) + 0.5
    a = torch.randn(2, 12, 11, generator=gen)
    b = torch.randn(2, 12, 11, generator=gen)
    lhs = (tf.fourier_filter_triton(a, 0.3, 1.8, 20.0, w).double() * b.double()).sum()
    rhs = (a.double() * (w * tf.fourier_filter_triton(b, 0.3)).double()).sum()
    assert abs(float(lhs - rhs)) <= 1e-6 * float(a.abs().sum() * b.abs().max() * w.max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_fourier_filter_low_precision(interp, dtype):
    _, tf = interp
    gen = torch.Generator().manual_seed(22)
    obj = torch.randn(3, 21, 18, generator=gen).to(dtype)
    win = torch.rand(21, 18, generator=gen) + 0.5
    out = tf.fourier_filter_triton(obj, 0.2, 1.8, 20.0, win)
    assert out.dtype == dtype
    tol = 1e-3 if dtype == torch.float16 else 8e-3
    assert rel_max(out, R.fourier_filter(obj.float(), 0.2, 1.8, 20.0, win)) <= tol
    o = obj.clone().requires_grad_(True)
    g = torch.randn(obj.shape, generator=gen).to(dtype)
    (go,) = torch.autograd.grad(tf.fourier_filter_triton(o, 0.2, 1.8, 20.0, win), o, g)
    assert go.dtype == dtype
    assert rel_max(go, win * R.fourier_filter(g.float(), 0.2)) <= tol


def test_triton_rejects_float64(interp):
    with pytest.raises(SvrtError, match="float64"):
        K.upsample_modes(torch.zeros(1, 1, 2, 2, dtype=torch.float64), (4, 4), impl="triton")


@needs_triton
def test_triton_kernels_compile_for_cuda(monkeypatch):
    """Compile every kernel for sm_90 without a GPU (Triton's bundled ptxas): types, casts and
    constexpr specialisations that the interpreter does not check."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from svrt.kernels import triton_filter, triton_upsample
    from svrt.kernels._triton_runtime import aot_compile
    for fn, args in triton_upsample.aot_cases() + triton_filter.aot_cases():
        try:
            compiled = aot_compile(fn, args, arch=90)
        except (FileNotFoundError, RuntimeError) as exc:
            if "ptxas" in str(exc) and "not found" in str(exc).lower():
                pytest.skip(f"no ptxas to compile with: {exc}")
            raise
        assert ".entry" in compiled.asm["ptx"]


# ---------------------------------------------------------------------------------------------
# on a GPU: the compiled kernels against the reference
# ---------------------------------------------------------------------------------------------

@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,m,grid,size", [(2, 44, (1, 1), (37, 29)), (3, 44, (8, 8), (128, 96)),
                                           (1, 4, (129, 64), (129, 64)), (1, 4, (129, 7), (129, 64)),
                                           (12, 44, (16, 16), (256, 256))])
def test_gpu_upsample(monkeypatch, dtype, b, m, grid, size):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    gen = torch.Generator(device="cuda").manual_seed(30)
    c = torch.randn(b, m, grid[1], grid[0], device="cuda", generator=gen).transpose(2, 3).to(dtype)
    g = torch.randn(b, m, *size, device="cuda", generator=gen).to(dtype)
    ct = c.clone().requires_grad_(True)
    out = K.upsample_modes(ct, size, impl="triton")
    (adj,) = torch.autograd.grad(out, ct, g)
    assert out.dtype == dtype and adj.dtype == dtype
    ref = R.upsample_modes(c.float(), size)
    ref_adj = R.upsample_modes_adjoint(g.float(), grid)
    if dtype == torch.float32:
        assert rel_max(out, ref) <= 1e-6
        bound = R.upsample_modes_adjoint(g.float().abs(), grid)
        assert bool(((adj.float() - ref_adj).abs() <= 2e-6 * bound + 1e-30).all())
    else:
        assert rel_max(out, ref) <= 1e-3
        assert rel_max(adj, ref_adj) <= 1e-3


@gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_fourier_filter(monkeypatch, dtype):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    gen = torch.Generator(device="cuda").manual_seed(31)
    for batch, size in [((2,), (512, 512)), ((3, 2), (37, 29)), ((1,), (1, 1))]:
        obj = torch.randn(*batch, *size, device="cuda", generator=gen).to(dtype)
        win = torch.rand(*size, device="cuda", generator=gen) + 0.5
        o = obj.clone().requires_grad_(True)
        out = K.fourier_filter(o, 0.21, 1.8, 20.0, win, impl="triton")
        g = torch.randn(obj.shape, device="cuda", generator=gen).to(dtype)
        (go,) = torch.autograd.grad(out, o, g)
        tol = 1e-6 if dtype == torch.float32 else 1e-3
        assert rel_max(out, R.fourier_filter(obj.float(), 0.21, 1.8, 20.0, win)) <= max(tol, 2e-6)
        assert rel_max(go, win * R.fourier_filter(g.float(), 0.21)) <= max(tol, 2e-6)


# ---------------------------------------------------------------------------------------------
# benchmark entry point
# ---------------------------------------------------------------------------------------------

def test_benchmark_marks_itself_skipped_without_cuda():
    from svrt.benchmarks.kernels_bench import run_kernel_benchmark
    res = run_kernel_benchmark(device="cpu")
    assert res["status"] == "skipped" and res["results"] == [] and "CUDA" in res["reason"]
    if not torch.cuda.is_available():
        res = run_kernel_benchmark()
        assert res["status"] == "skipped" and "CUDA" in res["reason"]


@gpu
@needs_cuda
@needs_triton
def test_gpu_benchmark_smoke(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from svrt.benchmarks.kernels_bench import run_kernel_benchmark
    sizes = {"upsample": [{"B": 2, "M": 4, "grid": (8, 8), "size": (64, 64)}],
             "filter": [{"K": 2, "size": (64, 64)}]}
    res = run_kernel_benchmark("cuda", sizes=sizes, repeats=3, warmup=1)
    assert res["status"] == "ok" and res["peak_copy_GBps"] > 0
    assert all(r["ms"] > 0 and r["bytes"] > 0 for r in res["results"])
    assert "upsample_forward_backward|B2 M4 8x8->64x64|float32" in res["speedups"]
