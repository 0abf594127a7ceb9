"""Shared plumbing of the Triton kernels: mode-aware JIT cache, device checks, launch options.

Imports :mod:`triton`; only the Triton modules import this one (the CPU path never does).

Why kernels are decorated lazily: ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates,
choosing between a compiled ``JITFunction`` and the CPU ``InterpretedFunction``. Decorating at module
import would freeze that choice at whatever the environment was then. :func:`jit` instead decorates
the plain Python kernel on first use and caches one object per (kernel, mode), with the mode read
from the environment at each call, so setting or clearing ``TRITON_INTERPRET`` at any time (tests,
``monkeypatch``) switches between interpreter and GPU without re-importing anything.

The same holds for Triton's own library only in part: the ``@triton.jit`` helpers of
``triton.language.standard`` (``tl.zeros``, ``tl.sum``, ``tl.cdiv``, ``tl.max``, ...) are decorated
once, when :mod:`triton` is first imported, so they work only in the mode of that moment. The kernels
here therefore use ``triton.language`` builtins only (``tl.full`` rather than ``tl.zeros``, no
reductions), and ``tests/test_kernels.py`` runs them in both import orders.
"""

from __future__ import annotations

import torch
import triton

from svrt.errors import SvrtError

__all__ = ["jit", "interpret_mode", "check_device", "LAUNCH_OPTS", "MAX_GRID_Y", "SUPPORTED_DTYPES"]

_JIT_CACHE: dict[tuple[int, bool], object] = {}

# Storage dtypes the kernels accept; arithmetic is always float32.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# CUDA limits grid dimensions 1 and 2 to 65535 blocks; planes beyond that are launched in chunks.
MAX_GRID_Y = 65535

# Fused multiply-add on, as nvcc's default (--fmad=true) with which PyTorch's own CUDA kernels are
# built; passing it explicitly also silences Triton 3.9's TRITON_DEFAULT_FP_FUSION warning. The
# interpreter ignores launch options it does not know.
LAUNCH_OPTS = {"enable_fp_fusion": True}


def interpret_mode() -> bool:
    """True when ``TRITON_INTERPRET`` is set (read now, not at import)."""
    return bool(triton.knobs.runtime.interpret)


def jit(fn):
    """The ``triton.jit`` of the plain function ``fn`` for the current interpreter mode (cached)."""
    key = (id(fn), interpret_mode())
    kern = _JIT_CACHE.get(key)
    if kern is None:
        kern = triton.jit(fn)
        _JIT_CACHE[key] = kern
    return kern


def check_device(*tensors: torch.Tensor, what: str = "the Triton kernels") -> None:
    """Raise :class:`SvrtError` unless the tensors can run under Triton here (CUDA, or the interpreter)."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise SvrtError(f"{what} need all tensors on one device, got {sorted(str(d) for d in devices)}.")
    if interpret_mode():
        return
    for d in devices:
        if d.type != "cuda":
            raise SvrtError(f"{what} run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), "
                            f"got a tensor on {d}; use impl='torch' on this device.")


def check_dtype(t: torch.Tensor, what: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise SvrtError(f"the Triton kernels take float32, float16 or bfloat16 {what}, got {t.dtype}; "
                        "use impl='torch' for this dtype.")


def aot_compile(fn, args: dict, arch: int = 90):
    """Compile the plain kernel ``fn`` for CUDA ``sm_<arch>`` without a GPU (to PTX and cubin with the
    ptxas Triton ships), as the JIT would for a launch with ``args``.

    ``args`` maps every parameter to: a pointer type string (``"*fp32"``, ``"*fp16"``, ...), an int or a
    float (typed, and ints equal to 1 made constexpr, as the launcher specialises them), or
    ``("constexpr", value)``. The compile-time check the interpreter cannot do (types, casts,
    constexpr arithmetic); returns Triton's compiled kernel.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    signature, constexprs = {}, {}
    for name, v in args.items():
        if isinstance(v, tuple) and v and v[0] == "constexpr":
            signature[name], constexprs[name] = "constexpr", v[1]
        elif isinstance(v, str):
            signature[name] = v
        elif isinstance(v, bool):
            signature[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                signature[name], constexprs[name] = "constexpr", 1
            else:
                signature[name] = "i32" if -2**31 <= v < 2**31 else "i64"
        elif isinstance(v, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"aot_compile: cannot type argument {name}={v!r}")
    src = ASTSource(fn=JITFunction(fn), signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": 4, **LAUNCH_OPTS})
