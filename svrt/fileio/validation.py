"""Checks of the arrays, instrument labels, LOSS columns and CONFIG entries of bursts and
restorations, shared by the dataclasses and the readers: one sentence naming the file and key."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from svrt.errors import SvrtError
from svrt.fileio.header import _python_scalar

LOSS_KEYS = ("iteration", "total", "data", "reg_object", "reg_modes")


def _as_float32(arr: Any, key: str, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.names is not None:
        raise SvrtError(f"{key} in {where} is a table; expected an image array.")
    if a.dtype.kind not in "fiub":
        raise SvrtError(f"{key} in {where} holds {a.dtype} data; expected real numbers.")
    if a.size == 0:
        raise SvrtError(f"{key} in {where} is empty (shape {tuple(a.shape)}); expected an image array.")
    return np.ascontiguousarray(a, dtype=np.float32)


def _count_nonfinite(a: np.ndarray) -> int:
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _check_finite(a: np.ndarray, key: str, where: str, hint: str = "") -> None:
    bad = _count_nonfinite(a)
    if bad:
        raise SvrtError(f"{key} in {where} has {bad} NaN or infinite pixels out of {a.size}{hint}.")


def _frames_4d(frames: np.ndarray, key: str, where: str) -> np.ndarray:
    if frames.ndim == 4:
        return frames
    if frames.ndim == 3:
        return frames[None]
    if frames.ndim == 2:
        return frames[None, None]
    raise SvrtError(
        f"{key} in {where} has {frames.ndim} dimensions (shape {tuple(frames.shape)}); expected "
        "[K, L, Y, X] (or [L, Y, X] for one object, [Y, X] for one frame)."
    )


def _check_truth(truth: np.ndarray, k: int, yx: tuple[int, int], where: str) -> np.ndarray:
    """truth [K, Y, X] ([Y, X] for K = 1) with the K, Y, X of the frames."""
    if truth.ndim == 2 and k == 1:
        truth = truth[None]
    if truth.ndim != 3 or truth.shape[0] != k or tuple(truth.shape[1:]) != yx:
        raise SvrtError(
            f"TRUTH in {where} has shape {tuple(truth.shape)}; expected [K, Y, X] = {(k,) + yx} to match FRAMES."
        )
    return truth


def _check_modes(modes: np.ndarray, n_frames: int, key: str, where: str, against: str) -> np.ndarray:
    """modes [L, M, Yg, Xg] with the L of ``against``."""
    if modes.ndim != 4 or modes.shape[0] != n_frames:
        raise SvrtError(
            f"{key} in {where} has shape {tuple(modes.shape)}; expected [L, M, Yg, Xg] with L = {n_frames} "
            f"to match {against}."
        )
    return modes


def _burst_arrays(frames: Any, truth: Any, modes: Any, where: str, names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The arrays of a burst as float32, checked against one another: frames [K, L, Y, X] ([L, Y, X]
    is K = 1, [Y, X] is K = L = 1), truth [K, Y, X] and modes [L, M, Yg, Xg] (None stays None).
    ``names`` are those of frames, truth, modes in the messages (the file's FRAMES, ... or the
    dataclass's fields). Finiteness is the caller's: a file may be read with its bad pixels."""
    frames_name, truth_name, modes_name = names
    frames = _frames_4d(_as_float32(frames, frames_name, where), frames_name, where)
    k, n_frames, y, x = frames.shape
    if truth is not None:
        truth = _check_truth(_as_float32(truth, truth_name, where), k, (y, x), where)
    if modes is not None:
        modes = _check_modes(_as_float32(modes, modes_name, where), n_frames, modes_name, where,
                             f"the L of {frames_name}")
        from svrt.checks import check_mode_grid

        check_mode_grid(modes.shape[2:], (y, x), where, modes_name)
    return frames, truth, modes


def _restoration_arrays(objects: Any, modes: Any, model: Any, where: str,
                        names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """The arrays of a restoration as float32, checked against one another: objects [K, Y, X] ([Y, X]
    is K = 1), model [K, L, Y, X] with the objects' K, Y, X, modes [L, M, Yg, Xg] with the model's L.
    ``names`` are those of objects, modes, model in the messages (OBJECT, ... or the fields)."""
    objects_name, modes_name, model_name = names
    objects = _as_float32(objects, objects_name, where)
    if objects.ndim == 2:
        objects = objects[None]
    if objects.ndim != 3:
        raise SvrtError(f"{objects_name} in {where} has shape {tuple(objects.shape)}; expected [K, Y, X].")
    k, y, x = objects.shape
    model = _as_float32(model, model_name, where)
    if model.ndim != 4 or model.shape[0] != k or tuple(model.shape[2:]) != (y, x):
        raise SvrtError(f"{model_name} in {where} has shape {tuple(model.shape)}; expected [K, L, Y, X] with K, Y, X "
                        f"= {(k, y, x)} as {objects_name}.")
    modes = _check_modes(_as_float32(modes, modes_name, where), model.shape[1], modes_name, where,
                         f"the L of {model_name}")
    return objects, modes, model


def _is_name(text: Any) -> bool:
    """A non-empty string of printable ASCII without spaces (a LOSS column, a CONFIG key, an HDU name)."""
    return isinstance(text, str) and bool(text) and all(32 < ord(c) < 127 for c in text)


def _check_instruments(instruments: Any, k: int, where: str) -> list[str]:
    if isinstance(instruments, str):
        instruments = [instruments] * k
    try:
        labels = list(instruments)
    except TypeError:
        raise SvrtError(f"The instruments of {where} must be a list of {k} labels; got {instruments!r}.") from None
    if len(labels) != k:
        raise SvrtError(f"{where} names {len(labels)} instruments ({', '.join(map(str, labels))}) for {k} objects; "
                        "expected one label per object.")
    for i, lab in enumerate(labels):
        if not isinstance(lab, str) or not lab.strip() or not all(32 <= ord(c) < 127 for c in lab):
            raise SvrtError(f"Instrument {i} of {where} is {lab!r}; expected a non-empty ASCII label such as "
                            "'crisp6302'.")
    return [lab.strip() for lab in labels]


def _check_loss(loss: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(loss, Mapping):
        raise SvrtError(f"LOSS of {where} is a {type(loss).__name__}; expected a dict of 1-D arrays.")
    missing = [key for key in LOSS_KEYS if key not in loss]
    if missing:
        raise SvrtError(
            f"LOSS of {where} lacks {', '.join(missing)} (found: {', '.join(map(str, loss)) or 'none'}); "
            f"expected columns {', '.join(LOSS_KEYS)}."
        )
    out: dict[str, np.ndarray] = {}
    length = None
    first = ""
    for key, values in loss.items():
        if not _is_name(key):
            raise SvrtError(f"LOSS column {key!r} of {where} is not a valid name; expected printable ASCII without "
                            "spaces.")
        arr = np.asarray(values)
        if arr.ndim != 1 or arr.dtype.kind not in "fiub":
            raise SvrtError(f"LOSS column {key} of {where} has shape {arr.shape} and type {arr.dtype}; expected a 1-D "
                            "array of numbers.")
        if length is None:
            length, first = arr.shape[0], key
        elif arr.shape[0] != length:
            raise SvrtError(f"LOSS column {key} of {where} has {arr.shape[0]} values where {first} has {length}; "
                            "expected equal lengths.")
        if key == "iteration" or arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "b":
            arr = arr.astype(bool)
        else:
            arr = arr.astype(np.float64)
        out[key] = np.ascontiguousarray(arr)
    return out


def _check_config(config: Any, where: str) -> dict[str, Any]:
    """Upper-case keys -> JSON scalars (str, int, finite or not float, bool, None)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise SvrtError(f"The config of {where} is a {type(config).__name__}; expected a dict of key -> value.")
    out: dict[str, Any] = {}
    for raw, value in config.items():
        key = str(raw).strip().upper()
        if not _is_name(key):
            raise SvrtError(f"Config key {raw!r} of {where} is not a valid name; expected printable ASCII without "
                            "spaces.")
        value = _python_scalar(value)
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise SvrtError(f"Config key {key} of {where} holds a {type(value).__name__}; expected str, int, float, "
                            "bool or None.")
        out[key] = value
    return out


class _FourAxes:
    """K, L and (Y, X) of a burst or restoration from its ``[K, L, Y, X]`` array, the attribute that
    ``_four_axes`` names (frames, or the restoration's model), and a short repr of them (no arrays)."""

    _four_axes = "frames"

    def __repr__(self) -> str:
        """``Burst(K=2, L=12, 256x256, crisp8542+crisp8542, modes [12, 44, 8, 8], truth, 31 cards)``: the shapes,
        instruments and what else it holds, never the arrays (a notebook prints this)."""
        y, x = self.shape
        parts = [f"K={self.n_objects}", f"L={self.n_frames}", f"{y}x{x}",
                 "+".join(getattr(self, "instruments", None) or []) or "no instruments"]
        modes = getattr(self, "modes", None)
        if modes is not None:
            parts.append(f"modes [{', '.join(map(str, modes.shape))}]")
        parts += [name for name in ("truth", "mask") if getattr(self, name, None) is not None]
        if hasattr(self, "loss"):
            parts.append(f"{self.n_iterations} iterations")
        parts.append(f"{len(getattr(self, 'header', {}) or {})} cards")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def n_objects(self) -> int:
        """K, the number of objects (e.g. wide band and narrow band)."""
        return int(getattr(self, self._four_axes).shape[0])

    @property
    def n_frames(self) -> int:
        """L, the number of frames per object."""
        return int(getattr(self, self._four_axes).shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """(Y, X), the image size in pixels."""
        return tuple(int(v) for v in getattr(self, self._four_axes).shape[2:])
