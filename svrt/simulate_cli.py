"""``svrt simulate``: the command line of :func:`svrt.simulate.simulate_burst` and its quick look."""

from __future__ import annotations

import math

import click

from svrt.atmosphere import DEFAULT_THETA0_ARCSEC
from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES
from svrt.simulate import MAX_MODES, WAVEFRONTS, simulate_burst


@click.command("simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--instrument", default="crisp8542", show_default=True, help="Instrument label (see `svrt instruments`).")
@click.option("--size", default=256, show_default=True, type=int, help="Frame side Y = X in pixels.")
@click.option("--frames", "n_frames", default=12, show_default=True, type=int, help="L, frames (short exposures).")
@click.option("--objects", "n_objects", default=2, show_default=True, type=int,
              help="K, objects sharing the wavefront (e.g. wide band, narrow band).")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed (scene, atmosphere, noise).")
@click.option("--r0", "r0_cm", default=10.0, show_default=True, type=float, help="Fried radius [cm at 5000 A].")
@click.option("--theta0", "theta0", default=str(DEFAULT_THETA0_ARCSEC), show_default=True,
              help="Isoplanatic angle [arcsec at 5000 A]; 'none' for a single ground layer (no anisoplanatism).")
@click.option("--noise", default=0.01, show_default=True, type=float,
              help="Gaussian noise sigma as a fraction of each frame's mean (0: none).")
@click.option("--scene", default="granulation", show_default=True, help="granulation, sunspot or points.")
@click.option("--nodes", default=None, type=int, help="Nodes per side of the coarse mode grid [default: size // 16].")
@click.option("--grid", "grid", default=None, type=int,
              help="Deprecated name of --nodes (nodes per side; elsewhere --grid is pixels per node).")
@click.option("--modes", "n_modes", default=N_MODES, show_default=True, type=int, help="M, number of KL modes.")
@click.option("--psf-size", default=None, type=int,
              help="PSF box in pixels [default: holds >= 98 % of the energy of 95 % of the PSFs].")
@click.option("--wavefront", default="kl", show_default=True, metavar="kl|screen",
              help="Wavefront model: 'kl' (44 KL modes on the coarse grid, bilinear per pixel: the solver's own "
                   "model, an inverse crime) or 'screen' (the full layered phase screens at every pixel).")
@click.option("--outer-scale", "outer_scale", default="none", show_default=True, metavar="M",
              help="Von Karman outer scale L0 [m]; 'none' for Kolmogorov (infinite).")
@click.option("--ao-modes", "ao_modes", default="0", show_default=True, metavar="N",
              help="Adaptive optics: KL modes 1..N (tip/tilt included) corrected, locked on the field centre; "
                   "0: no AO.")
@click.option("--ao-lock", "ao_lock", default="0,0", show_default=True, metavar="Y,X",
              help="AO lock point 'Y,X' [arcsec from the field centre].")
@click.option("--photons", default="0", show_default=True, metavar="P",
              help="Photon noise: photo-electrons per pixel at the frame mean (Poisson); 0: none.")
@click.option("--diversity", "diversity", default="0", show_default=True, metavar="W",
              help="Phase diversity: add a channel of object 0 defocused by W waves peak-to-valley (cards DIVERSk, "
                   "DIVOBJk); 0: none.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output burst: .fits (default format of the solar community) or .h5.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--png", "png", default=None, type=click.Path(dir_okay=False),
              help="Quick-look PNG [default: the output name with .png].")
@click.option("--no-png", is_flag=True, help="Do not write the quick-look PNG.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def simulate_command(instrument, size, n_frames, n_objects, seed, r0_cm, theta0, noise, scene, nodes, grid, n_modes,
                     psf_size, wavefront, outer_scale, ao_modes, ao_lock, photons, diversity, output, overwrite, png,
                     no_png, quiet):
    """Simulate a burst of K objects x L frames blurred by an anisoplanatic atmosphere.

    Each frame is the exact per-pixel convolution (one PSF per pixel) of a solar scene with the
    wavefront of a layered Kolmogorov (or von Karman) atmosphere (a ground layer plus high layers set
    by THETA0), optionally corrected by adaptive optics, plus photon and Gaussian noise. With
    --wavefront kl (default) each pixel's wavefront is 44 KL modes interpolated from a coarse grid, the
    model svrt deconvolve fits; --wavefront screen uses the full phase screens at every pixel, data
    that do not follow the solver's model. The file holds FRAMES [K, L, Y, X], TRUTH [K, Y, X] and the
    true MODES [L, M, Yg, Xg] (KL coefficients in radians); a PNG quick look is written next to it.

    \b
    Example:
      svrt simulate --instrument crisp8542 --size 256 --frames 12 --objects 2 --seed 1 -o burst.fits
      svrt simulate --size 128 --frames 4 --r0 7 --theta0 1.5 --scene sunspot -o spot.h5
      svrt simulate --size 128 --frames 8 --r0 7 --wavefront screen --outer-scale 20 \\
          --ao-modes 36 --photons 2000 -o realistic.fits
      svrt simulate --size 128 --frames 6 --objects 1 --r0 8 --wavefront screen --diversity 1 -o pd.fits
    """
    from svrt.fileio import check_output, file_format, write_burst
    from svrt.pictures import check_png, png_beside
    from svrt.simulate_plot import burst_title, plot_burst

    theta0_arcsec = _parse_option(theta0, "--theta0", float, "a number of arcsec at 5000 A or 'none'", none_words=True)
    if str(wavefront).strip().lower() not in WAVEFRONTS:
        raise SvrtError(f"--wavefront must be 'kl' or 'screen'; got '{wavefront}'.")
    wavefront = str(wavefront).strip().lower()
    outer_scale_m = _parse_option(outer_scale, "--outer-scale", float, "a positive number of metres or 'none'",
                                  none_words=True, minimum=0.0, strict=True)
    ao_modes = _parse_option(ao_modes, "--ao-modes", int, "an integer number of KL modes from 0 (no AO) to 152",
                             minimum=0, maximum=MAX_MODES)
    parts = str(ao_lock).split(",")
    if len(parts) != 2:
        raise SvrtError(f"--ao-lock must be 'Y,X' in arcsec from the field centre; got '{ao_lock}'.")
    ao_lock_arcsec = tuple(_parse_option(v, "--ao-lock", float, "'Y,X' in arcsec from the field centre")
                           for v in parts)
    photons = _parse_option(photons, "--photons", float, "photo-electrons per pixel at the frame mean, 0 for none",
                            minimum=0.0)
    diversity = _parse_option(diversity, "--diversity", float,
                              "a defocus in waves peak-to-valley (about 1), 0 for none", minimum=-20.0, maximum=20.0)
    file_format(output)
    check_output(output, overwrite)
    png_path = None if no_png else (png or str(png_beside(output)))
    if png_path is not None:
        check_png(png_path, output, overwrite=overwrite)
    burst = simulate_burst(instrument, size, n_frames, n_objects, seed, r0_cm=r0_cm, theta0_arcsec=theta0_arcsec,
                           noise=noise, scene=scene, nodes=_nodes_option(nodes, grid), n_modes=n_modes,
                           progress=not quiet,
                           psf_size=psf_size, wavefront=wavefront, outer_scale_m=outer_scale_m, ao_modes=ao_modes,
                           ao_lock_arcsec=ao_lock_arcsec, photons=photons or None, diversity=diversity or None)
    write_burst(output, burst, overwrite=overwrite)
    k, n, y, x = burst.frames.shape
    msg = (f"wrote {output}: {k} objects x {n} frames of {y}x{x}, modes {tuple(burst.modes.shape)}, "
           f"PSF {burst.header['PSFSIZE']} px")
    if png_path is not None:
        plot_burst(burst, png_path, burst_title(burst))
        msg += f"; quick look {png_path}"
    click.echo(msg)


def _parse_option(text, option: str, kind, expected: str, none_words: bool = False, minimum=None, maximum=None,
                  strict: bool = False):
    """Value of a command-line option given as text: ``kind(text)`` (int or float), None for 'none' / 'inf'
    when ``none_words``, within [minimum, maximum] (``strict``: above minimum); else one SvrtError
    sentence naming the option and what it expects."""
    word = str(text).strip().lower()
    if none_words and word in ("none", "inf", "infinity"):
        return None
    try:
        value = kind(word)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or \
            (minimum is not None and (value < minimum or (strict and value == minimum))) or \
            (maximum is not None and value > maximum):
        raise SvrtError(f"{option} must be {expected}; got '{text}'.")
    return value


def _nodes_option(nodes: int | None, grid: int | None) -> int | None:
    """--nodes, or the deprecated --grid with one warning sentence (both given: an SvrtError)."""
    if grid is None:
        return nodes
    if nodes is not None:
        raise SvrtError("--grid is the deprecated name of --nodes; give --nodes only.")
    from svrt.checks import warn

    warn("svrt simulate --grid is deprecated: it counts nodes per side, now --nodes (--grid means pixels per node "
         "in svrt deconvolve).")
    return grid
