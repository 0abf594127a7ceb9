"""The restoration file: objects, modes, model, LOSS and CONFIG (layout: :mod:`svrt.fileio`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio.atomic import _nbytes, _size_hint
from svrt.fileio.fitsfile import _image_hdu, _primary_header, _wcs_axes_card, _write_hdus
from svrt.fileio.formats import _read_contents, _writing
from svrt.fileio.hdf5file import _h5_dataset, _h5_write_header, _write_h5
from svrt.fileio.header import _COMMENTS, FILE_KEYS, _clean_header, _extras, _set_card, merge_headers
from svrt.fileio.solarnet import _object_wavelengths, _obs_cards, _obs_hdu, _provenance, _wcs_axes
from svrt.fileio.standard import grid_wcs_cards, standard_cards
from svrt.fileio.validation import (
    _as_float32,
    _check_config,
    _check_finite,
    _check_instruments,
    _check_loss,
    _FourAxes,
    _restoration_arrays,
)


@dataclass(repr=False)
class Restoration(_FourAxes):
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
    _four_axes = "model"

    def __post_init__(self) -> None:
        where = "the Restoration"
        self.objects, self.modes, self.model = _restoration_arrays(self.objects, self.modes, self.model, where,
                                                                   ("objects", "modes", "model"))
        self.loss = _check_loss(self.loss, where)
        self.header = dict(self.header or {})
        self.instruments = [] if not self.instruments else _check_instruments(self.instruments, self.n_objects, where)
        self.config = _check_config(self.config, where)

    @property
    def n_iterations(self) -> int:
        return int(self.loss["iteration"].shape[0])


def _loss_format(arr: np.ndarray) -> str:
    return {"i": "K", "u": "K", "b": "L"}.get(arr.dtype.kind, "D")


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
        return fits.Column(name=name, format=f"{width}A",
                           array=np.array(items or [""], dtype=f"U{width}")[: len(items)])

    table = fits.BinTableHDU.from_columns([col("KEY", keys), col("VALUE", values), col("COMMENT", comments)],
                                          name="CONFIG")
    table.header.add_comment("CONFIG: every solver setting, the engine identity and the run's figures; VALUE is JSON")
    return table


def _read_config(table: Mapping[str, np.ndarray] | None, where: str) -> dict[str, Any]:
    """The CONFIG table (FITS KEY/VALUE, HDF5 key/value) as a dict with the JSON values decoded."""
    import json

    if table is None:
        return {}
    cols = {str(c).upper(): v for c, v in table.items()}
    if "KEY" not in cols or "VALUE" not in cols:
        raise SvrtError(f"The CONFIG table of {where} has columns {', '.join(map(str, table)) or 'none'}; expected "
                        "KEY and VALUE.")

    def text(v):
        return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)

    out: dict[str, Any] = {}
    for key, value in zip(cols["KEY"].tolist(), cols["VALUE"].tolist()):
        try:
            out[text(key).strip()] = json.loads(text(value))
        except ValueError:
            raise SvrtError(f"CONFIG entry {text(key).strip()} of {where} is not JSON "
                            f"({text(value)[:40]!r}).") from None
    return out


#: [bytes] allowance for one HDU's header and padding in :func:`restoration_nbytes` (4 FITS blocks: ~140 cards)
_HEADER_BYTES = 4 * 2880


def restoration_nbytes(k: int, n_frames: int, shape: tuple[int, int], n_modes: int, grid: tuple[int, int],
                       n_iterations: int = 100, n_config: int = 80) -> int:
    """[bytes] The size of the FITS restoration file of K objects, L frames of ``shape = (Y, X)``, M modes
    on ``grid = (Yg, Xg)`` nodes (layout: module doc), within a few header blocks: the objects twice (the
    K images and the cube), MODES, MODEL, LOSS and CONFIG, every HDU's header. What a free-space check
    before a solve should ask for (plus the quick look's PNG), rather than a guess with fixed MiB margins."""
    y, x = (int(v) for v in shape)
    data = 4 * (2 * k * y * x + n_frames * n_modes * int(grid[0]) * int(grid[1]) + k * n_frames * y * x)
    tables = 8 * 6 * n_iterations + 200 * n_config
    return data + tables + (k + 6) * _HEADER_BYTES


def write_restoration(path: str | os.PathLike, rest: Restoration, overwrite: bool = False) -> None:
    """Write ``rest`` to ``path`` (FITS or HDF5 by extension), atomically (layout: module doc).

    FITS: the primary (the observation's cards, INSTRk), one 2-D observation HDU per object
    (OBJECT0 ..., SOLARNET keywords, the input's WCS, provenance), the OBJECT cube, MODES, MODEL, the
    LOSS table and the CONFIG table (``rest.config``). HDF5: datasets object, modes, model and the
    groups loss and config; the header as root attributes.
    """
    fmt, where = _writing("write_restoration", path, rest, Restoration, overwrite)
    config = _check_config(rest.config, where)
    extras = standard_cards(_clean_header(_without_config(rest.header, config), where), rest.shape, rest.n_frames,
                            restoration=True, modes=rest.modes, instrument=(rest.instruments or [None])[0],
                            fit_modes=config.get("FIT_MODES"))
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
            bname = f"restored object {i}" + (f" ({labels[i]})" if labels[i] else "")
            cards = _obs_cards(extras, config, prov, name, bname, labels[i], waves[i], i)
            hdus.append(_obs_hdu(f"OBJECT{i}", rest.objects[i], "[Y, X]", f"restored object {i} (SV-MOMFBD)", cards,
                                 where))
        cube = _obs_cards(extras, config, prov, name, "restored objects")
        hdus.append(_obs_hdu("OBJECT", rest.objects, "[K, Y, X]", "restored objects", cube, where))
        hdus.append(_image_hdu("MODES", rest.modes, "rad", "[L, M, Yg, Xg]",
                               "inferred KL wavefront coefficients (radians of phase) on the coarse grid", {}, where))
        hdus[-1].header["BTYPE"] = ("Wavefront KL coefficients", "type of data")
        # a map of the grid's nodes (sunpy.map.Map(path) maps every HDU): their WCS and the observation's times
        grid = grid_wcs_cards(cube, rest.shape, rest.modes.shape[2:])
        times = {key: cube[key] for key in ("DATE-OBS", "DATE-BEG", "DATE-END", "DATE-AVG") if key in cube}
        for key, value in {**grid, **times}.items():
            _set_card(hdus[-1].header, key, value, None, where)
        _wcs_axes_card(hdus[-1].header, rest.modes.ndim, where)
        model = _obs_cards(extras, config, prov, name, "emulated frames of the restored objects and modes")
        hdus.append(_obs_hdu("MODEL", rest.model, "[K, L, Y, X]", "emulated frames of the restored objects and modes",
                             model, where))
        cols = [fits.Column(name=key, format=_loss_format(arr), array=arr) for key, arr in rest.loss.items()]
        table = fits.BinTableHDU.from_columns(cols, name="LOSS")
        table.header.add_comment("LOSS: one row per solver iteration (data term and regularisation terms)")
        hdus.append(table)
        hdus.append(_config_hdu(config, where))
        _write_hdus(path, hdus, hint)
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
                c.create_dataset(col, data=np.array(items, dtype=object), dtype=h5py.string_dtype(),
                                 shape=(len(items),))

        _write_h5(path, build, hint)


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
    for key in ("OBJECT", "MODES", "MODEL"):
        if key not in contents.arrays:
            raise SvrtError(f"{where} has no {key} {unit} (found: {contents.found()}); expected a restoration file "
                            "from svrt deconvolve.")
    if "LOSS" not in contents.tables:
        raise SvrtError(f"{where} has no LOSS table (found: {contents.found()}); expected a restoration file from "
                        "svrt deconvolve.")
    keys = ("OBJECT", "MODES", "MODEL")
    objects, modes, model = _restoration_arrays(*(contents.arrays[key][0] for key in keys), where, keys)
    if not allow_nonfinite:
        for key, data in (("OBJECT", objects), ("MODES", modes), ("MODEL", model)):
            _check_finite(data, key, where, "; read with allow_nonfinite=True to inspect them")
    k = objects.shape[0]
    loss = _check_loss(contents.tables["LOSS"], where)
    config = _read_config(contents.tables.get("CONFIG"), where)
    labels: list[str] = []
    if contents.instruments_attr is not None:
        labels = list(contents.instruments_attr)
    elif all(f"INSTR{i}" in contents.root for i in range(k)):
        labels = [str(contents.root[f"INSTR{i}"]) for i in range(k)]
    if labels and len(labels) != k:
        raise SvrtError(f"{where} names {len(labels)} instruments for {k} objects; expected one per object.")
    root = _extras(contents.root)
    # the primary has no data, so the WCS of the image axes is on the object HDUs: the header keeps it
    image = contents.arrays.get("OBJECT0", contents.arrays["OBJECT"])[1]
    root.update({key: value for key, value in image.items() if _wcs_axes(key) and key != "WCSAXES" and key not in root})
    return Restoration(objects=objects, modes=modes, model=model, loss=loss,
                       header=merge_headers(root, config), instruments=labels, config=config)
