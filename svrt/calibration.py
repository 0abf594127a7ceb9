"""Calibration of camera frames: the dark, the gain (1/flat) and the bad pixels, made from calibration
frames and applied to a camera's frames (MOMFBD's DARK_TEMPLATE and GAIN_FILE, docs/PREPARE.md).

- Dark ``[Y, X]``: the mean of dark frames (:func:`make_dark`).
- Gain ``[Y, X]``: from the mean of flat-field frames less the dark, the flat, normalised to mean 1 over
  its good pixels; the gain is 1/flat, and 0 on bad pixels: those whose flat is below ``dead_below`` or
  above ``hot_above`` times the flat's median (dead, stuck or hot pixels; the zeros of a gain mark bad
  pixels, as in MOMFBD's gain files) (:func:`make_gain`).
- Applied (:func:`calibrate`): ``(frame - dark) * gain``; the bad pixels (the gain's zeros, a flat's
  flagged pixels, a bad-pixel map) are then filled with the median of their good neighbours
  (:func:`fill_bad_pixels`) or set to NaN, which ``svrt deconvolve --allow-nonfinite`` weights to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from svrt.errors import SvrtError

__all__ = ["Calibration", "make_dark", "make_gain", "load_calibration", "calibrate", "fill_bad_pixels",
           "DEAD_BELOW", "HOT_ABOVE"]

DEAD_BELOW = 0.3   # a pixel answering less than 30 % of the median to a flat field is dead (dust shadows: < 10 %)
HOT_ABOVE = 3.0    # ... more than 3 times is hot or stuck high (gain gradients: 10-20 %)


@dataclass
class Calibration:
    """What is applied to one camera's frames: ``dark`` [Y, X] or None, ``gain`` [Y, X] or None (multiplied),
    ``bad`` bool [Y, X] (True: a bad pixel)."""

    dark: np.ndarray | None
    gain: np.ndarray | None
    bad: np.ndarray
    dark_exposure: float | None = None      # [s] TEXPOSUR of the dark's frames, where its file says


def _mean_frame(files: Sequence[str], what: str, progress: bool) -> tuple[np.ndarray, int, list]:
    """The mean [Y, X] of every frame of ``files``, one file in memory at a time; the frame count, the times."""
    from tqdm.auto import tqdm

    from svrt.camera_files import read_camera

    total, n, times, shape = None, 0, [], None
    for path in tqdm(files, desc=f"average {what}", unit="file", disable=not progress or len(files) < 2, leave=False):
        cam = read_camera([path], where=what)
        if shape is None:
            shape, total = cam.frames.shape[1:], np.zeros(cam.frames.shape[1:])
        elif cam.frames.shape[1:] != shape:
            raise SvrtError(f"the {what} file {path} holds frames of {cam.frames.shape[1]}x{cam.frames.shape[2]} "
                            f"pixels, {files[0]} of {shape[0]}x{shape[1]}; expected one camera's frames.")
        total += cam.frames.sum(axis=0)
        n += cam.frames.shape[0]
        times.extend(cam.times)
    return total / n, n, times


def _calibration_header(kind: str, n: int, files: Sequence[str], times: list) -> dict[str, Any]:
    from svrt.camera_files import summarise_times

    header = {"CALTYPE": kind, "NAVERAGE": n, "NFILES": len(files)}
    header.update({k: v for k, v in summarise_times(times).items() if k in ("DATE-BEG", "DATE-END", "TEXPOSUR")})
    return header


def make_dark(files: Sequence[str], progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The dark [Y, X] (float64): the mean of every frame of the dark ``files``; its header cards
    (CALTYPE = 'DARK', NAVERAGE frames, NFILES, DATE-BEG, DATE-END, TEXPOSUR)."""
    dark, n, times = _mean_frame(files, "dark", progress)
    return dark, _calibration_header("DARK", n, files, times)


def make_gain(files: Sequence[str], dark: np.ndarray | None = None, dark_name: str = "the dark",
              dead_below: float = DEAD_BELOW, hot_above: float = HOT_ABOVE,
              progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The gain [Y, X] (float64) of the flat-field ``files`` (module doc): 1/flat, 0 on bad pixels; its
    header cards (CALTYPE = 'GAIN', NAVERAGE, NFILES, NBAD pixels, the thresholds)."""
    if not 0 <= dead_below < 1 < hot_above:
        raise SvrtError(f"the bad-pixel thresholds must satisfy 0 <= dead_below < 1 < hot_above; got {dead_below} "
                        f"and {hot_above}.")
    flat, n, times = _mean_frame(files, "flat", progress)
    if dark is not None:
        if dark.shape != flat.shape:
            raise SvrtError(f"{dark_name} has {dark.shape[0]}x{dark.shape[1]} pixels, the flat frames "
                            f"{flat.shape[0]}x{flat.shape[1]}; expected the dark of the same camera.")
        flat = flat - dark
    median = float(np.median(flat))
    if not median > 0:
        raise SvrtError(f"the flat frames ({files[0]}, ...) less the dark have median {median:.4g}; expected a "
                        "positive signal (flat-field frames, and the dark of the same camera and exposure).")
    bad = (flat < dead_below * median) | (flat > hot_above * median)
    flat = flat / flat[~bad].mean()
    gain = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, flat))
    header = _calibration_header("GAIN", n, files, times)
    header.update({"NBAD": int(bad.sum()), "DEADBELO": float(dead_below), "HOTABOVE": float(hot_above)})
    return gain, header


def _read_map(path: str, what: str, shape: tuple[int, int], where: str) -> tuple[np.ndarray, dict]:
    """A calibration image [Y, X] (float64) and its header, checked to be finite and of the frames' shape."""
    from svrt.fileio import read_array

    data, header = read_array(path, allow_nonfinite=True)
    if data.shape != tuple(shape):
        raise SvrtError(f"the {what} file {path} has shape {tuple(data.shape)} but the frames of {where} are "
                        f"{shape[0]}x{shape[1]}; expected the {what} of that camera, full frame.")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise SvrtError(f"the {what} file {path} has {bad} NaN or infinite pixels; expected finite numbers "
                        f"{'(0 marks a bad pixel)' if what == 'gain' else '(bad pixels go in bad_pixel_map)'}.")
    return np.asarray(data, dtype=np.float64), header


def load_calibration(shape: tuple[int, int], where: str, dark: str = "", gain: str = "", flat: str = "",
                     bad_pixel_map: str = "") -> Calibration:
    """The :class:`Calibration` of a camera whose frames are ``shape`` (Y, X) from its files (each '' for
    none): a dark, a gain (zeros are bad pixels; negative values refused) or a flat (divided by: pixels
    <= 0 must be in the bad-pixel map), a bad-pixel map (non-zero is bad). One sentence on every
    inconsistency, naming the file."""
    if gain and flat:
        raise SvrtError(f"{where} gives both gain and flat; expected one of them (the gain is 1/flat).")
    bad = np.zeros(shape, dtype=bool)
    if bad_pixel_map:
        bad |= _read_map(bad_pixel_map, "bad-pixel map", shape, where)[0] != 0
    g = None
    if gain:
        g = _read_map(gain, "gain", shape, where)[0]
        if (g < 0).any():
            raise SvrtError(f"the gain file {gain} has {int((g < 0).sum())} negative pixels; expected 1/flat, "
                            "0 on bad pixels.")
        bad |= g == 0
    if flat:
        f = _read_map(flat, "flat", shape, where)[0]
        unflagged = (f <= 0) & ~bad
        if unflagged.any():
            raise SvrtError(f"the flat file {flat} has {int(unflagged.sum())} pixels <= 0 that the bad-pixel map does "
                            "not flag; expected a positive flat, or those pixels in bad_pixel_map.")
        g = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, f))
    d, exposure = None, None
    if dark:
        d, dark_header = _read_map(dark, "dark", shape, where)
        exposure = dark_header.get("TEXPOSUR")
    return Calibration(dark=d, gain=g, bad=bad, dark_exposure=exposure if isinstance(exposure, float) else None)


def calibrate(frames: np.ndarray, cal: Calibration) -> np.ndarray:
    """``(frames - dark) * gain`` of frames [L, Y, X] (float64); bad pixels are left for the caller."""
    out = np.array(frames, dtype=np.float64)
    if cal.dark is not None:
        out -= cal.dark
    if cal.gain is not None:
        out *= cal.gain
    return out


def fill_bad_pixels(frames: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """frames [L, Y, X] with every pixel of ``bad`` [Y, X] replaced by the median of the good pixels in the
    3x3 box around it, the box grown (5x5, 7x7, ...) for pixels inside a cluster of bad ones. A median, not
    a mean: a neighbour that is itself odd (a cosmic ray) does not leak in."""
    out = np.array(frames, dtype=np.float64)
    ys, xs = np.nonzero(bad)
    if ys.size == 0:
        return out
    if bad.all():
        raise SvrtError("every pixel of the frame is bad; expected a bad-pixel map that leaves good pixels.")
    y_max, x_max = bad.shape[0] - 1, bad.shape[1] - 1
    radius = 1
    while ys.size:
        d = np.arange(-radius, radius + 1)
        box = (len(ys), d.size, d.size)                       # [n, box y, box x] -> [n, w]
        yy = np.broadcast_to(ys[:, None, None] + d[None, :, None], box).reshape(len(ys), -1)
        xx = np.broadcast_to(xs[:, None, None] + d[None, None, :], box).reshape(len(xs), -1)
        inside = (yy >= 0) & (yy <= y_max) & (xx >= 0) & (xx <= x_max)     # the box cut at the frame's edges
        yy, xx = np.clip(yy, 0, y_max), np.clip(xx, 0, x_max)
        good = inside & ~bad[yy, xx]                          # [n, w]
        done = good.any(axis=1)
        if done.any():
            values = np.where(good[done][None], out[:, yy[done], xx[done]], np.nan)   # [L, n, w]
            out[:, ys[done], xs[done]] = np.nanmedian(values, axis=-1)
        ys, xs = ys[~done], xs[~done]
        radius += 1
    return out
