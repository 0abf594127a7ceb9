"""The SOLARNET cards of a restoration's observation HDUs: the input's cards and WCS, svrt's own,
the provenance PRSTEPn, and the wavelength of each object."""

from __future__ import annotations

import re
import time
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio.header import _COMMENTS, _set_card

#: SOLARNET compliance of a restoration: partial (the mandatory keys are there; the conditionally
#: mandatory ones, e.g. OBSGEO-X/Y/Z or WAVEMIN/WAVEMAX, only when the input has them)
SOLARNET_LEVEL = 0.5  # written only with a DATE-BEG (the input's, its DATE-OBS, or a simulation's default)
#: config entries summarised in PRPARAn (the full list is the CONFIG extension)
_PRPARA_KEYS = ("METHOD_USED", "GRID", "ITERATIONS", "PATCH_SIZE", "REFINE_ROUNDS", "LAMBDA_OBJ", "LAMBDA_MODES",
                "WEIGHTS", "ENGINE_MODEL", "ENGINE_BACKEND")
# WCS cards with an axis number (or WCSAXES): those of axes other than 1 and 2 are left off the images
_WCS_AXIS_RE = re.compile(r"^(?:(?:CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA|CRDER|CSYER|CNAME)(\d+)"
                          r"|(?:PC|CD|PV|PS)(\d+)_(\d+)|WCSAXES)[A-Z]?$")
_PRSTEP_RE = re.compile(r"^PRSTEP(\d+)$")


def _wcs_axes(key: str) -> set[int]:
    m = _WCS_AXIS_RE.match(key)
    if not m:
        return set()
    if key.startswith("WCSAXES"):
        return {0}
    return {int(g) for g in m.groups() if g is not None}


def _version_of(module: str) -> str | None:
    """Version of an already imported module (never imports one)."""
    import sys

    mod = sys.modules.get(module)
    return None if mod is None else str(getattr(mod, "__version__", "")) or None


def _provenance(extras: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """PRSTEPn = 'MOMFBD' and its procedure, version, mode, parameters and libraries; n follows the
    input's own processing steps (PRSTEP1 = 'CALIBRATION' in the input: the restoration is step 2)."""
    steps = [int(m.group(1)) for m in map(_PRSTEP_RE.match, extras) if m]
    n = max(steps, default=0) + 1
    version = config.get("SVRT_VERSION") or extras.get("SVRT_VERSION") or _version_of("svrt") or "unknown"
    summary = ", ".join(f"{key}={config[key]}" for key in _PRPARA_KEYS if config.get(key) is not None)
    where = "all settings in the CONFIG extension" if config else "settings in the primary header"
    out = {f"PRSTEP{n}": "MOMFBD", f"PRPROC{n}": "svrt.runtime.solver.SVMOMFBD", f"PRPVER{n}": str(version)}
    if config.get("METHOD_USED") or config.get("METHOD"):
        out[f"PRMODE{n}"] = str(config.get("METHOD_USED") or config.get("METHOD"))
    out[f"PRPARA{n}"] = f"{summary}; {where}" if summary else where
    out[f"PRLIB{n}A"] = "svrt"
    out[f"PRVER{n}A"] = str(version)
    torch_version = _version_of("torch")
    if torch_version:
        out[f"PRLIB{n}B"] = "torch"
        out[f"PRVER{n}B"] = torch_version
    return out


_OBS_COMMENTS = {
    "SOLARNET": "partially SOLARNET-compliant (1: fully)",
    "OBS_HDU": "this HDU holds observational data",
    "BTYPE": "type of data",
    "BNAME": "what the data array holds",
    "FILENAME": "name of this file",
    "DATE": "file creation date (UTC)",
    "SVRTINST": "svrt instrument label of this object",
    "SVRTOBJ": "index k of this object in OBJECT [K, Y, X]",
}


def _obs_cards(extras: Mapping[str, Any], config: Mapping[str, Any], provenance: Mapping[str, Any], filename: str,
               bname: str, instrument: str | None = None, wavelength: float | None = None,
               index: int | None = None) -> dict[str, Any]:
    """The cards of an observation HDU of a restoration: the input's (WCS of axes 1-2 only), the
    SOLARNET ones the input lacks (DATE-BEG, WAVEUNIT, BTYPE, BUNIT) and svrt's own (SOLARNET,
    OBS_HDU, FILENAME, DATE, provenance). The input's values are never replaced, except FILENAME and
    DATE, which describe this file."""
    cards: dict[str, Any] = {"SOLARNET": SOLARNET_LEVEL, "OBS_HDU": 1}
    for key, value in extras.items():
        axes = _wcs_axes(key)
        if axes and not axes <= {1, 2}:
            continue  # WCSAXES, or a WCS card of the frame/object axes of the input's cube
        if key in cards:
            continue
        cards[key] = value
    date_beg = extras.get("DATE-BEG", extras.get("DATE-OBS"))
    if date_beg is not None:
        cards.setdefault("DATE-BEG", date_beg)
    else:
        del cards["SOLARNET"]  # DATE-BEG is mandatory: an undated input's restoration claims no compliance
    if wavelength is not None:
        cards["WAVELNTH"] = float(wavelength)
    if "WAVELNTH" in cards:
        cards.setdefault("WAVEUNIT", -10)
    cards.setdefault("BTYPE", "Intensity")
    cards.setdefault("BUNIT", "")
    cards["BNAME"] = bname
    for axis in ("1", "2"):
        cdelt = cards.get("CDELT" + axis)
        if isinstance(cdelt, (int, float)) and not isinstance(cdelt, bool):
            cards.setdefault("CUNIT" + axis, "arcsec")
    if instrument is not None:
        cards["SVRTINST"] = instrument
    if index is not None:
        cards["SVRTOBJ"] = int(index)
    cards["FILENAME"] = filename
    cards["DATE"] = str(config.get("DATE") or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    for key, value in provenance.items():
        cards.setdefault(key, value)
    return cards


#: [Angstrom] an input WAVELNTH this close to an object's nominal instrument wavelength is that object's
_SAME_LINE_ANGSTROM = 50.0


def _object_wavelengths(extras: Mapping[str, Any], instruments: Sequence[str], k: int) -> list[float | None]:
    """WAVELNTH [Angstrom] of each object; None keeps the input's. When the objects have different
    instruments (e.g. crisp6302 and crisp8542), an object whose instrument's nominal wavelength is
    more than 50 A from the input's WAVELNTH gets that nominal wavelength (svrt.instruments)."""
    if len(set(instruments)) <= 1:
        return [None] * k
    from svrt.instruments import get_instrument

    given = extras.get("WAVELNTH")
    given = float(given) if isinstance(given, (int, float)) and not isinstance(given, bool) else None
    out: list[float | None] = []
    for label in instruments:
        try:
            nominal = float(get_instrument(label).wavelength_angstrom)
        except SvrtError:
            out.append(None)
            continue
        out.append(None if given is not None and abs(given - nominal) <= _SAME_LINE_ANGSTROM else nominal)
    return out


def _obs_hdu(name: str, data: np.ndarray, axes: str, what: str, cards: Mapping[str, Any], where: str) -> fits.ImageHDU:
    hdr = fits.Header()
    comments = {**_COMMENTS, **_OBS_COMMENTS, "BUNIT": "unit of the data ('': the input's relative units)"}
    for key, value in cards.items():
        _set_card(hdr, key, value, comments.get(key), where)
    from svrt.fileio.fitsfile import _wcs_axes_card

    _wcs_axes_card(hdr, np.ndim(data), where)
    hdr.add_comment(f"{name}: {what}")
    hdr.add_comment(f"array axes {axes} (FITS NAXIS1 is the last, X)")
    return fits.ImageHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=hdr, name=name)
