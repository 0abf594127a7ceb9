"""Camera files: the frames ``[L, Y, X]`` of one camera from a FITS cube or from one file per frame, and the
times of those frames from the files' headers.

A camera file holds its frames in any image HDU (primary or extension; FITS or HDF5, read through
:func:`svrt.fileio.read_array`): a cube ``[L, Y, X]`` or one frame ``[Y, X]``; integer or float, with
BZERO/BSCALE applied (uint16 as cameras write it: int16 with BZERO = 32768). Several files are stacked in
name order, numbers compared by value (``cam_9`` before ``cam_10``).

Times, per file (SOLARNET names; each optional): ``DATE-BEG`` (else ``DATE-OBS``) the start of its first
frame, ``DATE-END`` the end of its last, ``XPOSURE`` the exposure of each frame in seconds (else ``EXPTIME``
or ``TEXPOSUR`` times ``NSUMEXP``), ``NSUMEXP`` the number of exposures summed into each frame (1 if absent),
``TEXPOSUR`` the single exposure. A file of one frame without DATE-END ends at DATE-BEG + XPOSURE. The
frames of a cube share their file's start and end (a cube carries no time per frame).
"""

from __future__ import annotations

import glob
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from svrt.errors import SvrtError

__all__ = ["CameraFrames", "FrameTimes", "expand_files", "read_camera", "summarise_times"]


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def expand_files(patterns: Sequence[str], where: str) -> list[str]:
    """The files of ``patterns`` (paths or globs), each glob in natural name order; one sentence when a
    path is missing or a glob matches nothing."""
    out: list[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern), key=_natural_key)
            if not found:
                raise SvrtError(f"{where}: no file matches {pattern!r}; expected the camera's FITS files.")
            out.extend(found)
        elif not Path(pattern).is_file():
            raise SvrtError(f"{where}: the file {pattern} does not exist.")
        else:
            out.append(pattern)
    if len(set(map(lambda p: str(Path(p).resolve()), out))) != len(out):
        raise SvrtError(f"{where}: a file is named twice in files; expected each frame once.")
    return out


@dataclass(frozen=True)
class FrameTimes:
    """The times of one frame: start and end (None where the header gives none), exposure [s] (None if
    unknown), exposures summed into it, the single exposure [s] (None if unknown)."""

    begin: datetime | None
    end: datetime | None
    exposure: float | None
    nsumexp: int
    single: float | None


@dataclass
class CameraFrames:
    """The frames of one camera: ``frames`` float64 [L, Y, X], ``times`` one :class:`FrameTimes` per frame,
    ``files`` the file of each frame."""

    frames: np.ndarray
    times: list[FrameTimes]
    files: list[str]

    def select(self, indices: Sequence[int]) -> "CameraFrames":
        """The frames ``indices`` only (0-based), in that order."""
        idx = list(indices)
        return CameraFrames(self.frames[idx], [self.times[i] for i in idx], [self.files[i] for i in idx])


def _number(header: dict, key: str, where: str) -> float | None:
    if key not in header:
        return None
    v = header[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise SvrtError(f"{key} in {where} must be a non-negative number of seconds (or exposures); got {v!r}.")
    return float(v)


def _date(header: dict, key: str, where: str) -> datetime | None:
    if key not in header:
        return None
    text = str(header[key]).strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise SvrtError(f"{key} in {where} is {text!r}; expected an ISO 8601 time such as "
                        "'2024-06-01T09:30:00.125'.") from None


def _file_times(header: dict, n_frames: int, where: str) -> FrameTimes:
    begin = _date(header, "DATE-BEG", where) or _date(header, "DATE-OBS", where)
    end = _date(header, "DATE-END", where)
    nsum = _number(header, "NSUMEXP", where)
    nsum = 1 if nsum is None else int(round(nsum))
    single = _number(header, "TEXPOSUR", where)
    exposure = _number(header, "XPOSURE", where)
    if exposure is None:
        per_exposure = _number(header, "EXPTIME", where)
        per_exposure = single if per_exposure is None else per_exposure
        exposure = None if per_exposure is None else per_exposure * nsum
    if single is None and exposure is not None:
        single = exposure / nsum
    if end is None and begin is not None and exposure is not None and n_frames == 1:
        end = begin + timedelta(seconds=exposure)
    if begin is not None and end is not None and end < begin:
        raise SvrtError(f"DATE-END in {where} is before its DATE-BEG; expected the end of the last frame.")
    return FrameTimes(begin, end, exposure, nsum, single)


def read_camera(files: Sequence[str], hdu: str = "", where: str = "the camera", progress: bool = False) -> CameraFrames:
    """The frames [L, Y, X] (float64) of the camera ``files`` (already expanded, :func:`expand_files`),
    stacked in order, with their times; ``hdu`` names the image HDU ('' for the primary's data, else the
    only image). One sentence when a file is missing or unreadable, holds NaN, or its frames differ in
    shape from the first file's."""
    from tqdm.auto import tqdm

    from svrt.fileio import read_array

    stacks, times, names = [], [], []
    shape = None
    for path in tqdm(files, desc=f"read {where}", unit="file", disable=not progress or len(files) < 2, leave=False):
        data, header = read_array(path, key=hdu or None, allow_nonfinite=True)
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise SvrtError(f"the camera file {path} has {bad} NaN or infinite pixels; expected camera counts "
                            "(mark bad pixels in bad_pixel_map instead).")
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise SvrtError(f"the camera file {path} holds an array of shape {tuple(data.shape)}; expected frames "
                            "[L, Y, X] or one frame [Y, X].")
        if shape is None:
            shape = data.shape[1:]
        elif data.shape[1:] != shape:
            raise SvrtError(f"the camera file {path} holds frames of {data.shape[1]}x{data.shape[2]} pixels, "
                            f"{files[0]} of {shape[0]}x{shape[1]}; expected one frame size per camera.")
        stacks.append(np.asarray(data, dtype=np.float64))
        t = _file_times(header, data.shape[0], path)
        times.extend([t] * data.shape[0])
        names.extend([path] * data.shape[0])
    return CameraFrames(np.concatenate(stacks), times, names)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def summarise_times(times: Sequence[FrameTimes], spans: Sequence[FrameTimes] = ()) -> dict[str, Any]:
    """The header cards of a burst made of ``times`` (the frames of the reference camera): DATE-BEG and
    DATE-OBS (the earliest start, of these frames or of ``spans``, the frames of the other cameras),
    DATE-END (the latest end), XPOSURE (the sum of the frames' exposures), NSUMEXP (exposures summed over
    the frames) and TEXPOSUR (the single exposure, where every frame gives the same). Cards the headers
    cannot give are left out."""
    every = list(times) + list(spans)
    begins = [t.begin for t in every if t.begin is not None]
    ends = [t.end for t in every if t.end is not None]
    out: dict[str, Any] = {}
    if begins:
        out["DATE-BEG"] = out["DATE-OBS"] = _iso(min(begins))
    if ends:
        out["DATE-END"] = _iso(max(ends))
    if all(t.exposure is not None for t in times):
        out["XPOSURE"] = round(sum(t.exposure for t in times), 9)
    out["NSUMEXP"] = int(sum(t.nsumexp for t in times))
    singles = {t.single for t in times}
    if len(singles) == 1 and None not in singles:
        out["TEXPOSUR"] = singles.pop()
    return out
