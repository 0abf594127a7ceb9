"""Records of results: the one JSON writer of every benchmark and evidence file (:func:`write_json`: atomic,
NaN and inf as null, arrays and paths made JSON-safe) and the hash of a file (:func:`file_sha256`: model files,
records of what was measured). Standard library only, so the GPU proof and any script can use it anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["file_sha256", "write_json"]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes as 64 hex digits, read in 1 MiB blocks (model files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _clean(obj):
    """JSON-safe: NaN/inf -> None, tuples, arrays and tensors -> lists, Paths and other objects -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if getattr(obj, "ndim", 0) and hasattr(obj, "tolist"):   # numpy arrays, tensors (duck-typed: stdlib only here)
        return _clean(obj.tolist())
    if hasattr(obj, "item"):
        try:
            return _clean(obj.item())
        except Exception:  # noqa: BLE001
            pass
    return str(obj)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a reader never sees half a file; NaN/inf as null), making its
    folder if needed. The one JSON writer of the benchmarks (bench, kernels, streaming, throughput)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(obj), fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
