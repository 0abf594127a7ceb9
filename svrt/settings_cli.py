"""The command line of a settings class: one click option per field, generated from its declaration
(:mod:`svrt.settings`), ``--config FILE`` for a TOML settings file, and ``svrt config``, which prints
the defaults as such a file.

A setting's value comes from, in rising priority: the class's default, the file's table
(``[solver]`` or ``[train]``), the command line. Option names are the field names with dashes
(``patch_iterations`` -> ``--patch-iterations``); a bool is a ``--x/--no-x`` pair; ``none`` unsets an
optional setting. Building the options imports neither torch nor the solver.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import click

from svrt.errors import SvrtError
from svrt.settings import (
    NONE,
    Spec,
    inapplicable,
    load_settings,
    parse_text,
    read_table,
    settings_class,
    specs,
    table_of,
    to_toml,
)

__all__ = ["setting_options", "config_file_option", "with_options", "resolve", "config_command"]


def with_options(options: list[Callable]) -> Callable:
    """One decorator applying a list of click option decorators, in the list's order on --help."""
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


class SettingType(click.ParamType):
    """A command-line value of one setting, checked against its declared type and choices."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.name = spec.kind.__name__

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, already a value
            return value
        try:
            return parse_text(self.spec, value)
        except ValueError as exc:
            self.fail(f"{value!r} is not {exc}.", param, ctx)

    def get_metavar(self, param, ctx=None):
        spec = self.spec
        word = "|".join(spec.choices) if spec.choices else {int: "INTEGER", float: "FLOAT", str: "TEXT",
                                                            list: "A,B,..."}[spec.kind]
        return f"{word}|{NONE}" if spec.optional else word


def _option(spec: Spec, aliases: Iterable[str]) -> Callable:
    flag = "--" + spec.name.replace("_", "-")
    if spec.kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", spec.name, default=spec.default, show_default=True,
                            help=spec.help)
    kind = click.Choice(spec.choices) if spec.choices and not spec.optional else SettingType(spec)
    # written as on the command line, so that --help shows it so (SettingType converts it)
    default = NONE if spec.default is None else ",".join(spec.default) if spec.kind is list else spec.default
    return click.option(flag, *aliases, spec.name, type=kind, default=default, show_default=True, help=spec.help)


def setting_options(cls: type, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                    aliases: dict[str, tuple[str, ...]] | None = None) -> list[Callable]:
    """click option decorators for the fields of the settings class ``cls`` (all, or ``only`` these,
    less ``exclude``), in declaration order; ``aliases``: older option names kept working
    (``{"lr_objects": ("--lr-obj",)}``)."""
    wanted = None if only is None else set(only)
    return [_option(s, (aliases or {}).get(s.name, ())) for s in specs(cls)
            if (wanted is None or s.name in wanted) and s.name not in set(exclude)]


def config_file_option(table: str) -> Callable:
    """``--config FILE``: the TOML settings file whose ``[table]`` this command reads."""
    return click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
                        help=f"TOML settings file: its [{table}] table overrides the defaults, options given here "
                             f"override it (svrt config prints one).")


def resolve(table: str, values: dict[str, Any], config_file: str | None = None,
            forced: dict[str, Any] | None = None) -> Any:
    """The settings object of ``[table]`` for this command: the defaults, overridden by ``[table]`` of
    ``config_file``, overridden by the options of ``values`` given on the command line (and by
    ``forced``, the settings a command sets from its own flags, e.g. ``-q``). Call it inside the
    click command. A bad value is one sentence: a click usage error naming the option when the
    command line set it, else a :class:`SvrtError` naming the file and the key."""
    ctx = click.get_current_context()
    cls = settings_class(table)
    from_file = read_table(config_file, table) if config_file else {}
    given = {k: v for k, v in values.items()
             if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)}
    try:
        config = cls(**{**from_file, **given, **(forced or {})})
    except SvrtError as exc:
        raise _blame(exc, ctx, given, from_file, config_file, table) from None
    idle = inapplicable(config, {**from_file, **given})
    if idle:
        from svrt.checks import warn

        where = {name: "--" + name.replace("_", "-") if name in given else f"{name} in {config_file}" for name in idle}
        warn(f"{', '.join(where[n] for n in idle)} {'acts' if len(idle) == 1 else 'act'} only under method "
             f"{_method_of(cls, idle[0])}, not {config.method}; ignored.")
    return config


def _method_of(cls: type, name: str) -> str:
    """The method under which setting ``name`` of ``cls`` acts (its ``setting(method=...)``)."""
    return next(s.method for s in specs(cls) if s.name == name)


def _blame(exc: SvrtError, ctx: click.Context, given: dict, from_file: dict, config_file, table: str) -> Exception:
    """The error of a rejected setting, told where it came from: the option (click's usage error,
    exit status 2) or the file's key; the settings class's message names the field."""
    msg = str(exc)
    words = set(re.findall(r"[a-z][a-z0-9_]*", msg))
    for name in given:
        if name in words:
            param = next((p for p in ctx.command.params if p.name == name), None)
            return click.BadParameter(msg, ctx=ctx, param=param)
    if any(name in words for name in from_file):
        return SvrtError(f"{config_file}: [{table_of(table, exc, from_file)}] {msg}")
    return exc


@click.command("config", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--train", is_flag=True, help="The [train] table (svrt train) instead of [solver] (svrt deconvolve, "
                                            "svrt batch).")
@click.option("--cluster", is_flag=True, help="The [cluster] table (svrt batch --cluster slurm) instead of [solver].")
def config_command(file, train, cluster):
    """Print the settings as a TOML file: the defaults, or FILE's settings over them (a check of FILE).

    Every key is optional: one left out keeps its default. A command reads the file with --config,
    and an option on its command line wins over the file.

    \b
    Examples:
      svrt config > run.toml                        # edit, then:
      svrt deconvolve burst.fits -o restored.fits --config run.toml --grid 0
      svrt config --train > train.toml              # svrt train --config train.toml -o my.safetensors
      svrt config --cluster >> run.toml             # the SLURM jobs of svrt batch --cluster slurm
      svrt config run.toml                          # check run.toml; print every setting it gives
    """
    if train and cluster:
        raise click.UsageError("give --train or --cluster, not both.")
    table = "train" if train else "cluster" if cluster else "solver"
    config = load_settings(file, table) if file else settings_class(table)()
    command = {"train": "svrt train", "cluster": "svrt batch BURSTS -o OUT --cluster slurm",
               "solver": "svrt deconvolve BURST -o OUT (or svrt batch)"}[table]
    click.echo(f"# svrt settings{f' from {file}' if file else ''}; read with: {command} --config FILE\n"
               f"# A key left out keeps its default; an option on the command line wins over the file; "
               f'"{NONE}" unsets.\n')
    click.echo(to_toml(table, config), nl=False)

