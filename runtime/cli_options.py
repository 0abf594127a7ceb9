"""The command-line pieces that ``svrt convolve / deconvolve / demo`` (:mod:`svrt.runtime.cli`) and ``svrt batch``
(:mod:`svrt.runtime.batch_cli`) share: the engine options, the generated solver options, the settings resolution,
the device check. One definition each, so one option means the same in every command.
"""

from __future__ import annotations

import math

import click

from svrt.settings_cli import with_options

__all__ = ["CONTEXT", "Finite", "check_device", "engine_options", "solver_config", "solver_options", "with_options"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Finite(click.ParamType):
    """A finite float in [lo, hi] (click's FloatRange lets NaN through); ``open_lo``: lo excluded."""

    name = "float"

    def __init__(self, lo: float, hi: float, open_lo: bool = False):
        self.lo, self.hi, self.open_lo = lo, hi, open_lo

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number.", param, ctx)
        bad_lo = v <= self.lo if self.open_lo else v < self.lo
        if not math.isfinite(v) or bad_lo or v > self.hi:
            sign = "<" if self.open_lo else "<="
            self.fail(f"{value} is not in the range {self.lo:g} {sign} x <= {self.hi:g}.", param, ctx)
        return v

    def get_metavar(self, param, ctx=None):
        return "FLOAT"


def check_device(device) -> None:
    """One sentence about a bad --device, before any file is read (never blamed on the model)."""
    from svrt.emulator import check_device as check

    check(device, available=False)  # the back end checks that the device exists


engine_options = [
    click.option("--engine", "engine_paths", multiple=True, type=click.Path(dir_okay=False),
                 help="Emulator file: .safetensors (torch), .onnx (onnxruntime) or .plan (TensorRT); repeat for one "
                      "engine per instrument."),
    click.option("--model", default=None,
                 help="Name of a bundled emulator model, e.g. svce-c16 or psfb-crisp8542 [default: none: deconvolve, "
                      "batch and demo use exact optics (the psf-interpolation back end) unless a model or engine is "
                      "named; convolve uses svce-c16]."),
    click.option("--backend", default=None,
                 type=click.Choice(["torch", "onnxruntime", "tensorrt", "psf-interpolation", "psf-basis"]),
                 help="Back end [default: from the file suffix, and for weights from their kind]. psf-interpolation "
                      "uses the exact optics (PSFs interpolated between grid nodes) instead of the emulator: no "
                      "training needed; psf-basis runs a PSF-basis emulator (e.g. --model psfb-crisp8542)."),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
]

#: SolverConfig field -> the older option names that keep working next to --field-name
_OPTION_ALIASES = {"lr_objects": ("--lr-obj",)}


def solver_options(exclude=(), only=None):
    """click options for the SolverConfig settings (``only`` these), less ``exclude`` (``progress`` is -q),
    generated from the fields (solver_config imports no torch: building them keeps --help fast)."""
    from svrt.runtime.solver_config import SolverConfig
    from svrt.settings_cli import setting_options

    return setting_options(SolverConfig, only=only, exclude=("progress", *exclude), aliases=_OPTION_ALIASES)


def solver_config(config_file, solver_kw, **forced):
    """The SolverConfig of a command: defaults < [solver] of ``config_file`` < command line < ``forced``."""
    from svrt.settings_cli import resolve

    return resolve("solver", solver_kw, config_file, forced=forced)
