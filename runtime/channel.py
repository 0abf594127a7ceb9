"""One channel of a burst: what it sees of the wavefront that every channel shares.

The solver's wavefront coefficients are radians of phase at the wavelength of channel 0 (the reference),
in the KL basis. Channel k sees::

    alpha_k = alpha * lambda_0 / lambda_k + delta_k

``ratio = lambda_0 / lambda_k`` because channels observed simultaneously share the optical path difference,
and ``delta_k [M]`` the channel's known diversity (a phase-diversity channel's defocus, radians at its own
wavelength, :mod:`svrt.optics.diversity`; none for an ordinary channel). This module is the one place that
computes it (:meth:`Channel.wavefront`) and the PSFs and OTFs that follow from it: the forward model
(:mod:`svrt.runtime.forward_model`), the patch problem (:mod:`svrt.runtime.patch_mfbd`) and the momfbd
preconditioner (:mod:`svrt.runtime.method_momfbd`) all ask the channel. The channel also owns the mean OTF
of the wavefront beyond the fitted modes (:meth:`Channel.attenuation`): D / r0 at its own wavelength.

Shapes: wavefronts ``[..., M]`` (``dim=-1``) or ``[B, M, Yg, Xg]`` (``dim=1``); PSFs ``[..., S, S]``
centred on pixel ``S // 2``; patch OTFs on the rfft2 grid ``[..., S, S // 2 + 1]``; field OTFs on the full
FFT grid of the field ``[..., Y, X]``.
"""

from __future__ import annotations

import torch

from svrt.atmosphere import d_over_r0_at_wavelength
from svrt.errors import SvrtError
from svrt.instruments import Instrument
from svrt.optics.psf import PSFModel
from svrt.optics.residual import fitting_error_otf

__all__ = ["Channel", "burst_channels", "wavelength_ratios", "otf"]


def wavelength_ratios(insts: list) -> list[float]:
    """``lambda_0 / lambda_k`` of every instrument: the factor from the reference wavelength's radians to
    channel k's."""
    return [insts[0].wavelength_angstrom / inst.wavelength_angstrom for inst in insts]


def otf(psf: torch.Tensor) -> torch.Tensor:
    """OTF on the rfft2 grid of a PSF ``[..., S, S]`` centred on pixel S // 2: ``[..., S, S // 2 + 1]``."""
    return torch.fft.rfft2(torch.fft.ifftshift(psf, dim=(-2, -1)))


class Channel:
    """One channel: its instrument, its wavelength ratio to channel 0 and its known diversity.

    instrument: the :class:`~svrt.instruments.Instrument` (None for a channel known only by its wavefront,
        e.g. a forward model built from a ratio by a script; it has no PSFs).
    ratio: ``lambda_0 / lambda_k``.
    diversity: ``[M]`` known KL coefficients (radians at this channel's wavelength) or None.

    The PSF models are made on first use, one per (modes, side, device), and kept for the channel's life
    (one solve)."""

    def __init__(self, instrument: Instrument | None, ratio: float = 1.0, diversity=None):
        self.instrument = instrument
        self.ratio = ratio
        self.diversity = None if diversity is None else torch.as_tensor(diversity, dtype=torch.float32)
        self._psf_models: dict = {}

    def __repr__(self) -> str:
        label = None if self.instrument is None else self.instrument.label
        return f"Channel({label!r}, ratio={self.ratio:g}, diversity={self.diversity is not None})"

    def wavefront(self, alpha: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The wavefront this channel sees, ``alpha * ratio + diversity``, the modes along ``dim`` of
        ``alpha`` (radians at the reference wavelength in, radians at this channel's out; same shape)."""
        a = alpha * self.ratio
        if self.diversity is not None:
            shape = [1] * a.dim()
            shape[dim] = -1
            a = a + self.diversity.to(a).reshape(shape)
        return a

    def psf_model(self, n_modes: int, size: int, device) -> PSFModel:
        """The :class:`~svrt.optics.psf.PSFModel` of PSFs of side ``size`` of this channel's instrument."""
        key = (int(n_modes), int(size), str(device))
        model = self._psf_models.get(key)
        if model is None:
            if self.instrument is None:
                raise SvrtError("this channel has no instrument, so it has no PSFs; build it with one.")
            model = PSFModel(self.instrument, n_modes, psf_size=size, device=device)
            self._psf_models[key] = model
        return model

    def psf(self, alpha: torch.Tensor, n_modes: int, size: int, device) -> torch.Tensor:
        """PSFs ``[..., S, S]`` of this channel for wavefronts ``alpha [..., M]`` (reference radians)."""
        return self.psf_model(n_modes, size, device)(self.wavefront(alpha))

    def patch_otf(self, alpha: torch.Tensor, n_modes: int, size: int, device,
                  attenuation: torch.Tensor | None = None) -> torch.Tensor:
        """OTFs ``[..., S, S // 2 + 1]`` of a patch of side S (rfft2 grid) for wavefronts ``alpha [..., M]``,
        times ``attenuation`` (``[S, S // 2 + 1]``, :meth:`attenuation`) when given."""
        t = otf(self.psf(alpha, n_modes, size, device))
        if attenuation is not None:
            t = t * attenuation
        return t

    def field_otf(self, alpha: torch.Tensor, n_modes: int, psf_size: int, shape: tuple[int, int], device,
                  attenuation: torch.Tensor | None = None) -> torch.Tensor:
        """OTFs ``[L, Y, X]`` on the full FFT grid of a field ``shape = (Y, X)`` of the PSFs of side
        ``psf_size`` of wavefronts ``alpha [L, M]`` (the PSF's centre moved to pixel (0, 0)), times
        ``attenuation [Y, X]`` when given."""
        s = psf_size
        psf = self.psf(alpha, n_modes, s, device)                                          # [L, s, s]
        big = torch.zeros(alpha.shape[0], *shape, device=device)
        big[:, :s, :s] = psf
        t = torch.fft.fft2(torch.roll(big, shifts=(-(s // 2), -(s // 2)), dims=(-2, -1)))
        if attenuation is not None:
            t = t * attenuation
        return t

    def attenuation(self, nu: torch.Tensor, d_over_r0: float, n_fit: int) -> torch.Tensor:
        """The mean OTF factor of the wavefront beyond the ``n_fit`` fitted modes
        (:func:`svrt.optics.residual.fitting_error_otf`) at the frequencies ``nu`` (cycles per pixel, any
        shape), ``d_over_r0`` measured at the reference wavelength: D / r0 scales as ratio^(6/5)."""
        d = d_over_r0_at_wavelength(d_over_r0, self.ratio)
        return fitting_error_otf(nu / self.instrument.cutoff_cycles_per_pixel, d, n_fit)


def burst_channels(insts: list, diversity=None, n_modes: int | None = None) -> list[Channel]:
    """The channels of a burst: one per instrument in ``insts`` (channel 0 the reference wavelength), with
    the known defocus of a :class:`~svrt.optics.diversity.DiversitySpec` (``n_modes`` KL coefficients) where
    one is given. Channels already built are returned as they are."""
    if all(isinstance(c, Channel) for c in insts):
        return list(insts)
    coefficients = [None] * len(insts) if diversity is None else diversity.coefficients(n_modes)
    return [Channel(inst, ratio, d) for inst, ratio, d in zip(insts, wavelength_ratios(insts), coefficients)]
