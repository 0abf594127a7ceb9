"""PSFs from wavefront coefficients (Eqs. 3-5) at the camera's pixel scale.

``S = |F(P)|^2 / sum``, ``P = A exp(i phi)``, ``phi = sum_l alpha_l KL_l``. We use the forward FFT F
where the paper writes F^-1: the two differ by a point reflection of the PSF, and with F a positive
tip (KL 1) coefficient moves the PSF towards +x and a positive tilt (KL 2) towards +y.

Sampling. A PSF pixel is a camera pixel: with a pupil of d grid pixels in an FFT grid of N, the
image-plane sample is lambda / (D) * d / N, so N / d = q * lambda / (D pix) where q is the integer
oversampling factor. Instruments sampled at or above Nyquist (lambda/(D pix) >= 2) use q = 1. Below
Nyquist (HiFI: 1.88) the PSF is computed on a grid q times finer (q * lambda/(D pix) >= 2) and binned
q x q, which integrates it over the camera pixel instead of aliasing it; a half-fine-pixel tilt keeps
its centre on the centre of a camera pixel.

The PSF of size ``psf_size`` is cut from a computed field of ``field`` pixels (the FFT's period) and
normalised to unit sum, so a convolution with it conserves flux. The zero field angle is at ``psf_size // 2``.
Only the box is computed: the zero-padded N x N FFT restricted to the q S x q S fine pixels of the box is
two small matrix products with the rows of the DFT (a pruned DFT; the same numbers to rounding, ~2x less
CPU than the FFT for S = 56..96, more when S << N).

Two entry points share all of this: :meth:`PSFModel.__call__` takes KL (or Zernike) coefficients and
:meth:`PSFModel.psf_from_phase` any phase sampled on the model's pupil grid (:attr:`PSFModel.pupil_points_m`),
e.g. the full phase of turbulent layers (:meth:`svrt.phase_screens.LayeredScreens.psfs`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.instruments import Instrument, get_instrument
from svrt.mode_grid import N_MODES
from svrt.optics.kl import kl_basis
from svrt.optics.pupil import make_pupil, pupil_coordinates
from svrt.optics.zernike import zernike

#: PSFs of this side and larger are computed by FFT instead of the pruned DFT's matrix products, whose cost grows
#: as S^3: per PSF with its gradient (one thread) 9.8 against 5.5 ms at S = 256, 60 against 26 at 512 and
#: 475 against 124 at 1024 (the patch stage's whole-field PSFs made the time per pixel of a 1024^2 restoration
#: 1.8x that of 512^2); the same numbers to 1e-6 of the peak
FFT_MIN_PSF_SIZE = 256


def oversampling_for(sampling: float) -> int:
    """Integer factor q such that q * lambda/(D pix) >= 2 (Nyquist)."""
    return max(1, math.ceil(2.0 / sampling - 1e-9))


class PSFModel:
    """Wavefront coefficients -> PSF for one instrument.

    Parameters
    ----------
    instrument : label or :class:`Instrument`
    n_modes : number of basis modes M (KL 1..M, i.e. Noll 2..M+1 rotated)
    psf_size : side S of the returned PSF in camera pixels (default: the whole computed field)
    field : side of the computed field in camera pixels (default: enough for a pupil of
        ``min_pupil_px`` grid pixels, at least ``psf_size``)
    basis : "kl" (default) or "zernike" (Noll 2..M+1)
    """

    def __init__(self, instrument: str | Instrument, n_modes: int = N_MODES, psf_size: int | None = None,
                 field: int | None = None, min_pupil_px: int = 32, basis: str = "kl",
                 oversample: int | None = None, device=None, dtype=torch.float32):
        self.instrument = inst = get_instrument(instrument)
        self.n_modes = n_modes
        s = inst.sampling
        self.q = q = oversample or oversampling_for(s)
        need = math.ceil(min_pupil_px * s)
        field = field or max(psf_size or 0, need + need % 2)
        if psf_size is not None and psf_size > field:
            raise SvrtError(f"psf_size {psf_size} is larger than the computed field {field}.")
        self.field = field
        self.psf_size = psf_size or field
        self.n_fft = q * field
        self.pupil_diameter_px = self.n_fft / (q * s)      # grid pixels across D
        nb = int(math.ceil(self.pupil_diameter_px)) + 2    # the box that holds the pupil
        self.box = nb
        eps = inst.obscuration_cm / inst.diameter_cm
        amp = make_pupil(nb, self.pupil_diameter_px, eps, inst.spider_count, inst.spider_width_cm / inst.diameter_cm)
        x, y = pupil_coordinates(nb, self.pupil_diameter_px)
        # pupil grid in metres, [nb * nb] each (row-major, x along columns): where a phase is sampled
        self.pupil_points_m = tuple(np.ascontiguousarray((v * inst.diameter_m / 2).reshape(-1)) for v in (x, y))
        for v in self.pupil_points_m:
            v.setflags(write=False)
        rho, theta = np.hypot(x, y), np.arctan2(y, x)
        if basis == "kl":
            modes = kl_basis(n_modes).evaluate(rho, theta)
        elif basis == "zernike":
            modes = np.stack([zernike(j, rho, theta) for j in range(2, n_modes + 2)])
        else:
            raise SvrtError(f"unknown wavefront basis '{basis}'; expected 'kl' or 'zernike'.")
        modes = modes * (amp > 0)
        # binning shift, as a phase ramp (pupil-grid pixel index / N): fftshift puts the zero angle on
        # fine pixel N // 2, and camera pixel f // 2 gathers fine pixels q (f // 2) .. q (f // 2) + q - 1,
        # whose centre is q (f // 2) + (q - 1) / 2. The shift is (q - 1) / 2 fine pixels for an even
        # field, but -1/2 (q even) or 0 (q odd) for an odd one.
        shift = q * (field // 2) + (q - 1) / 2 - (q * field) // 2
        idx = np.arange(nb)
        ramp = 2 * np.pi * shift * (idx[None, :] + idx[:, None]) / self.n_fft
        self.device, self.dtype = device, dtype
        self.amplitude = torch.as_tensor(amp, dtype=dtype, device=device)
        self.modes = torch.as_tensor(modes, dtype=dtype, device=device)          # [M, nb, nb]
        self.ramp = torch.as_tensor(ramp, dtype=dtype, device=device)
        # the PSF box as a pruned DFT: of the zero-padded N-point transform only the q S fine pixels of the
        # box are needed. fftshift puts frequency index (i - N // 2) mod N on fine pixel i, and camera
        # pixels lo .. lo + S - 1 of the centred field are fine pixels q lo .. q (lo + S) - 1.
        lo = field // 2 - self.psf_size // 2
        freq = (np.arange(q * lo, q * (lo + self.psf_size)) - self.n_fft // 2) % self.n_fft
        dft = np.exp(-2j * np.pi * (np.outer(np.arange(nb), freq) % self.n_fft) / self.n_fft)    # [nb, q S]
        self._dft = torch.as_tensor(dft, dtype=torch.complex64 if dtype == torch.float32 else torch.complex128,
                                    device=device)
        self._freq = torch.as_tensor(freq, dtype=torch.long, device=device)                 # [q S] FFT bins kept
        self.basis = basis

    def phase(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Phase on the pupil grid: ``[..., M] -> [..., nb, nb]`` (radians)."""
        m = self.modes
        return torch.tensordot(coefficients.to(m.dtype), m, dims=([-1], [0]))

    def __call__(self, coefficients, chunk: int = 2048) -> torch.Tensor:
        """PSFs ``[..., S, S]`` (unit sum) for coefficients ``[..., M]`` in radians."""
        a = torch.as_tensor(coefficients, dtype=self.dtype, device=self.device)
        if a.shape[-1] != self.n_modes:
            raise SvrtError(f"wavefront coefficients have {a.shape[-1]} modes; this PSF model expects {self.n_modes}.")
        return self._in_chunks(self._psf, a.reshape(-1, self.n_modes), a.shape[:-1], chunk)

    def psf_from_phase(self, phase, chunk: int = 2048) -> torch.Tensor:
        """PSFs ``[..., S, S]`` (unit sum) for pupil phases ``[..., nb, nb]`` in radians sampled on the pupil
        grid (``nb = self.box``; points :attr:`pupil_points_m`), with every convention of :meth:`__call__`
        (camera-pixel sampling, sub-Nyquist binning, centring, normalisation). Values outside the pupil
        are ignored (the amplitude is zero there)."""
        p = torch.as_tensor(phase, dtype=self.dtype, device=self.device)
        if p.dim() < 2 or tuple(p.shape[-2:]) != (self.box, self.box):
            raise SvrtError(f"a pupil phase must be [..., {self.box}, {self.box}] on this PSF model's pupil grid; "
                            f"got {tuple(p.shape)}.")
        return self._in_chunks(self._psf_of_phase, p.reshape(-1, self.box, self.box), p.shape[:-2], chunk)

    def _in_chunks(self, psf_of, flat: torch.Tensor, lead, chunk: int) -> torch.Tensor:
        """``psf_of`` on blocks of ``chunk`` rows of ``flat`` (bounded memory), reshaped to ``[*lead, S, S]``."""
        out = [psf_of(flat[i:i + chunk]) for i in range(0, flat.shape[0], chunk)] if flat.shape[0] else \
            [torch.zeros(0, self.psf_size, self.psf_size, dtype=self.dtype, device=self.device)]
        return torch.cat(out).reshape(*lead, self.psf_size, self.psf_size)

    def _psf(self, a: torch.Tensor) -> torch.Tensor:
        return self._psf_of_phase(self.phase(a))

    def _psf_of_phase(self, phase: torch.Tensor) -> torch.Tensor:
        q, s = self.q, self.psf_size
        pupil = torch.polar(self.amplitude.expand(phase.shape[0], -1, -1), phase + self.ramp)   # [P, nb, nb]
        if self.psf_size < FFT_MIN_PSF_SIZE:
            # the box's field by two matrix products with the pruned DFT (x, then y): the same numbers as the
            # zero-padded N x N FFT, fftshift and crop, at half the CPU time (2x for S = 56 and 96, more when
            # S << N), because the pupil fills only nb x nb of the N x N grid
            e = (pupil @ self._dft).transpose(-2, -1) @ self._dft                            # [P, x, y]
            psf = (e.real ** 2 + e.imag ** 2).transpose(-2, -1)                             # [P, y, x]
        else:
            # a PSF as large as a whole field (the patch stage's one wavefront per frame): the DFT's products
            # cost nb S (nb + S) ~ S^3 / 3, the FFTs N^2 log N. Pruned the same way: the x transform of the nb
            # pupil rows only, then the y transform of the q S kept columns
            n, keep = self.n_fft, self._freq
            e = torch.fft.fft(pupil, n=n, dim=-1)[..., keep]                                 # [P, nb, x]
            e = torch.fft.fft(e, n=n, dim=-2)[..., keep, :]                                  # [P, y, x]
            psf = e.real ** 2 + e.imag ** 2
        if q > 1:
            psf = psf.reshape(-1, s, q, s, q).sum(dim=(2, 4))
        return psf / psf.sum(dim=(-2, -1), keepdim=True)

    def diffraction_limited(self) -> torch.Tensor:
        """The aberration-free PSF ``[S, S]``."""
        return self(torch.zeros(self.n_modes))
