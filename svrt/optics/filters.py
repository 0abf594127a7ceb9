"""Fourier-plane quantities: spatial frequencies, the diffraction cutoff and the erf filter of Eq. 16.

Frequencies are in cycles per camera pixel, laid out as :func:`torch.fft.fftfreq` /
:func:`torch.fft.rfftfreq` lay them out, so the filters multiply ``fft2``/``rfft2`` spectra directly.
"""

from __future__ import annotations

import torch


def frequency_radius(shape: tuple[int, int], *, real: bool = False, dtype=torch.float32, device=None) -> torch.Tensor:
    """|f| in cycles per pixel on the FFT grid of an image of ``shape`` = (Y, X).

    Returns ``[Y, X]``, or ``[Y, X//2+1]`` when ``real`` (the layout of ``rfft2``).
    """
    y, x = shape
    fy = torch.fft.fftfreq(y, dtype=dtype, device=device)[:, None]
    fx = (torch.fft.rfftfreq(x, dtype=dtype, device=device) if real
          else torch.fft.fftfreq(x, dtype=dtype, device=device))[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def erf_filter_profile(nu: torch.Tensor, width: float = 1.8, sharpness: float = 20.0) -> torch.Tensor:
    """H(nu) of Eq. 16: ``0.5 * (erf(n (nu + w/2)) - erf(n (nu - w/2)))``.

    ``nu`` is the spatial frequency in units of the diffraction cutoff D/lambda. A flat top (H ~ 1)
    out to nu ~ w/2 with an erf roll-off of width ~1/n: the convolution of a rectangle of full width
    ``w`` and a Gaussian. With the paper's w = 1.8, n = 20 the filter falls to 1/2 at 0.9 of the cutoff.

    >>> [round(float(h), 3) for h in erf_filter_profile(torch.tensor([0.0, 0.9, 1.0]))]
    [1.0, 0.5, 0.002]
    """
    return 0.5 * (torch.erf(sharpness * (nu + 0.5 * width)) - torch.erf(sharpness * (nu - 0.5 * width)))


def erf_filter(shape: tuple[int, int], cutoff_cycles_per_pixel: float, width: float = 1.8,
               sharpness: float = 20.0, *, real: bool = True, dtype=torch.float32, device=None) -> torch.Tensor:
    """The erf filter H of Eq. 16 sampled on the FFT grid of an image of ``shape`` = (Y, X).

    ``cutoff_cycles_per_pixel`` is D/lambda in cycles per pixel, i.e. ``Instrument.cutoff_cycles_per_pixel``.
    Returns ``[Y, X//2+1]`` (``real=True``, for ``rfft2``) or ``[Y, X]``.
    """
    nu = frequency_radius(shape, real=real, dtype=dtype, device=device) / cutoff_cycles_per_pixel
    return erf_filter_profile(nu, width, sharpness)
