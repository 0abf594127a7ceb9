"""The ``svrt`` command. Each sub-command lives in the module that owns its concept and is imported
only when invoked, so ``svrt instruments`` never pays for torch or onnxruntime.

Errors of type :class:`svrt.errors.SvrtError` are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from svrt.errors import SvrtError

# name -> ("module:attribute", one-line help). The attribute is a click.Command.
COMMANDS = {
    "instruments": ("svrt.instruments_cli:instruments", "List the instrumental configurations."),
    "simulate": ("svrt.simulate:simulate_command", "Simulate an anisoplanatic burst (FITS or HDF5)."),
    "train": ("svrt.trainer.cli:train_command", "Train the spatially variant convolution emulator."),
    "validate": ("svrt.trainer.validate:validate_command", "Validate an emulator against exact convolutions."),
    "export": ("svrt.export.cli:export_command", "Export a model to ONNX or a TensorRT plan."),
    "engines": ("svrt.runtime.inventory:engines_command", "List the back ends and devices this machine can run."),
    "convolve": ("svrt.runtime.cli:convolve_command", "Emulated spatially variant convolution of an object."),
    "deconvolve": ("svrt.runtime.cli:deconvolve_command", "Restore a burst with SV-MOMFBD."),
    "demo": ("svrt.runtime.cli:demo_command", "Simulate a burst, restore it with the shipped model, write FITS and PNG."),
    "bench": ("svrt.benchmarks.cli:bench_command", "Benchmark convolution and restoration on this machine."),
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
            @click.command(name=name, help=COMMANDS[name][1])
            def _missing():
                raise click.ClickException(f"'svrt {name}' is not available in this install ({exc}).")
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


def main(argv=None):
    try:
        cli.main(args=argv, standalone_mode=False)
    except SvrtError as exc:
        click.echo(f"svrt: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
