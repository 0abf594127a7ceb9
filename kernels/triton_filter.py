"""Triton kernels of the Fourier filter: the erf filter of Eq. 16 fused into the spectrum multiply,
and the apodisation window.

``fourier_filter(obj) = irfft2(H * rfft2(w * obj), s=(Y, X))``. The FFTs stay PyTorch's (cuFFT);
two kernels replace the elementwise work around them:

* :func:`erf_filter_spectrum` -- one pass over the ``rfft2`` spectrum (``view_as_real`` float tensor
  ``[..., Y, X//2+1, 2]``): each program evaluates H at its block of frequencies from the (ky, kx)
  indices and multiplies every plane of its share of the batch, in place or out of place. No H
  array is built or read.
* :func:`apodize` -- ``w * obj`` written straight into the float32 buffer the FFT reads (cast and
  multiply in one pass; the object may be strided, e.g. a slice).

H on the fly. The formula is the one of :func:`svrt.optics.filters.erf_filter_profile`
(``0.5 * (erf(n (nu + w/2)) - erf(n (nu - w/2)))``, ``nu = |f| / cutoff``), which stays the
canonical definition; the kernel evaluates the same expression on the same frequency grid
(:func:`torch.fft.fftfreq` rows: ``k / Y`` for ``k <= (Y - 1) // 2`` else ``(k - Y) / Y``;
:func:`torch.fft.rfftfreq` columns ``k / X``) and the tests hold it to ``erf_filter`` by filtering a
spectrum of ones.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from svrt.errors import SvrtError
from svrt.kernels._triton_runtime import LAUNCH_OPTS, MAX_GRID_Y, check_device, check_dtype, interpret_mode, jit

__all__ = ["erf_filter_spectrum", "apodize", "fourier_filter_triton", "FourierFilter"]


def _erf_filter_kernel(spec_ptr, out_ptr, N, NY, NXH, planes_per_prog,
                       inv_y, inv_x, inv_cutoff, sharpness, half_width,
                       BLOCK: tl.constexpr):
    # spec, out: contiguous float32 [N, NY, NXH, 2] (complex interleaved); H computed once per
    # program and applied to planes [pid1 * planes_per_prog, ...) of the batch
    pid = tl.program_id(0)
    n_pos = NY * NXH
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_pos
    ky = offs // NXH
    kx = offs - ky * NXH
    ky = tl.where(ky <= (NY - 1) // 2, ky, ky - NY)          # fftfreq layout
    fy = ky.to(tl.float32) * inv_y
    fx = kx.to(tl.float32) * inv_x                              # rfftfreq layout
    nu = tl.sqrt(fy * fy + fx * fx) * inv_cutoff
    h = 0.5 * (tl.math.erf(sharpness * (nu + half_width)) - tl.math.erf(sharpness * (nu - half_width)))

    ri = tl.arange(0, 2)
    o2 = offs[:, None] * 2 + ri[None, :]
    m2 = mask[:, None] & (ri[None, :] < 2)
    h2 = h[:, None]
    plane = n_pos * 2
    first = tl.program_id(1).to(tl.int64) * planes_per_prog
    for q in range(0, tl.minimum(N - first, planes_per_prog)):
        base = (first + q) * plane
        v = tl.load(spec_ptr + base + o2, mask=m2, other=0.0)
        tl.store(out_ptr + base + o2, v * h2, mask=m2)


def _apodize_kernel(x_ptr, w_ptr, out_ptr, NY, NX, s_n, s_y, s_x, n0,
                    BLOCK: tl.constexpr):
    # out[n, y, x] = x[n, y, x] * w[y, x]; x strided (any dtype), w and out contiguous float32
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64) + n0
    n_pix = NY * NX
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_pix
    yy = offs // NX
    xx = offs - yy * NX
    v = tl.load(x_ptr + n * s_n + yy.to(tl.int64) * s_y + xx.to(tl.int64) * s_x,
                mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    tl.store(out_ptr + n * n_pix + offs, v * w, mask=mask)


def _check_params(cutoff, width, sharpness) -> tuple[float, float, float]:
    cutoff, width, sharpness = float(cutoff), float(width), float(sharpness)
    if not cutoff > 0:
        raise SvrtError(f"the cutoff must be a positive number of cycles per pixel, got {cutoff!r}.")
    return cutoff, width, sharpness


def erf_filter_spectrum(spec: torch.Tensor, shape, cutoff_cycles_per_pixel: float, width: float = 1.8,
                        sharpness: float = 20.0, *, out: torch.Tensor | None = None,
                        inplace: bool = False) -> torch.Tensor:
    """Multiply an ``rfft2`` spectrum by the erf filter H of Eq. 16, computing H on the fly.

    ``spec`` is complex64 ``[..., Y, X//2+1]`` or its ``view_as_real`` float32 ``[..., Y, X//2+1, 2]``;
    ``shape`` = (Y, X) of the image (X is not recoverable from ``X//2+1``). Returns a tensor of the
    same kind (complex or real view); ``inplace=True`` writes into ``spec`` (copied back if it is not
    contiguous), ``out`` names a destination of the same shape.
    """
    check_device(spec, out)
    is_complex = spec.is_complex()
    if is_complex:
        if spec.dtype != torch.complex64:
            raise SvrtError(f"the Triton filter takes complex64 spectra, got {spec.dtype}; use impl='torch'.")
        real = torch.view_as_real(spec) if spec.is_contiguous() else torch.view_as_real(spec.contiguous())
    else:
        if spec.dtype != torch.float32 or spec.dim() < 3 or spec.shape[-1] != 2:
            raise SvrtError("the Triton filter takes a float32 view_as_real spectrum [..., Y, X//2+1, 2], "
                            f"got {spec.dtype} {tuple(spec.shape)}.")
        real = spec
    y, x = (int(s) for s in shape)
    if tuple(real.shape[-3:-1]) != (y, x // 2 + 1):
        raise SvrtError(f"a spectrum of an image {(y, x)} has shape [..., {y}, {x // 2 + 1}], "
                        f"got {tuple(real.shape[:-1])}.")
    cutoff, width, sharpness = _check_params(cutoff_cycles_per_pixel, width, sharpness)

    src = real.contiguous()
    if inplace:
        dst = src
    elif out is not None:
        dst_view = torch.view_as_real(out) if out.is_complex() else out
        if tuple(dst_view.shape) != tuple(real.shape) or dst_view.dtype != torch.float32:
            raise SvrtError(f"out must be a float32 {tuple(real.shape)} tensor (or its complex view), "
                            f"got {dst_view.dtype} {tuple(dst_view.shape)}.")
        dst = dst_view if dst_view.is_contiguous() else torch.empty_like(src)
    else:
        dst = torch.empty_like(src)

    nxh = x // 2 + 1
    n_planes = max(1, src.numel() // max(1, y * nxh * 2))
    if src.numel():
        if interpret_mode():
            block = int(min(triton.next_power_of_2(y * nxh), 8192))
        else:
            block = 512
        n_pos_blocks = triton.cdiv(y * nxh, block)
        # a few thousand programs: H is recomputed once per program, amortised over its planes
        planes_per_prog = max(1, min(n_planes, (n_planes * n_pos_blocks) // 4096))
        if interpret_mode():
            planes_per_prog = n_planes
        grid1 = triton.cdiv(n_planes, planes_per_prog)
        if grid1 > MAX_GRID_Y:
            planes_per_prog = triton.cdiv(n_planes, MAX_GRID_Y)
            grid1 = triton.cdiv(n_planes, planes_per_prog)
        jit(_erf_filter_kernel)[(n_pos_blocks, grid1)](
            src, dst, n_planes, y, nxh, planes_per_prog,
            1.0 / y, 1.0 / x, 1.0 / cutoff, sharpness, 0.5 * width,
            BLOCK=block, num_warps=4, **LAUNCH_OPTS)

    if inplace and src is not real:
        real.copy_(src)
        dst = real
    if out is not None and not inplace:
        if dst is not dst_view:
            dst_view.copy_(dst)
        dst = dst_view
    if inplace:
        return spec
    if out is not None:
        return out
    return torch.view_as_complex(dst) if is_complex else dst


def apodize(obj: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``window * obj`` as a new contiguous float32 tensor of ``obj``'s shape ``[..., Y, X]``."""
    check_device(obj, window)
    check_dtype(obj, "objects")
    y, x = obj.shape[-2:]
    if tuple(window.shape) != (y, x):
        raise SvrtError(f"the apodisation window must have the object's image shape {(y, x)}, "
                        f"got {tuple(window.shape)}.")
    x3 = obj.reshape(-1, y, x)          # a view when the leading dimensions allow it
    w = window.to(dtype=torch.float32).contiguous()
    out = torch.empty(x3.shape, dtype=torch.float32, device=obj.device)
    if out.numel():
        block = int(min(triton.next_power_of_2(y * x), 8192)) if interpret_mode() else 1024
        kern = jit(_apodize_kernel)
        for n0 in range(0, x3.shape[0], MAX_GRID_Y):
            n = min(MAX_GRID_Y, x3.shape[0] - n0)
            kern[(triton.cdiv(y * x, block), n)](x3, w, out, y, x, *x3.stride(), n0,
                                                 BLOCK=block, num_warps=4, **LAUNCH_OPTS)
    return out.reshape(obj.shape)


def _filter_fp32(x: torch.Tensor, cutoff, width, sharpness) -> torch.Tensor:
    """``irfft2(H * rfft2(x))`` of a float32 ``x`` with the fused Triton multiply."""
    y, xx = x.shape[-2:]
    spec = torch.fft.rfft2(x)
    erf_filter_spectrum(spec, (y, xx), cutoff, width, sharpness, inplace=True)
    return torch.fft.irfft2(spec, s=(y, xx))


class FourierFilter(torch.autograd.Function):
    """``FourierFilter.apply(obj [..., Y, X], cutoff, width, sharpness, apodization=None)``.

    Forward ``irfft2(H * rfft2(w * obj))`` with the Triton kernels; float32 arithmetic, output in
    ``obj``'s dtype (float32, float16, bfloat16). The backward applies the same filter to the
    upstream gradient (H is real and even, so the operator is self-adjoint) and multiplies by the
    window; the window's own gradient is ``sum over leading dims of obj * filtered(grad)``.
    Differentiable again when the backward runs with ``create_graph=True``.
    """

    @staticmethod
    def forward(ctx, obj, cutoff, width=1.8, sharpness=20.0, apodization=None):
        check_dtype(obj, "objects")
        check_device(obj, apodization)
        if obj.dim() < 2:
            raise SvrtError(f"the object must be a tensor [..., Y, X], got shape {tuple(obj.shape)}.")
        cutoff, width, sharpness = _check_params(cutoff, width, sharpness)
        ctx.params = (cutoff, width, sharpness)
        if apodization is not None:
            x = apodize(obj, apodization)
            ctx.save_for_backward(obj if ctx.needs_input_grad[4] else None, apodization)
        else:
            x = obj.to(torch.float32)
            ctx.save_for_backward(None, None)
        return _filter_fp32(x, cutoff, width, sharpness).to(obj.dtype)

    @staticmethod
    def backward(ctx, grad):
        obj, window = ctx.saved_tensors
        cutoff, width, sharpness = ctx.params
        need_obj = ctx.needs_input_grad[0]
        need_win = len(ctx.needs_input_grad) > 4 and ctx.needs_input_grad[4]
        if not (need_obj or need_win):
            return None, None, None, None, None
        if torch.is_grad_enabled():       # create_graph: keep the result differentiable
            fg = FourierFilter.apply(grad, cutoff, width, sharpness)
        else:
            fg = _filter_fp32(grad.to(torch.float32), cutoff, width, sharpness)
        grad_obj = grad_win = None
        if need_obj:
            if window is None:
                grad_obj = fg.to(grad.dtype)
            elif torch.is_grad_enabled():
                grad_obj = (fg * window).to(grad.dtype)
            else:
                grad_obj = apodize(fg, window).to(grad.dtype)
        if need_win:
            prod = obj.to(fg.dtype) * fg
            grad_win = prod.reshape(-1, *prod.shape[-2:]).sum(0).to(window.dtype)
        return grad_obj, None, None, None, grad_win


def fourier_filter_triton(obj: torch.Tensor, cutoff_cycles_per_pixel: float, width: float = 1.8,
                          sharpness: float = 20.0, apodization: torch.Tensor | None = None) -> torch.Tensor:
    """Autograd-aware Triton Fourier filter (see :class:`FourierFilter`)."""
    if apodization is None:
        return FourierFilter.apply(obj, cutoff_cycles_per_pixel, width, sharpness)
    return FourierFilter.apply(obj, cutoff_cycles_per_pixel, width, sharpness, apodization)


def aot_cases() -> list:
    """(kernel, arguments) pairs covering the launch signatures (generic, and size-1 specialised)."""
    cases = []
    for d in (1, 7):
        cases.append((_erf_filter_kernel, dict(
            spec_ptr="*fp32", out_ptr="*fp32", N=d, NY=d, NXH=d, planes_per_prog=d,
            inv_y=0.1, inv_x=0.1, inv_cutoff=5.0, sharpness=20.0, half_width=0.9,
            BLOCK=("constexpr", 512))))
    for dt in ("fp32", "fp16"):
        cases.append((_apodize_kernel, dict(
            x_ptr=f"*{dt}", w_ptr="*fp32", out_ptr="*fp32", NY=37, NX=29, s_n=1073, s_y=29, s_x=1,
            n0=0, BLOCK=("constexpr", 1024))))
    return cases
