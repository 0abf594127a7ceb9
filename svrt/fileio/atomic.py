"""Atomic writes and the checks of an output before any work: temporary name in the same folder,
then ``os.replace``; stale temporaries of killed writes removed; one sentence for every OSError."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from svrt.errors import SvrtError
from svrt.fileio.contents import _name, _short

#: compression suffixes: the suffix of ``a.fits.gz`` is ``.fits.gz`` (formats read the two together)
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")


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
        return (f"Cannot write {_name(path)}: no space left on the device of {folder}; free some space or choose "
                "another folder.")
    if code == getattr(errno, "EDQUOT", -1):
        return (f"Cannot write {_name(path)}: the disk quota of {folder} is exhausted; free some space or choose "
                "another folder.")
    if code == errno.EFBIG:
        return (f"Cannot write {_name(path)}: the file is larger than the file system of {folder} or this process's "
                "file-size limit (ulimit -f) allows; choose another folder.")
    if code == errno.EROFS:
        return f"Cannot write {_name(path)}: {folder} is on a read-only file system; choose another folder."
    if code in (errno.EACCES, errno.EPERM):
        return (f"Cannot write {_name(path)}: permission denied in the folder {folder}; choose a folder you can "
                "write to.")
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


def _fsync(path: Any) -> None:
    """Flush a file, or a folder's entries, to the disk; best effort (never raises)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        _fsync(tmp)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise SvrtError(f"Cannot move the finished output onto {_name(path)}: {exc.strerror or exc}.") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync(parent)  # make the rename itself durable (best effort, POSIX only)


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
            raise SvrtError(f"Cannot write {_name(path)}: the folder {_name(folder)} does not exist and "
                            f"{_name(existing)} is not writable, so it cannot be created.")
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


def _nbytes(*arrays: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in arrays if a is not None)) + 64 * 1024


def _size_hint(path: Any, nbytes: int) -> int | None:
    """Bytes to check free space for: none for compressed outputs (their size is not known)."""
    return None if os.fspath(path).lower().endswith(_COMPRESSED_SUFFIXES) else nbytes
