"""Header cards: the header dict a user sees (upper-case keys, scalar values), FITS cards and HDF5
attributes of it, the comments with units, and the header of a file derived from another."""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Any, Mapping

import h5py
import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError

# Keys that describe the file's structure, not the observation: never part of a header dict.
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER",
    "EXTLEVEL", "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "END", "COMMENT", "HISTORY",
    "", "TFIELDS", "THEAP", "GROUPS", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZTILE", "ZCMPTYPE",
    "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZPCOUNT", "ZGCOUNT", "ZTENSION", "ZHECKSUM",
    "ZDATASUM", "ZBLANK",
}
_STRUCTURAL_RE = re.compile(
    r"^(NAXIS\d+|T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP)\d+|Z(NAXIS|TILE|NAME|VAL)\d+)$"
)
# LONGSTRN and WCSAXES follow from the cards and the data written (svrt.fileio.fitsfile), as NEXTEND does
_MANAGED = {"SVRTFILE", "NOBJ", "NFRAMES", "NEXTEND", "LONGSTRN", "WCSAXES"}
_INSTR_RE = re.compile(r"^INSTR(\d+)$")
_STANDARD_KEY_RE = re.compile(r"^[A-Z0-9_-]{1,8}$")
# HDF5 root attributes this module manages (lower case, so they never meet an upper-case header key).
_H5_RESERVED = {"svrt_file", "instruments"}

# Comments (with units) for the cards a solar physicist expects.
_COMMENTS = {
    "DATE-OBS": "start of the observation (UTC, ISO 8601)",
    "DATE-BEG": "start of the observation (UTC, ISO 8601)",
    "DATE-END": "end of the observation (UTC, ISO 8601)",
    "TELESCOP": "telescope",
    "INSTRUME": "instrument",
    "WAVELNTH": "[Angstrom] wavelength",
    "WAVEUNIT": "unit of WAVELNTH",
    "CDELT1": "[arcsec] pixel size along X (FITS axis 1)",
    "CDELT2": "[arcsec] pixel size along Y (FITS axis 2)",
    "CUNIT1": "unit of CDELT1",
    "CUNIT2": "unit of CDELT2",
    "BUNIT": "unit of the intensities (FRAMES, TRUTH, OBJECT, MODEL)",
    "R0": "[cm] Fried parameter at 5000 Angstrom",
    "EXPTIME": "[s] exposure time of one frame",
    "SEED": "random seed",
}


def register_header_comments(comments: dict) -> None:
    """Add FITS comments (units, meaning) for header keys that other modules write; existing ones win."""
    for key, comment in comments.items():
        _COMMENTS.setdefault(str(key).upper(), comment)


def _is_hidden_key(key: str) -> bool:
    return key in _STRUCTURAL or bool(_STRUCTURAL_RE.match(key)) or key in _MANAGED or bool(_INSTR_RE.match(key))


def _python_scalar(value: Any) -> Any:
    """A numpy scalar as the Python one, a path as its text; anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _clean_value(key: str, value: Any, where: str) -> Any:
    """A FITS- and HDF5-safe Python scalar, or raise."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    value = _python_scalar(value)
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SvrtError(f"Header key {key} for {where} is {value}; FITS headers hold finite numbers only.")
        return value
    if isinstance(value, str):
        if not all(32 <= ord(c) < 127 for c in value):
            raise SvrtError(
                f"Header key {key} for {where} holds non-ASCII or control characters; FITS headers hold printable "
                "ASCII."
            )
        return value
    raise SvrtError(
        f"Header key {key} for {where} holds a {type(value).__name__}; expected str, int, float or bool."
    )


def _clean_header(header: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Upper-case keys, drop None values and structural/managed keys, check the values."""
    out: dict[str, Any] = {}
    if header is None:
        return out
    if not isinstance(header, Mapping):
        raise SvrtError(f"The header for {where} is a {type(header).__name__}; expected a dict of key -> value.")
    for raw_key, value in header.items():
        if not isinstance(raw_key, str):
            raise SvrtError(f"Header key {raw_key!r} for {where} is not a string.")
        key = raw_key.strip().upper()
        if key.startswith("HIERARCH "):
            key = key[len("HIERARCH "):].strip()
        if not key or not all(32 < ord(c) < 127 or c == " " for c in key) or "=" in key:
            raise SvrtError(f"Header key {raw_key!r} for {where} is not a valid FITS key (printable ASCII, no '=').")
        if value is None or _is_hidden_key(key):
            continue
        out[key] = _clean_value(key, value, where)
    return out


def _set_card(hdr: fits.Header, key: str, value: Any, comment: str | None, where: str) -> None:
    """Append one card; HIERARCH for long or non-standard keys, comments shortened to fit."""
    comment = comment or _COMMENTS.get(key, "")
    name = key if _STANDARD_KEY_RE.match(key) else f"HIERARCH {key}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for com in (comment, ""):
            try:
                card = fits.Card(name, value, com)
                card.image  # noqa: B018 (formats the card, cutting long comments; raises for impossible ones)
                hdr.append(card, end=True)
                return
            except (ValueError, fits.VerifyError):
                continue
    raise SvrtError(
        f"Header key {key} = {value!r} for {where} does not fit in a FITS card; use a shorter key or value."
    )


def _fits_header_dict(hdr: fits.Header) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in hdr.items():
        key = key.strip().upper()
        if key in ("COMMENT", "HISTORY", "") or value is None:
            continue
        if isinstance(value, fits.card.Undefined):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, complex):
            value = str(value)
        out[key] = value
    return out


def _h5_attr_value(value: Any) -> Any:
    """Python scalar of an HDF5 attribute, or None for arrays and other non-scalars."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (str, bool, int, float)):
        return value
    return None


def _extras(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The header dict a user sees: raw cards less the structural and managed ones."""
    return {k: v for k, v in raw.items() if not _is_hidden_key(k) and k.lower() not in _H5_RESERVED}


def _image_cards(own: Mapping[str, Any], root: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """Cards of an image extension (FRAMES, OBJECT) that the primary header lacks, less the defaults
    svrt itself writes there (BUNIT 'arbitrary', CUNITn 'arcsec' beside a primary CDELTn; HDF5 units/axes)."""
    out: dict[str, Any] = {}
    for key, value in _extras(own).items():
        if key in root or value is None:
            continue
        if key == "BUNIT" and value == "arbitrary":
            continue
        if re.match(r"^CUNIT[12]$", key) and value == "arcsec" and f"CDELT{key[-1]}" in root:
            continue
        if fmt == "hdf5" and key in ("UNITS", "AXES"):
            if key == "UNITS" and value != "arbitrary" and "BUNIT" not in root and "BUNIT" not in own:
                out["BUNIT"] = value
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        out[key] = value
    return out


#: keys that describe the file itself, not the observation: the new file's value wins.
FILE_KEYS = ("DATE", "ORIGIN", "FILENAME", "CREATOR", "SVRT_VERSION")


def merge_headers(kept: Mapping[str, Any] | None, added: Mapping[str, Any] | None,
                  prefix: str = "SVRT_") -> dict[str, Any]:
    """The header of a file derived from another: ``kept`` (the input's cards: DATE-OBS, TELESCOP,
    SEED, GRID, BUNIT, EXPTIME, WCS, ...) keeps every card under its own name; ``added`` (svrt's:
    solver settings, engine identity) keeps its names too, except where ``kept`` already uses one:
    that card is written as ``prefix + key`` (a restoration of a simulated burst has the burst's SEED
    and GRID, and the solver's as SVRT_SEED and SVRT_GRID). Keys describing the file itself
    (:data:`FILE_KEYS`, e.g. DATE) take ``added``'s value. Keys are compared upper-cased; the
    managed keys (SVRTFILE, NOBJ, NFRAMES, INSTRn, ...) of ``kept`` are dropped."""
    out: dict[str, Any] = {}
    for key, value in dict(kept or {}).items():
        up = str(key).strip().upper()
        if value is None or _is_hidden_key(up):
            continue
        out[up] = value
    for key, value in dict(added or {}).items():
        up = str(key).strip().upper()
        if value is None:
            continue
        if up in out and up not in FILE_KEYS:
            renamed, n = f"{prefix}{up}", 2
            while renamed in out:
                renamed, n = f"{prefix}{up}_{n}", n + 1
            up = renamed
        out[up] = value
    return out
