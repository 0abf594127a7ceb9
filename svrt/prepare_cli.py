"""``svrt prepare``: camera files and calibration files to a burst file, and the calibration files
themselves (the mean dark; the gain from flat-field frames). The library: :mod:`svrt.prepare`,
:mod:`svrt.calibration`; the settings: :mod:`svrt.prepare_config`; docs/PREPARE.md."""

from __future__ import annotations

from pathlib import Path

import click

from svrt.calibration import DEAD_BELOW, HOT_ABOVE
from svrt.errors import SvrtError

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _check_output(output: str, inputs: list[str], overwrite: bool) -> None:
    from svrt.fileio import check_not_input, check_writable, file_format

    file_format(output)                 # a FITS or HDF5 name, before any work
    check_not_input(output, *inputs)
    check_writable(output, overwrite)


def _write_calibration(output: str, array, header: dict, overwrite: bool) -> None:
    from svrt.fileio import write_array
    from svrt.prepare import register_comments

    register_comments()
    write_array(output, array, header=header, overwrite=overwrite)


@click.command("prepare", context_settings=_CTX)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="TOML settings file with the [prepare] table and its [[prepare.camera]] tables: build a burst.")
@click.option("--dark", default=None, type=click.Path(dir_okay=False),
              help="Alone: the first dark file (the rest follow as FILES): average them into a dark. With --flat: "
                   "the dark file subtracted from the flat frames.")
@click.option("--flat", default=None, type=click.Path(dir_okay=False),
              help="The first flat-field file (the rest follow as FILES): average them into a gain (1/flat, "
                   "0 on bad pixels).")
@click.option("--dead-below", default=DEAD_BELOW, show_default=True, type=float,
              help="--flat: a pixel below this fraction of the median flat is bad.")
@click.option("--hot-above", default=HOT_ABOVE, show_default=True, type=float,
              help="--flat: a pixel above this multiple of the median flat is bad.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file (.fits or .h5): the burst, the dark or the gain.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (never an input).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare_command(files, config_file, dark, flat, dead_below, hot_above, output, overwrite, quiet):
    """Build a burst file from camera files, or the calibration files it needs.

    \b
    Examples:
    A burst (FRAMES [K, L, Y, X], one channel per camera, dark and gain applied, bad pixels filled),
    from the [prepare] table of a settings file (docs/PREPARE.md):
      svrt prepare --config scan.toml -o burst.fits
    A dark: the mean of dark frames (cubes or one frame per file):
      svrt prepare --dark darks/cam1_*.fits -o dark.fits
    A gain (1/flat, normalised to mean 1, 0 on dead and hot pixels) from flat-field frames:
      svrt prepare --flat flats/cam1_*.fits --dark dark.fits -o gain.fits
    Then: svrt deconvolve burst.fits -o restored.fits
    """
    progress = not quiet
    if config_file:
        if files or dark or flat:
            raise SvrtError("svrt prepare --config builds a burst from the files its [prepare] table names; expected "
                            "no FILES, --dark or --flat with it.")
        from svrt.fileio import write_burst
        from svrt.prepare import prepare_burst, prepare_inputs
        from svrt.prepare_config import read_prepare

        settings = read_prepare(config_file)
        _check_output(output, prepare_inputs(settings), overwrite)
        burst = prepare_burst(settings, progress=progress)
        write_burst(output, burst, overwrite=overwrite)
        k, n, y, x = burst.frames.shape
        click.echo(f"wrote {output}: {k} channel(s) x {n} frames of {y}x{x} ({', '.join(burst.instruments)})")
        return
    from svrt.calibration import make_dark, make_gain
    from svrt.camera_files import expand_files

    if flat:
        inputs = expand_files([flat, *files], "svrt prepare --flat")
        _check_output(output, inputs + ([dark] if dark else []), overwrite)
        dark_frame = None
        if dark:
            from svrt.fileio import read_array

            dark_frame = read_array(dark)[0].astype("float64")
        gain, header = make_gain(inputs, dark_frame, dark_name=f"the dark file {dark}", dead_below=dead_below,
                                 hot_above=hot_above, progress=progress)
        if dark:
            header["DARKFILE"] = Path(dark).name[:60]
        _write_calibration(output, gain, header, overwrite)
        click.echo(f"wrote {output}: gain {gain.shape[0]}x{gain.shape[1]} from {header['NAVERAGE']} flat frames, "
                   f"{header['NBAD']} bad pixels (gain 0)")
        return
    if dark:
        inputs = expand_files([dark, *files], "svrt prepare --dark")
        _check_output(output, inputs, overwrite)
        mean, header = make_dark(inputs, progress=progress)
        _write_calibration(output, mean, header, overwrite)
        click.echo(f"wrote {output}: dark {mean.shape[0]}x{mean.shape[1]} from {header['NAVERAGE']} frames")
        return
    raise SvrtError("svrt prepare needs --config FILE (a burst), --dark FILES (a dark) or --flat FILES (a gain); "
                    "see svrt prepare --help.")
