"""``svrt series``: the command line of :mod:`svrt.runtime.series` (restorations co-aligned into a cube)."""

from __future__ import annotations

from pathlib import Path

import click

from svrt.errors import SvrtError


def _none_or_text(value: str) -> str | None:
    return None if value.strip().lower() in ("", "none") else value.strip().upper()


@click.command("series", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("restorations", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The co-aligned cube, FITS: SERIES [T, K, Y, X] and the TIMES table.")
@click.option("--reference", default="first", show_default=True, type=click.Choice(["first", "running"]),
              help="Align to the first restoration's wide band, or to the mean of the last --window aligned ones.")
@click.option("--window", default=5, show_default=True, type=click.IntRange(1, 10_000),
              help="Aligned wide-band images averaged into the running reference.")
@click.option("--wideband", default=0, show_default=True, type=click.IntRange(0, None),
              help="The object measured for the alignment (the burst's wide band); its shift moves every object.")
@click.option("--destretch", "block", default=None, type=click.IntRange(8, None),
              help="Also destretch to the wide band, in blocks of this many pixels [default: rigid alignment only].")
@click.option("--angle-key", default="CROTA2", show_default=True,
              help="Header card of the field rotation angle [deg], derotated to the first restoration's; "
                   "'none': no derotation. Restorations without the card are not rotated.")
@click.option("--max-shift", default=None, type=click.FloatRange(0, None, min_open=True),
              help="Largest shift searched [px] [default: anywhere in the field].")
@click.option("--png", default=None, type=click.Path(dir_okay=False),
              help="Quick look: wide band at up to 8 times and the drift [default: the output's name with .png].")
@click.option("--no-png", is_flag=True, help="No quick look.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def series_command(restorations, output, reference, window, wideband, block, angle_key, max_shift, png, no_png,
                   overwrite):
    """Co-align restorations (svrt deconvolve's FITS or HDF5, one field) into a time series.

    Each restoration's wide band (object --wideband) is derotated where the headers give an angle
    (--angle-key), aligned to the reference by an upsampled-DFT cross-correlation (unbiased to
    < 0.002 px) and optionally destretched; the same map moves every object. The output holds the cube
    SERIES [T, K, Y, X] with the reference's WCS on axes 1-2 and a TIMES table (source, DATE-BEG,
    DATE-END, the shift removed, the rotation); restorations are taken in the order given.

    \b
    Examples:
      svrt series restored/*.fits -o series.fits
      svrt series restored/*.fits -o series.fits --reference running --destretch 32
    """
    from svrt.fileio import check_not_input, check_output
    from svrt.pictures import check_png, png_beside
    from svrt.runtime.series import _check_fits_name, align_series, load_restorations, plot_series, write_series

    inputs = [str(p) for p in restorations]
    _check_fits_name(output)
    check_not_input(output, *inputs)
    check_output(output, overwrite)
    quick_look = None if no_png else (png or png_beside(output))
    if quick_look is not None:
        check_png(quick_look, output, inputs, overwrite)
    if len(set(map(lambda p: str(Path(p).resolve()), inputs))) != len(inputs):
        raise SvrtError("a restoration is named twice in the series; name each once.")
    rests = load_restorations(inputs)
    result = align_series(rests, inputs, wideband=wideband, reference=reference, window=window, destretch_block=block,
                          angle_key=_none_or_text(angle_key), max_shift=max_shift)
    write_series(output, result, inputs, overwrite)
    width = max(len(f) for f in result.files)
    for name, when, (dy, dx), rot in zip(result.files, result.date_beg, result.shifts, result.rotations):
        turn = f"  rotated {rot:+.3f} deg" if rot else ""
        click.echo(f"{name:<{width}}  {when or '(no time)':<23}  shift dy {dy:+8.3f} dx {dx:+8.3f} px{turn}")
    t, k, y, x = result.cube.shape
    written = f"{output} (SERIES [T, K, Y, X] = [{t}, {k}, {y}, {x}], TIMES)"
    if quick_look is not None:
        plot_series(result, quick_look, wideband=wideband)
        written += f" and {quick_look}"
    click.echo(f"wrote {written}")
