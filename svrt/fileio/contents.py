"""The in-memory picture of a FITS or HDF5 file that both readers fill, and the short texts of
the messages about files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Contents:
    path: str
    fmt: str
    # primary header cards / root attributes (raw, upper-case keys)
    root: dict[str, Any] = field(default_factory=dict)
    instruments_attr: list[str] | None = None  # HDF5 'instruments' attribute
    # NAME (upper) -> (data, own header)
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # NAME (upper) -> column -> 1-D array
    names: list[str] = field(default_factory=list)  # keys as found, for messages

    def found(self) -> str:
        return ", ".join(self.names) if self.names else "none"


def _name(path: Any) -> str:
    return os.fspath(path)


def _short(exc: Any) -> str:
    text = " ".join(str(exc).split())
    text = text.rstrip(".")
    return text[:200] + ("..." if len(text) > 200 else "")
