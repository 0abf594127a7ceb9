"""HDF5: reading a file into :class:`Contents` and building one in memory (written as bytes, so
that HDF5 never meets a full disk)."""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Sequence

import h5py
import numpy as np

from svrt.errors import SvrtError
from svrt.fileio.atomic import atomic_write
from svrt.fileio.contents import _Contents, _short
from svrt.fileio.header import _H5_RESERVED, _h5_attr_value


def _text(value: Any) -> str:
    """An HDF5 string (bytes in UTF-8, or str) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_hdf5(path: str) -> _Contents:
    contents = _Contents(path, "hdf5")
    arrays, tables, names, root = contents.arrays, contents.tables, contents.names, contents.root
    try:
        with h5py.File(path, "r") as f:
            for key, value in f.attrs.items():
                if key == "instruments":
                    arr = np.atleast_1d(np.asarray(value))
                    contents.instruments_attr = [_text(v) for v in arr.tolist()]
                    continue
                val = _h5_attr_value(value)
                if val is not None:
                    root[key if key in _H5_RESERVED else key.upper()] = val

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    parent = name.rsplit("/", 1)[0] if "/" in name else ""
                    if parent and parent.upper() in tables:
                        return
                    names.append(name)
                    if obj.dtype.names is not None:  # compound dataset: a table
                        data = obj[()]
                        tables[name.upper()] = {c: np.asarray(data[c]) for c in obj.dtype.names}
                        return
                    attrs = {k.upper(): v for k, v in ((k, _h5_attr_value(a)) for k, a in obj.attrs.items())
                             if v is not None}
                    arrays[name.upper()] = (np.asarray(obj[()]), attrs)
                elif isinstance(obj, h5py.Group):
                    members = list(obj.values())
                    if members and all(isinstance(m, h5py.Dataset) and m.ndim == 1 for m in members):
                        order = obj.attrs.get("columns")
                        cols = list(obj.keys()) if order is None else [_text(c) for c in np.atleast_1d(order)]
                        cols = [c for c in cols if c in obj] + [c for c in obj.keys() if c not in cols]
                        tables[name.upper()] = {c: np.asarray(obj[c][()]) for c in cols}
                        names.append(name)

            f.visititems(visit)
    except SvrtError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError) as exc:
        raise SvrtError(f"Cannot read HDF5 file {path}; it is truncated or corrupt ({_short(exc)}).") from None
    return contents


def _h5_image(build) -> bytes:
    """An HDF5 file built in memory by ``build(h5py.File)``, as bytes. The bytes are then written with
    plain file I/O: HDF5 itself never meets a full disk (an HDF5 write that fails on a full disk can
    crash the process with a segmentation fault, without a Python exception)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        build(f)
    return buffer.getbuffer()


def _h5_write_header(f: h5py.File, kind: str | None, instruments: Sequence[str] | None, extras: dict[str, Any]) -> None:
    if kind is not None:
        f.attrs["svrt_file"] = kind
    if instruments is not None:
        f.attrs["instruments"] = np.array(list(instruments), dtype=h5py.string_dtype())
    for key, value in extras.items():
        f.attrs[key] = value


def _h5_dataset(f: h5py.File, name: str, data: np.ndarray, units: str, axes: str) -> None:
    d = f.create_dataset(name, data=np.ascontiguousarray(data, dtype=np.float32))
    d.attrs["units"] = units
    d.attrs["axes"] = axes


def _write_bytes(tmp: str, data: bytes | memoryview) -> None:
    """Write ``data`` with plain file I/O (errors are ordinary OSErrors, whatever the disk does)."""
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()


def _write_h5(path: str | os.PathLike, build: Callable[[h5py.File], None], size_hint: int | None) -> None:
    """Write the HDF5 file that ``build(h5py.File)`` makes to ``path``, atomically, through bytes in
    memory (:func:`_h5_image`)."""
    with atomic_write(path, size_hint=size_hint) as tmp:
        _write_bytes(tmp, _h5_image(build))
