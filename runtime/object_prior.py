"""The object's power spectrum, estimated from the burst, and the Wiener prior built from it.

For white noise of variance s^2 per pixel and an object of power spectrum ``P_O(nu)`` (per pixel,
``E|FFT(o)|^2 / N``), the estimate of least expected squared error given frames ``d_l = S_l o + n_l`` is
the minimiser of ::

    sum_l |d_l - S_l o|^2 / s^2  +  sum_nu |O(nu)|^2 / (N P_O(nu))

(the Wiener filter ``O = sum_l conj(S_l) D_l / (sum_l |S_l|^2 + s^2 / P_O)`` when the PSF is the same
everywhere). So the regularisation follows the noise and the object instead of a hand-tuned lambda:
frequencies where the frames' signal is below the noise are damped, the others are restored.

``P_O`` is estimated from the patches of the wavefront stage (:mod:`svrt.runtime.patch_mfbd`): in each
patch ``(<|D_l|^2>_l - s^2 sum w^2) / (<|S_l|^2>_l sum w^2)``, averaged in rings where the mean MTF is
not lost in the noise, and fitted with a power law ``P_O = A nu^-p`` (granulation and most solar scenes
are close to one inside the diffraction limit, and a fit keeps the estimate's noise out of the prior).

**The prior's interface.** The solver asks two things of an object prior, each a small Protocol so that a second
prior (a measured spectrum, a different law) has a place: an :class:`ObjectPrior` is ``P_O(nu)`` (called on
frequencies in cycles per pixel) with the header cards that describe it; an :class:`ObjectPriorFit` makes one
from the patch spectra (the signature of :func:`fit_object_power`). :class:`PowerLaw` and
:func:`fit_object_power` are the ones in use; :class:`~svrt.runtime.patch_mfbd.PatchProblem` takes the fit
(``prior_fit``), and the object stage turns the prior into the Wiener weights ``1 / P_O``.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from svrt.optics.filters import frequency_radius

__all__ = ["ObjectPrior", "ObjectPriorFit", "PowerLaw", "fit_object_power", "prior_weights"]


@runtime_checkable
class ObjectPrior(Protocol):
    """An object's power spectrum ``P_O(nu)`` per pixel (``E|FFT(o)|^2 / N``), nu in cycles per pixel (any
    shape), positive everywhere; ``cards()``: header cards that describe it (names without the object index)."""

    def __call__(self, nu: torch.Tensor) -> torch.Tensor: ...

    def cards(self) -> dict: ...


class ObjectPriorFit(Protocol):
    """Makes an :class:`ObjectPrior` from patch spectra: ``frame_power`` and ``mtf2`` ``[..., S, S/2+1]``
    (``<|D_l|^2>_l`` and ``<|S_l|^2>_l``), the noise variance per pixel, the window power ``sum w^2`` and the
    diffraction cutoff in cycles per pixel (:func:`fit_object_power`)."""

    def __call__(self, frame_power: torch.Tensor, mtf2: torch.Tensor, noise_var: float, window_power: float,
                 cutoff: float) -> ObjectPrior: ...


class PowerLaw:
    """``P(nu) = amplitude * nu^-slope`` (nu in cycles per pixel), with a floor for nu -> 0."""

    def __init__(self, amplitude: float, slope: float, nu_min: float):
        self.amplitude, self.slope, self.nu_min = float(amplitude), float(slope), float(nu_min)

    def __call__(self, nu: torch.Tensor) -> torch.Tensor:
        return self.amplitude * nu.clamp_min(self.nu_min).pow(-self.slope)

    def __repr__(self) -> str:
        return f"PowerLaw(amplitude={self.amplitude:.3g}, slope={self.slope:.3g})"

    def cards(self) -> dict:
        """POWER_SLOPE: the fitted slope p of ``nu^-p``."""
        return {"POWER_SLOPE": round(self.slope, 3)}


def fit_object_power(frame_power: torch.Tensor, mtf2: torch.Tensor, noise_var: float, window_power: float,
                     cutoff: float, band=(0.04, 0.7), min_snr: float = 0.5) -> PowerLaw:
    """Fit ``P_O`` from patch spectra.

    frame_power ``[..., S, S/2+1]``: ``<|D_l|^2>_l`` of each patch; mtf2 the same shape: ``<|S_l|^2>_l``;
    noise_var: s^2 per pixel; window_power: ``sum w^2`` of the patch apodisation; cutoff: D/lambda in
    cycles per pixel. Rings of width 1/S inside ``band`` (in units of the cutoff) where the signal exceeds
    ``min_snr`` times the noise enter a least-squares fit of log P against log nu."""
    s = frame_power.shape[-2]
    nu = frequency_radius((s, s), real=True, device=frame_power.device)
    noise = noise_var * window_power
    signal = (frame_power - noise).flatten(0, -3).mean(dim=0)                      # [S, S/2+1]
    m2 = mtf2.flatten(0, -3).mean(dim=0)
    ring = torch.round(nu * s).long()
    xs, ys, ws = [], [], []
    for r in range(1, int(ring.max()) + 1):
        f = r / s
        if not (band[0] * cutoff <= f <= band[1] * cutoff):
            continue
        sel = ring == r
        sig = float(signal[sel].mean())
        if sig <= min_snr * noise:
            continue
        p = sig / (float(m2[sel].mean()) * window_power)
        if p > 0 and math.isfinite(p):
            xs.append(math.log(f))
            ys.append(math.log(p))
            ws.append(float(sel.sum()))
    if len(xs) < 3:
        # too little signal to fit: a k^-3 law (granulation's slope inside the cutoff) through the lowest ring
        total = float(signal.flatten()[1:].clamp_min(0).mean()) / window_power
        return PowerLaw(max(total, 1e-12) * (1.0 / s) ** 3, 3.0, 1.0 / s)
    x, y, w = np.array(xs), np.array(ys), np.sqrt(np.array(ws))
    slope, intercept = np.polyfit(x, y, 1, w=w)
    return PowerLaw(math.exp(intercept), -slope, 1.0 / s)


def prior_weights(shape: tuple[int, int], power: PowerLaw, device=None) -> torch.Tensor:
    """``1 / P_O(nu)`` on the rfft2 grid of an image of ``shape``: ``[Y, X/2+1]``; 0 at nu = 0 (the
    mean is the data's, never pulled towards anything)."""
    nu = frequency_radius(shape, real=True, device=device)
    r = 1.0 / power(nu)
    r[0, 0] = 0.0
    return r
