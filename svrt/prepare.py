"""Camera files to a burst: each camera of a ``[prepare]`` table (:mod:`svrt.prepare_config`) read
(:mod:`svrt.camera_files`), calibrated (:mod:`svrt.calibration`), cut and stacked into one
:class:`svrt.fileio.Burst` ``frames [K, L, Y, X]``, one channel k per camera in table order.

The header says what the solver needs and what a restoration keeps: ``INSTRk`` (the instrument of each
channel); TELESCOP, INSTRUME, WAVELNTH [A] and CDELT1/2 [arcsec] of channel 0's instrument; the times of
channel 0's frames (DATE-BEG, DATE-OBS, DATE-END over every camera; XPOSURE, NSUMEXP, TEXPOSUR,
:func:`svrt.camera_files.summarise_times`); the objects (channels of one object beyond its first focused
camera get ``DIVOBJk`` = that camera's channel and ``DIVERSk`` [waves P-V] or ``DIVMMk`` [mm] with
``FNUMk``, :mod:`svrt.optics.diversity`); camera alignment ``ALIGNk`` as given
(:mod:`svrt.runtime.camera_alignment`); ``CAMk`` the camera's name and ``CALIBk`` what was applied
('dark gain bad=12 fill').
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from svrt.errors import SvrtError
from svrt.prepare_config import CameraConfig, PrepareSettings, parse_clip, parse_frames

__all__ = ["prepare_burst", "prepare_inputs"]

_COMMENTS = {"XPOSURE": "[s] total exposure of the frames of channel 0",
             "NSUMEXP": "exposures summed over the frames of channel 0",
             "TEXPOSUR": "[s] single exposure",
             "CALTYPE": "calibration: DARK or GAIN (1/flat, 0 = bad pixel)",
             "NAVERAGE": "frames averaged", "NFILES": "files averaged",
             "NBAD": "bad pixels (gain 0)", "DEADBELO": "dead below this fraction of the median flat",
             "HOTABOVE": "hot above this multiple of the median flat"}
for _k in range(10):
    _COMMENTS[f"CAM{_k}"] = f"camera of channel {_k}"
    _COMMENTS[f"CALIB{_k}"] = f"calibration applied to channel {_k}"
    _COMMENTS[f"ALIGN{_k}"] = f"dy,dx [px],rotation [deg],scale of channel {_k} to 0"


def register_comments() -> None:
    """The FITS comments of the cards svrt prepare writes."""
    from svrt.fileio import register_header_comments
    from svrt.optics.diversity import DIVERSITY_COMMENTS

    register_header_comments({**_COMMENTS, **DIVERSITY_COMMENTS})


def _camera_name(cam: CameraConfig, files: list[str]) -> str:
    from pathlib import Path

    return cam.name or Path(files[0]).name.split(".")[0]


def _where(i: int, cam: CameraConfig, source: str) -> str:
    return f"camera {i} ({cam.name or cam.files[0]}) of {source}"


def _object_cards(cameras: list[CameraConfig], source: str) -> dict[str, Any]:
    """DIVOBJk and DIVERSk / DIVMMk + FNUMk: every channel of an object but its first focused one points to
    that one (MOMFBD's channels of one object)."""
    cards: dict[str, Any] = {}
    anchors: dict[int, int] = {}
    for i, cam in enumerate(cameras):
        if cam.object < 0:
            raise SvrtError(f"{_where(i, cam, source)} has object = {cam.object}; expected an index >= 0.")
        if cam.diversity and cam.diversity_mm:
            raise SvrtError(f"{_where(i, cam, source)} gives both diversity and diversity_mm; expected the defocus "
                            "once.")
        if not cam.diversity and not cam.diversity_mm:
            anchors.setdefault(cam.object, i)
    for i, cam in enumerate(cameras):
        anchor = anchors.get(cam.object)
        if anchor is None:
            raise SvrtError(f"object {cam.object} of {source} has only defocused cameras; expected one camera of it "
                            "with diversity = 0 (the focused one).")
        if anchor == i:
            continue
        cards[f"DIVOBJ{i}"] = anchor
        if cam.diversity_mm:
            if not cam.f_number > 0:
                raise SvrtError(f"{_where(i, cam, source)} gives diversity_mm without f_number; expected the f-number "
                                "of the beam at that camera.")
            cards[f"DIVMM{i}"] = float(cam.diversity_mm)
            cards[f"FNUM{i}"] = float(cam.f_number)
        else:
            cards[f"DIVERS{i}"] = float(cam.diversity)
    return cards


def _align_cards(cameras: list[CameraConfig], source: str) -> dict[str, str]:
    cards = {}
    for i, cam in enumerate(cameras):
        if not cam.align:
            continue
        if i == 0:
            raise SvrtError(f"{_where(i, cam, source)} gives align, but channel 0 is the reference of the alignment; "
                            "expected align on the other cameras only.")
        # written as given; svrt deconvolve parses it (svrt.runtime.camera_alignment.parse_alignment). Checked
        # here so that a typo fails before the files are read, without importing the runtime (and torch).
        try:
            dy, dx, deg, scale = (float(v) for v in cam.align.split(","))
        except ValueError:
            dy = dx = deg = scale = math.nan
        if not all(math.isfinite(v) for v in (dy, dx, deg, scale)) or scale <= 0:
            raise SvrtError(f"align of {_where(i, cam, source)} must be 'dy,dx,rotation_deg,scale' (pixels, degrees, "
                            f"scale > 0); got {cam.align!r}.")
        cards[f"ALIGN{i}"] = cam.align.replace(" ", "")
    return cards


def prepare_inputs(settings: PrepareSettings) -> list[str]:
    """Every file ``settings`` reads (the camera files, expanded, and the calibration files): an output
    must be none of them."""
    from svrt.camera_files import expand_files

    out = [settings.source]
    for i, cam in enumerate(settings.cameras):
        out += expand_files(cam.files, _where(i, cam, settings.source))
        out += [p for p in (cam.dark, cam.gain, cam.flat, cam.bad_pixel_map) if p]
    return out


def _check_dark_exposure(dark_exposure, times, dark: str, where: str) -> None:
    """Warn when the dark was taken with another single exposure than the frames (dark current and its
    hot pixels grow with the exposure); silent where either header does not say."""
    singles = {t.single for t in times} - {None}
    if dark_exposure is None or len(singles) != 1:
        return
    frames_exposure = singles.pop()
    if not math.isclose(dark_exposure, frames_exposure, rel_tol=0.01):
        from svrt.checks import warn

        warn(f"the dark {dark} of {where} was taken with exposure {dark_exposure:g} s, its frames with "
             f"{frames_exposure:g} s; expected a dark of the same exposure.")


def _prepare_camera(i: int, cam: CameraConfig, settings: PrepareSettings, progress: bool):
    """One camera's calibrated, cut frames [L, Y, X] (float64), its times and its CALIBk text."""
    from svrt.calibration import calibrate, fill_bad_pixels, load_calibration
    from svrt.camera_files import expand_files, read_camera

    where = _where(i, cam, settings.source)
    files = expand_files(cam.files, where)
    raw = read_camera(files, cam.hdu, where, progress)
    frames_text = settings.common.frames if cam.frames is None else cam.frames
    raw = raw.select(parse_frames(frames_text, len(raw.frames), where))
    shape = raw.frames.shape[1:]
    cal = load_calibration(shape, where, cam.dark, cam.gain, cam.flat, cam.bad_pixel_map)
    _check_dark_exposure(cal.dark_exposure, raw.times, cam.dark, where)
    frames = calibrate(raw.frames, cal)
    n_bad = int(cal.bad.sum())
    if settings.common.bad_pixels == "fill":
        frames = fill_bad_pixels(frames, cal.bad)
    else:
        frames[:, cal.bad] = np.nan
    ys, xs = parse_clip(cam.clip, shape, where)
    applied = [w for w, f in (("dark", cal.dark), ("gain", cal.gain)) if f is not None]
    applied.append(f"bad={n_bad} {settings.common.bad_pixels}" if n_bad else "bad=0")
    return frames[:, ys, xs], raw.times, _camera_name(cam, files), " ".join(applied)


def prepare_burst(settings: PrepareSettings, progress: bool = False):
    """The :class:`svrt.fileio.Burst` of the cameras of ``settings`` (module doc): frames [K, L, Y, X]
    float32, no truth, no modes. One sentence when cameras disagree in frame size or count, an instrument
    is unknown or the objects, diversity or alignment are inconsistent."""
    from svrt.camera_files import summarise_times
    from svrt.fileio import Burst
    from svrt.instruments import get_instrument
    from svrt.optics.diversity import read_diversity

    source = settings.source
    cams = settings.cameras
    insts = []
    for i, cam in enumerate(cams):
        try:
            insts.append(get_instrument(cam.instrument))
        except SvrtError as exc:
            raise SvrtError(f"{_where(i, cam, source)}: {exc}") from None
    header: dict[str, Any] = {}
    header.update(_object_cards(cams, source))
    header.update(_align_cards(cams, source))
    labels = [inst.label for inst in insts]
    read_diversity(header, labels, source)        # the solver's own checks, before any file is read
    stack, times = [], []
    for i, cam in enumerate(cams):
        frames, cam_times, name, calib = _prepare_camera(i, cam, settings, progress)
        if stack and frames.shape != stack[0].shape:
            raise SvrtError(f"{_where(i, cam, source)} gives {frames.shape[0]} frames of {frames.shape[1]}x"
                            f"{frames.shape[2]} pixels, camera 0 {stack[0].shape[0]} of {stack[0].shape[1]}x"
                            f"{stack[0].shape[2]}; expected every camera to give the same (files, frames, clip).")
        stack.append(frames)
        times.append(cam_times)
        header[f"CAM{i}"] = name
        header[f"CALIB{i}"] = calib
    ref = insts[0]
    header.update({"TELESCOP": ref.telescope, "INSTRUME": ref.instrument, "WAVELNTH": float(ref.wavelength_angstrom),
                   "CDELT1": float(ref.pixel_arcsec), "CDELT2": float(ref.pixel_arcsec),
                   "BUNIT": settings.common.bunit})
    header.update(summarise_times(times[0], [t for ts in times[1:] for t in ts]))
    register_comments()
    return Burst(frames=np.stack(stack).astype(np.float32), instruments=labels, header=header)
