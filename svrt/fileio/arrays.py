"""Single arrays in FITS or HDF5 files, with their header."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio.atomic import _nbytes, _size_hint, atomic_write
from svrt.fileio.contents import _name
from svrt.fileio.fitsfile import _wcs_axes_card, _write_fits
from svrt.fileio.formats import _read_contents, _write_guard
from svrt.fileio.hdf5file import _h5_write_header, _write_h5
from svrt.fileio.header import _clean_header, _extras, _set_card
from svrt.fileio.solarnet import _wcs_axes
from svrt.fileio.standard import standard_cards
from svrt.fileio.validation import _as_float32, _check_finite, _is_name


def read_array(
    path: str | os.PathLike,
    key: str | None = None,
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one array as float32 from a FITS or HDF5 file, with its header.

    FITS: ``key`` is an extension name (EXTNAME, case-insensitive, or ``'PRIMARY'``); without it
    the primary HDU's data if it has any, else the only image extension. HDF5: ``key`` is a
    dataset path (case-insensitive); without it the only dataset. The header dict merges the
    primary header / root attributes with those of the array's own HDU / dataset (structural
    keys removed). NaN or Inf raise :class:`SvrtError` with their count unless
    ``allow_nonfinite`` is true.
    """
    contents = _read_contents(path)
    where = contents.path
    unit = "extension" if contents.fmt == "fits" else "dataset"
    if key is None:
        if contents.fmt == "fits" and "PRIMARY" in contents.arrays:
            name = "PRIMARY"
        elif len(contents.arrays) == 1:
            name = next(iter(contents.arrays))
        elif not contents.arrays:
            raise SvrtError(f"{where} holds no image array (found: {contents.found()}); expected one array.")
        else:
            raise SvrtError(
                f"{where} holds several arrays ({', '.join(contents.arrays)}); choose one with key=, e.g. "
                f"'{next(iter(contents.arrays))}'."
            )
    else:
        name = key.strip().strip("/").upper()
        if name not in contents.arrays:
            if name in contents.tables:
                raise SvrtError(f"{key} in {where} is a table; expected an image array.")
            raise SvrtError(f"{where} has no {unit} {key} (found: {contents.found()}).")
    data, own = contents.arrays[name]
    label = name if key is None else key
    arr = _as_float32(data, label, where)
    if not allow_nonfinite:
        _check_finite(arr, label, where, "; clean them or pass allow_nonfinite=True")
    header = _extras(contents.root)
    header.update(_extras(own))
    return arr, header


def write_array(
    path: str | os.PathLike,
    array: Any,
    header: Mapping[str, Any] | None = None,
    key: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write one array as float32 to FITS or HDF5 (by extension), atomically.

    FITS: without ``key`` the array is the primary HDU's data; with ``key`` it is an image
    extension of that EXTNAME after an empty primary HDU. Header cards go to the primary header.
    HDF5: dataset ``key`` (default ``'data'``), header cards as root attributes.
    """
    fmt = _write_guard(path, overwrite)
    where = _name(path)
    arr = _as_float32(array, key or "array", where)
    extras = _clean_header(header, where)
    if key is not None and not _is_name(key.strip()):
        raise SvrtError(f"Key {key!r} for {where} is not a valid name; expected printable ASCII without spaces.")
    if arr.ndim >= 2:
        extras = standard_cards(extras, arr.shape[-2:], 1)  # an image's WCS, times and ORIGIN (svrt.fileio.standard)
    if fmt == "fits":
        on_primary = key is None or key.strip().upper() == "PRIMARY"
        hdr, image = fits.Header(), fits.Header()
        for name, value in extras.items():
            # the WCS of the image axes goes with the data: on an extension when the primary has none
            _set_card(image if _wcs_axes(name) and not on_primary else hdr, name, value, None, where)
        _wcs_axes_card(hdr if on_primary else image, arr.ndim, where)
        if on_primary:
            hdus: list[Any] = [fits.PrimaryHDU(data=arr, header=hdr)]
        else:
            hdus = [fits.PrimaryHDU(header=hdr), fits.ImageHDU(data=arr, header=image, name=key.strip().upper())]
        with atomic_write(path, size_hint=_size_hint(path, _nbytes(arr))) as tmp:
            _write_fits(tmp, hdus)
    else:
        def build(f):
            _h5_write_header(f, None, None, extras)
            f.create_dataset((key or "data").strip(), data=arr)

        _write_h5(path, build, _size_hint(path, _nbytes(arr)))
