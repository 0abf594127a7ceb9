"""The PSF-basis emulator: a spatially variant convolution that is linear in the object by construction.

The paper's U-Net (:mod:`svrt.emulator`) maps (object, per-pixel modes) to the image in one network; the
figures of docs/ENGINE.md show why that does not drive a restoration (the model change for an object step
20-30 % wrong, mode gradients unrelated to the data's, invented power beyond the cutoff). This emulator
keeps the object out of the network: it emulates the PSF of a wavefront, and the spatially variant
convolution around it is exact arithmetic. For KL coefficients ``a``

    S(a) = crop_S( shift_{t(a)}( B_0 + sum_k c_k(a) B_k ) ) / sum

- ``t(a) = a T``: the image motion of the wavefront's tilt (``T [M, 2]``, pixels per radian, the
  least-squares x/y phase ramp of each mode on the pupil), applied exactly as a Fourier phase ramp. Tip and
  tilt move the PSF by pixels under strong seeing; left to a basis they would need hundreds of components,
  removed they leave a centred PSF that a few dozen describe.
- ``B_0`` the mean and ``B_1..B_K`` the principal components of the exact centred PSFs (the wavefront minus
  its tilt, :mod:`svrt.optics.psf`) of wavefronts in the solver's regime, on a work box ``W > S`` so the
  shift brings in real halo, not wrapped-around halo; ``c = net(a)`` a small fully connected network.
  :mod:`svrt.trainer.psf_basis` makes the basis and trains the network.

So the emulated convolution is exactly linear in the object, band-limited like the PSFs and flux-conserving
(unit-sum PSFs), and its mode gradient is the network's Jacobian through fixed linear maps. The emulator is
a PSF model (``n_modes``, ``psf_size``, ``dtype``, ``__call__(a [..., M]) -> [..., S, S]``): the solver's
coarse-grid path interpolates its PSFs between grid nodes exactly as it does exact PSFs
(:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`), and :meth:`PSFBasisEmulator.convolve` is
the per-pixel convolution of Eq. 1 with emulated PSFs. One instrument per model: the basis is its optics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES

KIND = "psf-basis"


@dataclass
class PSFBasisConfig:
    """Everything needed to rebuild the network; stored in the weights' JSON metadata."""

    instrument: str
    n_modes: int = N_MODES
    psf_size: int = 48       # S, the side of the PSFs it gives
    work_size: int = 64      # W >= S: the side of the basis, before the shift and the crop
    n_basis: int = 48        # K, principal components besides the mean
    hidden: int = 512        # width of the network's hidden layers
    depth: int = 3           # hidden layers

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PSFBasisConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class PSFBasisEmulator(nn.Module):
    """KL coefficients -> PSF-basis weights -> PSFs and spatially variant convolutions (one instrument).

    Buffers: ``mean [W, W]``, ``basis [K, W, W]`` (orthonormal), ``tilt [M, 2]`` (image motion in pixels, x
    and y, per radian of each mode), ``mode_scale [M]`` and ``weight_scale [K]`` (the network sees
    ``a / mode_scale`` and predicts ``c / weight_scale``: both of order one over the training regime).
    """

    dtype = torch.float32

    def __init__(self, config: PSFBasisConfig):
        super().__init__()
        self.config = config
        m, k, w, h = config.n_modes, config.n_basis, config.work_size, config.hidden
        if not 0 < config.psf_size <= w:
            raise ValueError(f"psf_size {config.psf_size} must be in 1..work_size {w}")
        self.register_buffer("mean", torch.zeros(w, w))
        self.register_buffer("basis", torch.zeros(k, w, w))
        self.register_buffer("tilt", torch.zeros(m, 2))
        self.register_buffer("mode_scale", torch.ones(m))
        self.register_buffer("weight_scale", torch.ones(k))
        layers, width = [], m
        for _ in range(config.depth):
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, k))
        self.net = nn.Sequential(*layers)

    # --- the PSF-model interface (svrt.optics.psf.PSFModel's) -------------------------------------
    @property
    def n_modes(self) -> int:
        return self.config.n_modes

    @property
    def psf_size(self) -> int:
        return self.config.psf_size

    def weights(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Basis weights ``[..., K]`` for KL coefficients ``[..., M]`` (radians)."""
        if coefficients.shape[-1] != self.n_modes:
            raise SvrtError(f"wavefront coefficients have {coefficients.shape[-1]} modes; the PSF-basis emulator "
                            f"expects {self.n_modes}.")
        a = coefficients.to(self.mode_scale.dtype)
        return self.net(a / self.mode_scale) * self.weight_scale

    def centred_psf(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The PSF of the wavefront without its tilt, on the work box: ``[..., M] -> [..., W, W]`` (not
        normalised)."""
        c = self.weights(coefficients)
        w = self.config.work_size
        return self.mean + (c @ self.basis.reshape(c.shape[-1], w * w)).reshape(*c.shape[:-1], w, w)

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        """PSFs ``[..., S, S]`` (unit sum) for coefficients ``[..., M]``."""
        a = coefficients.to(self.mode_scale.dtype)
        box = shift_crop(self.centred_psf(a), a @ self.tilt, self.psf_size)
        return box / box.sum(dim=(-2, -1), keepdim=True)

    # --- the spatially variant convolution ---------------------------------------------------------
    def convolve(self, obj: torch.Tensor, modes: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        """The per-pixel convolution of Eq. 1 with emulated PSFs: obj ``[N, Y, X]``, modes ``[N, M, Y, X]`` (the
        wavefront of every output pixel) -> ``[N, Y, X]``; ``boundary`` as
        :func:`svrt.optics.convolution.spatially_variant_convolve`. Differentiable in both arguments."""
        from svrt.optics.convolution import spatially_variant_convolve

        if obj.dim() != 3 or modes.dim() != 4 or modes.shape[0] != obj.shape[0] or \
                modes.shape[-2:] != obj.shape[-2:]:
            raise SvrtError(f"the PSF-basis convolution takes obj [N, Y, X] and modes [N, M, Y, X] of the same N, Y "
                            f"and X; got {tuple(obj.shape)} and {tuple(modes.shape)}.")
        return torch.stack([spatially_variant_convolve(o[None], a, self, boundary=boundary)[0]
                            for o, a in zip(obj, modes)])


def shift_image(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``image [..., W, W]`` moved by ``shift [..., 2]`` pixels (x, y; positive towards larger indices) by a
    Fourier phase ramp: exact for a band-limited (Nyquist-sampled) image, circular at the box's edges."""
    w = image.shape[-1]
    fy = torch.fft.fftfreq(w, dtype=image.dtype, device=image.device)
    fx = torch.fft.rfftfreq(w, dtype=image.dtype, device=image.device)
    sx, sy = shift[..., 0, None, None], shift[..., 1, None, None]
    ramp = torch.polar(torch.ones((), dtype=image.dtype, device=image.device),
                       -2 * torch.pi * (fx * sx + fy[:, None] * sy))
    return torch.fft.irfft2(torch.fft.rfft2(image) * ramp, s=(w, w))


def shift_matrix(shift: torch.Tensor, width: int, rows: torch.Tensor) -> torch.Tensor:
    """``[..., R, W]``: the rows ``rows [R]`` of the operator that moves a W-periodic band-limited signal by
    ``shift [...]`` samples, ``y_i = sum_j D(i - j - shift) x_j`` with the Dirichlet kernel of an even W,
    ``D(u) = sin(pi u) cos(pi u / W) / (W sin(pi u / W))`` (``D(0) = 1``): the same numbers as the Fourier
    phase ramp of :func:`shift_image`, written with elementwise functions and matrix products so that an
    exported graph (ONNX) needs no DFT operator."""
    j = torch.arange(width, dtype=shift.dtype, device=shift.device)
    u = rows.to(shift.dtype)[:, None] - j[None, :] - shift[..., None, None]                # [..., R, W]
    small = u.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(u), u)
    x = torch.pi * safe / width
    ratio = torch.sin(torch.pi * safe) * torch.cos(x) / (width * torch.sin(x))
    # near u = 0 the kernel is 1 - (pi u)^2 (1 + 2 / W^2) / 6 + O(u^4) (even: its slope there is 0)
    return torch.where(small, 1 - (torch.pi * u) ** 2 * (1 + 2 / width ** 2) / 6, ratio)


def shift_crop(image: torch.Tensor, shift: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` (centre ``W // 2`` -> ``size // 2``) of ``image [..., W, W]`` moved by
    ``shift [..., 2]`` pixels (x, y): :func:`shift_image` and that crop, as two matrix products with
    :func:`shift_matrix` rows."""
    w = image.shape[-1]
    lo = w // 2 - size // 2
    rows = torch.arange(lo, lo + size, device=image.device)
    sy = shift_matrix(shift[..., 1], w, rows)                                             # [..., S, W]
    sx = shift_matrix(shift[..., 0], w, rows)                                             # [..., S, W]
    return sy @ image @ sx.transpose(-2, -1)


# --------------------------------------------------------------------------- files

def save_psf_emulator(path: str | Path, model: PSFBasisEmulator, metadata: dict | None = None) -> dict:
    """Write the emulator (safetensors, JSON metadata inside and beside it) as :func:`svrt.emulator.save_model`,
    with ``kind = "psf-basis"``."""
    from svrt.emulator import save_model

    return save_model(path, model, {**(metadata or {}), "kind": KIND})


def load_psf_emulator(name_or_path, device="cpu") -> tuple[PSFBasisEmulator, dict]:
    """Load a PSF-basis emulator (eval mode, no gradients on its weights) and its metadata; verified as
    :func:`svrt.emulator.load_model` verifies the U-Net (readable, JSON metadata, architecture, hash, finite)."""
    from svrt.emulator import check_device, load_weights_into, read_weights_file, resolve_model_path

    dev = check_device(device)
    path = resolve_model_path(name_or_path)
    tensors, meta = read_weights_file(path)
    if meta.get("kind") != KIND:
        raise SvrtError(f"{path}: metadata 'kind' is {meta.get('kind', 'absent')!r}; expected '{KIND}' (a PSF-basis "
                        "emulator written by svrt train-psf-basis).")
    cfg = meta.get("config")
    try:
        model = PSFBasisEmulator(PSFBasisConfig.from_dict(cfg))
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise SvrtError(f"{path}: metadata 'config' does not describe a PSF-basis emulator ({exc}).") from None
    load_weights_into(model, tensors, meta, path)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta
