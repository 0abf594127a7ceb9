"""Custom kernels of the SV-MOMFBD solver, with PyTorch references (``svrt.kernels``).

Public API::

    upsample_modes(coarse, size, impl="auto")            # [B, M, Yg, Xg] -> [B, M, Y, X]
    upsample_modes_adjoint(grad_fine, coarse_size, impl="auto")
    fourier_filter(obj, cutoff, width=1.8, sharpness=20.0, apodization=None, impl="auto")
    available_impls() -> dict

``impl``:

* ``"torch"`` -- :mod:`svrt.kernels.reference` (any device, any float dtype, autograd by PyTorch);
* ``"triton"`` -- the Triton kernels (:mod:`~svrt.kernels.triton_upsample`,
  :mod:`~svrt.kernels.triton_filter`) under ``torch.autograd.Function`` wrappers (``UpsampleModes``,
  ``FourierFilter``); CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (the interpreter the
  tests use); float32/float16/bfloat16 with float32 arithmetic. Anything else raises
  :class:`svrt.errors.SvrtError`;
* ``"auto"`` -- Triton for CUDA tensors of a supported dtype when Triton imports, the reference
  otherwise. The choice is static (no timing at run time): the measured comparison lives in
  ``benchmarks/kernels_bench.py``; set ``SVRT_KERNELS=torch`` where it says the reference wins.

``SVRT_KERNELS=torch|triton|auto`` (read at each call) replaces the default ``"auto"`` everywhere,
i.e. it forces the choice of every call that does not name an ``impl`` itself; an explicit
``impl="torch"``/``"triton"`` argument still wins.

Nothing here imports Triton at module import time; the Triton modules are imported on first use.
"""

from __future__ import annotations

import os

import torch

from svrt.errors import SvrtError
from svrt.kernels import reference

# UpsampleModes, UpsampleModesAdjoint and FourierFilter (the autograd Functions) are importable from
# here too, lazily (see __getattr__); they are left out of __all__ so that ``import *`` does not
# import triton.
__all__ = ["upsample_modes", "upsample_modes_adjoint", "fourier_filter", "available_impls",
           "resolve_impl", "IMPLS", "ENV_VAR"]

IMPLS = ("auto", "torch", "triton")
ENV_VAR = "SVRT_KERNELS"
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_triton_import: tuple[bool, str] | None = None


def _triton_importable() -> tuple[bool, str]:
    """(importable, version or reason), cached after the first attempt."""
    global _triton_import
    if _triton_import is None:
        try:
            import triton
            _triton_import = (True, str(getattr(triton, "__version__", "?")))
        except Exception as exc:  # ImportError, or a broken install raising something else
            _triton_import = (False, f"{type(exc).__name__}: {exc}")
    return _triton_import


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _requested(impl: str) -> str:
    if impl not in IMPLS:
        raise SvrtError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}.")
    if impl == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in IMPLS:
                raise SvrtError(f"{ENV_VAR} must be one of {', '.join(IMPLS)}, got {env!r}.")
            return env
    return impl


def resolve_impl(impl: str, tensor: torch.Tensor) -> str:
    """``"torch"`` or ``"triton"``: what a call with ``impl`` on ``tensor`` runs (raises when impossible)."""
    want = _requested(impl)
    if want == "torch":
        return "torch"
    if want == "auto":
        # CPU tensors never import triton: the device test comes first
        if not tensor.is_cuda or tensor.dtype not in _TRITON_DTYPES:
            return "torch"
        return "triton" if _triton_importable()[0] else "torch"
    ok, why = _triton_importable()
    # explicit triton
    if not ok:
        raise SvrtError(f"impl='triton' needs the triton package, which does not import here ({why}).")
    if not tensor.is_cuda and not _interpret_env():
        raise SvrtError(f"impl='triton' runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), "
                        f"got a tensor on {tensor.device}.")
    if tensor.dtype not in _TRITON_DTYPES:
        raise SvrtError(f"impl='triton' takes float32, float16 or bfloat16 tensors, got {tensor.dtype}.")
    return "triton"


def upsample_modes(coarse: torch.Tensor, size, impl: str = "auto") -> torch.Tensor:
    """Per-pixel modes ``[B, M, Y, X]`` from the coarse grid ``[B, M, Yg, Xg]``: exactly
    ``F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)``, differentiable."""
    if resolve_impl(impl, coarse) == "torch":
        return reference.upsample_modes(coarse, size)
    from svrt.kernels.triton_upsample import UpsampleModes as _U
    return _U.apply(coarse, size)


def upsample_modes_adjoint(grad_fine: torch.Tensor, coarse_size, impl: str = "auto") -> torch.Tensor:
    """The adjoint (vector-Jacobian product) of :func:`upsample_modes`: ``[B, M, Y, X] -> [B, M, Yg, Xg]``."""
    if resolve_impl(impl, grad_fine) == "torch":
        return reference.upsample_modes_adjoint(grad_fine, coarse_size)
    from svrt.kernels.triton_upsample import UpsampleModesAdjoint as _UA
    return _UA.apply(grad_fine, coarse_size)


def fourier_filter(obj: torch.Tensor, cutoff: float, width: float = 1.8, sharpness: float = 20.0,
                   apodization: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """``irfft2(H * rfft2(apodization * obj), s=(Y, X))`` with H the erf filter of Eq. 16
    (:func:`svrt.optics.filters.erf_filter`); ``cutoff`` = D/lambda in cycles per pixel,
    ``obj [..., Y, X]``, ``apodization [Y, X]`` or None. Differentiable."""
    if resolve_impl(impl, obj) == "torch":
        return reference.fourier_filter(obj, cutoff, width, sharpness, apodization)
    from svrt.kernels.triton_filter import fourier_filter_triton
    return fourier_filter_triton(obj, cutoff, width, sharpness, apodization)


def available_impls() -> dict:
    """What can run here, for diagnostics (``svrt engines``) and tests.

    Keys: ``torch`` (always True), ``triton`` (the package imports), ``triton_version`` or
    ``triton_error``, ``cuda`` (a CUDA device is visible), ``triton_cuda`` (compiled Triton kernels
    can run), ``triton_interpret`` (``TRITON_INTERPRET`` is set: Triton on CPU tensors), ``forced``
    (the value of ``SVRT_KERNELS`` or None), ``auto_cuda`` / ``auto_cpu`` (what ``impl="auto"`` picks
    for a float32 tensor on each device).
    """
    ok, why = _triton_importable()
    cuda = bool(torch.cuda.is_available())
    forced = os.environ.get(ENV_VAR, "").strip().lower() or None
    info = {
        "torch": True,
        "triton": ok,
        "cuda": cuda,
        "triton_cuda": ok and cuda,
        "triton_interpret": ok and _interpret_env(),
        "forced": forced,
    }
    info["triton_version" if ok else "triton_error"] = why
    for dev in ("cuda", "cpu"):
        try:
            info[f"auto_{dev}"] = resolve_impl("auto", torch.empty(0, device="meta").new_empty(0)
                                               if dev == "cpu" else _FakeCuda())
        except SvrtError as exc:
            info[f"auto_{dev}"] = f"error: {exc}"
    return info


class _FakeCuda:
    """Stands in for a float32 CUDA tensor in :func:`available_impls` (no device needed)."""
    is_cuda = True
    dtype = torch.float32
    device = torch.device("cuda")


def __getattr__(name: str):
    # lazy re-exports of the autograd Functions (importing them imports triton)
    if name in ("UpsampleModes", "UpsampleModesAdjoint"):
        from svrt.kernels import triton_upsample
        return getattr(triton_upsample, name)
    if name == "FourierFilter":
        from svrt.kernels import triton_filter
        return triton_filter.FourierFilter
    raise AttributeError(f"module 'svrt.kernels' has no attribute {name!r}")
