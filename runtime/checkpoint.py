"""Checkpoints of a long restoration, and ``resume``: a killed solve continues to the same result.

A checkpoint is one safetensors file (never pickle): the solver's tensors under plain names plus JSON
metadata under the key ``svrt``::

    {"format": "svrt-checkpoint-1", "fingerprint": <sha256 hex>, "method": "adam" | "momfbd",
     "state": {...}}                      # counters, header cards so far, the loss scale, ...

with the loss history so far as float64 tensors ``history/<key>`` [N] (``history/iteration`` int64).
What each method stores:

* ``adam`` (:func:`svrt.runtime.method_adam.solve_field`), every ``checkpoint_every`` iterations:
  ``o`` [K, Y + 2m, X + 2m], ``a`` [L, M, Yg, Xg], ``g`` [L, M, 1, 1] (two-scale modes), the AdamW
  state ``opt/<i>/step|exp_avg|exp_avg_sq`` of every parameter, and ``state = {"iteration", "loss_scale"}``;
* ``momfbd`` (:func:`svrt.runtime.method_momfbd.solve_momfbd`), after the first object solve and after
  every refinement round: ``o`` [K, Y + 2m, X + 2m], ``a`` [L, M, Yg, Xg], the Wiener prior ``prior``
  [K, Y + 2m, X + 2m], the high-order OTFs ``attenuation/<k>`` when used, and
  ``state = {"rounds_done", "info"}``.

Every value is stored bit for bit, and both methods are deterministic on one machine and device, so a
resumed solve ends with exactly the objects, modes, model and loss history of an uninterrupted one (only
the timings differ; a ``time_budget`` counts from the start of each process).

The fingerprint (:func:`fingerprint`) is a SHA-256 of the burst (frames, validity mask, gamma_kl,
instrument labels), every setting that affects the result (all of :class:`SolverConfig` but ``progress``,
``checkpoint``, ``checkpoint_every``), the number of modes and every engine's identity (model hash,
back end, precision); a checkpoint of another burst or other settings is refused in one sentence.
Files are written atomically (:func:`svrt.fileio.atomic_write`): a checkpoint is the previous one or the
new one, never half of either, whenever the process is killed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svrt.errors import SvrtError

__all__ = ["FORMAT", "fingerprint", "Checkpointer", "load_checkpoint", "save_checkpoint"]

FORMAT = "svrt-checkpoint-1"
#: SolverConfig fields that do not change the result (kept out of the fingerprint)
_NOT_HASHED = ("progress", "checkpoint", "checkpoint_every")
_HISTORY = "history/"


def _tensor_bytes(h, name: str, t) -> None:
    if t is None:
        h.update(f"{name}:none;".encode())
        return
    arr = np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
    h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
    h.update(arr.tobytes())


def fingerprint(burst, config, engines, n_modes: int) -> str:
    """SHA-256 (hex) of ``burst`` (a :class:`~svrt.runtime.problem.ValidatedBurst`: frames [K, L, Y, X],
    valid [K, L, Y, X], gamma [K, L] or None, labels), the settings of ``config`` that affect the result,
    ``n_modes`` and the identity of every engine in ``engines`` (one per object)."""
    h = hashlib.sha256(FORMAT.encode())
    _tensor_bytes(h, "frames", burst.frames)
    _tensor_bytes(h, "valid", burst.valid)
    _tensor_bytes(h, "gamma", burst.gamma)
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_HASHED}
    ident = [[e.identity.model_hash, e.identity.backend, e.identity.precision] for e in engines]
    h.update(json.dumps({"labels": [str(s) for s in burst.labels], "settings": settings, "n_modes": int(n_modes),
                         "engines": ident}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` (name -> tensor, any device) and the JSON-able ``meta`` atomically to ``path``."""
    from safetensors.torch import save_file

    from svrt.fileio import atomic_write

    flat = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    text = json.dumps(meta)
    with atomic_write(path) as tmp:
        save_file(flat, tmp, metadata={"svrt": text})


def load_checkpoint(path: str | os.PathLike, expected_fingerprint: str | None = None,
                    method: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint: (tensors on the host, metadata). Raises one :class:`SvrtError` sentence when the
    file is missing, truncated or corrupt, or belongs to another burst, settings or method."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise SvrtError(f"Checkpoint {p.name} does not exist; run without --resume to start the restoration.")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get("svrt")
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise SvrtError(f"Checkpoint {p.name} is truncated or corrupt ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); delete it and run without "
                        "--resume.") from None
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("state"), dict):
        raise SvrtError(f"Checkpoint {p.name} has no valid 'svrt' metadata (expected format {FORMAT}); "
                        "it was not written by this version of svrt.")
    if method is not None and meta.get("method") != method:
        raise SvrtError(f"Checkpoint {p.name} was written by method {meta.get('method')!r}, not {method!r}; "
                        "resume with the settings that wrote it or run without --resume.")
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise SvrtError(f"Checkpoint {p.name} belongs to another burst or other settings (fingerprint "
                        f"{str(meta.get('fingerprint'))[:12]}, expected {expected_fingerprint[:12]}); "
                        "resume with the burst and settings that wrote it or run without --resume.")
    return tensors, meta


class Checkpointer:
    """The checkpoint of one solve: where to write it, its fingerprint, and the state it resumed from.

    ``resumed``: (tensors, state) read from the checkpoint, or None for a fresh start; the method takes
    it (:meth:`take`) once, when it sets up its unknowns.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: str, method: str,
                 resumed: tuple[dict[str, torch.Tensor], dict] | None = None):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.method = method
        self._resumed = resumed
        self.writes = 0

    def take(self) -> tuple[dict[str, torch.Tensor], dict, dict] | None:
        """(tensors, state, history lists) to continue from, once; None for a fresh start."""
        if self._resumed is None:
            return None
        tensors, meta = self._resumed
        self._resumed = None
        history = {name[len(_HISTORY):]: t.tolist() for name, t in tensors.items() if name.startswith(_HISTORY)}
        tensors = {name: t for name, t in tensors.items() if not name.startswith(_HISTORY)}
        return tensors, meta["state"], history

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], history: dict[str, list]) -> None:
        """Write the solve's ``tensors``, JSON-able ``state`` and loss ``history`` (key -> list) atomically."""
        all_t = dict(tensors)
        for key, values in history.items():
            dtype = torch.int64 if key == "iteration" else torch.float64
            all_t[_HISTORY + key] = torch.as_tensor(list(values), dtype=dtype)
        save_checkpoint(self.path, all_t, {"format": FORMAT, "fingerprint": self.fingerprint,
                                            "method": self.method, "state": state})
        self.writes += 1
