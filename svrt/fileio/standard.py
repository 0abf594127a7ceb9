"""The standard metadata every file svrt writes carries (FITS 4.0, SOLARNET): the celestial WCS of the image
axes, the times of the observation, ORIGIN, LEVEL, and what svrt knows of the seeing (ATMOS_R0, AO_NMODE).

Cards a header already has are never replaced (the input's WCS, dates and exposure win), except those
that describe the restored data rather than the observation: a restoration of L frames sums L exposures
(``NSUMEXP = L x`` the input's, ``XPOSURE = L x EXPTIME``), is ``LEVEL = '2'`` and has the ATMOS_R0 of its
own fitted wavefronts. What svrt fills in when the header lacks it:

- WCS (only when the pixel size ``CDELT1/2`` [arcsec] is known; an image HDU has a full WCS or none):
  ``CTYPE1/2 = 'HPLN-TAN'/'HPLT-TAN'``, ``CUNIT1/2 = 'arcsec'``, ``CRPIX1/2`` the centre of the field
  (``(X + 1) / 2``, ``(Y + 1) / 2``, FITS pixels count from 1) and ``CRVAL1/2`` = :data:`DEFAULT_POINTING`
  (disk centre, 0", 0"): the documented pointing of a simulation, which has none.
- Times (only from a known start, ``DATE-BEG`` or ``DATE-OBS``; a simulation starts at
  :data:`SIMULATION_DATE`): ``DATE-END = DATE-BEG + L x EXPTIME`` (contiguous exposures: the shortest
  burst those frames allow, when the input does not say), ``DATE-AVG`` the midpoint, ``DATEREF =
  DATE-BEG``; ``XPOSURE`` [s] and ``NSUMEXP`` (a burst's frames are one exposure each).
- ``ORIGIN = 'svrt'`` (the file's creator, as ``DATE`` is its creation date).
- ``AO_NMODE`` from the simulation's ``AOMODES`` when AO was on.

Built with :mod:`astropy.wcs` (the cards are checked by building the WCS) and :mod:`astropy.time`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: the start of a simulated burst, which has no date: J2000.0 (a date no observation is mistaken for)
SIMULATION_DATE = "2000-01-01T12:00:00.000"
#: [arcsec] the pointing (CRVAL1, CRVAL2) of an image without one: disk centre
DEFAULT_POINTING = (0.0, 0.0)
#: [s] the exposure of one simulated frame (EXPTIME), a CRISP-like short exposure
SIMULATION_EXPTIME = 0.012
#: SOLARNET data level of a restoration (calibrated frames, level 1, restored)
RESTORATION_LEVEL = "2"
ORIGIN = "svrt"

STANDARD_COMMENTS = {
    "CTYPE1": "helioprojective longitude, gnomonic (TAN)",
    "CTYPE2": "helioprojective latitude, gnomonic (TAN)",
    "CRPIX1": "reference pixel along X (FITS axis 1)",
    "CRPIX2": "reference pixel along Y (FITS axis 2)",
    "CRVAL1": "[arcsec] longitude at CRPIX (0: disk centre)",
    "CRVAL2": "[arcsec] latitude at CRPIX (0: disk centre)",
    "WCSAXES": "the WCS describes the two image axes",
    "DATE-AVG": "middle of the observation (UTC, ISO 8601)",
    "DATEREF": "reference time of the WCS (UTC)",
    "XPOSURE": "[s] total exposure time of the data",
    "NSUMEXP": "number of exposures summed in the data",
    "ORIGIN": "software that created this file",
    "LEVEL": "SOLARNET data level",
    "ATMOS_R0": "[m] Fried parameter at 5000 A, from the fitted modes",
    "AO_NMODE": "number of AO modes corrected",
}


def _register() -> None:
    from svrt.fileio.header import register_header_comments

    register_header_comments(STANDARD_COMMENTS)


_register()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        float(value)) else None


def wcs_cards(header: Mapping[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    """The celestial WCS cards of the image axes of a ``shape = (Y, X)`` field that ``header`` lacks (module
    doc); none when the pixel size is unknown or the header has a CD matrix of its own."""
    from astropy.io import fits
    from astropy.wcs import WCS

    cdelt = [_number(header.get("CDELT1")), _number(header.get("CDELT2"))]
    if None in cdelt or any(f"CD{i}_{j}" in header for i in (1, 2) for j in (1, 2)):
        return {}
    y, x = (int(v) for v in shape)
    defaults = {"CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec", "CUNIT2": "arcsec",
                "CRPIX1": (x + 1) / 2.0, "CRPIX2": (y + 1) / 2.0, "CRVAL1": DEFAULT_POINTING[0],
                "CRVAL2": DEFAULT_POINTING[1]}
    out = {key: value for key, value in defaults.items() if key not in header}
    cards = {**{k: v for k, v in header.items() if k[:5] in ("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CDELT")
                and k[-1:] in ("1", "2")}, **out}
    try:
        WCS(fits.Header(cards), naxis=2)  # the cards make one valid celestial WCS (raises otherwise)
    except (ValueError, KeyError, TypeError, MemoryError) as exc:
        from svrt.checks import warn

        warn(f"the WCS cards of the header do not make a valid WCS ({exc}); none added.")
        return {}
    return out


def time_cards(header: Mapping[str, Any], n_frames: int, summed: bool) -> dict[str, Any]:
    """DATE-BEG, DATE-END, DATE-AVG, DATEREF, XPOSURE and NSUMEXP of ``n_frames`` exposures (module doc) that
    ``header`` lacks; with ``summed`` (a restoration) XPOSURE and NSUMEXP are those of the frames together."""
    from astropy.time import Time, TimeDelta

    out: dict[str, Any] = {}
    exptime = _number(header.get("EXPTIME"))
    start = header.get("DATE-BEG", header.get("DATE-OBS"))
    if isinstance(start, str):
        try:
            t0 = Time(start, format="isot", scale="utc")
        except ValueError:
            t0 = None
        if t0 is not None:
            out["DATE-BEG"] = start
            end = header.get("DATE-END")
            if not isinstance(end, str) and exptime is not None:
                end = (t0 + TimeDelta(n_frames * exptime, format="sec")).isot
            if isinstance(end, str):
                out["DATE-END"] = end
                try:
                    out["DATE-AVG"] = (t0 + (Time(end, format="isot", scale="utc") - t0) / 2).isot
                except ValueError:
                    pass
            out["DATEREF"] = start
    per_frame = _number(header.get("NSUMEXP")) if not summed else None
    if exptime is not None:
        out["XPOSURE"] = round(exptime * (n_frames if summed else 1), 9)
    out["NSUMEXP"] = int(n_frames) if summed else int(per_frame or 1)
    if summed:
        return {k: v for k, v in out.items() if k not in header or k in ("XPOSURE", "NSUMEXP")}
    return {k: v for k, v in out.items() if k not in header}


def r0_cards(modes, instrument: str | None, fit_modes: Any = None) -> dict[str, Any]:
    """ATMOS_R0 [m at 5000 A] of the fitted KL coefficients ``modes [L, M, Yg, Xg]`` (radians at the
    instrument's wavelength; :func:`svrt.optics.residual.estimate_d_over_r0`), or none when they say
    nothing (all zero) or the instrument is unknown."""
    import numpy as np

    from svrt.errors import SvrtError

    if instrument is None:
        return {}
    try:
        import torch

        from svrt.atmosphere import r0_at_wavelength
        from svrt.instruments import get_instrument
        from svrt.optics.residual import estimate_d_over_r0

        inst = get_instrument(instrument)
        m = int(modes.shape[1])
        n_fit = min(m, int(fit_modes)) if isinstance(fit_modes, int) and not isinstance(fit_modes, bool) else m
        if n_fit < 4 or not np.any(modes[:, :n_fit]):
            return {}
        d_r0 = estimate_d_over_r0(torch.as_tensor(np.asarray(modes[:, :n_fit], dtype=np.float64)))
    except (SvrtError, ValueError, ImportError):
        return {}
    if not math.isfinite(d_r0) or d_r0 <= 0:
        return {}
    r0_here = inst.diameter_m / d_r0                                  # [m] at the instrument's wavelength
    r0_5000 = r0_here / r0_at_wavelength(1.0, inst.wavelength_angstrom)  # r0 grows as lambda^(6/5)
    return {"ATMOS_R0": round(r0_5000, 5)}


def standard_cards(header: Mapping[str, Any], shape: tuple[int, int], n_frames: int, *, restoration: bool = False,
                   modes=None, instrument: str | None = None, fit_modes: Any = None) -> dict[str, Any]:
    """``header`` with the standard cards it lacks (module doc) for a burst (or, with ``restoration``, the
    restoration of ``n_frames`` frames with the fitted ``modes``). The input's cards keep their values and
    order; new cards follow them."""
    out = dict(header)
    out.update(wcs_cards(header, shape))
    out.update(time_cards(header, n_frames, restoration))
    out["ORIGIN"] = ORIGIN
    ao = header.get("AOMODES")
    if "AO_NMODE" not in header and isinstance(ao, int) and not isinstance(ao, bool) and ao > 0:
        out["AO_NMODE"] = ao
    if restoration:
        out["LEVEL"] = RESTORATION_LEVEL
        out.update(r0_cards(modes, instrument, fit_modes) if modes is not None else {})
    return out


def grid_wcs_cards(cards: Mapping[str, Any], shape: tuple[int, int], grid: tuple[int, int]) -> dict[str, Any]:
    """The celestial WCS of the coarse mode grid ``grid = (Yg, Xg)`` of a ``shape = (Y, X)`` field whose WCS
    is in ``cards`` (CTYPE, CUNIT, CRPIX, CRVAL, CDELT and PC of axes 1-2), so that the MODES HDU is a map of
    the nodes: node ``g`` (FITS, from 1) sits at pixel ``p = (g - 1/2) s + 1/2`` with ``s = Y / Yg``
    (:mod:`svrt.mode_grid`), hence ``CRPIX' = (CRPIX - 1/2) / s + 1/2``, ``CDELT' = s CDELT`` and
    ``PC'_ij = PC_ij s_j / s_i``. Empty without a complete WCS in ``cards``."""
    need = [f"{k}{i}" for k in ("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CDELT") for i in (1, 2)]
    if any(key not in cards for key in need) or any(f"CD{i}_{j}" in cards for i in (1, 2) for j in (1, 2)):
        return {}
    s = {1: shape[1] / grid[1], 2: shape[0] / grid[0]}   # pixels per node along FITS axes 1 (X) and 2 (Y)
    out: dict[str, Any] = {}
    for i in (1, 2):
        out[f"CTYPE{i}"], out[f"CUNIT{i}"] = cards[f"CTYPE{i}"], cards[f"CUNIT{i}"]
        out[f"CRPIX{i}"] = (float(cards[f"CRPIX{i}"]) - 0.5) / s[i] + 0.5
        out[f"CRVAL{i}"] = float(cards[f"CRVAL{i}"])
        out[f"CDELT{i}"] = float(cards[f"CDELT{i}"]) * s[i]
    for i in (1, 2):
        for j in (1, 2):
            if f"PC{i}_{j}" in cards:
                out[f"PC{i}_{j}"] = float(cards[f"PC{i}_{j}"]) * s[j] / s[i]
    return out
