"""``svrt convolve``, ``svrt deconvolve`` and ``svrt demo``: thin command-line layers over
:class:`svrt.runtime.engine.Engine` and :class:`svrt.runtime.solver.SVMOMFBD`.

Every problem with the input raises :class:`svrt.errors.SvrtError` (one sentence, printed without a
traceback by ``svrt``); outputs are written atomically and never onto an input.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from svrt.checks import check_mode_grid
from svrt.errors import SvrtError
from svrt.pictures import png_beside
from svrt.runtime.cli_options import CONTEXT, Finite, check_device, engine_options, solver_config, solver_options
from svrt.runtime.restore import PNG_BYTES, check_outputs, restore_file, write_quicklook, write_restoration_file
from svrt.settings_cli import config_file_option, with_options


def _load_engines(engine_paths, model, backend, device, precision, method: str | None = None):
    """One engine (or one per --engine) loaded with the solver's precision rule; with none named, the default
    forward model for ``method`` (:func:`svrt.runtime.forward_choice.default_forward_model`)."""
    from svrt.runtime.solver import load_solver_engine

    if engine_paths and model:
        raise SvrtError("give either --engine PATH or --model NAME, not both.")
    if not engine_paths:
        return [load_solver_engine(model, backend=backend, device=device, precision=precision, method=method)]
    for p in engine_paths:
        if not Path(p).exists():
            raise SvrtError(f"engine file {p} does not exist.")
    return [load_solver_engine(p, backend=backend, device=device, precision=precision) for p in engine_paths]


# ------------------------------------------------------------------------------------------ convolve

@click.command("convolve", context_settings=CONTEXT)
@click.option("--object", "object_path", required=True, type=click.Path(dir_okay=False),
              help="Object: FITS/HDF5 array [Y, X] or [B, Y, X].")
@click.option("--object-key", default=None, help="Extension / dataset of the object [default: the only array].")
@click.option("--modes", "modes_path", required=True, type=click.Path(dir_okay=False),
              help="KL coefficients in radians: [M, Y, X] per pixel, [M, Yg, Xg] coarse (upsampled bilinearly), "
                   "or with a leading B.")
@click.option("--modes-key", default=None, help="Extension / dataset of the modes [default: the only array].")
@click.option("--instrument", required=True, help="Instrument label (see `svrt instruments`), e.g. crisp8542.")
@with_options(engine_options)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output image (.fits or .h5).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--png", default=None, type=click.Path(dir_okay=False), help="Quick look [default: output name .png].")
@click.option("--no-png", is_flag=True, help="Do not write the quick-look PNG.")
def convolve_command(object_path, object_key, modes_path, modes_key, instrument, engine_paths, model, backend, device,
                     output, overwrite, png, no_png):
    """Emulated spatially variant convolution of an object with per-pixel wavefronts.

    \b
    Example:
      svrt convolve --object obj.fits --modes modes.fits --instrument crisp8542 -o blurred.fits
    """
    import torch

    from svrt.checks import check_image, check_wavefront_units
    from svrt.fileio import check_free_space, read_array, write_array
    from svrt.instruments import get_instrument

    check_device(device)
    png_path = None if no_png else (png or str(png_beside(output)))
    check_outputs(output, png_path, (object_path, modes_path), overwrite)
    inst = get_instrument(str(instrument))
    obj, _ = read_array(object_path, object_key)
    modes, _ = read_array(modes_path, modes_key)
    check_image(obj, object_path, "the object")
    if obj.ndim == 2:
        obj = obj[None]
    if obj.ndim != 3:
        raise SvrtError(f"the object in {object_path} has shape {obj.shape}; expected [Y, X] or [B, Y, X].")
    b, y, x = obj.shape
    if y < 16 or x < 16:
        raise SvrtError(f"the object in {object_path} is {y}x{x} pixels; the emulator needs at least 16x16.")
    if not engine_paths and model is None and backend is None:
        from svrt.emulator import DEFAULT_MODEL

        model = DEFAULT_MODEL  # svrt convolve is the emulated convolution: its default is the shipped emulator
    engine = _load_engines(engine_paths, model, backend, device, "fp32")[0]
    m = engine.n_modes
    if modes.ndim == 3:
        modes = modes[None]
    if modes.ndim != 4:
        raise SvrtError(f"the modes in {modes_path} have shape {modes.shape}; expected [M, Y, X], [M, Yg, Xg] or [B, M, ...].")
    if modes.shape[1] != m:
        raise SvrtError(f"the modes in {modes_path} have M = {modes.shape[1]} coefficients but the engine "
                        f"{engine.identity.model} was built for {m}.")
    if modes.shape[0] not in (1, b) and b != 1:
        raise SvrtError(f"the modes in {modes_path} hold {modes.shape[0]} sets for {b} objects; expected 1 or {b}.")
    if modes.shape[2] > y or modes.shape[3] > x:
        raise SvrtError(f"the modes grid {modes.shape[2]}x{modes.shape[3]} in {modes_path} is larger than the object "
                        f"({y}x{x}); expected per-pixel or coarser modes.")
    check_mode_grid(modes.shape[2:], (y, x), str(modes_path))  # warns about a grid stretched over the field
    engine.check(torch.zeros(1, 1, 16, 16), torch.zeros(1, m, 16, 16), inst.label)  # instrument and its physics
    # bilinear upsampling never exceeds the nodes' values: checking the given grid bounds every pixel
    check_wavefront_units(modes, inst, modes_path, (engine.identity.extra or {}).get("training_r0_cm"))
    n = max(b, modes.shape[0])
    check_free_space(output, 4 * n * y * x + (64 << 10) + (0 if png_path is None else PNG_BYTES))
    mt = torch.as_tensor(modes)
    if tuple(mt.shape[2:]) != (y, x):
        from svrt.kernels import upsample_modes

        mt = upsample_modes(mt, (y, x))
    ot = torch.as_tensor(obj)
    ot = ot.expand(n, y, x) if b == 1 else ot
    mt = mt.expand(n, m, y, x) if mt.shape[0] == 1 else mt
    dev = engine.device
    out = engine.forward(ot[:, None].contiguous().to(dev), mt.contiguous().to(dev), inst.label)[:, 0].cpu().numpy()
    header = {"INSTR0": inst.label, "INSTRUME": inst.instrument, "TELESCOP": inst.telescope,
              "WAVELNTH": float(inst.wavelength_angstrom), "CDELT1": inst.pixel_arcsec, "CDELT2": inst.pixel_arcsec,
              "ENGINE_MODEL": engine.identity.model, "ENGINE_HASH": engine.identity.model_hash,
              "ENGINE_BACKEND": engine.identity.backend, "OBJECT": Path(object_path).name, "MODESIN": Path(modes_path).name}
    write_array(output, out[0] if n == 1 else out, header=header, overwrite=overwrite)
    msg = f"wrote {output}: {n} image(s) of {y}x{x} emulated with {engine.identity.model} ({engine.identity.backend}) for {inst.label}"
    if png_path is not None:
        _plot_convolve(png_path, obj[0], out[0], inst)
        msg += f"; quick look {png_path}"
    click.echo(msg)


def _plot_convolve(path, obj, out, inst) -> None:
    from svrt.pictures import save_png, subplots

    fig, axes = subplots(1, 2, figsize=(8, 4))
    lo, hi = np.percentile(obj, [0.5, 99.5])
    for ax, img, name in zip(axes, (obj, out), ("object", f"emulated {inst.label}")):
        ax.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=90)


# ------------------------------------------------------------------------------------------ deconvolve

def _comparison_text(burst, result) -> str | None:
    """The one score of DESIGN.md (``score_restoration``: registered, low-passed at 0.9 D/lambda, border
    dropped, NMSE over the truth's variance) of the frame average and the restoration, objects by '/'."""
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration

    if burst.truth is None:
        return None
    rows = {"frame average": result.frame_average, "SV-MOMFBD": result.objects}
    scores = {name: [score_restoration(img[k], burst.truth[k], get_instrument(s).cutoff_cycles_per_pixel)
                     for k, s in enumerate(burst.instruments)] for name, img in rows.items()}

    def cell(values) -> str:
        return " / ".join(f"{v:.4f}" for v in values)

    lines = [f"{'':15s} {'NMSE (variance)':>17s} {'contrast':>17s} {'power 0.3-0.6 D/lambda':>24s}"]
    for name, sc in scores.items():
        lines.append(f"{name:15s} {cell([x['nmse_variance'] for x in sc]):>17s} {cell([x['contrast'] for x in sc]):>17s} "
                     f"{cell([x['power_ratio']['0.3-0.6'] for x in sc]):>24s}")
    lines.append(f"{'truth':15s} {'':>17s} {cell([x['contrast_truth'] for x in scores['SV-MOMFBD']]):>17s} {'1':>24s}")
    return "\n".join(lines)


@click.command("deconvolve", context_settings=CONTEXT)
@click.argument("burst_path", metavar="BURST", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Restoration file (.fits or .h5).")
@with_options(engine_options)
@click.option("--instrument", "instrument", multiple=True,
              help="Instrument of each object when the file does not name it (repeat for K objects).")
@click.option("--allow-nonfinite", is_flag=True, help="Give NaN/Inf pixels zero weight instead of refusing the file.")
@click.option("--drop-dead-frames", is_flag=True,
              help="Leave out dead (constant, e.g. all-zero) frames instead of refusing the file: a frame dead in every "
                   "object is dropped, one dead in some objects gets zero weight there.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files (never the input).")
@click.option("--png", default=None, type=click.Path(dir_okay=False), help="Quick look [default: output name .png].")
@click.option("--no-png", is_flag=True, help="Do not write the quick-look PNG.")
@click.option("--resume", is_flag=True,
              help="Continue a killed run from --checkpoint (same burst and settings) to the result of an uninterrupted one.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@config_file_option("solver")
@with_options(solver_options())
def deconvolve_command(burst_path, output, engine_paths, model, backend, device, instrument, allow_nonfinite,
                       drop_dead_frames, overwrite, png, no_png, quiet, resume, config_file, **solver_kw):
    """Restore a burst with SV-MOMFBD: objects and per-pixel wavefronts over the whole field at once.

    Reads a burst (FRAMES [K, L, Y, X], FITS or HDF5) and writes the restoration file (OBJECT [K, Y, X],
    MODES [L, M, Yg, Xg], MODEL [K, L, Y, X], LOSS, every setting in the header) and a quick-look PNG
    (first frame, residual of the model, frame average, restoration, power spectra).

    \b
    Examples:
      svrt deconvolve burst.fits -o restored.fits
      svrt deconvolve burst.fits -o restored.fits --grid 0            # spatially invariant MFBD
      svrt deconvolve burst.h5 -o restored.h5 --device cuda --iterations 50 --lambda-obj 0.05
      svrt deconvolve burst.fits -o restored.fits --config run.toml  # settings file: svrt config > run.toml
    """
    from svrt.runtime.solver import SVMOMFBD

    check_device(device)
    png_path = None if no_png else (png or str(png_beside(output)))
    config = solver_config(config_file, solver_kw, **({"progress": False} if quiet else {}))

    def make_solver(burst):   # the engine loads once the burst is read and checked
        from svrt.runtime.plan import plan_summary

        engines = _load_engines(engine_paths, model, backend, device, config.precision, config.method)
        solver = SVMOMFBD(engines if len(engines) > 1 else engines[0], config)
        # memory and time before the work: a field that cannot fit is refused here, not after an hour
        click.echo(plan_summary(solver, burst.frames.shape, str(burst_path)))
        return solver

    done = restore_file(burst_path, output, make_solver, config=config, png=png_path, instrument=list(instrument) or None,
                        allow_nonfinite=allow_nonfinite, drop_dead_frames=drop_dead_frames, overwrite=overwrite,
                        resume=resume, quiet=quiet)
    result = done.result
    loss = result.loss["total"]
    k, y, x = result.objects.shape
    msg = (f"wrote {output}: {k} object(s) of {y}x{x}, modes {tuple(result.modes.shape)}, {len(loss)} iterations "
           f"at {result.time_per_iteration:.3g} s each, loss {loss[0]:.3e} -> {loss[-1]:.3e}")
    if result.quality is not None:
        msg += f"; {result.quality.summary()}"
    if png_path is not None:
        msg += f"; quick look {png_path}"
    click.echo(msg)
    table = _comparison_text(done.burst, result)
    if table:
        click.echo("against the truth (both filtered to the diffraction limit):\n" + table)


def write_result(output, result, burst, input_name: str, overwrite: bool = False):
    """Write the restoration of ``burst`` as ``svrt deconvolve`` does and return it (kept for callers of the
    earlier name; the library home is :func:`svrt.runtime.restore.write_restoration_file`)."""
    return write_restoration_file(output, result, burst.header, input_name, overwrite=overwrite)


# ------------------------------------------------------------------------------------------ demo

@click.command("demo", context_settings=CONTEXT)
@click.option("--size", default=128, show_default=True, type=click.IntRange(16, 4096), help="Frame side in pixels.")
@click.option("--frames", "n_frames", default=8, show_default=True, type=click.IntRange(1, 1000), help="L, frames.")
@click.option("--objects", "n_objects", default=2, show_default=True, type=click.IntRange(1, 16), help="K, objects.")
@with_options(solver_options(only=("method", "iterations", "grid")))
@click.option("--instrument", default="crisp8542", show_default=True, help="Instrument label.")
@click.option("--seed", default=1, show_default=True, type=click.IntRange(0, 2 ** 32 - 1), help="Random seed of the simulation.")
@click.option("--r0", "r0_cm", default=10.0, show_default=True, type=Finite(0.5, 1000), help="Fried radius [cm at 5000 A].")
@with_options(engine_options)
@click.option("--out-dir", default="svrt-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for burst.fits, restored.fits, restored.png.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo in --out-dir.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo_command(size, n_frames, n_objects, iterations, method, grid, instrument, seed, r0_cm, engine_paths, model, backend,
                 device, out_dir, overwrite, quiet):
    """Simulate a burst, restore it with the shipped model, write FITS and PNG, print where they are.

    \b
    Example:
      svrt demo                       # 128x128, 8 frames, 2 objects: about a minute on 2 CPU cores
      svrt demo --size 256 --frames 12 --device cuda
    """
    from svrt.fileio import check_writable, write_burst
    from svrt.instruments import get_instrument
    from svrt.runtime.solver import SVMOMFBD
    from svrt.simulate import simulate_burst

    check_device(device)
    config = solver_config(None, dict(method=method, iterations=iterations, grid=grid), progress=not quiet)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SvrtError(f"--out-dir {out} is a file; expected a folder.")
    paths = {"burst": out / "burst.fits", "restored": out / "restored.fits", "png": out / "restored.png"}
    for p in paths.values():
        check_writable(p, overwrite)
    inst = get_instrument(instrument)
    engines = _load_engines(engine_paths, model, backend, device, "auto", method)
    click.echo(f"svrt demo: simulating {n_objects} object(s) x {n_frames} frames of {size}x{size} ({inst.label}, "
               f"r0 = {r0_cm} cm, seed {seed}) ...")
    # full phase screens (not the 44-mode model the solver fits), von Karman L0 = 20 m, Poisson noise
    burst = simulate_burst(inst.label, size, n_frames, n_objects, seed, r0_cm=r0_cm, wavefront="screen",
                           outer_scale_m=20.0, photons=1e4, noise=0.0, progress=not quiet)
    write_burst(paths["burst"], burst, overwrite=overwrite)
    click.echo(f"restoring with {engines[0].identity.model} ({engines[0].identity.backend}, {engines[0].identity.device}), "
               f"method {method}" + (f", {iterations} iterations" if method == "adam" else "") + f", grid P = {grid} ...")
    solver = SVMOMFBD(engines[0], config)
    result = solver.solve(burst)
    write_restoration_file(paths["restored"], result, burst.header, paths["burst"].name, inputs=(paths["burst"],),
                           overwrite=overwrite)
    write_quicklook(paths["png"], burst, result, f"svrt demo: SV-MOMFBD of a simulated {inst.label} burst")
    click.echo(f"burst:       {paths['burst']}")
    click.echo(f"restoration: {paths['restored']}  ({float(result.header['T_TOTAL']):.1f} s, stopped: "
               f"{result.header.get('STOP') or 'iterations'})")
    click.echo(f"quick look:  {paths['png']}")
    table = _comparison_text(burst, result)
    if table:
        click.echo("against the truth (the one score: registered, low-passed at 0.9 D/lambda, border dropped; lower NMSE is better):\n" + table)
