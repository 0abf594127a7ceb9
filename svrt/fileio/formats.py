"""File formats: FITS or HDF5, by the name when writing and by the first bytes when reading."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import h5py

from svrt.errors import SvrtError
from svrt.fileio.atomic import check_output
from svrt.fileio.contents import _Contents, _name
from svrt.fileio.fitsfile import _read_fits
from svrt.fileio.hdf5file import _read_hdf5

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def file_format(path: str | os.PathLike) -> str:
    """``'fits'`` or ``'hdf5'`` from the file name; :class:`SvrtError` for any other extension."""
    low = os.fspath(path).lower()
    if low.endswith(FITS_SUFFIXES):
        return "fits"
    if low.endswith(HDF5_SUFFIXES):
        return "hdf5"
    raise SvrtError(
        f"Cannot tell the format of {_name(path)} from its extension; expected one of "
        f"{', '.join(FITS_SUFFIXES + HDF5_SUFFIXES)}."
    )


def _sniff(path: str | os.PathLike) -> str:
    """Format of an existing file from its first bytes (falls back on the name)."""
    p = Path(path)
    if not p.exists():
        raise SvrtError(f"File {_name(path)} does not exist.")
    if p.is_dir():
        raise SvrtError(f"{_name(path)} is a folder; expected a FITS or HDF5 file.")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise SvrtError(f"Cannot read {_name(path)}: {exc.strerror or exc}.") from None
    if size == 0:
        raise SvrtError(f"File {_name(path)} is empty (0 bytes); expected a FITS or HDF5 file.")
    if head.startswith(b"SIMPLE  =") or head.startswith(b"\x1f\x8b") or head.startswith(b"BZh"):
        return "fits"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    with contextlib.suppress(Exception):
        if h5py.is_hdf5(p):  # HDF5 with a user block: signature at 512, 1024, ...
            return "hdf5"
    try:
        fmt = file_format(path)
    except SvrtError:
        raise SvrtError(f"File {_name(path)} is neither FITS nor HDF5 (unrecognised first bytes).") from None
    what = "FITS (it does not start with SIMPLE)" if fmt == "fits" else "HDF5 (no HDF5 signature)"
    raise SvrtError(f"File {_name(path)} is not a valid {what}; it is corrupt or of another format.")


def _read_contents(path: str | os.PathLike) -> _Contents:
    fmt = _sniff(path)
    p = _name(path)
    try:
        return _read_fits(p) if fmt == "fits" else _read_hdf5(p)
    except PermissionError:
        raise SvrtError(f"Cannot read {p}: permission denied.") from None


def _write_guard(path: str | os.PathLike, overwrite: bool) -> str:
    fmt = file_format(path)
    check_output(path, overwrite)
    return fmt


def _writing(call: str, path: str | os.PathLike, value: Any, kind: type, overwrite: bool) -> tuple[str, str]:
    """``(format, name)`` of the output of ``call`` (write_burst, ...), once ``value`` is known to be a
    ``kind`` and ``path`` a FITS or HDF5 name that may be written (:func:`_write_guard`)."""
    if not isinstance(value, kind):
        raise SvrtError(f"{call}({_name(path)}) needs a {kind.__name__}; got a {type(value).__name__}.")
    return _write_guard(path, overwrite), _name(path)
