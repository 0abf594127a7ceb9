"""The burst file: K objects observed through L frames (layout: :mod:`svrt.fileio`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from astropy.io import fits

from svrt.errors import SvrtError
from svrt.fileio.atomic import _nbytes, _size_hint
from svrt.fileio.contents import _Contents
from svrt.fileio.fitsfile import _image_hdu, _primary_header, _write_hdus
from svrt.fileio.formats import _read_contents, _writing
from svrt.fileio.hdf5file import _h5_dataset, _h5_write_header, _write_h5
from svrt.fileio.header import _clean_header, _extras, _image_cards
from svrt.fileio.standard import standard_cards
from svrt.fileio.validation import (
    _burst_arrays,
    _check_finite,
    _check_instruments,
    _FourAxes,
)


@dataclass(repr=False)
class Burst(_FourAxes):
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
        self.frames, self.truth, self.modes = _burst_arrays(self.frames, self.truth, self.modes, where,
                                                            ("frames", "truth", "modes"))
        self.instruments = _check_instruments(self.instruments, self.n_objects, where)
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.ndim < 4:
                mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
            if mask.shape != self.frames.shape:
                raise SvrtError(f"The mask of the Burst has shape {mask.shape}; expected {self.frames.shape} like "
                                "frames.")
            self.mask = np.ascontiguousarray(mask)
        self.header = dict(self.header or {})

    @property
    def n_modes(self) -> int | None:
        """M, the number of KL modes of ``modes``, or None without modes."""
        return None if self.modes is None else int(self.modes.shape[1])


def write_burst(path: str | os.PathLike, burst: Burst, overwrite: bool = False) -> None:
    """Write ``burst`` to ``path`` (FITS or HDF5 by extension), atomically.

    Raises :class:`SvrtError` if ``path`` exists and ``overwrite`` is false, if the extension is
    not a FITS or HDF5 one, or if a header card cannot be stored. ``burst.mask`` is not written.
    """
    fmt, where = _writing("write_burst", path, burst, Burst, overwrite)
    extras = standard_cards(_clean_header(burst.header, where), burst.shape, burst.n_frames)
    k, n_frames = burst.n_objects, burst.n_frames
    bunit = str(extras.get("BUNIT", "arbitrary"))
    hint = _size_hint(path, _nbytes(burst.frames, burst.truth, burst.modes))
    if fmt == "fits":
        primary = _primary_header("burst", k, n_frames, burst.instruments, extras, where)
        hdus: list[Any] = [fits.PrimaryHDU(header=primary)]
        hdus.append(_image_hdu("FRAMES", burst.frames, bunit, "[K, L, Y, X]", "observed frames, object k, frame l",
                               extras, where))
        if burst.truth is not None:
            hdus.append(_image_hdu("TRUTH", burst.truth, bunit, "[K, Y, X]", "objects before the atmosphere", extras,
                                   where))
        if burst.modes is not None:
            hdus.append(_image_hdu("MODES", burst.modes, "rad", "[L, M, Yg, Xg]",
                                   "KL wavefront coefficients (radians of phase) on the coarse grid", extras, where))
        _write_hdus(path, hdus, hint)
    else:
        def build(f):
            _h5_write_header(f, "burst", burst.instruments, extras)
            _h5_dataset(f, "frames", burst.frames, bunit, "K, L, Y, X")
            if burst.truth is not None:
                _h5_dataset(f, "truth", burst.truth, bunit, "K, Y, X")
            if burst.modes is not None:
                _h5_dataset(f, "modes", burst.modes, "rad", "L, M, Yg, Xg")

        _write_h5(path, build, hint)


def _instruments_from(contents: _Contents, k: int, instrument: str | Sequence[str] | None) -> list[str]:
    where = contents.path
    given: list[str] | None = None
    if instrument is not None:
        given = _check_instruments(instrument, k, f"the instrument argument for {where}")
    if contents.instruments_attr is not None:
        found: list[str | None] = list(contents.instruments_attr)
        if len(found) != k:
            raise SvrtError(f"The instruments attribute of {where} names {len(found)} instruments for {k} objects; "
                            f"expected {k}.")
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


def _data_of(contents: _Contents, key: str) -> np.ndarray | None:
    """The data of image ``key`` of a file, or None without one."""
    return contents.arrays[key][0] if key in contents.arrays else None


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
    if "FRAMES" in contents.tables:
        raise SvrtError(f"FRAMES in {where} is a table; FRAMES must be an image "
                        f"{'HDU' if contents.fmt == 'fits' else 'dataset'} of the observed frames [K, L, Y, X].")
    if "FRAMES" not in contents.arrays:
        raise SvrtError(
            f"{where} has no FRAMES {'extension' if contents.fmt == 'fits' else 'dataset'} "
            f"(found: {contents.found()}); expected the observed frames [K, L, Y, X] under that name."
        )
    raw_frames, frames_cards = contents.arrays["FRAMES"]
    if np.asarray(raw_frames).dtype == bool:
        raise SvrtError(f"FRAMES in {where} holds boolean data (a mask?); expected intensities as float or integer "
                        "numbers.")
    frames, truth, modes = _burst_arrays(raw_frames, _data_of(contents, "TRUTH"), _data_of(contents, "MODES"), where,
                                         ("FRAMES", "TRUTH", "MODES"))
    k = frames.shape[0]
    present = {n.strip("/").upper() for n in contents.names}
    for key in ("TRUTH", "MODES"):
        if key in present and key not in contents.arrays:
            kind = "a table" if key in contents.tables else "no data"
            raise SvrtError(f"{key} in {where} is present but holds {kind}; expected an image array (or no {key} at "
                            "all).")
    nobj = contents.root.get("NOBJ")
    if isinstance(nobj, int) and not isinstance(nobj, bool) and nobj != k:
        raise SvrtError(f"{where} says NOBJ = {nobj} but FRAMES has shape {tuple(frames.shape)} with K = {k}; "
                        "expected them to agree.")
    mask = None
    if allow_nonfinite:
        mask = np.isfinite(frames)
    else:
        _check_finite(frames, "FRAMES", where, "; clean them or read with allow_nonfinite=True to weight them to zero")
    for key, data in (("TRUTH", truth), ("MODES", modes)):
        if data is not None:
            _check_finite(data, key, where)
    instruments = _instruments_from(contents, k, instrument)
    if check:
        from svrt.checks import check_calibration, check_frames

        check_frames(frames, where, mask=mask)
        check_calibration(frames, instruments, where, mask=mask)
    header = _extras(contents.root)
    header.update(_image_cards(frames_cards, header, contents.fmt))
    return Burst(frames=frames, instruments=instruments, truth=truth, modes=modes, header=header, mask=mask)
