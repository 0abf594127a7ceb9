"""The settings of ``svrt prepare``: the ``[prepare]`` table of a TOML settings file, with one
``[[prepare.camera]]`` table per camera (docs/PREPARE.md maps each key to its MOMFBD equivalent)::

    [prepare]
    frames = "0-11"                  # frame indices kept, after the files are stacked (MOMFBD IMAGE_NUMS)
    bad_pixels = "fill"              # or "nan": zero weight in svrt deconvolve --allow-nonfinite

    [[prepare.camera]]               # channel 0: the reference of the camera alignment (MOMFBD: a channel)
    name = "wb"
    files = "wb/cam_*.fits"          # a cube [L, Y, X], or one file per frame (a glob or a list)
    instrument = "crisp8542"
    object = 0                       # MOMFBD's object of this channel
    dark = "calib/dark_wb.fits"      # DARK_TEMPLATE
    gain = "calib/gain_wb.fits"      # GAIN_FILE

    [[prepare.camera]]               # a phase-diversity channel of object 0 (MOMFBD DIVERSITY)
    files = "pd/cam_*.fits"
    instrument = "crisp8542"
    object = 0
    diversity = 1.0                  # waves peak-to-valley (or diversity_mm with f_number)

The same file may hold ``[solver]`` for ``svrt deconvolve --config``. Relative paths are taken from the
settings file's folder (or ``data_dir``). Each key is declared once here, with :func:`svrt.settings.setting`,
and checked with the settings machinery (:func:`svrt.settings.check_value`): a wrong key or value is one
:class:`SvrtError` sentence naming the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svrt.errors import SvrtError
from svrt.settings import _load_toml, check_settings, setting

__all__ = ["PrepareConfig", "CameraConfig", "PrepareSettings", "read_prepare", "parse_frames", "parse_clip"]

BAD_PIXEL_MODES = ("fill", "nan")


@dataclass(frozen=True)
class PrepareConfig:
    """The ``[prepare]`` table: what applies to every camera."""

    frames: str = setting("", help="Frame indices kept, 0-based after the files of a camera are stacked: '0-11' or "
                                   "'0-5,8'; '' keeps all (MOMFBD IMAGE_NUMS).")
    bad_pixels: str = setting("fill", help="Bad pixels (dark/gain/bad-pixel map): 'fill' with the median of the valid "
                                           "neighbours, or 'nan' (zero weight: svrt deconvolve --allow-nonfinite).",
                              choices=BAD_PIXEL_MODES)
    data_dir: str = setting("", help="Folder of relative paths [default: the settings file's folder] "
                                     "(MOMFBD IMAGE_DATA_DIR).")
    bunit: str = setting("DN", help="Unit of the prepared intensities (BUNIT): camera counts after dark and gain.")


@dataclass(frozen=True)
class CameraConfig:
    """One ``[[prepare.camera]]`` table: one camera, one channel of the burst (channels in table order)."""

    files: list[str] = setting(default_factory=list, help="The camera's FITS files: a cube [L, Y, X] or one frame per "
                                                          "file; paths or globs, sorted by name (numbers by value).")
    instrument: str = setting("", help="Instrument label (svrt instruments), e.g. 'crisp8542'.")
    object: int = setting(0, help="Index of the object this camera images (MOMFBD's object; channels of one object "
                                  "share it: a phase-diversity camera, a second camera).")
    name: str = setting("", help="Camera name in the header (CAMk) [default: the first file's name].")
    hdu: str = setting("", help="Image HDU of the camera files by name (an EXTNAME, or PRIMARY) [default: the "
                                "primary's data, else the only image].")
    dark: str = setting("", help="Dark file (svrt prepare --dark), subtracted (MOMFBD DARK_TEMPLATE).")
    gain: str = setting("", help="Gain file (svrt prepare --flat: 1/flat, 0 at bad pixels), multiplied "
                                 "(MOMFBD GAIN_FILE).")
    flat: str = setting("", help="Flat file instead of a gain: divided by, after the dark (pixels <= 0 must be in "
                                 "the bad-pixel map).")
    bad_pixel_map: str = setting("", help="Bad-pixel map [Y, X]: non-zero marks a bad pixel (besides the gain's "
                                          "zeros).")
    diversity: float = setting(0.0, help="[waves P-V] known defocus of this camera (DIVERSk; MOMFBD DIVERSITY).")
    diversity_mm: float = setting(0.0, help="[mm] focus shift of this camera (DIVMMk, needs f_number; MOMFBD "
                                            "DIVERSITY in mm).")
    f_number: float = setting(0.0, help="f-number of the beam at this camera (FNUMk; MOMFBD TELESCOPE_F).")
    align: str = setting("", help="Alignment to channel 0: 'dy,dx,deg,scale' (ALIGNk; MOMFBD ALIGN_MAP, "
                                  "similarity only).")
    clip: str = setting("", help="Region 'x1,x2,y1,y2' (1-based, inclusive; x1 > x2 flips X) cut after the "
                                 "calibration (MOMFBD ALIGN_CLIP).")
    frames: str | None = setting(None, help="Frame indices of this camera [default: [prepare] frames].")


@dataclass(frozen=True)
class PrepareSettings:
    """A whole ``[prepare]`` table: the common settings and the cameras, with paths made absolute."""

    common: PrepareConfig
    cameras: list[CameraConfig] = field(default_factory=list)
    source: str = "the settings"


_PATH_KEYS = ("dark", "gain", "flat", "bad_pixel_map")


def _checked(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` with each value checked against its declared kind; one sentence per bad key. A
    single path for ``files`` is the list of that one."""
    if isinstance(values.get("files"), str):
        values = {**values, "files": [values["files"]]}
    return cls(**check_settings(values, cls, where, "docs/PREPARE.md lists them all"))


def parse_frames(text: str, n_frames: int, where: str) -> list[int]:
    """Frame indices of ``'0-11'`` / ``'0-5,8'`` (inclusive ranges, 0-based) among ``n_frames``; all for ''."""
    if not text.strip():
        return list(range(n_frames))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise SvrtError(f"{where} frames = {text!r} is not a list of indices; expected e.g. '0-11' or "
                            "'0-5,8'.") from None
        if not 0 <= a <= b < n_frames:
            raise SvrtError(f"{where} frames = {text!r} names frames outside 0..{n_frames - 1} (the camera has "
                            f"{n_frames}).")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise SvrtError(f"{where} frames = {text!r} names a frame twice; expected each frame once.")
    return out


def parse_clip(text: str, shape: tuple[int, int], where: str) -> tuple[slice, slice]:
    """The (Y, X) slices of MOMFBD's ALIGN_CLIP ``'x1,x2,y1,y2'`` (1-based, inclusive; a reversed pair
    flips that axis) in a frame of ``shape`` (Y, X); the whole frame for ''."""
    if not text.strip():
        return slice(None), slice(None)
    try:
        x1, x2, y1, y2 = (int(v) for v in text.split(","))
    except ValueError:
        raise SvrtError(f"{where} clip = {text!r} is not four integers; expected 'x1,x2,y1,y2' (1-based, "
                        "inclusive).") from None
    for a, b, n, axis in ((x1, x2, shape[1], "x"), (y1, y2, shape[0], "y")):
        if not (1 <= a <= n and 1 <= b <= n):
            raise SvrtError(f"{where} clip = {text!r} reaches outside the frame ({axis} in 1..{n}).")

    def cut(a: int, b: int) -> slice:
        return slice(a - 1, b) if a <= b else slice(a - 1, None if b == 1 else b - 2, -1)

    return cut(y1, y2), cut(x1, x2)


def _absolute(path: str, base: Path) -> str:
    return path if not path or Path(path).is_absolute() else str(base / path)


def read_prepare(path: str | Path) -> PrepareSettings:
    """The ``[prepare]`` table of the TOML file ``path`` and its cameras (paths made absolute: relative to
    ``data_dir``, itself relative to the file's folder). At least one camera; each with files and an
    instrument."""
    path = Path(path)
    data = _load_toml(path)
    table = data.get("prepare")
    if not isinstance(table, dict):
        raise SvrtError(f"{path} has no [prepare] table; expected [prepare] and one [[prepare.camera]] table per "
                        "camera (docs/PREPARE.md).")
    table = dict(table)
    cams = table.pop("camera", None)
    if not isinstance(cams, list) or not cams or not all(isinstance(c, dict) for c in cams):
        raise SvrtError(f"{path}: [prepare] has no [[prepare.camera]] tables; expected one per camera, each with "
                        "files and instrument.")
    common = _checked(PrepareConfig, table, f"{path}: [prepare]")
    base = path.resolve().parent
    base = Path(_absolute(common.data_dir, base)) if common.data_dir else base
    cameras = []
    for i, raw in enumerate(cams):
        where = f"{path}: [[prepare.camera]] {i}"
        cam = _checked(CameraConfig, raw, where)
        for key in ("files", "instrument"):
            if not getattr(cam, key):
                what = "the camera files (a path or a glob)" if key == "files" else "a label such as crisp8542"
                raise SvrtError(f"{where} has no {key}; expected {what}.")
        fixed = {k: _absolute(getattr(cam, k), base) for k in _PATH_KEYS}
        fixed["files"] = [_absolute(f, base) for f in cam.files]
        cameras.append(dataclasses.replace(cam, **fixed))
    return PrepareSettings(common=common, cameras=cameras, source=str(path))
