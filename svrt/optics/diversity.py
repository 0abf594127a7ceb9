"""Phase diversity: a channel that images the same object as a focused channel through a known defocus
(Gonsalves 1982; Paxman, Schulz & Fienup 1992; Löfdahl & Scharmer 1994).

Convention (the field's: Löfdahl & Scharmer 1994 quote the diversity in waves peak-to-valley). The
defocus of channel k is ``W`` waves peak-to-valley at that channel's wavelength over the full (unobscured)
aperture: the phase ``a4 Z4(rho) = a4 sqrt(3) (2 rho^2 - 1)`` with ``Z4`` Noll's unit-RMS defocus, whose
peak-to-valley is ``2 sqrt(3) a4``, so ``a4 = 2 pi W / (2 sqrt(3)) = pi W / sqrt(3)`` radians RMS. W > 0
adds a phase that grows towards the pupil edge (the sign of ``svrt.optics.zernike.zernike(4, ...)``).
A focus shift ``dz`` along the optical axis at a focal plane of f-number F gives the peak-to-valley
optical path ``dz / (8 F^2)``, i.e. ``W = dz / (8 F^2 lambda)`` (:func:`waves_from_focus_shift`).

In the solver's wavefront basis (KL 1..M, :mod:`svrt.optics.kl`) the defocus is its projection
``a4 C[:, 2]`` (:func:`diversity_coefficients`): Z4 lies in the span of the Zernikes the KL modes rotate,
and the first 44 KL modes hold 99.97 % of its variance (the rest, 1.8 % of a4 RMS, is high-order
spherical aberration; 0.03 rad for one wave).

Burst file cards (primary header; a burst without them is an ordinary burst):

* ``DIVERSk`` [waves, peak-to-valley, at channel k's wavelength]: the known defocus of channel k; or
* ``DIVMMk`` [mm]: the focus shift of channel k's camera, with ``FNUMk`` (or one ``FNUMBER`` for every
  channel) the f-number of the beam at that focal plane;
* ``DIVOBJk`` [int]: the channel whose object channel k images (its focused partner). Required with
  ``DIVERSk``/``DIVMMk``; the partner must be observed with the same instrument and must not itself
  point to another channel.

Channels tied to one object form a *group*; the solver eliminates (patch stage) and estimates (object
stage) one object per group, and writes it once per channel (in each channel's photometric units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from svrt.errors import SvrtError

__all__ = ["DiversitySpec", "defocus_rms_rad", "waves_from_focus_shift", "diversity_coefficients", "defocus_phase",
           "read_diversity", "diversity_cards", "DIVERSITY_COMMENTS"]

PV_OVER_RMS = 2.0 * math.sqrt(3.0)          # peak-to-valley / RMS of Noll's Z4 over the unit disk
MAX_DIVERSITY_WAVES = 20.0                  # beyond this a value is a unit mistake (mm or nm given as waves)

DIVERSITY_COMMENTS = {}
for _k in range(10):
    DIVERSITY_COMMENTS[f"DIVERS{_k}"] = f"[waves P-V] known defocus of channel {_k}"
    DIVERSITY_COMMENTS[f"DIVOBJ{_k}"] = f"channel whose object channel {_k} images"
    DIVERSITY_COMMENTS[f"DIVMM{_k}"] = f"[mm] focus shift of channel {_k}"
    DIVERSITY_COMMENTS[f"FNUM{_k}"] = f"f-number at the focal plane of channel {_k}"


def defocus_rms_rad(waves_pv: float) -> float:
    """Noll Z4 coefficient (radians RMS) of a defocus of ``waves_pv`` waves peak-to-valley."""
    return 2.0 * math.pi * float(waves_pv) / PV_OVER_RMS


def waves_from_focus_shift(shift_mm: float, f_number: float, wavelength_angstrom: float) -> float:
    """Peak-to-valley defocus in waves of a focus shift ``shift_mm`` at a focal plane of f-number F:
    ``dz / (8 F^2 lambda)`` (the sagitta difference of the two spheres over the aperture)."""
    if not (f_number > 0 and math.isfinite(f_number)):
        raise SvrtError(f"the f-number of a diversity focus shift must be a positive number; got {f_number!r}.")
    return float(shift_mm) * 1e-3 / (8.0 * f_number ** 2 * float(wavelength_angstrom) * 1e-10)


def diversity_coefficients(waves_pv: float, n_modes: int) -> np.ndarray:
    """``[M]`` KL coefficients (radians) of a defocus of ``waves_pv`` waves P-V: the projection of
    ``a4 Z4`` on KL 1..M (the rows of the KL basis are orthonormal in the Zernike coefficients)."""
    from svrt.optics.kl import kl_basis

    return (defocus_rms_rad(waves_pv) * kl_basis(n_modes).coefficients[:, 2]).astype(np.float64)


def defocus_phase(waves_pv: float, x_m: np.ndarray, y_m: np.ndarray, diameter_m: float) -> np.ndarray:
    """The exact defocus phase (radians) ``a4 sqrt(3) (2 rho^2 - 1)`` at pupil points ``x_m, y_m`` (metres)."""
    rho2 = (np.asarray(x_m) ** 2 + np.asarray(y_m) ** 2) / (diameter_m / 2.0) ** 2
    return defocus_rms_rad(waves_pv) * math.sqrt(3.0) * (2.0 * rho2 - 1.0)


@dataclass(frozen=True)
class DiversitySpec:
    """Which object each channel images and its known defocus.

    partner: [K] the channel whose object channel k images (k itself for a channel of its own object).
    waves: [K] defocus in waves P-V at each channel's wavelength (0 for a focused channel).
    """

    partner: tuple
    waves: tuple

    @property
    def anchors(self) -> list[int]:
        """The channels that carry their own object (one per group), in order."""
        return [k for k, p in enumerate(self.partner) if p == k]

    @property
    def owner(self) -> list[int]:
        """[K] the row of each channel's object among :attr:`anchors`."""
        row = {a: i for i, a in enumerate(self.anchors)}
        return [row[p] for p in self.partner]

    @property
    def groups(self) -> list[list[int]]:
        """The channels of each object (one list per anchor, the anchor first)."""
        return [[k for k, p in enumerate(self.partner) if p == a] for a in self.anchors]

    @property
    def active(self) -> bool:
        """True when any channel shares another's object (otherwise the solve is the ordinary one)."""
        return any(p != k for k, p in enumerate(self.partner))

    def coefficients(self, n_modes: int) -> list:
        """Per channel: ``[M]`` KL coefficients of its defocus (radians at its own wavelength), or None."""
        return [diversity_coefficients(w, n_modes) if w else None for w in self.waves]


def _number(header: Mapping[str, Any], key: str, where: str, what: str) -> float:
    v = header[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        raise SvrtError(f"{key} in {where} must be a finite number ({what}); got {v!r}.")
    return float(v)


def read_diversity(
    header: Mapping[str, Any], instruments: Sequence[str], where: str = "the burst"
) -> DiversitySpec | None:
    """The :class:`DiversitySpec` declared by the cards ``DIVERSk``/``DIVMMk``/``FNUMk``/``DIVOBJk`` of a
    burst header (see the module docstring), or None when there are none; one SvrtError sentence on
    every inconsistency."""
    from svrt.instruments import get_instrument

    h = {str(key).upper(): v for key, v in dict(header or {}).items()}
    k = len(instruments)
    if not any(f"{p}{i}" in h for i in range(k) for p in ("DIVERS", "DIVMM", "DIVOBJ")):
        return None
    partner, waves = list(range(k)), [0.0] * k
    for i in range(k):
        has_w, has_mm = f"DIVERS{i}" in h, f"DIVMM{i}" in h
        if has_w and has_mm:
            raise SvrtError(f"{where} gives both DIVERS{i} and DIVMM{i}; give the defocus of channel {i} once.")
        if has_w:
            waves[i] = _number(h, f"DIVERS{i}", where, "waves peak-to-valley")
        elif has_mm:
            fkey = f"FNUM{i}" if f"FNUM{i}" in h else "FNUMBER"
            if fkey not in h:
                raise SvrtError(f"{where} gives DIVMM{i} (a focus shift in mm) without FNUM{i} or FNUMBER; "
                                "expected the f-number of the beam at that focal plane.")
            waves[i] = waves_from_focus_shift(_number(h, f"DIVMM{i}", where, "mm"), _number(h, fkey, where, "f-number"),
                                              get_instrument(instruments[i]).wavelength_angstrom)
        if abs(waves[i]) > MAX_DIVERSITY_WAVES:
            raise SvrtError(f"the defocus of channel {i} in {where} is {waves[i]:.3g} waves P-V; expected at most "
                            f"{MAX_DIVERSITY_WAVES:g} (a phase-diversity defocus is about 1 wave: check the units).")
        if f"DIVOBJ{i}" in h:
            p = h[f"DIVOBJ{i}"]
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= int(p) < k:
                raise SvrtError(f"DIVOBJ{i} in {where} must be a channel index in 0..{k - 1}; got {p!r}.")
            if int(p) == i:
                others = ", ".join(str(j) for j in range(k) if j != i) or "none"
                raise SvrtError(f"DIVOBJ{i} in {where} points to channel {i} itself; expected the index of the other "
                                f"channel whose object channel {i} images ({others}), or no DIVOBJ{i} card.")
            partner[i] = int(p)
        elif waves[i] != 0.0:
            raise SvrtError(f"{where} gives a defocus for channel {i} but no DIVOBJ{i}; expected the index of the "
                            "focused channel that images the same object.")
    for i, p in enumerate(partner):
        if p == i:
            continue
        if partner[p] != p:
            raise SvrtError(f"DIVOBJ{i} in {where} points to channel {p}, which itself points to channel {partner[p]}; "
                            "expected every diversity channel to point to a channel of its own object.")
        if get_instrument(instruments[i]).label != get_instrument(instruments[p]).label:
            raise SvrtError(f"channel {i} ({instruments[i]}) and its partner {p} ({instruments[p]}) in {where} were "
                            "observed with different instruments; a diversity channel must image its partner's object "
                            "through the same instrument.")
    return DiversitySpec(partner=tuple(partner), waves=tuple(waves))


def diversity_cards(spec: DiversitySpec) -> dict:
    """The header cards (DIVERSk, DIVOBJk) of the channels that share another's object."""
    out = {}
    for i, (p, w) in enumerate(zip(spec.partner, spec.waves)):
        if p != i or w:
            out[f"DIVERS{i}"] = float(w)
            out[f"DIVOBJ{i}"] = int(p)
    return out
