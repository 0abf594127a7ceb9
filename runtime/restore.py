"""Restore one burst file: the one library home of what ``svrt deconvolve``, ``svrt batch`` and the streaming
API (:mod:`svrt.runtime.streaming`) share.

:func:`restore_file` reads a burst file with the frame checks, checks every output before any work
(new files or ``overwrite``, never an input, folders that accept a file, free space, the checkpoint),
builds or takes the solver, solves, writes the restoration file atomically and the quick-look PNG. The
pieces are public for callers that hold a burst in memory (the streaming API): :func:`restoration_of`
and :func:`write_restoration_file` make and write the same file from a solve.

Python API::

    from svrt.runtime.restore import restore_file
    from svrt.runtime.solver import SVMOMFBD, SolverConfig, load_solver_engine

    config = SolverConfig()
    solver = SVMOMFBD(load_solver_engine(), config)     # the default forward model (exact optics)
    done = restore_file("burst.fits", "restored.fits", solver, config=config, png="restored.png")
    print(done.result.objects.shape)                     # [K, Y, X]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES
from svrt.pictures import check_png

__all__ = ["BURST_SUFFIXES", "FileRestoration", "burst_stem", "check_checkpoint", "check_outputs",
           "check_restoration_space", "read_checked_burst", "restoration_of", "restore_file", "write_quicklook",
           "write_restoration_file"]

#: the suffixes of a burst file, longest first (``.fits.gz`` before ``.fits``): :func:`burst_stem` removes them
BURST_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".hdf5", ".h5", ".hdf", ".he5")
PNG_BYTES = 2 << 20  # a quick look is well below 2 MiB


def burst_stem(path: str | os.PathLike) -> str:
    """The name of a burst file without its suffix (``night/b1.fits.gz`` -> ``b1``): the name of its restoration
    in a batch and of its item in a stream."""
    name = Path(path).name
    low = name.lower()
    for suffix in BURST_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


# ------------------------------------------------------------------------------------------ checks before any work

def check_outputs(output, png, inputs: Sequence, overwrite: bool) -> None:
    """Before any work: the output (and the PNG) names are new files (or ``overwrite``), not inputs, in
    folders that accept a new file; stale temporary files of killed runs are
    removed."""
    from svrt.fileio import check_not_input, check_writable

    check_not_input(output, *inputs)
    check_writable(output, overwrite)
    if png is not None:
        check_png(png, output, inputs, overwrite)
        check_writable(png, overwrite)


def check_checkpoint(checkpoint, resume: bool, output, png, burst_path) -> None:
    """Before any work: ``resume`` needs a checkpoint; the checkpoint is none of the other files, not a folder,
    and its folder accepts a file (an unwritable checkpoint would otherwise fail only after the first stage)."""
    from svrt.fileio import check_not_input, check_writable

    if checkpoint is None:
        if resume:
            raise SvrtError("--resume needs --checkpoint FILE, the checkpoint of the run to continue.")
        return
    for what, other in (("output", output), ("quick-look PNG", png)):
        if other is not None and Path(checkpoint).resolve() == Path(other).resolve():
            raise SvrtError(f"--checkpoint {checkpoint} is also the {what}; give the checkpoint its own file.")
    check_not_input(checkpoint, burst_path)
    if Path(checkpoint).is_dir():
        raise SvrtError(f"--checkpoint {checkpoint} is a folder; expected the name of the checkpoint file.")
    try:
        check_writable(checkpoint, overwrite=True)   # a checkpoint is rewritten at every save
    except SvrtError as exc:
        raise SvrtError(f"--checkpoint: {exc}") from None


def read_checked_burst(path, instrument=None, allow_nonfinite: bool = False, drop_dead_frames: bool = False,
                       quiet: bool = False):
    """:func:`svrt.fileio.read_burst` with the frame checks of :func:`svrt.checks.check_frames`; with
    ``drop_dead_frames`` the dead frames are left out (and said so on stderr unless ``quiet``) instead of refused.
    Returns the :class:`~svrt.fileio.Burst` (frames [K, L, Y, X])."""
    from svrt.checks import check_frames
    from svrt.checks import drop_dead_frames as drop
    from svrt.fileio import read_burst

    burst = read_burst(path, instrument=instrument, allow_nonfinite=allow_nonfinite, check=not drop_dead_frames)
    if drop_dead_frames:
        burst, dropped, masked = drop(burst, str(path))
        if (dropped or masked) and not quiet:
            parts = []
            if dropped:
                parts.append(f"dropped dead frame(s) {', '.join(map(str, dropped))}")
            if masked:
                pairs = ", ".join(f"[{k}, {l}]" for k, l in masked)
                parts.append(f"gave zero weight to dead frame(s) [k, l] = {pairs}")
            print(f"{path}: {'; '.join(parts)}.", file=sys.stderr)
        check_frames(burst.frames, str(path), mask=burst.mask)
    return burst


def check_restoration_space(output, png, burst, config) -> None:
    """Free space for the restoration before solving: the file's own size (:func:`svrt.fileio.restoration_nbytes`,
    within a few header blocks of the real file) plus the quick look's allowance. It asked 8-9x the real size
    with fixed margins before, refusing restorations that fitted."""
    from svrt.fileio import check_free_space, restoration_nbytes
    from svrt.mode_grid import grid_shape

    y, x = burst.shape
    n_modes = N_MODES if burst.n_modes is None else burst.n_modes
    p = int(getattr(config, "grid", 0) or 0)
    grid = grid_shape((y, x), p if p <= max(y, x) else 0)
    nbytes = restoration_nbytes(burst.n_objects, burst.n_frames, (y, x), n_modes, grid,
                                n_iterations=max(100, int(getattr(config, "iterations", 30))))
    if str(output).lower().endswith((".gz", ".bz2", ".xz")):
        nbytes //= 4
    check_free_space(output, nbytes + (0 if png is None else PNG_BYTES))


# ------------------------------------------------------------------------------------------ the file of a solve

def restoration_of(result, header: Mapping[str, Any], input_name: str):
    """The :class:`svrt.fileio.Restoration` of a solve (a :class:`~svrt.runtime.solver.SolveResult`): the input
    burst's ``header`` cards keep their names (SEED, GRID, BUNIT, EXPTIME, WCS, ...) and are never overwritten;
    the solver's settings, the engine identity and the run's figures go to ``config`` (the file's CONFIG
    extension, see :func:`svrt.fileio.write_restoration`); read back, a setting whose name the input also uses
    is given as SVRT_<KEY> (see :func:`svrt.fileio.merge_headers`). ``input_name`` is recorded as INPUT."""
    from svrt.fileio import merge_headers
    from svrt.fileio.header import ascii_card_text

    rest = result.to_restoration()
    rest.config = dict(rest.header)
    rest.header = merge_headers(dict(header), {"INPUT": ascii_card_text(str(input_name)),
                                               "DATE": rest.config.get("DATE")})
    return rest


def write_restoration_file(output, result, header: Mapping[str, Any], input_name: str, *, inputs: Sequence = (),
                           overwrite: bool = False):
    """Write the restoration of a solve to ``output`` the way ``svrt deconvolve`` does (atomically; see
    :func:`restoration_of`) and return it. ``inputs``: files the output must not be (any spelling: symbolic
    links, relative paths, hard links), the burst file above all, even with ``overwrite``."""
    from svrt.fileio import check_not_input, write_restoration

    check_not_input(output, *inputs)
    rest = restoration_of(result, header, input_name)
    write_restoration(output, rest, overwrite=overwrite)
    return rest


def write_quicklook(png, burst, result, title: str) -> None:
    """The quick-look PNG of a restoration (:func:`svrt.runtime.quicklook.plot_restoration`)."""
    from svrt.runtime.quicklook import plot_restoration

    plot_restoration(png, burst.frames, result.objects, result.model, burst.instruments, truth=burst.truth,
                     title=title, pixel_arcsec=burst.header.get("CDELT1"), mask=burst.mask)


# ------------------------------------------------------------------------------------------ one burst file

@dataclass
class FileRestoration:
    """What :func:`restore_file` did: the solve (``result``, a SolveResult), the burst read (``burst``), the
    restoration written (``restoration``), its file (``output``) and the quick look (``png``, or None)."""

    result: Any
    burst: Any
    restoration: Any
    output: str
    png: str | None


def restore_file(burst_path, output, solver, *, config=None, png: str | os.PathLike | None = None, instrument=None,
                 allow_nonfinite: bool = False, drop_dead_frames: bool = False, overwrite: bool = False,
                 resume: bool = False, callback: Callable[[dict], Any] | None = None, quiet: bool = False,
                 title: str | None = None) -> FileRestoration:
    """Read, check, solve and write one burst file.

    burst_path: the burst (FRAMES [K, L, Y, X], FITS or HDF5). output: the restoration file (.fits or .h5).
    solver: an :class:`~svrt.runtime.solver.SVMOMFBD`, or a function ``burst -> SVMOMFBD`` called once the
        burst is read and checked (so a bad file is reported before an engine is loaded).
    config: the :class:`~svrt.runtime.solver_config.SolverConfig` of the solve (default: the solver's); its
        ``checkpoint`` is checked before any work and ``resume`` continues from it.
    png: the quick-look PNG (None: none). instrument, allow_nonfinite, drop_dead_frames: see
        :func:`read_checked_burst`. callback: called after every solver iteration with a dict (iteration, total,
        data, reg_object, reg_modes, time_s, tile).
    Every problem with the input or an output raises :class:`SvrtError` before the solve where it can be known.
    """
    if config is None:
        if callable(solver) and not hasattr(solver, "solve"):
            raise SvrtError("restore_file needs config= when the solver is made after reading the burst.")
        config = solver.config
    png = None if png is None else str(png)
    check_outputs(output, png, (burst_path,), overwrite)
    check_checkpoint(config.checkpoint, resume, output, png, burst_path)
    burst = read_checked_burst(burst_path, instrument, allow_nonfinite, drop_dead_frames, quiet)
    check_restoration_space(output, png, burst, config)
    if not hasattr(solver, "solve"):
        solver = solver(burst)
    result = solver.solve(burst, resume=config.checkpoint if resume else None, callback=callback)
    name = Path(burst_path).name
    rest = write_restoration_file(output, result, burst.header, name, inputs=(burst_path,), overwrite=overwrite)
    if png is not None:
        write_quicklook(png, burst, result, title or f"SV-MOMFBD {name}")
    return FileRestoration(result=result, burst=burst, restoration=rest, output=str(output), png=png)
