"""Ceilings for the timings: work counted from the model, and the machine's measured peaks.

* :func:`count_macs` counts the multiply-accumulates of every ``nn.Conv2d`` and ``nn.Linear`` of a
  module from the shapes seen by forward hooks during one forward pass (``out.numel() x Cin/groups x
  kh x kw`` for a convolution, ``out.numel() x in_features`` for a linear layer). FLOPs are 2 x MACs;
  biases, BatchNorm, ReLU, pooling, upsampling and concatenation are not counted as FLOPs (they
  are the memory-bound part, see :func:`count_bytes`).
* :func:`count_bytes` runs a function under a ``TorchDispatchMode`` and adds, for every ATen
  operation that is not a view, the bytes of its tensor inputs and outputs: the traffic of an
  unfused eager execution in which every operation reads its inputs from and writes its outputs to
  memory once (caches and fusion can do better, so this is a ceiling on traffic, not a measurement).
  Operations are grouped into ``compute`` (convolutions and matrix products), ``fft`` and ``memory``
  (everything else: element-wise, normalisation, pooling, interpolation, copies).
* :func:`measure_peak_flops`: the FLOP/s of a large square matrix product (``2 n^3`` FLOPs, best of
  the repetitions), the practical compute ceiling of the device for that precision. It is a
  measured ceiling, not the data sheet's: a convolution library can beat it (Winograd transforms
  do fewer multiplications than the FLOPs counted here, and a busy machine lowers the measurement),
  so fractions a little above 100 % are possible.
* :func:`measure_bandwidth`: bytes/s of a large tensor copy (read + write counted, best of the
  repetitions), the practical memory ceiling.
* :func:`roofline_time`: the time floor of a piece of work: compute FLOPs at the peak plus the bytes of
  the memory-bound operations at the bandwidth (the two parts do not overlap in an unfused eager
  run, so they add).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from svrt.benchmarks.timing import measure

# --------------------------------------------------------------------------- FLOPs from the layers

@dataclass
class LayerMacs:
    name: str
    kind: str
    macs: int
    output_shape: tuple


@dataclass
class MacCount:
    """Multiply-accumulates of one forward pass, per layer and in total."""

    layers: list = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def conv_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.kind == "conv")

    @property
    def linear_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.kind == "linear")

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return int(out.numel() * (module.in_channels // module.groups) * kh * kw)


def count_macs(module: nn.Module, *inputs, **kwargs) -> MacCount:
    """Run ``module(*inputs, **kwargs)`` once (no autograd) and count the MACs of its convolutions and
    linear layers with forward hooks."""
    count = MacCount()
    handles = []

    def hook(name):
        def fn(mod, args, out):
            if isinstance(mod, nn.Conv2d):
                count.layers.append(LayerMacs(name, "conv", _conv_macs(mod, out), tuple(out.shape)))
            elif isinstance(mod, nn.Linear):
                count.layers.append(LayerMacs(name, "linear", int(out.numel() * mod.in_features), tuple(out.shape)))
        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return count


# --------------------------------------------------------------------------- bytes of every operation

_COMPUTE_OPS = ("convolution", "mm", "addmm", "bmm", "matmul", "baddbmm", "_convolution", "mkldnn_convolution",
                "cudnn_convolution", "linear")
_FFT_OPS = ("_fft_r2c", "_fft_c2r", "_fft_c2c")


@dataclass
class ByteCount:
    """Bytes read + written per operation group, and the number of operations."""

    bytes: dict = field(default_factory=lambda: defaultdict(int))
    ops: dict = field(default_factory=lambda: defaultdict(int))

    @property
    def total(self) -> int:
        return int(sum(self.bytes.values()))

    def to_dict(self) -> dict:
        return {"bytes": dict(self.bytes), "ops": dict(self.ops), "total": self.total}


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def count_bytes(fn, *args, **kwargs) -> tuple[ByteCount, object]:
    """Run ``fn(*args, **kwargs)`` and count the bytes its ATen operations read and write (views excluded).
    Returns ``(ByteCount, fn's result)``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counter = ByteCount()

    class _Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, f_args=(), f_kwargs=None):
            out = func(*f_args, **(f_kwargs or {}))
            if getattr(func, "is_view", False):
                return out
            name = func.overloadpacket.__name__
            group = "compute" if name in _COMPUTE_OPS else "fft" if name in _FFT_OPS else "memory"
            n = sum(t.numel() * t.element_size() for t in _tensors((f_args, f_kwargs)))
            n += sum(t.numel() * t.element_size() for t in _tensors(out))
            counter.bytes[group] += n
            counter.ops[group] += 1
            return out

    with _Mode():
        result = fn(*args, **kwargs)
    return counter, result


# --------------------------------------------------------------------------- the emulator's cost

@dataclass
class ModelCost:
    """Work of one emulator forward pass for ``batch`` images of ``size`` pixels (sizes multiples of 16)."""

    flops: float                 # 2 x (conv + linear MACs)
    conv_macs_per_pixel: float   # per image pixel
    linear_macs_per_image: float
    bytes_compute: float         # traffic of the convolutions (inputs, weights, outputs)
    bytes_memory: float          # traffic of the memory-bound operations
    bytes_fft: float = 0.0

    @property
    def flops_per_pixel(self) -> float:
        return 2 * self.conv_macs_per_pixel

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops_per_pixel"] = self.flops_per_pixel
        return d


class EmulatorCostModel:
    """Counts the emulator's MACs (hooks) and bytes (dispatch mode) once on a ``probe`` x ``probe`` image
    and scales them to any size: for sizes that are multiples of 16 every convolution's output scales
    exactly with the number of pixels, while the FiLM's linear layers run once per image."""

    def __init__(self, model, instrument: str, probe: int = 64):
        from svrt.emulator import padding_for

        self._padding_for = padding_for
        n_modes = model.config.n_modes
        obj = torch.rand(1, 1, probe, probe) + 0.5
        modes = torch.randn(1, n_modes, probe, probe) * 0.3
        cond = model.one_hot(instrument, 1)
        model = model.cpu().eval()
        macs = count_macs(model, obj, modes, cond)
        with torch.no_grad():
            counted, _ = count_bytes(model, obj, modes, cond)
        pixels = probe * probe
        self.conv_macs_per_pixel = macs.conv_macs / pixels
        self.linear_macs_per_image = float(macs.linear_macs)
        self.bytes_compute_per_pixel = counted.bytes.get("compute", 0) / pixels
        self.bytes_memory_per_pixel = (counted.bytes.get("memory", 0) + counted.bytes.get("fft", 0)) / pixels
        self.layers = macs.layers
        self.probe = probe

    def cost(self, size: int | tuple, batch: int = 1) -> ModelCost:
        y, x = (size, size) if isinstance(size, int) else size
        pad = self._padding_for(y, x)
        pixels = (y + pad[2] + pad[3]) * (x + pad[0] + pad[1])
        conv = self.conv_macs_per_pixel * pixels
        return ModelCost(flops=2.0 * batch * (conv + self.linear_macs_per_image),
                         conv_macs_per_pixel=self.conv_macs_per_pixel, linear_macs_per_image=self.linear_macs_per_image,
                         bytes_compute=batch * self.bytes_compute_per_pixel * pixels,
                         bytes_memory=batch * self.bytes_memory_per_pixel * pixels)


# --------------------------------------------------------------------------- machine peaks

def _dtype(precision: str) -> torch.dtype:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def measure_peak_flops(device="cpu", n: int | None = None, precision: str = "fp32", repeats: int = 20,
                       warmup: int = 2) -> dict:
    """FLOP/s of an ``n x n`` matrix product (best of ``repeats``; the median is kept too). Default n: 1024
    on CPU, 8192 on CUDA. On CUDA in fp32 TF32 is switched off for the measurement (true FP32 peak)."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 1024)
    dt = _dtype(precision)
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    c = torch.empty(n, n, device=dev, dtype=dt)
    tf32 = None
    if dev.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        t = measure(lambda: torch.mm(a, b, out=c), warmup=warmup, repeats=repeats, device=dev)
    finally:
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"flops_per_s": 2.0 * n ** 3 / t.minimum, "n": n, "precision": precision, "best_s": t.minimum,
            "median_s": t.median, "iqr_s": t.iqr, "repeats": repeats, "threads": torch.get_num_threads(),
            "what": f"best of {repeats} torch.mm of two {n}x{n} {precision} matrices, 2 n^3 FLOPs"}


def measure_bandwidth(device="cpu", mbytes: int | None = None, repeats: int = 10, warmup: int = 2) -> dict:
    """Bytes/s of ``dst.copy_(src)`` on float32 buffers of ``mbytes`` MiB (read + write counted; best of
    ``repeats``)."""
    dev = torch.device(device)
    mbytes = mbytes or (1024 if dev.type == "cuda" else 128)
    n = mbytes * 2 ** 20 // 4
    src = torch.rand(n, device=dev)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), warmup=warmup, repeats=repeats, device=dev)
    return {"bytes_per_s": 2.0 * n * 4 / t.minimum, "mbytes": mbytes, "best_s": t.minimum, "median_s": t.median,
            "iqr_s": t.iqr, "repeats": repeats, "threads": torch.get_num_threads(),
            "what": f"best of {repeats} copies of a {mbytes} MiB float32 buffer, read + write"}


def roofline_time(flops: float, memory_bytes: float, peak_flops: float, bandwidth: float) -> float:
    """Time floor (s): ``flops / peak + memory_bytes / bandwidth``."""
    t = 0.0
    if peak_flops and flops:
        t += flops / peak_flops
    if bandwidth and memory_bytes:
        t += memory_bytes / bandwidth
    return t
