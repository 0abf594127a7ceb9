"""Pictures: matplotlib figures drawn off-screen without pyplot, written as PNG atomically.

Library code never calls ``matplotlib.use``: it switches the backend of whatever session imported svrt
(a notebook's inline figures, a GUI) for the rest of that session. Nor does it use pyplot's global list
of open figures. A :class:`matplotlib.figure.Figure` with its own Agg canvas draws in any session and is
freed with its last reference, so every PNG svrt writes goes through :func:`subplots` (or
:func:`new_figure`) and :func:`save_png`.

>>> fig, ax = subplots(figsize=(2, 2))
>>> _ = ax.plot([0, 1], [0, 1])
>>> type(fig.canvas).__name__
'FigureCanvasAgg'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["new_figure", "subplots", "save_png", "png_beside", "check_png"]

_FIGURE_KEYS = ("figsize", "dpi", "layout", "constrained_layout")


def new_figure(**figure_kw):
    """A :class:`matplotlib.figure.Figure` (``figsize``, ``layout``, ...) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**figure_kw)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, **kw):
    """``(figure, axes)`` like ``pyplot.subplots``: ``figsize``, ``dpi``, ``layout`` and
    ``constrained_layout`` go to the figure, the rest (``squeeze``, ``sharex``, ``gridspec_kw``, ...) to
    :meth:`matplotlib.figure.Figure.subplots`."""
    fig = new_figure(**{k: kw.pop(k) for k in _FIGURE_KEYS if k in kw})
    return fig, fig.subplots(nrows, ncols, **kw)


def save_png(fig, path: str | os.PathLike, dpi: int = 100) -> str:
    """Write ``fig`` to ``path`` as PNG, atomically (:func:`svrt.fileio.atomic_write`); returns the path."""
    from svrt.fileio import atomic_write

    with atomic_write(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return os.fspath(path)


def png_beside(output: str | os.PathLike) -> Path:
    """The quick look's default name: ``output`` with its FITS or HDF5 extension (``.fits.gz`` counts as
    one) replaced by ``.png`` (``burst.fits`` -> ``burst.png``); ``.png`` appended to any other name."""
    from svrt.fileio import FITS_SUFFIXES, HDF5_SUFFIXES

    p = Path(output)
    low = p.name.lower()
    for suffix in sorted(FITS_SUFFIXES + HDF5_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)] + ".png")
    return p.with_name(p.name + ".png")


def check_png(png: str | os.PathLike, output: str | os.PathLike, inputs=(), overwrite: bool = False) -> None:
    """Check a quick look's name before any work: a ``.png`` file, not the ``output``, none of the
    ``inputs``, and not an existing file unless ``overwrite``; one :class:`SvrtError` sentence."""
    from svrt.errors import SvrtError
    from svrt.fileio import check_not_input, check_output

    if not str(png).lower().endswith(".png"):
        raise SvrtError(f"the quick look {png} must be a .png file.")
    if Path(png).resolve() == Path(output).resolve():
        raise SvrtError(f"the PNG {png} and the output {output} are the same file; choose another --png.")
    check_not_input(png, *inputs)
    check_output(png, overwrite)
