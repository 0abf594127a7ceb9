"""Kolmogorov and von Karman turbulence: the statistics. The Fried radius r0 and its wavelength, the
variances of the KL coefficients and random coefficients drawn from them, the phase power spectrum, and
the layered profile of the atmosphere (:class:`Atmosphere`: r0, layer heights and C_n^2 fractions,
isoplanatic angle). The phase screens of the layers and what each field point sees through them are in
:mod:`svrt.phase_screens`.

r0 convention: a Fried radius is given in cm *at a reference wavelength* (default 5000 A) and scaled to
the instrument's wavelength as r0(lambda) = r0_ref (lambda / lambda_ref)^(6/5). Coefficients are radians
of phase at the instrument's wavelength.
"""

from __future__ import annotations

import numpy as np

from svrt.errors import SvrtError
from svrt.instruments import ARCSEC_PER_RADIAN, Instrument, get_instrument
from svrt.mode_grid import N_MODES
from svrt.optics.kl import kl_basis
from svrt.optics.zernike import KOLMOGOROV_C as KOLMOGOROV_PSD

R0_REFERENCE_WAVELENGTH = 5000.0  # Angstrom


def r0_at_wavelength(r0_cm: float, wavelength_angstrom: float,
                     reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> float:
    """Fried radius (cm) at ``wavelength_angstrom`` given ``r0_cm`` at ``reference_angstrom``."""
    if not r0_cm > 0:
        raise SvrtError(f"r0 must be positive (cm); got {r0_cm}.")
    return r0_cm * (wavelength_angstrom / reference_angstrom) ** 1.2


def d_over_r0_at_wavelength(d_over_r0: float, reference_over_wavelength: float) -> float:
    """D / r0 at a wavelength lambda from ``d_over_r0`` at a reference wavelength, given
    ``reference_over_wavelength`` = lambda_ref / lambda: r0 grows as lambda^(6/5) (:func:`r0_at_wavelength`),
    so D / r0 scales as (lambda_ref / lambda)^(6/5).

    >>> round(d_over_r0_at_wavelength(10.0, 2.0), 4)    # half the wavelength: 2^(6/5) times D / r0
    22.974
    """
    return float(d_over_r0) / r0_at_wavelength(1.0, 1.0, reference_over_wavelength)


def kl_standard_deviations(instrument: str | Instrument, r0_cm: float, n_modes: int = N_MODES,
                           reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> np.ndarray:
    """RMS (radians) of each KL coefficient ``[n_modes]``: sqrt(variance_l (D/r0(lambda))^(5/3))."""
    inst = get_instrument(instrument)
    r0 = r0_at_wavelength(r0_cm, inst.wavelength_angstrom, reference_angstrom)
    return np.sqrt(kl_basis(n_modes).variances * (inst.diameter_cm / r0) ** (5 / 3))


def kolmogorov_coefficients(instrument: str | Instrument, r0_cm: float, n_modes: int = N_MODES,
                            size: int | tuple = (), rng: np.random.Generator | None = None,
                            reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> np.ndarray:
    """Random KL coefficients ``[*size, n_modes]`` (radians) of Kolmogorov wavefronts (Roddier 1990)."""
    rng = rng if rng is not None else np.random.default_rng()
    size = (size,) if isinstance(size, int) else tuple(size)
    sd = kl_standard_deviations(instrument, r0_cm, n_modes, reference_angstrom)
    return (rng.standard_normal(size + (n_modes,)) * sd).astype(np.float32)


DEFAULT_GROUND_FRACTION = 0.6
DEFAULT_HIGH_FRACTIONS = (0.25, 0.15)
DEFAULT_HIGH_RELATIVE_HEIGHTS = (1.0, 3.0)
DEFAULT_THETA0_ARCSEC = 2.0  # at 5000 A; a typical daytime value at a good site


# Phi(f) = C r0^(-5/3) f^(-11/3), f in cycles per metre, with the exact C = 0.0228956 (not the rounded
# 0.023) so that screens and the KL variances of svrt.optics.zernike agree (KOLMOGOROV_PSD, imported above).


def _check_outer_scale(outer_scale_m) -> float | None:
    """None (or inf) for Kolmogorov, else the von Karman outer scale L0 in metres (> 0)."""
    if outer_scale_m is None:
        return None
    try:
        l0 = float(outer_scale_m)
    except (TypeError, ValueError):
        raise SvrtError(f"the outer scale must be a number of metres or None (Kolmogorov); "
                        f"got {outer_scale_m!r}.") from None
    if l0 == float("inf"):
        return None
    if not (l0 > 0 and np.isfinite(l0)):
        raise SvrtError(f"the outer scale L0 must be positive (m) or None for Kolmogorov; got {outer_scale_m!r}.")
    return l0


def _spectrum_of_f2(f2: np.ndarray, outer_scale_m: float | None) -> np.ndarray:
    """Phi for r0 = 1 m as a function of the *squared* frequency f2 (cycles^2 / m^2)."""
    if outer_scale_m is None:
        return KOLMOGOROV_PSD * f2 ** (-11.0 / 6.0)
    return KOLMOGOROV_PSD * (f2 + outer_scale_m ** -2.0) ** (-11.0 / 6.0)


def von_karman_psd(f, r0_m: float, outer_scale_m: float | None = None) -> np.ndarray:
    """Phase power spectral density Phi(f) in rad^2 m^2 of von Karman turbulence.

    ``Phi(f) = C r0^(-5/3) (f^2 + 1 / L0^2)^(-11/6)``, f in cycles per metre (any shape), r0 in metres
    at the wavelength the phase refers to, C = 0.0228956 (:data:`svrt.optics.zernike.KOLMOGOROV_C`).
    ``outer_scale_m`` None (or inf) gives Kolmogorov, ``C r0^(-5/3) f^(-11/3)``. A finite L0 flattens
    the spectrum below f ~ 1/L0: the phase variance becomes finite, ``0.0863 (L0 / r0)^(5/3)``, and the
    large scales that dominate tip/tilt lose power (the inner scale is taken as zero).
    """
    l0 = _check_outer_scale(outer_scale_m)
    f = np.asarray(f, dtype=float)
    return _spectrum_of_f2(f * f, l0) * float(r0_m) ** (-5.0 / 3.0)


# The layered atmosphere. The turbulence is a few thin layers at heights h_i (m) carrying fractions w_i of the
# integrated C_n^2 (sum w_i = 1). A layer alone has the Fried radius r0_i = r0 w_i^(-3/5), so the
# phase structure functions add up to that of r0. The isoplanatic angle of the profile is
# (Fried 1982, zenith, no cos z factors)
#     theta0 = 0.314 r0 / h_eff,   h_eff = (sum_i w_i h_i^(5/3))^(3/5),
# with r0 and theta0 at the same wavelength (both scale as lambda^(6/5), h_eff does not).
# The default profile for a given (r0, theta0) is a ground layer (w = 0.6, h = 0: the telescope and
# near-ground seeing, identical for every field point) plus two free-atmosphere layers with
# w = 0.25 at h and w = 0.15 at 3 h, where h follows from theta0. A star (a field point) at angle
# (a_y, a_x) from the field centre sees, in the layer at height h_i, the pupil footprint shifted by
# h_i (a_y, a_x); the wavefront of the field point is the sum of the layers' phases over their
# footprints (geometric optics, no scintillation, frozen screens during one short exposure).


class Atmosphere:
    """Thin turbulent layers above the telescope.

    ``heights_m`` (m above the telescope) and ``fractions`` (of the integrated C_n^2, summing to 1)
    of each layer and the total Fried radius ``r0_cm`` (cm at 5000 A). Layer i alone has
    ``r0_i = r0 * w_i^(-3/5)``. The isoplanatic angle is ``theta0 = 0.314 r0 / h_eff`` with
    ``h_eff = (sum_i w_i h_i^(5/3))^(3/5)`` (infinite for a pure ground layer). ``outer_scale_m``: the
    von Karman outer scale L0 (m, the same for every layer; None = Kolmogorov). r0 and theta0 keep
    their Kolmogorov definitions (the small-scale turbulence strength); a finite L0 takes power from
    the large scales only.

    Example
    -------
    >>> atm = Atmosphere.from_theta0(r0_cm=10.0, theta0_arcsec=2.0)
    >>> [round(h) for h in atm.heights_m]       # ground layer, then h and 3 h
    [0, 2923, 8770]
    >>> round(atm.theta0_arcsec(), 3)          # at 5000 A
    2.0
    """

    def __init__(self, r0_cm: float, heights_m, fractions, outer_scale_m: float | None = None):
        if not r0_cm > 0:
            raise SvrtError(f"r0 must be positive (cm at 5000 A); got {r0_cm}.")
        h = np.asarray(heights_m, dtype=float).reshape(-1)
        w = np.asarray(fractions, dtype=float).reshape(-1)
        if h.size == 0 or h.shape != w.shape:
            raise SvrtError(f"an atmosphere needs as many layer heights as fractions; got {h.size} and {w.size}.")
        if np.any(h < 0) or np.any(w <= 0) or not np.all(np.isfinite(h)):
            raise SvrtError("layer heights must be finite and >= 0 m and layer fractions > 0.")
        self.r0_cm = float(r0_cm)
        self.heights_m = tuple(float(v) for v in h)
        self.fractions = tuple(float(v) for v in w / w.sum())
        self.outer_scale_m = _check_outer_scale(outer_scale_m)

    @classmethod
    def from_theta0(cls, r0_cm: float, theta0_arcsec: float | None = DEFAULT_THETA0_ARCSEC,
                    ground_fraction: float = DEFAULT_GROUND_FRACTION,
                    high_fractions=DEFAULT_HIGH_FRACTIONS,
                    high_relative_heights=DEFAULT_HIGH_RELATIVE_HEIGHTS,
                    outer_scale_m: float | None = None) -> "Atmosphere":
        """The default profile: a ground layer with ``ground_fraction`` of the C_n^2 at h = 0 and high
        layers with ``high_fractions`` at heights ``h * high_relative_heights``, h chosen so that the
        profile's isoplanatic angle is ``theta0_arcsec`` (arcsec at 5000 A, like ``r0_cm``).
        ``theta0_arcsec`` None or infinite: all the turbulence in the ground layer (isoplanatic).
        ``outer_scale_m``: von Karman L0 of every layer (m; None = Kolmogorov)."""
        if not r0_cm > 0:
            raise SvrtError(f"r0 must be positive (cm at 5000 A); got {r0_cm}.")
        if theta0_arcsec is None or np.isinf(theta0_arcsec):
            return cls(r0_cm, [0.0], [1.0], outer_scale_m)
        if not theta0_arcsec > 0:
            raise SvrtError(f"the isoplanatic angle theta0 must be positive (arcsec at 5000 A); got {theta0_arcsec}.")
        wh = np.asarray(high_fractions, dtype=float)
        rel = np.asarray(high_relative_heights, dtype=float)
        if not (0 <= ground_fraction < 1) or wh.shape != rel.shape or wh.size == 0 or np.any(rel <= 0):
            raise SvrtError("a layered atmosphere needs 0 <= ground_fraction < 1 and one positive relative height "
                            "per high layer.")
        wh = wh / wh.sum() * (1.0 - ground_fraction)
        h_eff = 0.314 * (r0_cm / 100.0) / (theta0_arcsec / ARCSEC_PER_RADIAN)
        h = h_eff / float(np.sum(wh * rel ** (5.0 / 3.0))) ** 0.6
        heights = [0.0] + list(h * rel)
        fractions = [ground_fraction] + list(wh)
        if ground_fraction == 0:
            heights, fractions = heights[1:], fractions[1:]
        return cls(r0_cm, heights, fractions, outer_scale_m)

    @property
    def effective_height_m(self) -> float:
        """h_eff = (sum w_i h_i^(5/3))^(3/5) in metres."""
        return float(np.sum(np.asarray(self.fractions) * np.asarray(self.heights_m) ** (5.0 / 3.0)) ** 0.6)

    def theta0_arcsec(self, wavelength_angstrom: float = R0_REFERENCE_WAVELENGTH) -> float:
        """Isoplanatic angle 0.314 r0 / h_eff (arcsec) at ``wavelength_angstrom`` (inf without high layers)."""
        h = self.effective_height_m
        if h == 0:
            return float("inf")
        r0 = r0_at_wavelength(self.r0_cm, wavelength_angstrom) / 100.0
        return 0.314 * r0 / h * ARCSEC_PER_RADIAN

    def layer_r0_cm(self) -> tuple:
        """Fried radius of each layer alone (cm at 5000 A): r0 w_i^(-3/5)."""
        return tuple(self.r0_cm * w ** (-0.6) for w in self.fractions)

    def __repr__(self) -> str:
        layers = ", ".join(f"{w:.2f}@{h:.0f}m" for h, w in zip(self.heights_m, self.fractions))
        l0 = "inf" if self.outer_scale_m is None else f"{self.outer_scale_m:g} m"
        return (f"Atmosphere(r0={self.r0_cm:g} cm at 5000 A, layers=[{layers}], theta0={self.theta0_arcsec():.3g}\", "
                f"L0={l0})")
