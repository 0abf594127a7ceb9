"""The in-memory picture of a FITS or HDF5 file that both readers fill, and the short texts of
the messages about files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Contents:
    path: str
    fmt: str
    root: dict[str, Any]  # primary header cards / root attributes (raw, upper-case keys)
    instruments_attr: list[str] | None  # HDF5 'instruments' attribute
    arrays: dict[str, tuple[np.ndarray, dict[str, Any]]]  # NAME (upper) -> (data, own header)
    tables: dict[str, dict[str, np.ndarray]]  # NAME (upper) -> column -> 1-D array
    names: list[str]  # keys as found, for messages

    def found(self) -> str:
        return ", ".join(self.names) if self.names else "none"


def _name(path: Any) -> str:
    return os.fspath(path)


def _short(exc: Any) -> str:
    text = " ".join(str(exc).split())
    text = text.rstrip(".")
    return text[:200] + ("..." if len(text) > 200 else "")
