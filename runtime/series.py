"""Time series: a sequence of restorations co-aligned into one cube ``[T, K, Y, X]`` (``svrt series``).

A restored scan is one burst of many; this puts the restorations of consecutive bursts on one grid.
For each restoration t, in the order given:

1. **Derotation** (only where the headers give an angle): an alt-az telescope without a derotator
   turns the field during a scan. svrt does not compute that angle from the telescope's position and
   the header times (out of scope); it reads it from a header card, by default ``CROTA2`` (degrees, the
   FITS convention: the angle from the pixel axes to solar north, as in the restoration's WCS). Frame
   t is resampled onto the reference's grid, ``(x', y') = c + R(rho_ref - rho_t) (x - c, y - c)``,
   about the image centre ``c`` (any other centre differs by a translation, which step 2 removes).
   A restoration without the card is not rotated; an angle given by some and not all restorations is
   an error.
2. **Rigid alignment** of the wide band (object ``wideband``, 0 by default, the burst's broad-band
   channel) to the reference: the first restoration, or the running mean of the last ``window``
   rigidly aligned wide-band images (slowly evolving granulation stays correlated with recent frames;
   the destretch of step 3 is left out of the reference, so its noise never enters the shifts). The
   shift is measured by :func:`svrt.registration.estimate_shift_dft` (upsampled DFT, unbiased to
   < 0.002 px; the score's :func:`~svrt.registration.estimate_shift` is biased by a few hundredths) and
   the same shift is applied to every object: the objects of one restoration are already co-registered.
3. **Destretch** (optional, ``block`` pixels): the residual warp of the wide band, measured by
   :func:`svrt.registration.destretch`, applied to every object as well.

Resampling: a pure shift is applied in Fourier space to the image mirrored across its edges (exact
for the interior, no interpolation blur, so no frame-to-frame flicker of the fine structure); a
rotation or a destretch field is applied once, as one map composed of all three steps, by bicubic
interpolation (:func:`svrt.registration.apply_shift_field`).

Output (FITS only), written atomically::

    PRIMARY  no data; SVRTFILE = 'series', NTIMES = T, NOBJ = K, the reference's observation cards
    SERIES   float32 [T, K, Y, X]  the co-aligned objects; the reference's WCS on axes 1-2 (X, Y) when
             it has a complete one (every time is on the first restoration's grid; the Sun's own
             rotation during the series is not removed); axes 3 (object) and 4 (time) have no WCS:
             the times are in TIMES
    TIMES    one row per restoration: FILE, DATE_BEG, DATE_END (ISO, '' when the header has none),
             DY, DX (the shift removed [px], module :mod:`svrt.registration`'s convention),
             ROTATION (the rotation applied [deg])

:func:`series_maps` turns a SERIES file into a ``sunpy.map.MapSequence`` (one map per time, with its
DATE-OBS from TIMES). The quick look (:func:`plot_series`) is a PNG strip of the wide band at up to
eight times and the measured drift.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from svrt.errors import SvrtError

__all__ = ["SeriesInput", "SeriesResult", "load_restorations", "align_series", "write_series", "read_series_file",
           "series_maps", "plot_series"]

#: observation cards of the reference restoration carried to the series (besides the WCS of axes 1-2)
_CARRIED = ("TELESCOP", "INSTRUME", "OBSRVTRY", "DETECTOR", "WAVELNTH", "WAVEUNIT", "WAVEMIN", "WAVEMAX", "BUNIT",
            "BTYPE", "DSUN_OBS", "RSUN_REF", "RSUN_ARC", "HGLN_OBS", "HGLT_OBS", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z",
            "TIMESYS", "DATEREF", "ORIGIN", "OBJECT", "LEVEL")
#: the WCS cards of the two image axes (CTYPE1, CRPIX2, PC1_2, CROTA2, ...)
_WCS_IMAGE = re.compile(r"^(CTYPE|CUNIT|CRPIX|CRVAL|CDELT|CROTA)[12]$|^(PC|CD)[12]_[12]$")
_FITS_SUFFIXES = (".fits", ".fit", ".fts")


@dataclass
class SeriesResult:
    """A co-aligned series.

    cube: float32 [T, K, Y, X] the co-aligned objects.
    files: T source names (the restorations, in order).
    date_beg, date_end: T ISO times from the headers ('' where a header has none).
    shifts: float64 [T, 2] the rigid shift (dy, dx) removed from each restoration [px].
    rotations: float64 [T] the rotation applied to each [deg] (0 without angle cards).
    header: the reference's observation and WCS cards (str -> scalar).
    """

    cube: np.ndarray
    files: list[str]
    date_beg: list[str]
    date_end: list[str]
    shifts: np.ndarray
    rotations: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)


def _time(header: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _angle(header: dict[str, Any], key: str, where: str) -> float | None:
    if key not in header:
        return None
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SvrtError(f"{where}: header card {key} is {value!r}; expected the field rotation angle in degrees "
                        "(a finite number).")
    return float(value)


def _reference_cards(header: dict[str, Any]) -> dict[str, Any]:
    """The reference's observation cards and, when it has a complete one (CTYPE, CRPIX and CRVAL of both
    image axes), its WCS of axes 1-2: a partial WCS (a CDELT alone) is left out, not passed on half-made."""
    complete = all(f"{key}{axis}" in header for key in ("CTYPE", "CRPIX", "CRVAL") for axis in (1, 2))
    return {k: v for k, v in header.items() if k in _CARRIED or (complete and _WCS_IMAGE.match(k))}


def _fourier_shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``image [Y, X]`` with its content moved by ``(dy, dx)`` pixels, exactly for band-limited content: the
    shift is applied to the image's even extension ``[2Y, 2X]`` (periodic and continuous across its
    edges, so no wrap-around and no ringing from the frame's borders), then the image is cut out again."""
    y, x = image.shape
    ext = np.pad(np.asarray(image, np.float64), ((0, y), (0, x)), mode="symmetric")
    ky = np.fft.fftfreq(2 * y)[:, None]
    kx = np.fft.rfftfreq(2 * x)[None, :]
    moved = np.fft.irfft2(np.fft.rfft2(ext) * np.exp(-2j * np.pi * (ky * dy + kx * dx)), s=ext.shape)
    return moved[:y, :x]


def _resample(objects: np.ndarray, degrees: float, shift: tuple[float, float],
              field_yx: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``objects [K, Y, X]`` derotated by ``degrees``, then moved back by ``shift`` and by the destretch
    ``field_yx`` (``[Y, X]`` each, measured on the derotated and shifted image): one resampling."""
    from svrt.registration import apply_shift_field

    k, y, x = objects.shape
    if degrees == 0.0 and field_yx is None:
        return np.stack([_fourier_shift(o, -shift[0], -shift[1]) for o in objects])
    qy = np.full((y, x), shift[0]) + (field_yx[0] if field_yx is not None else 0.0)
    qx = np.full((y, x), shift[1]) + (field_yx[1] if field_yx is not None else 0.0)
    if degrees != 0.0:   # the rotation acts on the shifted coordinates: compose the two maps
        gy, gx = np.meshgrid(np.arange(y, dtype=np.float64), np.arange(x, dtype=np.float64), indexing="ij")
        cy, cx = (y - 1) / 2, (x - 1) / 2
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        ux, uy = gx + qx - cx, gy + qy - cy
        qy, qx = cy + s * ux + c * uy - gy, cx + c * ux - s * uy - gx
    return np.stack([apply_shift_field(o, qy, qx) for o in objects])


@dataclass
class SeriesInput:
    """What the series needs of one restoration: objects float32 [K, Y, X] and its header (str -> scalar)."""

    objects: np.ndarray
    header: dict[str, Any]


def load_restorations(paths: Sequence[str | os.PathLike]) -> list[SeriesInput]:
    """The objects and headers of the restoration files ``paths`` (FITS or HDF5, :func:`svrt.fileio.read_restoration`),
    one file at a time: their modes and model frames (``[K, L, Y, X]``, the bulk of a file) are not kept."""
    from svrt.fileio import read_restoration

    out = []
    for path in paths:
        rest = read_restoration(path)
        out.append(SeriesInput(objects=rest.objects, header=dict(rest.header)))
        del rest
    return out


def align_series(restorations: Sequence[Any], names: Sequence[str] | None = None, wideband: int = 0,
                 reference: str = "first", window: int = 5, destretch_block: int | None = None,
                 angle_key: str | None = "CROTA2", max_shift: float | None = None,
                 upsample: int = 100) -> SeriesResult:
    """Co-align ``restorations`` (each with ``objects [K, Y, X]``, all of one shape, and ``header``: a
    :class:`SeriesInput` or a :class:`svrt.fileio.Restoration`) into a :class:`SeriesResult` (the module
    doc gives the steps).

    reference: ``"first"`` (the first restoration's wide band) or ``"running"`` (the mean of the last
        ``window`` aligned wide-band images).
    destretch_block: block size [px] of the destretch to the wide band; None: rigid alignment only.
    angle_key: header card of the field rotation angle [deg]; None: no derotation.
    max_shift: largest rigid shift searched [px]; None: anywhere.
    """
    from svrt.registration import destretch, estimate_shift_dft

    names = [str(n) for n in (names or [f"restoration {i}" for i in range(len(restorations))])]
    if not restorations:
        raise SvrtError("svrt series needs at least one restoration; none was given.")
    if reference not in ("first", "running"):
        raise SvrtError(f"reference {reference!r} is not known; expected 'first' or 'running'.")
    shape = tuple(restorations[0].objects.shape)
    for name, rest in zip(names, restorations):
        if tuple(rest.objects.shape) != shape:
            raise SvrtError(f"{name}: objects of shape {tuple(rest.objects.shape)} [K, Y, X]; expected {shape} like "
                            f"{names[0]} (a series is one field, one grid).")
    if not 0 <= wideband < shape[0]:
        raise SvrtError(f"the wide band is object {wideband}, but the restorations have {shape[0]} objects "
                        f"(0..{shape[0] - 1}).")
    angles = [_angle(r.header, angle_key, n) if angle_key else None for r, n in zip(restorations, names)]
    given = [a is not None for a in angles]
    if any(given) and not all(given):
        missing = names[given.index(False)]
        raise SvrtError(f"{missing}: header card {angle_key} (field rotation, degrees) is missing, but other "
                        "restorations of the series have it; give it to all or pass --angle-key none.")
    rho_ref = angles[0] if angles[0] is not None else 0.0

    t_count = len(restorations)
    cube = np.empty((t_count,) + shape, np.float32)
    shifts = np.zeros((t_count, 2))
    rotations = np.zeros(t_count)
    ref_image: np.ndarray | None = None
    recent: list[np.ndarray] = []
    for t, rest in enumerate(restorations):
        objects = np.asarray(rest.objects, np.float64)
        rotations[t] = 0.0 if angles[t] is None else rho_ref - angles[t]
        wide = objects[wideband]
        if rotations[t] != 0.0:
            wide = _resample(objects[wideband:wideband + 1], rotations[t], (0.0, 0.0), None)[0]
        if ref_image is None:   # the first restoration is the grid of the series
            shift = (0.0, 0.0)
        else:
            shift = estimate_shift_dft(wide, ref_image, upsample=upsample, max_shift=max_shift)
        # the wide band derotated and rigidly aligned: what the reference is made of, so that the chain of
        # rigid shifts never inherits the noise of a destretch field
        rigid = wide if shift == (0.0, 0.0) else _fourier_shift(wide, -shift[0], -shift[1])
        warp = None
        if destretch_block is not None and ref_image is not None:
            _, sy, sx = destretch(rigid, ref_image, block=int(destretch_block))
            warp = (sy, sx)
        cube[t] = _resample(objects, rotations[t], shift, warp).astype(np.float32)
        shifts[t] = shift
        if reference == "first":
            if ref_image is None:
                ref_image = rigid
        else:
            recent = (recent + [rigid])[-max(int(window), 1):]
            ref_image = np.mean(recent, axis=0)
    headers = [r.header for r in restorations]
    return SeriesResult(cube=cube, files=[Path(n).name for n in names],
                        date_beg=[_time(h, "DATE-BEG", "DATE-OBS") for h in headers],
                        date_end=[_time(h, "DATE-END") for h in headers],
                        shifts=shifts, rotations=rotations, header=_reference_cards(headers[0]))


def _check_fits_name(path: str | os.PathLike) -> None:
    if not str(path).lower().endswith(_FITS_SUFFIXES):
        raise SvrtError(f"Output {path}: a series is written as FITS; expected a name ending in .fits, .fit or .fts.")


def _series_hdus(result: SeriesResult):
    from astropy.io import fits

    t_count, k = result.cube.shape[:2]
    primary = fits.PrimaryHDU()
    primary.header["SVRTFILE"] = ("series", "svrt file type: co-aligned restorations")
    primary.header["NTIMES"] = (t_count, "number of times T (restorations)")
    primary.header["NOBJ"] = (k, "number of objects K per time")
    for key, value in result.header.items():
        if not _WCS_IMAGE.match(key):
            primary.header[key] = value
    if result.date_beg[0]:
        primary.header["DATE-BEG"] = (result.date_beg[0], "start of the first restored burst")
    if result.date_end[-1]:
        primary.header["DATE-END"] = (result.date_end[-1], "end of the last restored burst")
    primary.header["EXTNAME"] = "PRIMARY"
    cube = fits.ImageHDU(result.cube, name="SERIES")
    for key, value in result.header.items():
        cube.header[key] = value
    cube.header["AXES"] = ("[T, K, Y, X]", "time, object, y, x (FITS axes 4, 3, 2, 1)")
    cube.header.add_comment("SERIES: the restorations co-aligned to the reference's grid (svrt series); WCS of axes "
                            "1-2 from the reference, axes 3 (object) and 4 (time) have none: times in TIMES.")
    from astropy.io.fits import Column

    def text(name, items):
        width = max([1] + [len(s) for s in items])
        return Column(name=name, format=f"{width}A", array=np.array(items, dtype=f"U{width}"))

    table = fits.BinTableHDU.from_columns([
        text("FILE", result.files), text("DATE_BEG", result.date_beg), text("DATE_END", result.date_end),
        Column(name="DY", format="D", unit="pix", array=result.shifts[:, 0]),
        Column(name="DX", format="D", unit="pix", array=result.shifts[:, 1]),
        Column(name="ROTATION", format="D", unit="deg", array=result.rotations),
    ], name="TIMES")
    table.header.add_comment("TIMES: one row per time of SERIES: source, times, the shift removed and the rotation")
    return fits.HDUList([primary, cube, table])


def write_series(path: str | os.PathLike, result: SeriesResult, inputs: Sequence[str | os.PathLike] = (),
                 overwrite: bool = False) -> None:
    """Write ``result`` to ``path`` (FITS, layout in the module doc), atomically; never over one of ``inputs``."""
    from svrt.fileio import atomic_write, check_not_input, check_output

    _check_fits_name(path)
    check_not_input(path, *inputs)
    check_output(path, overwrite)
    hdus = _series_hdus(result)
    with atomic_write(path, size_hint=int(result.cube.nbytes) + 64 * 1024) as tmp:
        hdus.writeto(tmp, checksum=True)


def read_series_file(path: str | os.PathLike) -> tuple[np.ndarray, Any, dict[str, np.ndarray]]:
    """``(cube [T, K, Y, X], SERIES header, TIMES columns)`` of a file written by :func:`write_series`."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            if "SERIES" not in names or "TIMES" not in names:
                raise SvrtError(f"{path} has the HDUs {', '.join(names)}; expected SERIES and TIMES (a file from "
                                "svrt series).")
            cube = np.asarray(hdul["SERIES"].data, np.float32)
            header = hdul["SERIES"].header.copy()
            times = {c.name: np.asarray(hdul["TIMES"].data[c.name]) for c in hdul["TIMES"].columns}
    except OSError as exc:
        raise SvrtError(f"Cannot read {path}: {exc}; expected a FITS file from svrt series.") from None
    if cube.ndim != 4 or cube.shape[0] != len(times["FILE"]):
        raise SvrtError(f"{path}: SERIES has shape {cube.shape} and TIMES {len(times['FILE'])} rows; expected "
                        "[T, K, Y, X] with one row per time.")
    return cube, header, times


def series_maps(path: str | os.PathLike, obj: int = 0):
    """A ``sunpy.map.MapSequence`` of object ``obj`` of a series file: one map per time, with the SERIES WCS
    of axes 1-2 and DATE-OBS = the row's DATE_BEG (sunpy needed: ``pip install sunpy[map]``)."""
    from astropy.io import fits

    try:
        import sunpy.map
    except ImportError:
        raise SvrtError("series_maps needs sunpy (pip install 'sunpy[map]').") from None
    cube, header, times = read_series_file(path)
    if not 0 <= obj < cube.shape[1]:
        raise SvrtError(f"{path}: object {obj} asked for; the series has objects 0..{cube.shape[1] - 1}.")
    base = fits.Header()
    for card in header.cards:
        if _WCS_IMAGE.match(card.keyword) or card.keyword in _CARRIED:
            base[card.keyword] = (card.value, card.comment)
    maps = []
    for t in range(cube.shape[0]):
        h = base.copy()
        when = str(times["DATE_BEG"][t]).strip()
        if when:
            h["DATE-OBS"] = when
            h["DATE-BEG"] = when
        maps.append(sunpy.map.Map(cube[t, obj], h))
    return sunpy.map.Map(maps, sequence=True)


def plot_series(result: SeriesResult, png: str | os.PathLike, wideband: int = 0, columns: int = 8) -> str:
    """PNG strip: the wide band at up to ``columns`` evenly spaced times (one grey scale), and below the
    shift removed from each restoration (dy, dx in pixels); atomically (:func:`svrt.pictures.save_png`)."""
    from svrt.pictures import save_png, subplots

    t_count = result.cube.shape[0]
    picks = sorted(set(np.linspace(0, t_count - 1, min(columns, t_count)).round().astype(int).tolist()))
    images = result.cube[picks, wideband]
    lo, hi = np.percentile(images, [0.5, 99.5])
    n = len(picks)
    fig, axes = subplots(2, n, figsize=(2.0 * n + 0.5, 4.6), squeeze=False, layout="constrained",
                         gridspec_kw={"height_ratios": [2.0, 1.2]})
    for ax, t, img in zip(axes[0], picks, images):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.set_title(result.date_beg[t][11:19] or f"t = {t}", fontsize=8)
        ax.set_axis_off()
    for ax in axes[1, 1:]:
        ax.remove()
    drift = fig.add_subplot(axes[1, 0].get_gridspec()[1, :])
    axes[1, 0].remove()
    drift.plot(result.shifts[:, 0], "o-", ms=3, label="dy")
    drift.plot(result.shifts[:, 1], "s-", ms=3, label="dx")
    drift.xaxis.get_major_locator().set_params(integer=True)
    drift.set_xlabel("restoration")
    drift.set_ylabel("shift removed [px]")
    drift.legend(fontsize=8)
    return save_png(fig, png)
