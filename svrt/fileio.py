"""Files of svrt: atomic writes, burst and restoration files (FITS or HDF5), single arrays.

Formats are chosen by the file name when writing and by the file's first bytes when reading:

- FITS: ``.fits``, ``.fit``, ``.fts`` (and the same followed by ``.gz``), via :mod:`astropy.io.fits`.
  Checksums (``CHECKSUM``/``DATASUM``) are written and verified on reading.
- HDF5: ``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, via :mod:`h5py`.

Nothing here unpickles anything.

Burst file (the design card's "File contracts"; docs/ARCHITECTURE.md), FITS layout::

    PRIMARY  no data; SVRTFILE = 'burst', NOBJ = K, NFRAMES = L, INSTR0 .. INSTR{K-1}
             (instrument label of each object) and the extra header cards (DATE-OBS, TELESCOP,
             WAVELNTH [Angstrom], CDELT1/CDELT2 [arcsec], simulation settings, ...)
    FRAMES   float32 [K, L, Y, X]  observed frames (BUNIT = header BUNIT or 'arbitrary')
    TRUTH    float32 [K, Y, X]     object before the atmosphere (simulated bursts only)
    MODES    float32 [L, M, Yg, Xg] true KL coefficients, BUNIT = 'rad' (simulated bursts only)

Optional cards of the primary header that the solver reads (``docs/OBSERVING.md``): phase diversity,
``DIVERSk`` [waves P-V] or ``DIVMMk`` [mm] with ``FNUMk``/``FNUMBER``, and ``DIVOBJk`` (the channel whose
object channel k images; :mod:`svrt.optics.diversity`); camera alignment ``ALIGNk = 'dy,dx,deg,scale'``
(:mod:`svrt.runtime.camera_alignment`). A burst without them is read and solved as before.

HDF5 layout: datasets ``frames``, ``truth``, ``modes`` (attributes ``units`` and ``axes``),
root attributes ``svrt_file``, ``instruments`` (array of str) and one attribute per header key.

Restoration file (SOLARNET-style, partially compliant: ``SOLARNET = 0.5``), FITS layout::

    PRIMARY  no data; EXTNAME = 'PRIMARY', SVRTFILE = 'restoration', NOBJ, NFRAMES, INSTRn and the
             input's cards (DATE-OBS, TELESCOP, EXPTIME, BUNIT, WCS, ..., INPUT = the burst's name)
    OBJECT0 .. OBJECT{K-1}
             float32 [Y, X]   one image per object, each a complete observation HDU that
             ``sunpy.map.Map(path, hdus=k + 1)`` opens: the input's cards and its WCS (axes 1-2),
             SOLARNET, OBS_HDU = 1, DATE-BEG (the input's, else its DATE-OBS), WAVELNTH and
             WAVEUNIT = -10 (Angstrom), BTYPE, BNAME, BUNIT (the input's, else '' = dimensionless,
             the input's relative units), FILENAME, DATE, SVRTINST (instrument label of the object),
             and the provenance PRSTEPn = 'MOMFBD', PRPROCn, PRPVERn, PRMODEn, PRPARAn, PRLIBnA,
             PRVERnA (n follows the input's own PRSTEP cards)
    OBJECT   float32 [K, Y, X]      the objects as one cube (same cards), read by read_restoration
    MODES    float32 [L, M, Yg, Xg] inferred KL coefficients, BUNIT = 'rad'
    MODEL    float32 [K, L, Y, X]   emulated frames of the objects and modes (same cards as OBJECT)
    LOSS     binary table: iteration, total, data, reg_object, reg_modes, ... (one row per iteration)
    CONFIG   binary table KEY, VALUE, COMMENT: every solver setting, the engine's identity and the run's
             figures (:attr:`Restoration.config`), VALUE as JSON text (32, 0.0199, "momfbd", true, null)

The input's cards are never overwritten by the solver's: those live in CONFIG under their own names
(GRID there is the solver's P, pixels per node, whatever the burst's GRID means). Every HDU has an
EXTNAME. HDF5: datasets ``object``, ``modes``, ``model``, a group ``loss`` holding one 1-D dataset per
column and a group ``config`` with the string datasets ``key``, ``value`` (JSON), ``comment``.
:func:`read_restoration` gives ``header`` = the primary cards plus the CONFIG entries (a CONFIG key
that the primary also has is given as ``SVRT_<KEY>``, see :func:`merge_headers`) and ``config`` as
stored.

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
import errno
import io
import math
import os
import re
import secrets
import shutil
import socket
import time
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
    "check_free_space",
    "check_output",
    "check_writable",
    "clean_stale_temps",
    "file_format",
    "merge_headers",
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
_MANAGED = {"SVRTFILE", "NOBJ", "NFRAMES", "NEXTEND"}
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


# Temporary files: ".<name>.tmp-<host>-<pid>-<8 hex><suffix>" next to the output. A write killed with
# SIGKILL leaves one behind; the next write of the same output (or check_writable) removes those whose
# process is gone (same host) or that are older than STALE_TEMP_SECONDS (any host).
STALE_TEMP_SECONDS = 7 * 24 * 3600
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<host>[A-Za-z0-9]+)-)?(?P<pid>\d+)-(?P<token>[0-9a-f]{8})")
_FREE_MARGIN = 1 << 20  # bytes kept free beyond the estimated size


def _temp_path(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that interrupted writes of ``path`` left (killed with SIGKILL, power
    loss): those of processes of this host that no longer run, and any older than a week. Returns
    the names removed; never raises."""
    target = Path(path)
    removed: list[str] = []
    try:
        entries = list(os.scandir(target.parent if str(target.parent) else "."))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or m.group("name") != target.name:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        same_host = m.group("host") in (None, _HOST)
        if (same_host and not _pid_alive(int(m.group("pid")))) or age > STALE_TEMP_SECONDS:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
    if removed:
        from svrt.checks import warn

        warn(f"removed {len(removed)} temporary file(s) left by an interrupted write of {_name(path)} "
             f"({', '.join(removed[:3])}{', ...' if len(removed) > 3 else ''}).")
    return removed


def _write_error(path: Any, exc: OSError, folder: Any = None) -> str:
    """One sentence for an OSError met while writing ``path``."""
    folder = _name(folder if folder is not None else (Path(path).parent if str(Path(path).parent) else "."))
    code = exc.errno
    if code == errno.ENOSPC:
        return f"Cannot write {_name(path)}: no space left on the device of {folder}; free some space or choose another folder."
    if code == getattr(errno, "EDQUOT", -1):
        return f"Cannot write {_name(path)}: the disk quota of {folder} is exhausted; free some space or choose another folder."
    if code == errno.EFBIG:
        return (f"Cannot write {_name(path)}: the file is larger than the file system of {folder} or this process's "
                "file-size limit (ulimit -f) allows; choose another folder.")
    if code == errno.EROFS:
        return f"Cannot write {_name(path)}: {folder} is on a read-only file system; choose another folder."
    if code in (errno.EACCES, errno.EPERM):
        return f"Cannot write {_name(path)}: permission denied in the folder {folder}; choose a folder you can write to."
    if code == errno.ENOTDIR:
        return f"Cannot write {_name(path)}: a part of the folder {folder} is a file, not a folder."
    if code == errno.ENOENT:
        if os.path.isdir(folder):
            return f"Cannot write {_name(path)}: the folder {folder} does not accept new files; choose another folder."
        return f"Cannot write {_name(path)}: the folder {folder} does not exist and cannot be created there."
    return f"Cannot write {_name(path)}: {_short(exc.strerror or exc)} (in the folder {folder})."


def _check_free_space(path: Any, folder: Path, nbytes: int | None) -> None:
    if not nbytes:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    need = int(nbytes) + _FREE_MARGIN
    if free < need:
        raise SvrtError(
            f"Cannot write {_name(path)}: it needs about {need / 2**20:.1f} MiB but the device of {_name(folder)} has "
            f"{free / 2**20:.1f} MiB free; free some space or choose another folder."
        )


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None, size_hint: int | None = None) -> Iterator[str]:
    """Write ``path`` atomically: yield a temporary path in the same folder, then move it in place.

    The temporary name is ``.<name>.tmp-<host>-<pid>-<random><suffix>`` next to ``path``; ``suffix``
    defaults to the extension of ``path`` (``.fits.gz`` counts as one), so that libraries that
    choose their format from the name (astropy, h5py, matplotlib, safetensors) do the right thing.
    When the body finishes, the temporary file is flushed to disk and ``os.replace``-d onto
    ``path``. When the body raises (KeyboardInterrupt included), the temporary file is removed,
    nothing is created at ``path`` and a file already there is left untouched. A process killed
    with SIGKILL cannot remove its temporary file: the next write of the same ``path`` does
    (:func:`clean_stale_temps`). Missing parent folders are created. ``size_hint`` (bytes), when
    given, is checked against the free space first. Every OSError of the body (full disk, read-only
    folder, permission denied) becomes one :class:`SvrtError` sentence. This does not check for an
    existing ``path``: see :func:`check_output`.

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
    except FileExistsError:
        raise SvrtError(f"Cannot write {_name(path)}: {_name(parent)} is a file, not a folder.") from None
    except OSError as exc:
        raise SvrtError(_write_error(path, exc, parent)) from None
    if suffix is None:
        suffix = _full_suffix(target)
    clean_stale_temps(target)
    _check_free_space(path, parent, size_hint)
    tmp = _temp_path(target, suffix)
    try:
        try:
            yield str(tmp)
        except OSError as exc:
            raise SvrtError(_write_error(path, exc, parent)) from None
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


def _write_bytes(tmp: str, data: bytes | memoryview) -> None:
    """Write ``data`` with plain file I/O (errors are ordinary OSErrors, whatever the disk does)."""
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()


def check_free_space(path: str | os.PathLike, nbytes: int | None) -> None:
    """Raise :class:`SvrtError` unless about ``nbytes`` (plus 1 MiB) fit on the device that will hold
    ``path`` (its folder, or the nearest existing folder above it)."""
    folder = Path(os.path.abspath(os.fspath(path))).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    _check_free_space(path, folder, nbytes)


def check_writable(path: str | os.PathLike, overwrite: bool = False, size_hint: int | None = None) -> None:
    """Check, before any work, that ``path`` can be written: :func:`check_output`, then the folder (or
    the nearest existing one above it) exists, is a folder and accepts a new file (a probe file is
    created and removed), then ``size_hint`` bytes fit on its device. Removes stale temporary files
    of ``path`` (:func:`clean_stale_temps`). Raises :class:`SvrtError` with one sentence."""
    check_output(path, overwrite)
    target = Path(os.path.abspath(os.fspath(path)))
    folder = target.parent
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SvrtError(f"Cannot write {_name(path)}: {_name(existing)} is a file, not a folder.")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise SvrtError(f"Cannot write {_name(path)}: the folder {_name(folder)} does not exist and {_name(existing)} "
                            "is not writable, so it cannot be created.")
    else:
        probe = _temp_path(target, ".probe")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        except OSError as exc:
            raise SvrtError(_write_error(path, exc, folder)) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        clean_stale_temps(target)
    _check_free_space(path, existing, size_hint)


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


def _decompress(path: str) -> bytes | None:
    """The whole decompressed stream of a gzip or bzip2 FITS file (None for a plain file). A stream
    cut short or damaged raises :class:`SvrtError`: astropy would read the HDUs before the cut
    silently, so a truncated .fits.gz looked like a file without its later extensions."""
    import bz2
    import gzip
    import zlib

    with open(path, "rb") as fh:
        head = fh.read(3)
        if head.startswith(b"\x1f\x8b"):
            fh.seek(0)
            try:
                return gzip.decompress(fh.read())
            except (EOFError, OSError, zlib.error) as exc:
                raise SvrtError(f"Compressed FITS file {path} is truncated or corrupt: its gzip stream is incomplete or "
                                f"damaged ({_short(exc)}).") from None
        if head.startswith(b"BZh"):
            fh.seek(0)
            try:
                return bz2.decompress(fh.read())
            except (EOFError, OSError, ValueError) as exc:
                raise SvrtError(f"Compressed FITS file {path} is truncated or corrupt: its bzip2 stream is incomplete or "
                                f"damaged ({_short(exc)}).") from None
    return None


def _read_fits(path: str) -> _Contents:
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    tables: dict[str, dict[str, np.ndarray]] = {}
    names: list[str] = []
    root: dict[str, Any] = {}
    data_bytes = _decompress(path)
    if data_bytes is not None:
        if not data_bytes.startswith(b"SIMPLE"):
            raise SvrtError(f"Compressed file {path} does not hold a FITS file (it does not start with SIMPLE once decompressed).")
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
    announced = root.get("NEXTEND")
    if isinstance(announced, int) and not isinstance(announced, bool) and len(names) - 1 < announced:
        raise SvrtError(
            f"FITS file {path} is truncated: its primary header announces NEXTEND = {announced} extensions but only "
            f"{len(names) - 1} ({', '.join(names[1:]) or 'none'}) are there."
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
        # the celestial WCS of the image axes (FITS axes 1 = X and 2 = Y) travels with every image
        for key, value in extras.items():
            if _WCS_IMAGE_RE.match(key) and not (key.startswith("CUNIT") and f"CDELT{key[-1]}" not in extras):
                _set_card(hdr, key, value, None, where)
        for axis in ("1", "2"):
            cdelt = extras.get("CDELT" + axis)
            if isinstance(cdelt, (int, float)) and not isinstance(cdelt, bool) and "CUNIT" + axis not in extras:
                _set_card(hdr, "CUNIT" + axis, "arcsec", None, where)
    hdr.add_comment(f"{name}: {what}")
    hdr.add_comment(f"array axes {axes} (FITS NAXIS1 is the last, X)")
    return fits.ImageHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=hdr, name=name)


# WCS cards of the two image axes (and the observer's position), copied onto every image extension
_WCS_IMAGE_RE = re.compile(
    r"^((CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA|CRDER|CSYER|CNAME)[12]|(PC|CD)[12]_[12]|WCSNAME|LONPOLE|LATPOLE|"
    r"RADESYS|EQUINOX|DSUN_OBS|HGLN_OBS|HGLT_OBS|CRLN_OBS|CRLT_OBS|RSUN_REF|RSUN_ARC|RSUN_OBS)$"
)


def _write_fits(tmp: str, hdus: list[Any]) -> None:
    """Write the HDUs to ``tmp``; an OSError (full disk, ...) propagates to :func:`atomic_write`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList(hdus).writeto(tmp, checksum=True)


def _nbytes(*arrays: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays if a is not None)) + 64 * 1024


def _size_hint(path: Any, nbytes: int) -> int | None:
    """Bytes to check free space for: none for compressed outputs (their size is not known)."""
    return None if os.fspath(path).lower().endswith(_COMPRESSED_SUFFIXES) else nbytes


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
    hint = _size_hint(path, _nbytes(burst.frames, burst.truth, burst.modes))
    if fmt == "fits":
        hdus: list[Any] = [fits.PrimaryHDU(header=_primary_header("burst", k, n_frames, burst.instruments, extras, where))]
        hdus.append(_image_hdu("FRAMES", burst.frames, bunit, "[K, L, Y, X]", "observed frames, object k, frame l", extras, where))
        if burst.truth is not None:
            hdus.append(_image_hdu("TRUTH", burst.truth, bunit, "[K, Y, X]", "objects before the atmosphere", extras, where))
        if burst.modes is not None:
            hdus.append(_image_hdu("MODES", burst.modes, "rad", "[L, M, Yg, Xg]", "KL wavefront coefficients (radians of phase) on the coarse grid", extras, where))
        hdus[0].header["NEXTEND"] = (len(hdus) - 1, "number of extensions (a shorter file is truncated)")
        with atomic_write(path, size_hint=hint) as tmp:
            _write_fits(tmp, hdus)
    else:
        def build(f):
            _h5_write_header(f, "burst", burst.instruments, extras)
            _h5_dataset(f, "frames", burst.frames, bunit, "K, L, Y, X")
            if burst.truth is not None:
                _h5_dataset(f, "truth", burst.truth, bunit, "K, Y, X")
            if burst.modes is not None:
                _h5_dataset(f, "modes", burst.modes, "rad", "L, M, Yg, Xg")

        with atomic_write(path, size_hint=hint) as tmp:
            _write_bytes(tmp, _h5_image(build))


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
    check: bool = True,
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
    - ``TRUTH`` must be [K, Y, X] (or [Y, X] when K = 1) and ``MODES`` [L, M, Yg, Xg]; present but
      without data, or not an image, is an error (never silently left out).
    - Boolean FRAMES are refused. With ``check`` (the default) the frames go through
      :func:`svrt.checks.check_frames`: dead (constant, all-zero) frames, 0/1 masks, magnitudes near
      the float32 limit are refused, odd frames warned about. ``check=False`` reads them as they are
      (then :func:`svrt.checks.drop_dead_frames` can leave dead frames out). It also warns on frames that
      share a fixed pattern beyond the diffraction cutoff (dark or flat not applied,
      :func:`svrt.checks.check_calibration`).
    - The header is the primary header's cards plus those of the FRAMES extension (dataset) that the
      primary lacks (BUNIT, EXPTIME, WCS cards such as CTYPE1, CRPIX1, CRVAL1, PC1_1, ...), so that a
      restoration keeps them.

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
    raw_frames, frames_cards = contents.arrays["FRAMES"]
    if np.asarray(raw_frames).dtype == bool:
        raise SvrtError(f"FRAMES in {where} holds boolean data (a mask?); expected intensities as float or integer numbers.")
    frames = _frames_4d(_as_float32(raw_frames, "FRAMES", where), "FRAMES", where)
    k, n_frames, y, x = frames.shape
    present = {n.strip("/").upper() for n in contents.names}
    for key in ("TRUTH", "MODES"):
        if key in present and key not in contents.arrays:
            kind = "a table" if key in contents.tables else "no data"
            raise SvrtError(f"{key} in {where} is present but holds {kind}; expected an image array (or no {key} at all).")
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
    if check:
        from svrt.checks import check_calibration, check_frames

        check_frames(frames, where, mask=mask)
        check_calibration(frames, instruments, where, mask=mask)
    header = _extras(contents.root)
    header.update(_image_cards(frames_cards, header, contents.fmt))
    return Burst(frames=frames, instruments=instruments, truth=truth, modes=modes, header=header, mask=mask)


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
    header: the observation's cards (the input burst's DATE-OBS, TELESCOP, BUNIT, WCS, ...), str ->
        scalar (see the module doc); written as FITS cards on the primary and every observation HDU.
    instruments: the instrument label of each object (K labels, or empty when unknown).
    config: the solver's settings, engine identity and run figures (str -> str, int, float, bool or
        None), written to the CONFIG extension; empty: everything is in ``header`` (older files).
    """

    objects: np.ndarray
    modes: np.ndarray
    model: np.ndarray
    loss: dict[str, np.ndarray]
    header: dict[str, Any] = field(default_factory=dict)
    instruments: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

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
        self.config = _check_config(self.config, where)

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


#: keys that describe the file itself, not the observation: the new file's value wins.
FILE_KEYS = ("DATE", "ORIGIN", "FILENAME", "CREATOR", "SVRT_VERSION")


def merge_headers(kept: Mapping[str, Any] | None, added: Mapping[str, Any] | None, prefix: str = "SVRT_") -> dict[str, Any]:
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


def _loss_format(arr: np.ndarray) -> str:
    return {"i": "K", "u": "K", "b": "L"}.get(arr.dtype.kind, "D")


# ---------------------------------------------------------------- restoration: SOLARNET cards, CONFIG

#: SOLARNET compliance of a restoration: partial (the mandatory keys are there; the conditionally
#: mandatory ones, e.g. OBSGEO-X/Y/Z or WAVEMIN/WAVEMAX, only when the input has them)
SOLARNET_LEVEL = 0.5
#: config entries summarised in PRPARAn (the full list is the CONFIG extension)
_PRPARA_KEYS = ("METHOD_USED", "GRID", "ITERATIONS", "PATCH_SIZE", "REFINE_ROUNDS", "LAMBDA_OBJ", "LAMBDA_MODES",
                "WEIGHTS", "ENGINE_MODEL", "ENGINE_BACKEND")
# WCS cards with an axis number (or WCSAXES): those of axes other than 1 and 2 are left off the images
_WCS_AXIS_RE = re.compile(r"^(?:(?:CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA|CRDER|CSYER|CNAME)(\d+)|(?:PC|CD|PV|PS)(\d+)_(\d+)|WCSAXES)[A-Z]?$")
_PRSTEP_RE = re.compile(r"^PRSTEP(\d+)$")


def _check_config(config: Any, where: str) -> dict[str, Any]:
    """Upper-case keys -> JSON scalars (str, int, finite or not float, bool, None)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise SvrtError(f"The config of {where} is a {type(config).__name__}; expected a dict of key -> value.")
    out: dict[str, Any] = {}
    for raw, value in config.items():
        key = str(raw).strip().upper()
        if not key or not all(32 < ord(c) < 127 for c in key):
            raise SvrtError(f"Config key {raw!r} of {where} is not a valid name; expected printable ASCII without spaces.")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise SvrtError(f"Config key {key} of {where} holds a {type(value).__name__}; expected str, int, float, bool or None.")
        out[key] = value
    return out


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


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _without_config(header: Mapping[str, Any] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """``header`` less the entries that :func:`read_restoration` merged in from ``config`` (KEY or
    SVRT_KEY with the CONFIG value), so that reading and writing a restoration again is stable."""
    header = dict(header or {})
    names = {str(key).strip().upper() for key in header}
    out: dict[str, Any] = {}
    for key, value in header.items():
        up = str(key).strip().upper()
        base = up[len("SVRT_"):]
        if up.startswith("SVRT_") and base in config and base in names and _same_value(value, config[base]):
            continue  # the config entry, renamed because the input has the key
        if up in config and f"SVRT_{up}" not in names and up not in FILE_KEYS and _same_value(value, config[up]):
            continue  # the config entry under its own name
        out[key] = value
    return out


def _obs_hdu(name: str, data: np.ndarray, axes: str, what: str, cards: Mapping[str, Any], where: str) -> fits.ImageHDU:
    hdr = fits.Header()
    comments = {**_COMMENTS, **_OBS_COMMENTS, "BUNIT": "unit of the data ('': the input's relative units)"}
    for key, value in cards.items():
        _set_card(hdr, key, value, comments.get(key), where)
    hdr.add_comment(f"{name}: {what}")
    hdr.add_comment(f"array axes {axes} (FITS NAXIS1 is the last, X)")
    return fits.ImageHDU(data=np.ascontiguousarray(data, dtype=np.float32), header=hdr, name=name)


def _json_value(key: str, value: Any, where: str) -> str:
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise SvrtError(f"Config key {key} of {where} cannot be written as JSON ({type(value).__name__}).") from None


def _config_hdu(config: Mapping[str, Any], where: str) -> fits.BinTableHDU:
    keys = list(config)
    values = [_json_value(k, config[k], where) for k in keys]
    comments = [_COMMENTS.get(k, "") for k in keys]

    def col(name, items):
        width = max([1] + [len(v) for v in items])
        return fits.Column(name=name, format=f"{width}A", array=np.array(items or [""], dtype=f"U{width}")[: len(items)])

    table = fits.BinTableHDU.from_columns([col("KEY", keys), col("VALUE", values), col("COMMENT", comments)], name="CONFIG")
    table.header.add_comment("CONFIG: every solver setting, the engine identity and the run's figures; VALUE is JSON")
    return table


def _read_config(table: Mapping[str, np.ndarray] | None, where: str) -> dict[str, Any]:
    """The CONFIG table (FITS KEY/VALUE, HDF5 key/value) as a dict with the JSON values decoded."""
    import json

    if table is None:
        return {}
    cols = {str(c).upper(): v for c, v in table.items()}
    if "KEY" not in cols or "VALUE" not in cols:
        raise SvrtError(f"The CONFIG table of {where} has columns {', '.join(map(str, table)) or 'none'}; expected KEY and VALUE.")

    def text(v):
        return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)

    out: dict[str, Any] = {}
    for key, value in zip(cols["KEY"].tolist(), cols["VALUE"].tolist()):
        try:
            out[text(key).strip()] = json.loads(text(value))
        except ValueError:
            raise SvrtError(f"CONFIG entry {text(key).strip()} of {where} is not JSON ({text(value)[:40]!r}).") from None
    return out


def write_restoration(path: str | os.PathLike, rest: Restoration, overwrite: bool = False) -> None:
    """Write ``rest`` to ``path`` (FITS or HDF5 by extension), atomically (layout: module doc).

    FITS: the primary (the observation's cards, INSTRk), one 2-D observation HDU per object
    (OBJECT0 ..., SOLARNET keywords, the input's WCS, provenance), the OBJECT cube, MODES, MODEL, the
    LOSS table and the CONFIG table (``rest.config``). HDF5: datasets object, modes, model and the
    groups loss and config; the header as root attributes.
    """
    if not isinstance(rest, Restoration):
        raise SvrtError(f"write_restoration({_name(path)}) needs a Restoration; got a {type(rest).__name__}.")
    fmt = _write_guard(path, overwrite)
    where = _name(path)
    config = _check_config(rest.config, where)
    extras = _clean_header(_without_config(rest.header, config), where)
    bunit = str(extras.get("BUNIT", "arbitrary"))
    k, n_frames = rest.n_objects, rest.n_frames
    hint = _size_hint(path, 2 * _nbytes(rest.objects) + _nbytes(rest.modes, rest.model, *rest.loss.values()))
    if fmt == "fits":
        primary = _primary_header("restoration", k, n_frames, rest.instruments, extras, where)
        hdus: list[Any] = [fits.PrimaryHDU(header=primary)]
        hdus[0].header["EXTNAME"] = ("PRIMARY", "name of this HDU")
        prov = _provenance(extras, config)
        name = Path(where).name
        labels = list(rest.instruments) or [None] * k
        waves = _object_wavelengths(extras, rest.instruments, k)
        for i in range(k):
            cards = _obs_cards(extras, config, prov, name, f"restored object {i}" + (f" ({labels[i]})" if labels[i] else ""),
                               labels[i], waves[i], i)
            hdus.append(_obs_hdu(f"OBJECT{i}", rest.objects[i], "[Y, X]", f"restored object {i} (SV-MOMFBD)", cards, where))
        cube = _obs_cards(extras, config, prov, name, "restored objects")
        hdus.append(_obs_hdu("OBJECT", rest.objects, "[K, Y, X]", "restored objects", cube, where))
        hdus.append(_image_hdu("MODES", rest.modes, "rad", "[L, M, Yg, Xg]", "inferred KL wavefront coefficients (radians of phase) on the coarse grid", {}, where))
        hdus[-1].header["BTYPE"] = ("Wavefront KL coefficients", "type of data")
        model = _obs_cards(extras, config, prov, name, "emulated frames of the restored objects and modes")
        hdus.append(_obs_hdu("MODEL", rest.model, "[K, L, Y, X]", "emulated frames of the restored objects and modes", model, where))
        cols = [fits.Column(name=key, format=_loss_format(arr), array=arr) for key, arr in rest.loss.items()]
        table = fits.BinTableHDU.from_columns(cols, name="LOSS")
        table.header.add_comment("LOSS: one row per solver iteration (data term and regularisation terms)")
        hdus.append(table)
        hdus.append(_config_hdu(config, where))
        hdus[0].header["NEXTEND"] = (len(hdus) - 1, "number of extensions (a shorter file is truncated)")
        with atomic_write(path, size_hint=hint) as tmp:
            _write_fits(tmp, hdus)
    else:
        def build(f):
            _h5_write_header(f, "restoration", rest.instruments or None, extras)
            _h5_dataset(f, "object", rest.objects, bunit, "K, Y, X")
            _h5_dataset(f, "modes", rest.modes, "rad", "L, M, Yg, Xg")
            _h5_dataset(f, "model", rest.model, bunit, "K, L, Y, X")
            g = f.create_group("loss")
            g.attrs["columns"] = np.array(list(rest.loss), dtype=h5py.string_dtype())
            for key, arr in rest.loss.items():
                g.create_dataset(key, data=arr)
            c = f.create_group("config")
            c.attrs["columns"] = np.array(["key", "value", "comment"], dtype=h5py.string_dtype())
            keys = list(config)
            for col, items in (("key", keys), ("value", [_json_value(key, config[key], where) for key in keys]),
                               ("comment", [_COMMENTS.get(key, "") for key in keys])):
                c.create_dataset(col, data=np.array(items, dtype=object), dtype=h5py.string_dtype(), shape=(len(items),))

        with atomic_write(path, size_hint=hint) as tmp:
            _write_bytes(tmp, _h5_image(build))


def read_restoration(path: str | os.PathLike, allow_nonfinite: bool = False) -> Restoration:
    """Read a restoration file written by :func:`write_restoration` (FITS or HDF5).

    OBJECT (or, without it, the per-object images OBJECT0 ...), MODES, MODEL and LOSS are required and
    checked against one another; NaN or Inf in OBJECT, MODES or MODEL raise :class:`SvrtError` unless
    ``allow_nonfinite`` is true. ``header`` is the primary's cards plus the CONFIG entries (a CONFIG
    key the primary also has comes as ``SVRT_<KEY>``); ``config`` is the CONFIG table as stored
    (empty for files without one: their settings are in ``header``).
    """
    contents = _read_contents(path)
    where = contents.path
    unit = "extension" if contents.fmt == "fits" else "dataset"
    if "OBJECT" not in contents.arrays and "OBJECT0" in contents.arrays:
        planes = []
        while f"OBJECT{len(planes)}" in contents.arrays:
            planes.append(_as_float32(contents.arrays[f"OBJECT{len(planes)}"][0], f"OBJECT{len(planes)}", where))
        if len({p.shape for p in planes}) > 1 or planes[0].ndim != 2:
            raise SvrtError(f"The per-object images OBJECT0..OBJECT{len(planes) - 1} of {where} have shapes "
                            f"{', '.join(str(p.shape) for p in planes)}; expected one [Y, X] shape.")
        contents.arrays["OBJECT"] = (np.stack(planes), {})
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
    config = _read_config(contents.tables.get("CONFIG"), where)
    labels: list[str] = []
    if contents.instruments_attr is not None:
        labels = list(contents.instruments_attr)
    elif all(f"INSTR{i}" in contents.root for i in range(k)):
        labels = [str(contents.root[f"INSTR{i}"]) for i in range(k)]
    if labels and len(labels) != k:
        raise SvrtError(f"{where} names {len(labels)} instruments for {k} objects; expected one per object.")
    return Restoration(objects=objects, modes=modes, model=model, loss=loss,
                       header=merge_headers(_extras(contents.root), config), instruments=labels, config=config)


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
        with atomic_write(path, size_hint=_size_hint(path, _nbytes(arr))) as tmp:
            _write_fits(tmp, hdus)
    else:
        def build(f):
            _h5_write_header(f, None, None, extras)
            f.create_dataset((key or "data").strip(), data=arr)

        with atomic_write(path, size_hint=_size_hint(path, _nbytes(arr))) as tmp:
            _write_bytes(tmp, _h5_image(build))
