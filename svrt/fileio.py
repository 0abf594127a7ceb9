"""Files of svrt: atomic writes, burst and restoration files (FITS or HDF5), single arrays.

Formats are chosen by the file name when writing and by the file's first bytes when reading:

- FITS: ``.fits``, ``.fit``, ``.fts`` (and the same followed by ``.gz``), via :mod:`astropy.io.fits`.
  Checksums (``CHECKSUM``/``DATASUM``) are written and verified on reading.
- HDF5: ``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, via :mod:`h5py`.

Nothing here unpickles anything.

Burst file (see ``/work/shared/DESIGN.md``, "File contracts"), FITS layout::

    PRIMARY  no data; SVRTFILE = 'burst', NOBJ = K, NFRAMES = L, INSTR0 .. INSTR{K-1}
             (instrument label of each object) and the extra header cards (DATE-OBS, TELESCOP,
             WAVELNTH [Angstrom], CDELT1/CDELT2 [arcsec], simulation settings, ...)
    FRAMES   float32 [K, L, Y, X]  observed frames (BUNIT = header BUNIT or 'arbitrary')
    TRUTH    float32 [K, Y, X]     object before the atmosphere (simulated bursts only)
    MODES    float32 [L, M, Yg, Xg] true KL coefficients, BUNIT = 'rad' (simulated bursts only)

HDF5 layout: datasets ``frames``, ``truth``, ``modes`` (attributes ``units`` and ``axes``),
root attributes ``svrt_file``, ``instruments`` (array of str) and one attribute per header key.

Restoration file: PRIMARY as above with SVRTFILE = 'restoration', image extensions ``OBJECT``
[K, Y, X], ``MODES`` [L, M, Yg, Xg], ``MODEL`` [K, L, Y, X] and the binary table ``LOSS``
(columns iteration, total, data, reg_object, reg_modes, ...). HDF5: datasets ``object``,
``modes``, ``model`` and a group ``loss`` holding one 1-D dataset per column.

Header cards: keys are upper-cased (FITS keys are case-insensitive; HDF5 files get the same
upper-case keys so both formats round-trip to the same dict). Keys longer than 8 characters, or
with characters outside ``A-Z 0-9 - _``, are written as astropy ``HIERARCH`` cards and read back
under their plain name (``HIERARCH LR_OBJECTS`` reads back as ``LR_OBJECTS``). Values must be
``str`` (printable ASCII), ``bool``, ``int`` or finite ``float`` (numpy scalars are accepted);
``None`` values are left out. Structural FITS keys (NAXIS, BITPIX, EXTNAME, CHECKSUM, ...), the
keys this module manages (SVRTFILE, NOBJ, NFRAMES, INSTRn) and COMMENT/HISTORY cards are not part of
the header dict.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError

__all__ = [
    "FITS_SUFFIXES",
    "HDF5_SUFFIXES",
    "LOSS_KEYS",
    "Burst",
    "Restoration",
    "atomic_write",
    "check_not_input",
    "check_output",
    "file_format",
    "read_array",
    "read_burst",
    "read_restoration",
    "write_array",
    "write_burst",
    "write_restoration",
]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
LOSS_KEYS = ("iteration", "total", "data", "reg_object", "reg_modes")

_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_FITS_BLOCK = 2880

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
_MANAGED = {"SVRTFILE", "NOBJ", "NFRAMES"}
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


def _name(path: Any) -> str:
    return os.fspath(path)


# --------------------------------------------------------------------------------------------
# Output safety
# --------------------------------------------------------------------------------------------


def _full_suffix(path: Path) -> str:
    """``.fits`` for ``a.fits``, ``.fits.gz`` for ``a.fits.gz``, ``''`` without an extension."""
    suffixes = path.suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSED_SUFFIXES and len(suffixes) >= 2:
        return "".join(suffixes[-2:])
    return suffixes[-1]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Write ``path`` atomically: yield a temporary path in the same folder, then move it in place.

    The temporary name is ``.<name>.tmp-<pid>-<random><suffix>`` next to ``path``; ``suffix``
    defaults to the extension of ``path`` (``.fits.gz`` counts as one), so that libraries that
    choose their format from the name (astropy, h5py, matplotlib, safetensors) do the right thing.
    When the body finishes, the temporary file is flushed to disk and ``os.replace``-d onto
    ``path``. When the body raises (KeyboardInterrupt included), the temporary file is removed,
    nothing is created at ``path`` and a file already there is left untouched. Missing parent
    folders are created. This does not check for an existing ``path``: see :func:`check_output`.

    Example::

        with atomic_write("restored.png") as tmp:
            fig.savefig(tmp)
    """
    target = Path(path)
    if target.is_dir():
        raise SvrtError(f"Output {_name(path)} is a folder; expected a file name.")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SvrtError(
            f"Cannot create the folder {_name(parent)} for output {_name(path)}: {exc.strerror or exc}."
        ) from None
    if suffix is None:
        suffix = _full_suffix(target)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    try:
        yield str(tmp)
        if not tmp.exists():
            raise SvrtError(f"Nothing was written for output {_name(path)} (the temporary file {tmp.name} is missing).")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise SvrtError(f"Cannot move the finished output onto {_name(path)}: {exc.strerror or exc}.") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (best effort, POSIX only)
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def check_output(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise :class:`SvrtError` if ``path`` is a folder, or exists and ``overwrite`` is false."""
    target = Path(path)
    if target.is_dir():
        raise SvrtError(f"Output {_name(path)} is a folder; expected a file name.")
    if target.exists() and not overwrite:
        raise SvrtError(
            f"Output {_name(path)} already exists; choose another name or pass overwrite=True (--overwrite)."
        )


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def check_not_input(output: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Raise :class:`SvrtError` if ``output`` is one of ``inputs`` (svrt never overwrites an input).

    Paths are compared after resolving symbolic links, ``..`` and ``~``; when both exist they are
    also compared as files (hard links). ``None`` inputs are ignored.
    """
    out = _resolve(output)
    for inp in inputs:
        if inp is None:
            continue
        src = _resolve(inp)
        same = out == src
        if not same and out.exists() and src.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, src)
        if same:
            raise SvrtError(
                f"Output {_name(output)} is the input file {_name(inp)}; choose another output name, "
                "svrt never overwrites an input."
            )


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Header cards
# --------------------------------------------------------------------------------------------


def _is_hidden_key(key: str) -> bool:
    return key in _STRUCTURAL or bool(_STRUCTURAL_RE.match(key)) or key in _MANAGED or bool(_INSTR_RE.match(key))


def _clean_value(key: str, value: Any, where: str) -> Any:
    """A FITS- and HDF5-safe Python scalar, or raise."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
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
                f"Header key {key} for {where} holds non-ASCII or control characters; FITS headers hold printable ASCII."
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
                card.image  # formats the card (long comments are cut), raises for impossible ones
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


# --------------------------------------------------------------------------------------------
# Reading containers (both formats read into one in-memory picture)
# --------------------------------------------------------------------------------------------


@dataclass
class _Contents:
    path: str
    fmt: str
    root: dict[str, Any]  # primary header cards / root attributes (raw, upper-case keys)
    instruments_attr: list[str] | None  # HDF5 'instruments' attribute
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]]  # NAME (upper) -> (data, own header)
    tables: dict[str, dict[str, np.ndarray]]  # NAME (upper) -> column -> 1-D array
    names: list[str]  # keys as found, for messages

    def found(self) -> str:
        return ", ".join(self.names) if self.names else "none"


_FITS_PROBLEM_WORDS = ("truncated", "error validating header", "checksum", "datasum", "corrupt")


def _read_fits(path: str) -> _Contents:
    size = os.path.getsize(path)
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    names: list[str] = []
    root: dict[str, Any] = {}
    with open(path, "rb") as fh:
        compressed = not fh.read(9).startswith(b"SIMPLE")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, checksum=True, lazy_load_hdus=False) as hdul:
                end = needed = 0
                for index, hdu in enumerate(hdul):
                    info = hdul.fileinfo(index)
                    end = max(end, info["datLoc"] + info["datSpan"])
                    needed = max(needed, info["datLoc"] + _fits_data_bytes(hdu.header))
                    name = (hdu.name or ("PRIMARY" if index == 0 else f"HDU{index}")).upper()
                    names.append(name)
                    if index == 0:
                        root = _fits_header_dict(hdu.header)
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
                        arrays[name] = (arr.astype(arr.dtype.newbyteorder("="), copy=True), _fits_header_dict(hdu.header))
        problems = [str(w.message) for w in caught if any(word in str(w.message).lower() for word in _FITS_PROBLEM_WORDS)]
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
    return _Contents(path, "fits", root, None, arrays, tables, names)


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


def _short(exc: Any) -> str:
    text = " ".join(str(exc).split())
    text = text.rstrip(".")
    return text[:200] + ("..." if len(text) > 200 else "")


def _read_hdf5(path: str) -> _Contents:
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    names: list[str] = []
    root: dict[str, Any] = {}
    instruments: list[str] | None = None
    try:
        with h5py.File(path, "r") as f:
            for key, value in f.attrs.items():
                if key == "instruments":
                    arr = np.atleast_1d(np.asarray(value))
                    instruments = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
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
                    attrs = {k.upper(): v for k, v in ((k, _h5_attr_value(a)) for k, a in obj.attrs.items()) if v is not None}
                    arrays[name.upper()] = (np.asarray(obj[()]), attrs)
                elif isinstance(obj, h5py.Group):
                    members = list(obj.values())
                    if members and all(isinstance(m, h5py.Dataset) and m.ndim == 1 for m in members):
                        order = obj.attrs.get("columns")
                        cols = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(order)] if order is not None else list(obj.keys())
                        cols = [c for c in cols if c in obj] + [c for c in obj.keys() if c not in cols]
                        tables[name.upper()] = {c: np.asarray(obj[c][()]) for c in cols}
                        names.append(name)

            f.visititems(visit)
    except SvrtError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError) as exc:
        raise SvrtError(f"Cannot read HDF5 file {path}; it is truncated or corrupt ({_short(exc)}).") from None
    return _Contents(path, "hdf5", root, instruments, arrays, tables, names)


def _read_contents(path: str | os.PathLike) -> _Contents:
    fmt = _sniff(path)
    p = _name(path)
    try:
        return _read_fits(p) if fmt == "fits" else _read_hdf5(p)
    except PermissionError:
        raise SvrtError(f"Cannot read {p}: permission denied.") from None


# --------------------------------------------------------------------------------------------
# Array checks
# --------------------------------------------------------------------------------------------


def _as_float32(arr: Any, key: str, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.names is not None:
        raise SvrtError(f"{key} in {where} is a table; expected an image array.")
    if a.dtype.kind not in "fiub":
        raise SvrtError(f"{key} in {where} holds {a.dtype} data; expected real numbers.")
    if a.size == 0:
        raise SvrtError(f"{key} in {where} is empty (shape {tuple(a.shape)}); expected an image array.")
    return np.ascontiguousarray(a, dtype=np.float32)


def _count_nonfinite(a: np.ndarray) -> int:
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _check_finite(a: np.ndarray, key: str, where: str, hint: str = "") -> None:
    bad = _count_nonfinite(a)
    if bad:
        raise SvrtError(f"{key} in {where} has {bad} NaN or infinite pixels out of {a.size}{hint}.")


def _frames_4d(frames: np.ndarray, key: str, where: str) -> np.ndarray:
    if frames.ndim == 4:
        return frames
    if frames.ndim == 3:
        return frames[None]
    if frames.ndim == 2:
        return frames[None, None]
    raise SvrtError(
        f"{key} in {where} has {frames.ndim} dimensions (shape {tuple(frames.shape)}); expected "
        "[K, L, Y, X] (or [L, Y, X] for one object, [Y, X] for one frame)."
    )


def _check_truth(truth: np.ndarray, k: int, yx: tuple[int, int], where: str) -> np.ndarray:
    if truth.ndim == 2 and k == 1:
        truth = truth[None]
    if truth.ndim != 3 or truth.shape[0] != k or tuple(truth.shape[1:]) != yx:
        raise SvrtError(
            f"TRUTH in {where} has shape {tuple(truth.shape)}; expected [K, Y, X] = {(k,) + yx} to match FRAMES."
        )
    return truth


def _check_modes(modes: np.ndarray, n_frames: int, key: str, where: str, against: str) -> np.ndarray:
    if modes.ndim != 4 or modes.shape[0] != n_frames:
        raise SvrtError(
            f"{key} in {where} has shape {tuple(modes.shape)}; expected [L, M, Yg, Xg] with L = {n_frames} "
            f"to match {against}."
        )
    return modes


def _check_instruments(instruments: Any, k: int, where: str) -> list[str]:
    if isinstance(instruments, str):
        instruments = [instruments] * k
    try:
        labels = list(instruments)
    except TypeError:
        raise SvrtError(f"The instruments of {where} must be a list of {k} labels; got {instruments!r}.") from None
    if len(labels) != k:
        raise SvrtError(f"{where} names {len(labels)} instruments ({', '.join(map(str, labels))}) for {k} objects; expected one label per object.")
    for i, lab in enumerate(labels):
        if not isinstance(lab, str) or not lab.strip() or not all(32 <= ord(c) < 127 for c in lab):
            raise SvrtError(f"Instrument {i} of {where} is {lab!r}; expected a non-empty ASCII label such as 'crisp6302'.")
    return [lab.strip() for lab in labels]


# --------------------------------------------------------------------------------------------
# Burst
# --------------------------------------------------------------------------------------------


@dataclass
class Burst:
    """K objects observed through L frames of Y x X pixels.

    frames: float32 [K, L, Y, X] (``[L, Y, X]`` is taken as K = 1 and ``[Y, X]`` as K = L = 1).
    instruments: one instrument label per object (a single str is used for every object).
    truth: float32 [K, Y, X] or None, the object before the atmosphere (simulations).
    modes: float32 [L, M, Yg, Xg] or None, true KL coefficients in radians (simulations).
    header: extra cards, str -> scalar (DATE-OBS, TELESCOP, WAVELNTH [A], CDELT1/2 [arcsec], ...).
    mask: bool [K, L, Y, X] or None; False marks bad (NaN/Inf) pixels, which the solver weights to
        zero. Set by :func:`read_burst` with ``allow_nonfinite=True``; never written to files.
    """

    frames: np.ndarray
    instruments: list[str]
    truth: np.ndarray | None = None
    modes: np.ndarray | None = None
    header: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = "the Burst"
        self.frames = _frames_4d(_as_float32(self.frames, "frames", where), "frames", where)
        k, n_frames, y, x = self.frames.shape
        self.instruments = _check_instruments(self.instruments, k, where)
        if self.truth is not None:
            self.truth = _check_truth(_as_float32(self.truth, "truth", where), k, (y, x), where)
        if self.modes is not None:
            self.modes = _check_modes(_as_float32(self.modes, "modes", where), n_frames, "modes", where, "frames")
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.ndim < 4:
                mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
            if mask.shape != self.frames.shape:
                raise SvrtError(f"The mask of the Burst has shape {mask.shape}; expected {self.frames.shape} like frames.")
            self.mask = np.ascontiguousarray(mask)
        self.header = dict(self.header or {})

    @property
    def n_objects(self) -> int:
        """K, the number of objects (e.g. wide band and narrow band)."""
        return int(self.frames.shape[0])

    @property
    def n_frames(self) -> int:
        """L, the number of frames per object."""
        return int(self.frames.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(Y, X), the image size in pixels (``frames.shape`` is [K, L, Y, X])."""
        return (int(self.frames.shape[2]), int(self.frames.shape[3]))

    @property
    def n_modes(self) -> int | None:
        """M, the number of KL modes of ``modes``, or None without modes."""
        return None if self.modes is None else int(self.modes.shape[1])


def _primary_header(kind: str, k: int, n_frames: int, instruments: Sequence[str], extras: dict[str, Any], where: str) -> fits.Header:
    hdr = fits.Header()
    _set_card(hdr, "SVRTFILE", kind, "svrt file type (burst or restoration)", where)
    _set_card(hdr, "NOBJ", k, "K, number of objects (e.g. wide band, narrow band)", where)
    _set_card(hdr, "NFRAMES", n_frames, "L, number of frames per object", where)
    for i, lab in enumerate(instruments):
        _set_card(hdr, f"INSTR{i}", lab, f"svrt instrument label of object {i}", where)
    for key, value in extras.items():
        _set_card(hdr, key, value, None, where)
    return hdr


def _image_hdu(name: str, data: np.ndarray, bunit: str, axes: str, what: str, extras: dict[str, Any], where: str) -> fits.ImageHDU:
    hdr = fits.Header()
    _set_card(hdr, "BUNIT", bunit, "unit of the data", where)
    if name in ("FRAMES", "TRUTH", "OBJECT", "MODEL"):
        for axis, key in (("1", "CDELT1"), ("2", "CDELT2")):
            if key in extras and isinstance(extras[key], (int, float)) and not isinstance(extras[key], bool):
                _set_card(hdr, key, extras[key], None, where)
                _set_card(hdr, "CUNIT" + axis, "arcsec", None, where)
    hdr.add_comment(f"{name}: {what}")
    hdr.add_comment(f"array axes {axes} (FITS NAXIS1 is the last, X)")
    return fits.ImageHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=hdr, name=name)


def _write_fits(tmp: str, hdus: list[Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList(hdus).writeto(tmp, checksum=True)


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


def _write_guard(path: str | os.PathLike, overwrite: bool) -> str:
    fmt = file_format(path)
    check_output(path, overwrite)
    return fmt


def write_burst(path: str | os.PathLike, burst: Burst, overwrite: bool = False) -> None:
    """Write ``burst`` to ``path`` (FITS or HDF5 by extension), atomically.

    Raises :class:`SvrtError` if ``path`` exists and ``overwrite`` is false, if the extension is
    not a FITS or HDF5 one, or if a header card cannot be stored. ``burst.mask`` is not written.
    """
    if not isinstance(burst, Burst):
        raise SvrtError(f"write_burst({_name(path)}) needs a Burst; got a {type(burst).__name__}.")
    fmt = _write_guard(path, overwrite)
    where = _name(path)
    extras = _clean_header(burst.header, where)
    k, n_frames = burst.n_objects, burst.n_frames
    bunit = str(extras.get("BUNIT", "arbitrary"))
    if fmt == "fits":
        hdus: list[Any] = [fits.PrimaryHDU(header=_primary_header("burst", k, n_frames, burst.instruments, extras, where))]
        hdus.append(_image_hdu("FRAMES", burst.frames, bunit, "[K, L, Y, X]", "observed frames, object k, frame l", extras, where))
        if burst.truth is not None:
            hdus.append(_image_hdu("TRUTH", burst.truth, bunit, "[K, Y, X]", "objects before the atmosphere", extras, where))
        if burst.modes is not None:
            hdus.append(_image_hdu("MODES", burst.modes, "rad", "[L, M, Yg, Xg]", "KL wavefront coefficients (radians of phase) on the coarse grid", extras, where))
        with atomic_write(path) as tmp:
            _write_fits(tmp, hdus)
    else:
        with atomic_write(path) as tmp:
            with h5py.File(tmp, "w") as f:
                _h5_write_header(f, "burst", burst.instruments, extras)
                _h5_dataset(f, "frames", burst.frames, bunit, "K, L, Y, X")
                if burst.truth is not None:
                    _h5_dataset(f, "truth", burst.truth, bunit, "K, Y, X")
                if burst.modes is not None:
                    _h5_dataset(f, "modes", burst.modes, "rad", "L, M, Yg, Xg")


def _instruments_from(contents: _Contents, k: int, instrument: str | Sequence[str] | None) -> list[str]:
    where = contents.path
    given: list[str] | None = None
    if instrument is not None:
        given = _check_instruments(instrument, k, f"the instrument argument for {where}")
    if contents.instruments_attr is not None:
        found: list[str | None] = list(contents.instruments_attr)
        if len(found) != k:
            raise SvrtError(f"The instruments attribute of {where} names {len(found)} instruments for {k} objects; expected {k}.")
        source = "attribute instruments"
    else:
        found = [contents.root.get(f"INSTR{i}") for i in range(k)]
        source = "INSTR cards"
    labels: list[str] = []
    for i, lab in enumerate(found):
        key = f"INSTR{i}" if source == "INSTR cards" else f"instruments[{i}]"
        if lab is None or (isinstance(lab, str) and not lab.strip()):
            if given is None:
                raise SvrtError(
                    f"{where} has no {key} card naming the instrument of object {i}; add it to the header "
                    "or give instrument= (--instrument), e.g. 'crisp6302'."
                )
            labels.append(given[i])
            continue
        lab = str(lab).strip()
        if given is not None and given[i] != lab:
            raise SvrtError(
                f"{where} says {key} = '{lab}' but instrument '{given[i]}' was given for object {i}; "
                "drop the argument or fix the file."
            )
        labels.append(lab)
    return labels


def read_burst(
    path: str | os.PathLike,
    instrument: str | Sequence[str] | None = None,
    allow_nonfinite: bool = False,
) -> Burst:
    """Read a burst file (FITS or HDF5, recognised by its first bytes) into a :class:`Burst`.

    - ``FRAMES`` (``frames`` in HDF5) is required. 4-D data is [K, L, Y, X]; 3-D data [L, Y, X]
      is read as one object (K = 1); 2-D data [Y, X] as one object and one frame (K = L = 1).
    - Integer or float64 data are converted to float32.
    - NaN or Inf pixels in FRAMES raise :class:`SvrtError` with their count, unless
      ``allow_nonfinite`` is true: then they are returned as they are and ``burst.mask`` (bool,
      shape of frames) is False on them, so the solver can give them zero weight. With
      ``allow_nonfinite`` the mask is always set. TRUTH and MODES must be finite.
    - The instrument of object k comes from card ``INSTRk`` (HDF5: attribute ``instruments`` or
      ``INSTRk``); a missing one is taken from ``instrument`` (one label for every object, or a
      list of K labels), else :class:`SvrtError`. A label in the file that disagrees with
      ``instrument`` is an error, not silently overridden.
    - ``TRUTH`` must be [K, Y, X] (or [Y, X] when K = 1) and ``MODES`` [L, M, Yg, Xg].

    Every problem (missing file, truncated or corrupt file, missing key, wrong shapes) raises
    :class:`SvrtError` with one sentence naming the file and the key.
    """
    contents = _read_contents(path)
    where = contents.path
    if "FRAMES" not in contents.arrays:
        raise SvrtError(
            f"{where} has no FRAMES {'extension' if contents.fmt == 'fits' else 'dataset'} "
            f"(found: {contents.found()}); expected the observed frames [K, L, Y, X] under that name."
        )
    frames = _frames_4d(_as_float32(contents.arrays["FRAMES"][0], "FRAMES", where), "FRAMES", where)
    k, n_frames, y, x = frames.shape
    nobj = contents.root.get("NOBJ")
    if isinstance(nobj, int) and not isinstance(nobj, bool) and nobj != k:
        raise SvrtError(f"{where} says NOBJ = {nobj} but FRAMES has shape {tuple(frames.shape)} with K = {k}; expected them to agree.")
    mask = None
    if allow_nonfinite:
        mask = np.isfinite(frames)
    else:
        _check_finite(frames, "FRAMES", where, "; clean them or read with allow_nonfinite=True to weight them to zero")
    truth = modes = None
    if "TRUTH" in contents.arrays:
        truth = _check_truth(_as_float32(contents.arrays["TRUTH"][0], "TRUTH", where), k, (y, x), where)
        _check_finite(truth, "TRUTH", where)
    if "MODES" in contents.arrays:
        modes = _check_modes(_as_float32(contents.arrays["MODES"][0], "MODES", where), n_frames, "MODES", where, "the L of FRAMES")
        _check_finite(modes, "MODES", where)
    instruments = _instruments_from(contents, k, instrument)
    return Burst(frames=frames, instruments=instruments, truth=truth, modes=modes,
                 header=_extras(contents.root), mask=mask)


# --------------------------------------------------------------------------------------------
# Restoration
# --------------------------------------------------------------------------------------------


def _check_loss(loss: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(loss, Mapping):
        raise SvrtError(f"LOSS of {where} is a {type(loss).__name__}; expected a dict of 1-D arrays.")
    missing = [key for key in LOSS_KEYS if key not in loss]
    if missing:
        raise SvrtError(
            f"LOSS of {where} lacks {', '.join(missing)} (found: {', '.join(map(str, loss)) or 'none'}); "
            f"expected columns {', '.join(LOSS_KEYS)}."
        )
    out: dict[str, np.ndarray] = {}
    length = None
    first = ""
    for key, values in loss.items():
        if not isinstance(key, str) or not key or not all(32 < ord(c) < 127 for c in key):
            raise SvrtError(f"LOSS column {key!r} of {where} is not a valid name; expected printable ASCII without spaces.")
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.dtype.kind not in "fiub":
            raise SvrtError(f"LOSS column {key} of {where} has shape {arr.shape} and type {arr.dtype}; expected a 1-D array of numbers.")
        if length is None:
            length, first = arr.shape[0], key
        elif arr.shape[0] != length:
            raise SvrtError(f"LOSS column {key} of {where} has {arr.shape[0]} values where {first} has {length}; expected equal lengths.")
        if key == "iteration" or arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "b":
            arr = arr.astype(bool)
        else:
            arr = arr.astype(np.float64)
        out[key] = np.ascontiguousarray(arr)
    return out


@dataclass
class Restoration:
    """Result of ``svrt deconvolve``.

    objects: float32 [K, Y, X] restored objects.
    modes: float32 [L, M, Yg, Xg] inferred KL coefficients (radians) on the coarse grid.
    model: float32 [K, L, Y, X] emulated frames of the inferred objects and modes.
    loss: dict of equal-length 1-D arrays with at least 'iteration', 'total', 'data',
        'reg_object', 'reg_modes' (more columns allowed), one value per iteration.
    header: hyper-parameters, engine identity, ... (str -> scalar, see the module doc).
    instruments: the instrument label of each object (K labels, or empty when unknown).
    """

    objects: np.ndarray
    modes: np.ndarray
    model: np.ndarray
    loss: dict[str, np.ndarray]
    header: dict[str, Any] = field(default_factory=dict)
    instruments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = "the Restoration"
        objects = _as_float32(self.objects, "objects", where)
        if objects.ndim == 2:
            objects = objects[None]
        if objects.ndim != 3:
            raise SvrtError(f"objects of {where} has shape {tuple(objects.shape)}; expected [K, Y, X].")
        k, y, x = objects.shape
        model = _as_float32(self.model, "model", where)
        if model.ndim != 4 or model.shape[0] != k or tuple(model.shape[2:]) != (y, x):
            raise SvrtError(f"model of {where} has shape {tuple(model.shape)}; expected [K, L, Y, X] with K, Y, X = {(k, y, x)} as objects.")
        self.modes = _check_modes(_as_float32(self.modes, "modes", where), model.shape[1], "modes", where, "model")
        self.objects, self.model = objects, model
        self.loss = _check_loss(self.loss, where)
        self.header = dict(self.header or {})
        self.instruments = [] if not self.instruments else _check_instruments(self.instruments, k, where)

    @property
    def n_objects(self) -> int:
        return int(self.objects.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.model.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(Y, X), the image size in pixels."""
        return (int(self.objects.shape[1]), int(self.objects.shape[2]))

    @property
    def n_iterations(self) -> int:
        return int(self.loss["iteration"].shape[0])


def _loss_format(arr: np.ndarray) -> str:
    return {"i": "K", "u": "K", "b": "L"}.get(arr.dtype.kind, "D")


def write_restoration(path: str | os.PathLike, rest: Restoration, overwrite: bool = False) -> None:
    """Write ``rest`` to ``path`` (FITS or HDF5 by extension), atomically.

    FITS: OBJECT, MODES, MODEL image extensions and the LOSS binary table; header cards and
    INSTRk in the primary HDU. HDF5: datasets object, modes, model and the group loss.
    """
    if not isinstance(rest, Restoration):
        raise SvrtError(f"write_restoration({_name(path)}) needs a Restoration; got a {type(rest).__name__}.")
    fmt = _write_guard(path, overwrite)
    where = _name(path)
    extras = _clean_header(rest.header, where)
    bunit = str(extras.get("BUNIT", "arbitrary"))
    k, n_frames = rest.n_objects, rest.n_frames
    if fmt == "fits":
        hdus: list[Any] = [fits.PrimaryHDU(header=_primary_header("restoration", k, n_frames, rest.instruments, extras, where))]
        hdus.append(_image_hdu("OBJECT", rest.objects, bunit, "[K, Y, X]", "restored objects", extras, where))
        hdus.append(_image_hdu("MODES", rest.modes, "rad", "[L, M, Yg, Xg]", "inferred KL wavefront coefficients (radians of phase) on the coarse grid", extras, where))
        hdus.append(_image_hdu("MODEL", rest.model, bunit, "[K, L, Y, X]", "emulated frames of the restored objects and modes", extras, where))
        cols = [fits.Column(name=key, format=_loss_format(arr), array=arr) for key, arr in rest.loss.items()]
        table = fits.BinTableHDU.from_columns(cols, name="LOSS")
        table.header.add_comment("LOSS: one row per solver iteration (data term and regularisation terms)")
        hdus.append(table)
        with atomic_write(path) as tmp:
            _write_fits(tmp, hdus)
    else:
        with atomic_write(path) as tmp:
            with h5py.File(tmp, "w") as f:
                _h5_write_header(f, "restoration", rest.instruments or None, extras)
                _h5_dataset(f, "object", rest.objects, bunit, "K, Y, X")
                _h5_dataset(f, "modes", rest.modes, "rad", "L, M, Yg, Xg")
                _h5_dataset(f, "model", rest.model, bunit, "K, L, Y, X")
                g = f.create_group("loss")
                g.attrs["columns"] = np.array(list(rest.loss), dtype=h5py.string_dtype())
                for key, arr in rest.loss.items():
                    g.create_dataset(key, data=arr)


def read_restoration(path: str | os.PathLike, allow_nonfinite: bool = False) -> Restoration:
    """Read a restoration file written by :func:`write_restoration` (FITS or HDF5).

    OBJECT, MODES, MODEL and LOSS are required and checked against one another; NaN or Inf in
    OBJECT, MODES or MODEL raise :class:`SvrtError` unless ``allow_nonfinite`` is true.
    """
    contents = _read_contents(path)
    where = contents.path
    unit = "extension" if contents.fmt == "fits" else "dataset"
    arrays: dict[str, np.ndarray] = {}
    for key in ("OBJECT", "MODES", "MODEL"):
        if key not in contents.arrays:
            raise SvrtError(f"{where} has no {key} {unit} (found: {contents.found()}); expected a restoration file from svrt deconvolve.")
        arrays[key] = _as_float32(contents.arrays[key][0], key, where)
        if not allow_nonfinite:
            _check_finite(arrays[key], key, where, "; read with allow_nonfinite=True to inspect them")
    if "LOSS" not in contents.tables:
        raise SvrtError(f"{where} has no LOSS table (found: {contents.found()}); expected a restoration file from svrt deconvolve.")
    objects, model = arrays["OBJECT"], arrays["MODEL"]
    if objects.ndim == 2:
        objects = objects[None]
    if objects.ndim != 3:
        raise SvrtError(f"OBJECT in {where} has shape {tuple(objects.shape)}; expected [K, Y, X].")
    k, y, x = objects.shape
    if model.ndim != 4 or model.shape[0] != k or tuple(model.shape[2:]) != (y, x):
        raise SvrtError(f"MODEL in {where} has shape {tuple(model.shape)}; expected [K, L, Y, X] with K, Y, X = {(k, y, x)} as OBJECT.")
    modes = _check_modes(arrays["MODES"], model.shape[1], "MODES", where, "the L of MODEL")
    loss = _check_loss(contents.tables["LOSS"], where)
    labels: list[str] = []
    if contents.instruments_attr is not None:
        labels = list(contents.instruments_attr)
    elif all(f"INSTR{i}" in contents.root for i in range(k)):
        labels = [str(contents.root[f"INSTR{i}"]) for i in range(k)]
    if labels and len(labels) != k:
        raise SvrtError(f"{where} names {len(labels)} instruments for {k} objects; expected one per object.")
    return Restoration(objects=objects, modes=modes, model=model, loss=loss,
                       header=_extras(contents.root), instruments=labels)


# --------------------------------------------------------------------------------------------
# Single arrays
# --------------------------------------------------------------------------------------------


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
                f"{where} holds several arrays ({', '.join(contents.arrays)}); choose one with key=, e.g. '{next(iter(contents.arrays))}'."
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
    if key is not None and (not key.strip() or not all(32 < ord(c) < 127 for c in key.strip())):
        raise SvrtError(f"Key {key!r} for {where} is not a valid name; expected printable ASCII without spaces.")
    if fmt == "fits":
        hdr = fits.Header()
        for name, value in extras.items():
            _set_card(hdr, name, value, None, where)
        if key is None or key.strip().upper() == "PRIMARY":
            hdus: list[Any] = [fits.PrimaryHDU(data=arr, header=hdr)]
        else:
            hdus = [fits.PrimaryHDU(header=hdr), fits.ImageHDU(data=arr, name=key.strip().upper())]
        with atomic_write(path) as tmp:
            _write_fits(tmp, hdus)
    else:
        with atomic_write(path) as tmp:
            with h5py.File(tmp, "w") as f:
                _h5_write_header(f, None, None, extras)
                f.create_dataset((key or "data").strip(), data=arr)
