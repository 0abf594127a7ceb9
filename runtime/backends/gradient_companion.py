"""The gradient-graph companion file of an exported back end (ONNX Runtime ``.onnx``, TensorRT ``.plan``).

One rule for both: the vector-Jacobian product graph of ``name.ext`` is ``name.vjp.ext`` beside it
(:func:`vjp_path_for`), written by ``svrt export`` together with the forward graph and found there by
the back end; the pair belongs together only when the metadata keys both carry agree
(:func:`check_pair`: same instrument, weights, modes, precision, and for plans the same TensorRT and GPU).
"""

from __future__ import annotations

from pathlib import Path

from svrt.errors import SvrtError

__all__ = ["vjp_path_for", "find_companion", "check_pair", "missing_vjp", "CompanionPair"]


def vjp_path_for(path: str | Path) -> Path:
    """The companion of a forward graph: ``name.ext -> name.vjp.ext``.

    >>> vjp_path_for("out/crisp8542.onnx").as_posix(), vjp_path_for("crisp8542.plan").as_posix()
    ('out/crisp8542.vjp.onnx', 'crisp8542.vjp.plan')
    """
    p = Path(path)
    return p.with_name(f"{p.stem}.vjp{p.suffix}")


def find_companion(path: str | Path, vjp_path: str | Path | bool | None = None) -> Path | None:
    """The VJP file to load with ``path``: ``vjp_path`` when given, none when it is False, else
    ``name.vjp.ext`` when it exists beside ``path`` (a forward file alone gives no gradients)."""
    if vjp_path is None:
        candidate = vjp_path_for(path)
        return candidate if candidate.exists() else None
    return Path(vjp_path) if vjp_path else None


def check_pair(forward_meta: dict, vjp_meta: dict, path, vjp_path, keys, artefact: str, rebuild: str) -> None:
    """:class:`SvrtError` unless the VJP file's metadata agrees with the forward file's on every key of
    ``keys``; ``artefact`` ("graph", "plan") and ``rebuild`` (the command that writes both) word the error."""
    for key in keys:
        if forward_meta.get(key) != vjp_meta.get(key):
            raise SvrtError(f"{vjp_path}: metadata key '{key}' is '{vjp_meta.get(key)}' but the forward {artefact} "
                            f"{path} has '{forward_meta.get(key)}'; {rebuild}.")


def missing_vjp(path, artefact: str, engine: str, remedy: str) -> SvrtError:
    """The error of a back end asked for gradients without the companion of ``path``: ``artefact``
    ("graph", "plan"), ``engine`` (its name) and ``remedy`` (how to get one) word it."""
    return SvrtError(f"{path}: no VJP {artefact} ({vjp_path_for(path).name} not found beside it), so this {engine} "
                     f"engine cannot give gradients; {remedy}.")


class CompanionPair:
    """What a back end holding a forward artefact and, when found, its VJP companion says and does with
    them: gradients only with the companion; closing drops both. ``_pair`` names the two attributes."""

    _pair = ("session", "vjp_session")

    @property
    def has_gradient(self) -> bool:
        return getattr(self, self._pair[1]) is not None

    def close(self) -> None:
        for name in self._pair:
            setattr(self, name, None)
