"""The ``svrt`` command. Each sub-command lives in the module that owns its concept and is imported
only when invoked, so ``svrt instruments`` never pays for torch or onnxruntime.

Errors of type :class:`svrt.errors.SvrtError` are printed as one sentence, without a traceback, and
exit with status 2; warnings of type :class:`svrt.checks.SvrtWarning` as ``svrt: warning: ...``.
Ctrl-C at any point after the interpreter has started (imports included) exits with status 130 and
the word "aborted", without a traceback; a half-written output is removed (see
:func:`svrt.fileio.atomic_write`).
"""

from __future__ import annotations

import sys

try:  # Ctrl-C while the modules load (the first ~0.1 s): no traceback, exit status 130
    import importlib
    import warnings

    import click

    from svrt.errors import SvrtError
except KeyboardInterrupt:
    sys.stderr.write("aborted\n")
    sys.exit(130)

# name -> ("module:attribute", one-line help). The attribute is a click.Command.
COMMANDS = {
    "instruments": ("svrt.instruments_cli:instruments", "List the instrumental configurations."),
    "simulate": ("svrt.simulate_cli:simulate_command", "Simulate an anisoplanatic burst (FITS or HDF5)."),
    "prepare": ("svrt.prepare_cli:prepare_command", "Camera files and calibration (dark, gain) to a burst file."),
    "train": ("svrt.trainer.cli:train_command", "Train the spatially variant convolution emulator."),
    "train-psf-basis": ("svrt.trainer.cli:train_psf_basis_command",
                        "Train a PSF-basis emulator (linear in the object) for one instrument."),
    "validate": ("svrt.benchmarks.validate:validate_command", "Validate an emulator against exact convolutions."),
    "export": ("svrt.export.cli:export_command", "Export a model to ONNX or a TensorRT plan."),
    "engines": ("svrt.runtime.inventory:engines_command", "List the back ends and devices this machine can run."),
    "convolve": ("svrt.runtime.cli:convolve_command", "Emulated spatially variant convolution of an object."),
    "deconvolve": ("svrt.runtime.cli:deconvolve_command", "Restore a burst with SV-MOMFBD."),
    "batch": (
        "svrt.runtime.batch_cli:batch_command",
        "Restore many bursts (glob or manifest), resumable, on Dask workers.",
    ),
    "series": ("svrt.runtime.series_cli:series_command", "Co-align restorations into a time series cube (FITS)."),
    "demo": (
        "svrt.runtime.cli:demo_command",
        "Simulate a burst, restore it with the shipped model, write FITS and PNG.",
    ),
    "bench": ("svrt.benchmarks.cli:bench_command", "Benchmark convolution and restoration on this machine."),
    "config": ("svrt.settings_cli:config_command", "Print the settings as a TOML file: svrt config > run.toml."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:  # a part not built yet, or a broken install
            if _interrupted(exc):  # Ctrl-C inside an extension module's import surfaces as ImportError
                raise KeyboardInterrupt from None
            reason = str(exc)   # `exc` itself is unbound once the except clause ends

            @click.command(name=name, help=COMMANDS[name][1])
            def _missing():
                raise click.ClickException(f"'svrt {name}' is not available in this install ({reason}).")
            return _missing

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="svrt")
def cli():
    """svrt: spatially variant restoration of ground-based solar observations.

    \b
    Quick start:
      svrt instruments
      svrt simulate --instrument crisp8542 --size 256 --frames 12 --objects 2 --seed 1 -o burst.fits
      svrt deconvolve burst.fits -o restored.fits
      svrt demo
    """


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a KeyboardInterrupt (anywhere in its cause/context chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """``svrt: warning: <sentence>`` for svrt's own warnings; Python's format for the others."""
    from svrt.checks import SvrtWarning

    if issubclass(category, SvrtWarning):
        click.echo(f"svrt: warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning
_default_unraisablehook = sys.unraisablehook


def _unraisable(info) -> None:
    """A Ctrl-C that Python could not raise (it landed in a callback, e.g. an import lock's) would be
    printed as 'Exception ignored ... KeyboardInterrupt' and then lost: deliver it again instead."""
    if isinstance(info.exc_value, KeyboardInterrupt) or info.exc_type is KeyboardInterrupt:
        import _thread

        _thread.interrupt_main()
        return
    _default_unraisablehook(info)


def _run(argv) -> int:
    import signal

    import svrt

    guard = getattr(svrt, "_start_guard", None)
    if guard is not None and signal.getsignal(signal.SIGINT) is guard:
        # from here Ctrl-C is a KeyboardInterrupt again: half-written outputs are removed on the way out
        signal.signal(signal.SIGINT, signal.default_int_handler)
    warnings.showwarning = _show_warning
    sys.unraisablehook = _unraisable
    try:
        # without standalone mode click returns the code of ctx.exit(n) (e.g. svrt batch's 1 when a burst failed)
        # instead of exiting: pass it on; a command's own return value (None) means success
        code = cli.main(args=argv, standalone_mode=False)
    except SvrtError as exc:
        click.echo(f"svrt: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        if _interrupted(exc):  # Ctrl-C that a library turned into another exception
            click.echo("aborted", err=True)
            return 130
        raise
    finally:
        warnings.showwarning = _default_showwarning
        sys.unraisablehook = _default_unraisablehook
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def main(argv=None):
    """The ``svrt`` console script: exit status 0 on success, 2 for a :class:`SvrtError` (one
    sentence on stderr), click's status for usage errors, 130 after Ctrl-C (no traceback)."""
    try:
        code = _run(argv)
    except KeyboardInterrupt:
        try:
            sys.stderr.write("aborted\n")
        except BaseException:
            pass
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
