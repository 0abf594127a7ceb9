"""Single-conjugate adaptive optics: a wavefront sensor locked on one field point and a deformable
mirror conjugate to the pupil (the ground layer).

Model (ideal, as in the anisoplanatism error budget of Fried 1982): the wavefront sensor measures the
wavefront of the lock point (the field centre, or ``lock_arcsec``) without noise, time lag or
aliasing, as its least-squares projection onto KL 1..N (tip/tilt included) over the whole pupil; the
mirror takes the shape ``sum_{l<=N} c_l KL_l`` and, sitting in a pupil plane, subtracts that same phase
from the wavefront of *every* field point. So the lock point keeps only the modes beyond N (the
fitting error, ``kl_residual_variances(N)[N] (D / r0)^(5/3)`` rad^2), a field point an angle a away
keeps in addition the part of its wavefront that differs from the lock point's (high layers:
anisoplanatism, growing with a), and the ground layer, common to all field points, is corrected
everywhere.

Example
-------
>>> import numpy as np
>>> from svrt.adaptive_optics import AdaptiveOptics
>>> from svrt.atmosphere import Atmosphere
>>> from svrt.phase_screens import layered_screens
>>> atm = Atmosphere.from_theta0(r0_cm=7.0, theta0_arcsec=2.0)
>>> ao = AdaptiveOptics("crisp8542", n_modes=36)
>>> frame = next(layered_screens("crisp8542", atm, 1, 0.0, np.random.default_rng(1)))
>>> bool(np.abs(ao.measure(ao.correct(frame))).max() < 1e-9)   # the lock point is flat in KL 1..36
True
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from svrt.errors import SvrtError
from svrt.instruments import ARCSEC_PER_RADIAN, Instrument, get_instrument
from svrt.optics.kl import DEFAULT_ZERNIKE_ORDER, kl_basis, kl_pupil_projector

if TYPE_CHECKING:  # annotations only: svrt.phase_screens imports this module to correct its screens
    from svrt.phase_screens import LayeredScreens

# KL modes svrt builds (from the Zernikes of radial orders 1..16): the most a mirror can correct here.
MAX_AO_MODES = (DEFAULT_ZERNIKE_ORDER + 1) * (DEFAULT_ZERNIKE_ORDER + 2) // 2 - 1


class DeformableMirror:
    """A pupil-conjugated mirror shape: ``phase(x, y) = sum_l c_l KL_l(x / R, y / R)`` (rad at the instrument's
    wavelength), ``coefficients [N]`` of KL 1..N, pupil radius ``radius_m``.

    Called with pupil points ``(x_m [P], y_m [P])`` (m) it returns the phase ``[P]`` (torch float64).
    The last point set is cached: a burst asks for the same pupil grid once per block of pixels.
    """

    def __init__(self, coefficients, radius_m: float):
        self.coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1)
        self.radius_m = float(radius_m)
        self._key, self._value = None, None

    def __call__(self, x_m, y_m):
        import torch

        x = np.ascontiguousarray(x_m, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(y_m, dtype=np.float64).reshape(-1)
        key = (x.size, hash(x.tobytes()), hash(y.tobytes()))
        if key != self._key:
            rho, theta = np.hypot(x, y) / self.radius_m, np.arctan2(y, x)
            modes = kl_basis(self.coefficients.size).evaluate(rho, theta)            # [N, P]
            self._key, self._value = key, torch.as_tensor(self.coefficients @ modes)
        return self._value


class AdaptiveOptics:
    """Ground-conjugated AO correcting KL 1..``n_modes`` of the wavefront at ``lock_arcsec``.

    Parameters
    ----------
    instrument : label or :class:`~svrt.instruments.Instrument` (pupil, wavelength).
    n_modes : N, corrected KL modes 1..N, tip/tilt included (0: no AO; at most ``MAX_AO_MODES``).
    lock_arcsec : (y, x) field angle of the lock point in arcsec from the field centre (on the sky).
    pupil_px : sampling of the wavefront sensor: pupil points across D of its least-squares fit.
    """

    def __init__(self, instrument: str | Instrument, n_modes: int = 0, lock_arcsec=(0.0, 0.0), pupil_px: int = 64):
        self.instrument = get_instrument(instrument)
        if isinstance(n_modes, bool) or not isinstance(n_modes, numbers.Integral) or not 0 <= n_modes <= MAX_AO_MODES:
            raise SvrtError(f"ao_modes must be an integer from 0 (no AO) to {MAX_AO_MODES}; got {n_modes!r}.")
        try:
            lock = tuple(float(v) for v in lock_arcsec)
        except (TypeError, ValueError):
            lock = ()
        if len(lock) != 2 or not all(np.isfinite(lock)):
            raise SvrtError("ao_lock_arcsec must be a (y, x) pair of finite field angles in arcsec; got "
                            f"{lock_arcsec!r}.")
        self.n_modes = int(n_modes)
        self.lock_arcsec = lock
        self.pupil_px = int(pupil_px)

    @property
    def reach_arcsec(self) -> float:
        """Distance of the lock point from the field centre (arcsec; 0 without AO): screens must cover it."""
        return float(np.hypot(*self.lock_arcsec)) if self.n_modes else 0.0

    def measure(self, screens: LayeredScreens) -> np.ndarray:
        """Wavefront sensor: KL 1..N coefficients ``[N]`` (rad at the instrument's wavelength) of the
        wavefront of the lock point, by weighted least squares over the pupil (piston fitted, dropped)."""
        if self.n_modes == 0:
            return np.zeros(0)
        x, y, projector = kl_pupil_projector(self.instrument, self.n_modes, self.pupil_px)
        ly, lx = (a / ARCSEC_PER_RADIAN for a in self.lock_arcsec)
        return projector @ screens.phase([ly], [lx], x, y)[0].numpy()

    def correct(self, screens: LayeredScreens) -> LayeredScreens:
        """The turbulence of one exposure seen through the AO: ``screens`` with the mirror's phase,
        the measured KL 1..N of the lock point, subtracted at every field point (N = 0: unchanged)."""
        if self.n_modes == 0:
            return screens
        return screens.corrected(DeformableMirror(self.measure(screens), self.instrument.diameter_m / 2))

    def __repr__(self) -> str:
        return f"AdaptiveOptics({self.instrument.label}, n_modes={self.n_modes}, lock_arcsec={self.lock_arcsec})"
