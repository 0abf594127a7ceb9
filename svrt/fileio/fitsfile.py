"""FITS: reading a file into :class:`Contents` (checksums, truncation, compressed streams) and the
HDUs that svrt writes."""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Any, Sequence

import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio.atomic import atomic_write
from svrt.fileio.contents import _Contents, _short
from svrt.fileio.header import _fits_header_dict, _set_card
from svrt.fileio.solarnet import _wcs_axes

_FITS_BLOCK = 2880  # bytes of a FITS block: headers and data are padded to whole blocks
_FITS_PROBLEM_WORDS = ("truncated", "error validating header", "checksum", "datasum", "corrupt")


def _decompress(path: str) -> bytes | None:
    """The whole decompressed stream of a gzip or bzip2 FITS file (None for a plain file). A stream
    cut short or damaged raises :class:`SvrtError`: astropy would read the HDUs before the cut
    silently, so a truncated .fits.gz looked like a file without its later extensions."""
    import bz2
    import gzip
    import zlib

    with open(path, "rb") as fh:
        head = fh.read(3)
        for magic, name, decompress, errors in ((b"\x1f\x8b", "gzip", gzip.decompress, (EOFError, OSError, zlib.error)),
                                                (b"BZh", "bzip2", bz2.decompress, (EOFError, OSError, ValueError))):
            if head.startswith(magic):
                fh.seek(0)
                try:
                    return decompress(fh.read())
                except errors as exc:
                    raise SvrtError(f"Compressed FITS file {path} is truncated or corrupt: its {name} stream is "
                                    f"incomplete or damaged ({_short(exc)}).") from None
    return None


def _read_fits(path: str) -> _Contents:
    contents = _Contents(path, "fits")
    arrays, tables, names = contents.arrays, contents.tables, contents.names
    data_bytes = _decompress(path)
    if data_bytes is not None:
        if not data_bytes.startswith(b"SIMPLE"):
            raise SvrtError(f"Compressed file {path} does not hold a FITS file (it does not start with SIMPLE once "
                            "decompressed).")
        size = len(data_bytes)
        source: Any = io.BytesIO(data_bytes)
    else:
        size = os.path.getsize(path)
        source = path
    compressed = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(source, memmap=False, checksum=True, lazy_load_hdus=False) as hdul:
                end = needed = 0
                for index, hdu in enumerate(hdul):
                    info = hdul.fileinfo(index)
                    end = max(end, info["datLoc"] + info["datSpan"])
                    needed = max(needed, info["datLoc"] + _fits_data_bytes(hdu.header))
                    name = (hdu.name or ("PRIMARY" if index == 0 else f"HDU{index}")).upper()
                    names.append(name)
                    if index == 0:
                        contents.root = _fits_header_dict(hdu.header)
                    data = hdu.data
                    if data is None:
                        continue
                    if name in arrays or name in tables:
                        continue  # first of duplicate names wins
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        cols = {}
                        for col in hdu.columns.names:
                            arr = np.asarray(data[col])
                            cols[col] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
                        tables[name] = cols
                    else:
                        arr = np.asarray(data)
                        arrays[name] = (arr.astype(arr.dtype.newbyteorder("="), copy=True),
                                        _fits_header_dict(hdu.header))
        problems = [str(w.message) for w in caught
                    if any(word in str(w.message).lower() for word in _FITS_PROBLEM_WORDS)]
    except SvrtError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, RuntimeError, fits.VerifyError) as exc:
        raise SvrtError(f"Cannot read FITS file {path}; it is truncated or corrupt ({_short(exc)}).") from None
    if problems:
        raise SvrtError(f"FITS file {path} is truncated or corrupt: {_fits_problem(problems[0], names, size)}.")
    if not compressed and needed > size:
        raise SvrtError(f"FITS file {path} is truncated: it holds {size} bytes where its headers announce {needed}.")
    if not compressed and size > end and size % _FITS_BLOCK:
        raise SvrtError(
            f"FITS file {path} is truncated or corrupt: {size - end} bytes after its last complete HDU "
            "do not form a FITS header."
        )
    announced = contents.root.get("NEXTEND")
    if isinstance(announced, int) and not isinstance(announced, bool) and len(names) - 1 < announced:
        there = f"{len(names) - 1} ({', '.join(names[1:]) or 'none'})"
        if "SVRTFILE" in contents.root:
            # svrt writes NEXTEND last, with the HDUs it counts: fewer HDUs is a file cut between extensions
            raise SvrtError(f"FITS file {path} is truncated: its primary header announces NEXTEND = {announced} "
                            f"extensions but only {there} are there.")
        # other writers leave NEXTEND stale when extensions are removed (an optional card, FITS 4.0 section 4.4.2):
        # every HDU there is complete, so the file is read, with a note in case it was cut between extensions
        from svrt.checks import warn

        warn(f"FITS file {path} announces NEXTEND = {announced} extensions but holds {there}; reading those "
             "(a stale NEXTEND, or a copy cut between extensions).")
    return contents


def _fits_problem(message: str, names: list[str], size: int) -> str:
    """Short reason from an astropy warning about a damaged HDU."""
    named = re.search(r"HDU \('([^']*)', (\d+)\)", message)
    match = re.search(r"HDU #?(\d+)", message)
    index = int(match.group(1)) if match else None
    if named:
        hdu = f"HDU {named.group(1) or 'PRIMARY'}"
    elif index is not None and index < len(names):
        hdu = f"HDU {index} ({names[index]})"
    else:
        hdu = f"HDU {index}" if index is not None else "an HDU"
    if "checksum" in message.lower() or "datasum" in message.lower():
        return f"{hdu} fails its checksum"
    blocks = "" if size % _FITS_BLOCK == 0 else f", and its {size} bytes are not whole 2880-byte FITS blocks"
    return f"{hdu} is incomplete{blocks}"


def _fits_data_bytes(hdr: fits.Header) -> int:
    """Bytes of an HDU's data without the padding to 2880 (FITS standard, section 4.4.1)."""
    naxis = int(hdr.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for i in range(1, naxis + 1):
        count *= int(hdr.get(f"NAXIS{i}", 0))
    if hdr.get("GROUPS") is True and int(hdr.get("NAXIS1", 0)) == 0:
        count = int(np.prod([int(hdr.get(f"NAXIS{i}", 0)) for i in range(2, naxis + 1)]))
    return abs(int(hdr.get("BITPIX", 8))) // 8 * int(hdr.get("GCOUNT", 1)) * (int(hdr.get("PCOUNT", 0)) + count)


def _primary_header(kind: str, k: int, n_frames: int, instruments: Sequence[str], extras: dict[str, Any],
                    where: str) -> fits.Header:
    hdr = fits.Header()
    _set_card(hdr, "SVRTFILE", kind, "svrt file type (burst or restoration)", where)
    _set_card(hdr, "NOBJ", k, "K, number of objects (e.g. wide band, narrow band)", where)
    _set_card(hdr, "NFRAMES", n_frames, "L, number of frames per object", where)
    for i, lab in enumerate(instruments):
        _set_card(hdr, f"INSTR{i}", lab, f"svrt instrument label of object {i}", where)
    for key, value in extras.items():
        if _wcs_axes(key):
            continue  # the WCS of the image axes belongs to the image HDUs: this one has no data (FITS 4.0, 8.1)
        _set_card(hdr, key, value, None, where)
    return hdr


def _image_hdu(name: str, data: np.ndarray, bunit: str, axes: str, what: str, extras: dict[str, Any],
               where: str) -> fits.ImageHDU:
    hdr = fits.Header()
    _set_card(hdr, "BUNIT", bunit, "unit of the data", where)
    if name in ("FRAMES", "TRUTH", "OBJECT", "MODEL"):
        # the celestial WCS of the image axes (FITS axes 1 = X and 2 = Y) travels with every image
        for key, value in extras.items():
            if _WCS_IMAGE_RE.match(key) and not (key.startswith("CUNIT") and f"CDELT{key[-1]}" not in extras):
                _set_card(hdr, key, value, None, where)
        for axis in ("1", "2"):
            cdelt = extras.get("CDELT" + axis)
            if isinstance(cdelt, (int, float)) and not isinstance(cdelt, bool) and "CUNIT" + axis not in extras:
                _set_card(hdr, "CUNIT" + axis, "arcsec", None, where)
        _wcs_axes_card(hdr, data.ndim, where)
    hdr.add_comment(f"{name}: {what}")
    hdr.add_comment(f"array axes {axes} (FITS NAXIS1 is the last, X)")
    return fits.ImageHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=hdr, name=name)


def _wcs_axes_card(hdr: fits.Header, ndim: int, where: str) -> None:
    """WCSAXES = 2, ahead of the WCS cards, on a cube (OBJECT [K, Y, X], FRAMES [K, L, Y, X]) whose WCS
    describes the image axes only: without it a FITS reader expects a CTYPEn for every axis."""
    if ndim > 2 and "CTYPE1" in hdr:
        _set_card(hdr, "WCSAXES", 2, None, where)
        first = min(i for i, key in enumerate(hdr.keys()) if _wcs_axes(key) and key != "WCSAXES")
        card = hdr.cards["WCSAXES"]
        del hdr["WCSAXES"]
        hdr.insert(first, card)


# WCS cards of the two image axes (and the observer's position), copied onto every image extension
_WCS_IMAGE_RE = re.compile(
    r"^((CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA|CRDER|CSYER|CNAME)[12]|(PC|CD)[12]_[12]|WCSNAME|LONPOLE|LATPOLE|"
    r"RADESYS|EQUINOX|DSUN_OBS|HGLN_OBS|HGLT_OBS|CRLN_OBS|CRLT_OBS|RSUN_REF|RSUN_ARC|RSUN_OBS)$"
)


def _write_hdus(path: str | os.PathLike, hdus: list[Any], size_hint: int | None) -> None:
    """Write a burst's or restoration's HDUs to ``path`` atomically, NEXTEND on the primary (a file with
    fewer extensions than it announces is truncated: :func:`_read_fits` says so)."""
    hdus[0].header["NEXTEND"] = (len(hdus) - 1, "number of extensions (a shorter file is truncated)")
    with atomic_write(path, size_hint=size_hint) as tmp:
        _write_fits(tmp, hdus)


def _write_fits(tmp: str, hdus: list[Any]) -> None:
    """Write the HDUs to ``tmp``; an OSError (full disk, ...) propagates to :func:`atomic_write`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on comments it shortens to fit a card
        for hdu in hdus:
            if any(len(card.image) > 80 for card in hdu.header.cards) and "LONGSTRN" not in hdu.header:
                # a string longer than a card continues on CONTINUE cards: the OGIP convention, declared (FITS 4.2.1.2)
                hdu.header["LONGSTRN"] = ("OGIP 1.0", "long strings continue on CONTINUE cards")
        fits.HDUList(hdus).writeto(tmp, checksum=True)
