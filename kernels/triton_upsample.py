"""Triton kernels: bilinear upsampling of the mode grid and its adjoint (gather form, no atomics).

Contract (``docs/ARCHITECTURE.md``): ``F.interpolate(coarse, size=(Y, X), mode="bilinear",
align_corners=False)``. For a fine row ``y`` the source coordinate is
``sy = max(s * (y + 0.5) - 0.5, 0)`` with ``s = Yg / Y`` rounded to float32 (as PyTorch does),
``y0 = min(int(sy), Yg - 1)``, ``y1 = y0 + (y0 < Yg - 1)``, weights ``1 - (sy - y0)`` and
``sy - y0``; columns alike, and the value is
``ly0 * (lx0 * c[y0, x0] + lx1 * c[y0, x1]) + ly1 * (lx0 * c[y1, x0] + lx1 * c[y1, x1])``,
the arithmetic order of PyTorch's kernels. Arithmetic is float32; storage float32, float16 or
bfloat16.

Adjoint. The interpolation is separable, ``U = Wy (x) Wx`` with ``Wy[y, i]`` the weight of coarse row
``i`` in fine row ``y``, so ``U^T g = Wy^T (g Wx)`` in two gather passes:

* pass X: ``t[p, y, j] = sum_x Wx[x, j] g[p, y, x]`` -> float32 scratch ``[P, Y, Xg]``;
* pass Y: ``out[p, i, j] = sum_y Wy[y, i] t[p, y, j]``.

Each output element loops over the fine indices that can touch its node. ``x`` touches node ``j``
iff ``x0(x)`` is ``j - 1`` or ``j``; ``x0`` is non-decreasing in ``x`` with
``x0(x) >= k  <=>  x >= (k + 0.5) / s - 0.5``, so the footprint of ``j`` lies in
``[floor((j - 0.5) / s - 0.5) - 1, floor((j + 1.5) / s - 0.5) + 1]`` (one index of margin each side
against rounding), at most ``ceil(2 / s) + 4`` indices. Inside that range the weight is recomputed
with exactly the forward formula (``lx0`` if ``x0 == j``, plus ``lx1`` if ``x1 == j``), so indices
of the margin contribute exact zeros and the result is the exact transpose of the forward, whatever
the rounding of the bounds. Every fine value is read about twice per pass (by the two nodes it sits
between), mostly from cache; the scratch is ``Xg / X`` of the fine array. No atomics, deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from svrt.errors import SvrtError
from svrt.kernels._triton_runtime import LAUNCH_OPTS, MAX_GRID_Y, check_device, check_dtype, interpret_mode, jit
from svrt.kernels.reference import _check_size

__all__ = ["upsample_forward", "upsample_adjoint", "UpsampleModes", "UpsampleModesAdjoint"]


# --------------------------------------------------------------------------------------------
# kernels (plain functions; ``jit`` decorates them for the current interpreter mode)
# --------------------------------------------------------------------------------------------

def _upsample_fwd_kernel(src_ptr, dst_ptr, M, IN_H, IN_W, OUT_H, OUT_W,
                         s_b, s_m, s_h, s_w, scale_h, scale_w, plane0,
                         BLOCK: tl.constexpr):
    # one program: BLOCK fine pixels of one (b, m) plane; the source is strided, the output contiguous
    pid = tl.program_id(0)
    p = tl.program_id(1).to(tl.int64) + plane0
    b = p // M
    m = p - b * M
    src = src_ptr + b * s_b + m * s_m
    n_out = OUT_H * OUT_W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_out
    oy = offs // OUT_W
    ox = offs - oy * OUT_W

    sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
    y0 = tl.minimum(sy.to(tl.int32), IN_H - 1)       # sy >= 0: truncation is floor
    y1 = y0 + tl.where(y0 < IN_H - 1, 1, 0)
    ly1 = sy - y0.to(tl.float32)
    ly0 = 1.0 - ly1
    sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
    x0 = tl.minimum(sx.to(tl.int32), IN_W - 1)
    x1 = x0 + tl.where(x0 < IN_W - 1, 1, 0)
    lx1 = sx - x0.to(tl.float32)
    lx0 = 1.0 - lx1

    r0 = y0.to(tl.int64) * s_h
    r1 = y1.to(tl.int64) * s_h
    c0 = x0.to(tl.int64) * s_w
    c1 = x1.to(tl.int64) * s_w
    v00 = tl.load(src + r0 + c0, mask=mask, other=0.0).to(tl.float32)
    v01 = tl.load(src + r0 + c1, mask=mask, other=0.0).to(tl.float32)
    v10 = tl.load(src + r1 + c0, mask=mask, other=0.0).to(tl.float32)
    v11 = tl.load(src + r1 + c1, mask=mask, other=0.0).to(tl.float32)
    val = ly0 * (lx0 * v00 + lx1 * v01) + ly1 * (lx0 * v10 + lx1 * v11)
    tl.store(dst_ptr + p * n_out + offs, val.to(dst_ptr.dtype.element_ty), mask=mask)


def _upsample_adj_x_kernel(g_ptr, t_ptr, M, IN_W, OUT_H, OUT_W,
                           g_sb, g_sm, g_sh, g_sw, scale_w, inv_scale_w, n_cand, plane0,
                           BLOCK: tl.constexpr):
    # t[p, y, j] = sum_x Wx[x, j] * g[p, y, x]; g strided, t contiguous float32 [P, OUT_H, IN_W]
    pid = tl.program_id(0)
    p = tl.program_id(1).to(tl.int64) + plane0
    b = p // M
    m = p - b * M
    n_t = OUT_H * IN_W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_t
    oy = offs // IN_W
    j = offs - oy * IN_W
    jf = j.to(tl.float32)
    lo = tl.floor((jf - 0.5) * inv_scale_w - 0.5).to(tl.int32) - 1
    hi = tl.floor((jf + 1.5) * inv_scale_w - 0.5).to(tl.int32) + 1
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(hi, OUT_W - 1)
    row = g_ptr + b * g_sb + m * g_sm + oy.to(tl.int64) * g_sh
    acc = tl.full([BLOCK], 0.0, tl.float32)   # not tl.zeros: see _triton_runtime
    for t in range(0, n_cand):
        ox = lo + t
        valid = mask & (ox <= hi)
        sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
        x0 = tl.minimum(sx.to(tl.int32), IN_W - 1)
        x1 = x0 + tl.where(x0 < IN_W - 1, 1, 0)
        lx1 = sx - x0.to(tl.float32)
        lx0 = 1.0 - lx1
        w = tl.where(x0 == j, lx0, 0.0) + tl.where(x1 == j, lx1, 0.0)
        v = tl.load(row + ox.to(tl.int64) * g_sw, mask=valid, other=0.0).to(tl.float32)
        acc += tl.where(valid, w * v, 0.0)
    tl.store(t_ptr + p * n_t + offs, acc, mask=mask)


def _upsample_adj_y_kernel(t_ptr, out_ptr, IN_H, IN_W, OUT_H,
                           scale_h, inv_scale_h, n_cand, plane0,
                           BLOCK: tl.constexpr):
    # out[p, i, j] = sum_y Wy[y, i] * t[p, y, j]; t contiguous float32 [P, OUT_H, IN_W]
    pid = tl.program_id(0)
    p = tl.program_id(1).to(tl.int64) + plane0
    n_c = IN_H * IN_W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_c
    i = offs // IN_W
    j = offs - i * IN_W
    if_ = i.to(tl.float32)
    lo = tl.floor((if_ - 0.5) * inv_scale_h - 0.5).to(tl.int32) - 1
    hi = tl.floor((if_ + 1.5) * inv_scale_h - 0.5).to(tl.int32) + 1
    lo = tl.maximum(lo, 0)
    hi = tl.minimum(hi, OUT_H - 1)
    col = t_ptr + p * (OUT_H * IN_W) + j
    acc = tl.full([BLOCK], 0.0, tl.float32)   # not tl.zeros: see _triton_runtime
    for t in range(0, n_cand):
        oy = lo + t
        valid = mask & (oy <= hi)
        sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
        y0 = tl.minimum(sy.to(tl.int32), IN_H - 1)
        y1 = y0 + tl.where(y0 < IN_H - 1, 1, 0)
        ly1 = sy - y0.to(tl.float32)
        ly0 = 1.0 - ly1
        w = tl.where(y0 == i, ly0, 0.0) + tl.where(y1 == i, ly1, 0.0)
        v = tl.load(col + oy.to(tl.int64) * IN_W, mask=valid, other=0.0)
        acc += tl.where(valid, w * v, 0.0)
    tl.store(out_ptr + p * n_c + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------

def _scale(n_in: int, n_out: int) -> float:
    """PyTorch's ``area_pixel_compute_scale`` for align_corners=False without a scale factor:
    ``float(n_in) / n_out`` in float32 (exactly representable, so it reaches the kernel unchanged)."""
    return float(np.float32(n_in) / np.float32(n_out))


def _n_candidates(n_in: int, n_out: int) -> int:
    """Upper bound on the fine indices touching one coarse node (see the module docstring)."""
    return int(min(n_out, math.ceil(2.0 * n_out / n_in) + 4))


def _block(n: int, compiled: int) -> int:
    # the interpreter runs programs one after another with NumPy inside each: few, large blocks
    if interpret_mode():
        return int(min(triton.next_power_of_2(max(n, 16)), 8192))
    return compiled


def _planes(n_planes: int):
    for p0 in range(0, n_planes, MAX_GRID_Y):
        yield p0, min(MAX_GRID_Y, n_planes - p0)


def _new_output(t: torch.Tensor, name: str, what: str, size, out_dtype) -> torch.Tensor:
    """The output ``[B, M, *size]`` of a map of the 4-D ``t`` (``name`` with its axes), after checking
    ``t`` (4-D, a supported dtype, on the GPU) and ``size``."""
    if t.dim() != 4:
        head, axes = name.rsplit(" [", 1)
        raise SvrtError(f"{head} must be a 4-D tensor [{axes}, got shape {tuple(t.shape)}.")
    check_dtype(t, what)
    check_device(t)
    return torch.empty((*t.shape[:2], *_check_size(size)), dtype=out_dtype or t.dtype, device=t.device)


def upsample_forward(coarse: torch.Tensor, size, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Triton bilinear upsampling ``[B, M, Yg, Xg] -> [B, M, Y, X]`` (any strides; output contiguous)."""
    out = _new_output(coarse, "coarse modes [B, M, Yg, Xg]", "mode grids", size, out_dtype)
    b, m, ih, iw = coarse.shape
    oh, ow = out.shape[-2:]
    if out.numel() == 0:
        return out
    if (ih, iw) == (oh, ow):
        # per-pixel grid: the interpolation is the identity (weights 1 and 0); PyTorch's CUDA
        # kernel takes the same shortcut
        return out.copy_(coarse)
    block = _block(oh * ow, 512)
    kern = jit(_upsample_fwd_kernel)
    s_b, s_m, s_h, s_w = coarse.stride()
    for p0, n in _planes(b * m):
        grid = (triton.cdiv(oh * ow, block), n)
        kern[grid](coarse, out, m, ih, iw, oh, ow, s_b, s_m, s_h, s_w,
                   _scale(ih, oh), _scale(iw, ow), p0, BLOCK=block, num_warps=4, **LAUNCH_OPTS)
    return out


def upsample_adjoint(grad_fine: torch.Tensor, coarse_size, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Triton adjoint ``[B, M, Y, X] -> [B, M, Yg, Xg]`` of :func:`upsample_forward` (gather, two passes)."""
    out = _new_output(grad_fine, "the fine gradient [B, M, Y, X]", "gradients", coarse_size, out_dtype)
    b, m, oh, ow = grad_fine.shape
    ih, iw = out.shape[-2:]
    if out.numel() == 0:
        return out
    if grad_fine.numel() == 0:
        return out.zero_()
    if (ih, iw) == (oh, ow):
        return out.copy_(grad_fine)          # the transpose of the identity
    scratch = torch.empty((b * m, oh, iw), dtype=torch.float32, device=grad_fine.device)
    kx = jit(_upsample_adj_x_kernel)
    ky = jit(_upsample_adj_y_kernel)
    bx = _block(oh * iw, 256)
    by = _block(ih * iw, 256)
    g_sb, g_sm, g_sh, g_sw = grad_fine.stride()
    ncx, ncy = _n_candidates(iw, ow), _n_candidates(ih, oh)
    for p0, n in _planes(b * m):
        kx[(triton.cdiv(oh * iw, bx), n)](
            grad_fine, scratch, m, iw, oh, ow, g_sb, g_sm, g_sh, g_sw,
            _scale(iw, ow), ow / iw, ncx, p0, BLOCK=bx, num_warps=4, **LAUNCH_OPTS)
        ky[(triton.cdiv(ih * iw, by), n)](
            scratch, out, ih, iw, oh, _scale(ih, oh), oh / ih, ncy, p0,
            BLOCK=by, num_warps=4, **LAUNCH_OPTS)
    return out


# --------------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------------

class UpsampleModes(torch.autograd.Function):
    """``UpsampleModes.apply(coarse [B, M, Yg, Xg], (Y, X)) -> [B, M, Y, X]`` with Triton forward and
    backward. Twice differentiable: the backward is :class:`UpsampleModesAdjoint`, whose backward is
    this function again."""

    @staticmethod
    def forward(ctx, coarse, size):
        ctx.coarse_size = tuple(coarse.shape[-2:])
        ctx.coarse_dtype = coarse.dtype
        return upsample_forward(coarse, size)

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return None, None
        g = UpsampleModesAdjoint.apply(grad_out, ctx.coarse_size)
        return g.to(ctx.coarse_dtype), None


class UpsampleModesAdjoint(torch.autograd.Function):
    """``UpsampleModesAdjoint.apply(grad_fine [B, M, Y, X], (Yg, Xg)) -> [B, M, Yg, Xg]``."""

    @staticmethod
    def forward(ctx, grad_fine, coarse_size):
        ctx.fine_size = tuple(grad_fine.shape[-2:])
        ctx.fine_dtype = grad_fine.dtype
        return upsample_adjoint(grad_fine, coarse_size)

    @staticmethod
    def backward(ctx, grad_coarse):
        if not ctx.needs_input_grad[0]:
            return None, None
        return UpsampleModes.apply(grad_coarse, ctx.fine_size).to(ctx.fine_dtype), None


def aot_cases() -> list:
    """(kernel, arguments) pairs covering the launch signatures: float32 generic and float16 with
    the size-1 / stride-1 specialisations (grid 1x1, one mode)."""
    cases = []
    for dt, one in (("fp32", False), ("fp16", True), ("bf16", False)):
        d = 1 if one else 7
        cases.append((_upsample_fwd_kernel, dict(
            src_ptr=f"*{dt}", dst_ptr=f"*{dt}", M=d, IN_H=d, IN_W=d, OUT_H=37, OUT_W=29,
            s_b=d * 9, s_m=9, s_h=3, s_w=1, scale_h=0.25, scale_w=0.25, plane0=0,
            BLOCK=("constexpr", 512))))
        cases.append((_upsample_adj_x_kernel, dict(
            g_ptr=f"*{dt}", t_ptr="*fp32", M=d, IN_W=d, OUT_H=37, OUT_W=29,
            g_sb=5, g_sm=7, g_sh=29, g_sw=1, scale_w=0.25, inv_scale_w=4.0, n_cand=12, plane0=0,
            BLOCK=("constexpr", 256))))
        cases.append((_upsample_adj_y_kernel, dict(
            t_ptr="*fp32", out_ptr=f"*{dt}", IN_H=d, IN_W=d, OUT_H=37,
            scale_h=0.25, inv_scale_h=4.0, n_cand=12, plane0=0, BLOCK=("constexpr", 256))))
    return cases
