"""Settings declared once, in a dataclass: each field's default, its help and its allowed values, and
the TOML file that holds them (``svrt config > run.toml``; ``--config run.toml``).

A settings class (:class:`svrt.runtime.solver_config.SolverConfig`,
:class:`svrt.trainer.train_config.TrainConfig`) declares every field with :func:`setting`; the command
line (:mod:`svrt.settings_cli`) and the file are generated from those declarations, so a default is
written in one place. Field types are ``bool``, ``int``, ``float``, ``str``, ``list[str]``, each
optionally ``| None``; None is spelt ``none`` on the command line and ``"none"`` in a file (TOML has no
null).

The file has one table per settings class::

    [solver]            # SolverConfig: svrt deconvolve, svrt batch
    grid = 0
    [solver.momfbd]     # the settings of one group (setting(group=...) or the method they act under)
    patch_size = 64
    [train]             # TrainConfig: svrt train

A setting declared with a group (``setting(..., group="resources")``, or ``method="momfbd"``: the group of
that method) is written in the sub-table ``[table.group]``; it is also read there or, as older flat files
have it, in ``[table]`` itself. A key in the wrong sub-table is one sentence naming the table it belongs in.

This module imports neither click nor torch (the settings classes import it).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrt.errors import SvrtError

__all__ = ["setting", "Spec", "specs", "parse_text", "check_value", "check_declared", "check_settings", "inapplicable",
           "read_table", "flatten_groups", "table_of", "load_settings", "to_toml", "settings_class", "TABLES", "NONE"]

NONE = "none"  # the spelling of None on the command line and in a file

#: table of a settings file -> its settings class ("module:attribute", imported when needed)
TABLES = {"solver": "svrt.runtime.solver_config:SolverConfig", "train": "svrt.trainer.train_config:TrainConfig",
          "prepare": "svrt.prepare_config:PrepareConfig",  # [prepare] also holds [[prepare.camera]]: read_prepare
          "cluster": "svrt.runtime.cluster:ClusterConfig"}  # svrt batch --cluster slurm


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
            min: float | None = None, max: float | None = None, above: float | None = None,
            method: str | None = None, group: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help (units first, in brackets), for a string its allowed values, for a
    number its range ``min <= value <= max`` or ``above < value <= max`` (either end may be left open;
    :func:`check_declared` checks it with the field's type and choices), ``method``: the one value of the
    class's ``method`` field under which the setting acts (:func:`inapplicable` lists those given in vain),
    and ``group``: the sub-table of the file it is written in (default: its ``method``, if any)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, "choices": tuple(choices) if choices else None,
                                       "min": min, "max": max, "above": above, "method": method,
                                       "group": group or method})


@dataclass(frozen=True)
class Spec:
    """One field as the command line and the file see it: ``kind`` is bool, int, float, str or list
    (of str); ``optional``: None allowed."""

    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    choices: tuple | None
    min: float | None = None
    max: float | None = None
    method: str | None = None
    above: float | None = None
    group: str | None = None

    @property
    def range(self) -> str:
        """The declared range as text ('' when open): 'in 16..4096', '>= 0', '<= 10', '> 0', 'in (0, 100]'."""
        if self.above is not None:
            return f"in ({self.above:g}, {self.max:g}]" if self.max is not None else f"> {self.above:g}"
        if self.min is not None and self.max is not None:
            return f"in {self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}" if self.max is not None else ""

    def in_range(self, value: float) -> bool:
        """Whether the number ``value`` lies in the declared range."""
        return not ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                    or (self.above is not None and value <= self.above))

    @property
    def expected(self) -> str:
        """What a value must be, as the end of a sentence: 'an integer or "none"'."""
        what = {bool: "true or false", int: "an integer", float: "a finite number", list: "a list of strings",
                str: "a string"}[self.kind]
        if self.choices:
            what = "one of " + ", ".join(f'"{c}"' for c in self.choices)
        return f'{what} or "{NONE}"' if self.optional else what


def _kind(name: str, hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    base = typing.get_origin(hint) or hint
    if base not in (bool, int, float, str, list):
        raise TypeError(f"setting {name}: type {hint!r} is not one of bool, int, float, str, list[str] (| None)")
    return base, optional


def specs(cls: type) -> list[Spec]:
    """The :class:`Spec` of every field of the settings class ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _kind(f.name, hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        meta = f.metadata
        out.append(Spec(f.name, kind, optional, default, meta.get("help", ""), meta.get("choices"), meta.get("min"),
                        meta.get("max"), meta.get("method"), meta.get("above"), meta.get("group")))
    return out


def check_declared(config: Any) -> None:
    """Raise :class:`SvrtError` (one sentence naming the field) when a value of the settings object
    ``config`` is not of its field's type, not one of its choices or outside the range its :func:`setting`
    declares: the one check of every declaration, for the command line, the settings file and the Python
    API alike (``patch_size = 1e23`` is a typo, not a patch). A string setting without choices also takes a
    path (``os.PathLike``)."""
    for spec in specs(type(config)):
        value = getattr(config, spec.name)
        if value is None and spec.optional:
            continue
        path_like = spec.kind is str and not spec.choices and isinstance(value, os.PathLike)
        if not path_like and (not _OF_KIND[spec.kind](value) or (spec.choices and value not in spec.choices)):
            expected = spec.expected.replace(f'"{NONE}"', "None")
            raise SvrtError(f"{spec.name} must be {expected}" + (f" {spec.range}" if spec.range else "")
                            + f"; got {value!r}.")
        if spec.range and _is_number(value) and not spec.in_range(value):
            raise SvrtError(f"{spec.name} must be {spec.range}; got {value!r}.")


def inapplicable(config: Any, given: Any) -> list[str]:
    """The names among ``given`` (settings a user set) that do nothing under ``config.method``: those
    declared with ``method=`` another method (:func:`setting`) and set to other than their default (a file
    from ``svrt config`` lists every setting at its default: nothing to warn about)."""
    method = getattr(config, "method", None)
    return [s.name for s in specs(type(config)) if s.name in set(given) and s.method and s.method != method
            and getattr(config, s.name) != s.default]


def parse_text(spec: Spec, text: str) -> Any:
    """The value of a command-line string (``none`` -> None, ``a,b`` -> [a, b] for a list); ValueError
    if it is not :attr:`Spec.expected`."""
    if spec.optional and text.strip().lower() == NONE:
        return None
    if spec.kind is bool:
        low = text.strip().lower()
        if low not in ("true", "false"):
            raise ValueError(spec.expected)
        return low == "true"
    if spec.kind is list:
        return check_value(spec, [s.strip() for s in text.split(",") if s.strip()])
    if spec.kind is str:
        return check_value(spec, text)
    try:
        value = int(text) if spec.kind is int else float(text)
    except ValueError:
        raise ValueError(spec.expected) from None
    return check_value(spec, value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: kind -> whether a (TOML) value is one of it; a bool is no number here, though Python says so
_OF_KIND = {bool: lambda v: isinstance(v, bool),
            int: lambda v: _is_number(v) and isinstance(v, int),
            float: lambda v: _is_number(v) and math.isfinite(v),
            str: lambda v: isinstance(v, str),
            list: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}


def check_value(spec: Spec, value: Any) -> Any:
    """``value`` (from a TOML file) as the field's type, or ValueError if it is not :attr:`Spec.expected`."""
    if spec.optional and (value is None or (isinstance(value, str) and value.lower() == NONE)):
        return None
    if not _OF_KIND[spec.kind](value) or (spec.choices and value not in spec.choices):
        raise ValueError(spec.expected)
    return float(value) if spec.kind is float else list(value) if spec.kind is list else value


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise SvrtError(f"reading the settings file {path} needs Python >= 3.11 or the tomli package "
                            "(pip install tomli).") from None
    if not path.is_file():
        raise SvrtError(f"the settings file {path} does not exist.")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        # editors on Windows start UTF-8 files with a byte-order mark, which TOML does not allow
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SvrtError(f"the settings file {path} is not valid TOML: {exc}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SvrtError(f"the settings file {path} cannot be read ({exc}).") from None


def _nearest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"the nearest is {close[0]!r}; " if close else ""


def settings_class(table: str) -> type:
    """The settings class of table ``[table]`` (:data:`TABLES`)."""
    module, attr = TABLES[table].split(":")
    return getattr(importlib.import_module(module), attr)


def read_table(path: str | Path, table: str) -> dict[str, Any]:
    """The settings of table ``[table]`` in the TOML file ``path``, checked against the fields of its
    settings class (values as the field types; a key left out is not in the dict). The file's other
    tables are for other commands: checked to be known tables, not read. A wrong table, key or value
    raises :class:`SvrtError` naming the file, the key and what was expected."""
    path = Path(path)
    data = _load_toml(path)
    for key, value in data.items():
        if not isinstance(value, dict):
            raise SvrtError(f"{path}: {key!r} is outside a table; put settings under one of "
                            f"{', '.join(f'[{t}]' for t in TABLES)}.")
        if key not in TABLES:
            raise SvrtError(f"{path}: unknown table [{key}]; expected {' or '.join(f'[{t}]' for t in TABLES)}.")
    cls = settings_class(table)
    return check_settings(flatten_groups(data.get(table, {}), cls, path, table), cls, f"{path}: [{table}]")


def table_of(table: str, error: Exception, keys: Any) -> str:
    """The (sub-)table of ``table`` that holds the setting an ``error`` of the settings class names (the first
    of ``keys`` named in its message): ``solver.resources`` for memory_mb; ``table`` when none is named."""
    words = set(re.findall(r"[a-z][a-z0-9_]*", str(error)))
    group_of = _groups(settings_class(table))
    for key in keys:
        if key in words and group_of.get(key):
            return f"{table}.{group_of[key]}"
    return table


def _groups(cls: type) -> dict[str, str | None]:
    """Setting name -> its group (None: the table itself) for the settings class ``cls``."""
    return {s.name: s.group for s in specs(cls)}


def flatten_groups(values: dict[str, Any], cls: type, source: Any, table: str) -> dict[str, Any]:
    """The settings of a table whose groups are sub-tables (``[solver.momfbd]``: ``values["momfbd"]``) as
    one flat dict; keys given flat (older files) are taken as they are. A key in a sub-table it does not
    belong to, or given both flat and in its sub-table, is one :class:`SvrtError` sentence naming the file
    (``source``) and the table it belongs in."""
    group_of = _groups(cls)
    groups = {g for g in group_of.values() if g}
    out = {key: value for key, value in values.items() if not (key in groups and isinstance(value, dict))}
    for group in groups:
        sub = values.get(group)
        if not isinstance(sub, dict):
            continue
        for key, value in sub.items():
            home = group_of.get(key, group)
            if home != group:
                right = f"[{table}.{home}]" if home else f"[{table}]"
                raise SvrtError(f"{source}: [{table}.{group}] holds {key!r}, which belongs in {right}; move it there.")
            if key in out:
                raise SvrtError(f"{source}: [{table}.{group}] sets {key!r}, which [{table}] sets as well; keep one.")
            out[key] = value
    return out


def check_settings(values: dict[str, Any], cls: type, where: str,
                   listed_in: str = "svrt config lists them all") -> dict[str, Any]:
    """``values`` (a TOML table) checked against the fields of the settings class ``cls``, as the field
    types; a key it lacks or a value of the wrong kind raises :class:`SvrtError` that starts with
    ``where`` (the file and the table) and ends by saying where the settings are ``listed_in``."""
    by_name = {s.name: s for s in specs(cls)}
    out = {}
    for key, value in values.items():
        spec = by_name.get(key)
        if spec is None:
            raise SvrtError(f"{where} has no setting {key!r}; {_nearest(key, list(by_name))}{listed_in}.")
        try:
            out[key] = check_value(spec, value)
        except ValueError as exc:
            raise SvrtError(f"{where} {key} must be {exc}; got {_toml_value(value)}.") from None
    return out


def load_settings(path: str | Path, table: str = "solver", **overrides: Any) -> Any:
    """The settings object of ``[table]`` in ``path`` (defaults for the keys it leaves out), with
    ``overrides`` on top: ``load_settings("run.toml", grid=0)`` is a SolverConfig. A value the class
    refuses raises :class:`SvrtError` naming the file and the key."""
    values = read_table(path, table)
    try:
        return settings_class(table)(**{**values, **overrides})
    except SvrtError as exc:
        raise SvrtError(f"{path}: [{table_of(table, exc, values)}] {exc}") from None


def _toml_value(value: Any) -> str:
    """``value`` written as TOML (None as "none")."""
    if value is None:
        return json.dumps(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # the shortest text that reads back to the same number
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def to_toml(table: str, config: Any) -> str:
    """The TOML table ``[table]`` of the settings object ``config``, its groups as sub-tables
    (``[table.group]``, in the order they first appear): every field with its help as a comment above it
    (and its allowed values and range); reads back (:func:`read_table`) to ``config``."""
    by_group: dict[str | None, list[Spec]] = {None: []}
    for spec in specs(type(config)):
        by_group.setdefault(spec.group, []).append(spec)
    lines: list[str] = []
    for group, members in by_group.items():
        if lines:
            lines.append("")
        lines.append(f"[{table}]" if group is None else f"[{table}.{group}]")
        for spec in members:
            note = spec.help
            if spec.choices:
                note += f" [one of: {', '.join(spec.choices)}]"
            if spec.range:
                note += f" [{spec.range}]"
            if note:
                lines.append(f"# {note}")
            lines.append(f"{spec.name} = {_toml_value(getattr(config, spec.name))}")
    return "\n".join(lines) + "\n"
