"""Instrumental configurations: telescope aperture, camera pixel and wavelength.

The four configurations of the paper's Table 1 ship in ``svrt/data/instruments.json``. Users add
their own without touching code: a JSON file with the same schema named by the environment variable
``SVRT_INSTRUMENTS`` (or passed to :func:`load_instruments`) adds or replaces entries.

Example
-------
>>> from svrt.instruments import get_instrument
>>> crisp = get_instrument("crisp8542")
>>> round(crisp.sampling, 2)   # lambda/(D pix): pixels per lambda/D, >= 2 is Nyquist
2.99
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from svrt.errors import SvrtError

ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0


@dataclass(frozen=True)
class Instrument:
    """One telescope + camera + wavelength combination. ``index``: its position in the emulator's default
    conditioning vector (:func:`default_conditioning`); a trained model stores its own instrument list."""

    label: str
    telescope: str
    instrument: str
    index: int
    diameter_cm: float
    obscuration_cm: float
    pixel_arcsec: float
    wavelength_angstrom: float
    spider_count: int = 0
    spider_width_cm: float = 0.0

    @property
    def diameter_m(self) -> float:
        return self.diameter_cm / 100.0

    @property
    def wavelength_m(self) -> float:
        return self.wavelength_angstrom * 1e-10

    @property
    def diffraction_arcsec(self) -> float:
        """lambda/D in arcsec."""
        return self.wavelength_m / self.diameter_m * ARCSEC_PER_RADIAN

    @property
    def sampling(self) -> float:
        """lambda/(D pix): camera pixels per lambda/D. Nyquist sampling needs >= 2."""
        return self.diffraction_arcsec / self.pixel_arcsec

    @property
    def cutoff_cycles_per_pixel(self) -> float:
        """Diffraction cutoff D/lambda expressed in cycles per camera pixel (= 1/sampling)."""
        return 1.0 / self.sampling

    def to_dict(self) -> dict:
        return asdict(self)


_REQUIRED = ("label", "telescope", "instrument", "index", "diameter_cm", "obscuration_cm",
             "pixel_arcsec", "wavelength_angstrom")


def _parse(entries: list, source: str) -> dict[str, Instrument]:
    known = {f.name for f in fields(Instrument)}
    out = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise SvrtError(f"{source}: instruments[{i}] is not an object; expected keys {', '.join(_REQUIRED)}.")
        missing = [k for k in _REQUIRED if k not in e]
        if missing:
            raise SvrtError(f"{source}: instruments[{i}] lacks {', '.join(missing)}; expected keys "
                            f"{', '.join(_REQUIRED)}.")
        extra = [k for k in e if k not in known]
        if extra:
            raise SvrtError(f"{source}: instruments[{i}] has unknown keys {', '.join(extra)}.")
        bad = [k for k in ("label", "telescope", "instrument") if not isinstance(e[k], str)]
        bad += [
            k
            for k in ("index", "spider_count")
            if k in e and (not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < 0)
        ]
        bad += [k for k in ("diameter_cm", "obscuration_cm", "pixel_arcsec", "wavelength_angstrom", "spider_width_cm")
                if k in e and (not isinstance(e[k], (int, float)) or isinstance(e[k], bool))]
        if bad:
            raise SvrtError(f"{source}: instruments[{i}] has values of the wrong type for {', '.join(bad)}; expected "
                            "strings for label/telescope/instrument, integers >= 0 for index/spider_count and numbers "
                            "for the rest.")
        inst = Instrument(**e)
        if not (inst.diameter_cm > 0 and 0 <= inst.obscuration_cm < inst.diameter_cm
                and inst.pixel_arcsec > 0 and inst.wavelength_angstrom > 0):
            raise SvrtError(f"{source}: instrument '{inst.label}' needs D > 0, 0 <= D2 < D, pixel > 0 and wavelength > "
                            "0.")
        out[inst.label] = inst
    return out


def _read_file(path: Path) -> list:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SvrtError(f"{path}: instrument file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SvrtError(f"{path}: cannot read the instrument file ({exc}); expected a UTF-8 JSON file.") from None
    except json.JSONDecodeError as exc:
        raise SvrtError(
            f'{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {{"instruments": [...]}}.'
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("instruments"), list):
        raise SvrtError(f"{path}: key 'instruments' missing or not a list; expected {{\"instruments\": [...]}}.")
    return data["instruments"]


def load_instruments(extra_path: str | os.PathLike | None = None) -> dict[str, Instrument]:
    """The registry: the bundled Table 1 plus ``extra_path`` (or ``$SVRT_INSTRUMENTS``) if given.

    >>> reg = load_instruments()
    >>> round(reg["crisp8542"].sampling, 2), round(reg["hifi6563"].sampling, 2)   # lambda / (D pix): HiFI below Nyquist
    (2.99, 1.88)
    """
    bundled = json.loads(resources.files("svrt").joinpath("data/instruments.json").read_text())
    registry = _parse(bundled["instruments"], "svrt/data/instruments.json")
    extra_path = extra_path or os.environ.get("SVRT_INSTRUMENTS")
    if extra_path:
        registry.update(_parse(_read_file(Path(extra_path)), str(extra_path)))
    return registry


def get_instrument(label: str | Instrument) -> Instrument:
    """Look an instrument up by label (case-insensitive); an :class:`Instrument` passes through."""
    if isinstance(label, Instrument):
        return label
    registry = load_instruments()
    key = str(label).lower()
    for name, inst in registry.items():
        if name.lower() == key:
            return inst
    raise SvrtError(f"unknown instrument '{label}'; known instruments are {', '.join(registry)} "
                    "(add your own with a JSON file named by $SVRT_INSTRUMENTS).")


def conditioning_size() -> int:
    """Length of the one-hot conditioning vector: one more than the largest index."""
    return max(i.index for i in load_instruments().values()) + 1


# --------------------------------------------------------------------------- physics an emulator knows

#: the fields that make an instrument's PSFs: an emulator trained for a label learned these.
PHYSICS_FIELDS = ("diameter_cm", "obscuration_cm", "pixel_arcsec", "wavelength_angstrom", "spider_count",
                  "spider_width_cm")


def default_conditioning() -> list[str]:
    """The emulator's default instrument list (its one-hot order): the bundled Table 1 sorted by ``index``.

    >>> default_conditioning()
    ['crisp6302', 'crisp8542', 'chromis3934', 'hifi6563']
    """
    return [inst.label for inst in sorted(builtin_instruments().values(), key=lambda inst: inst.index)]


def builtin_instruments() -> dict[str, Instrument]:
    """The bundled Table 1 only (``$SVRT_INSTRUMENTS`` ignored): what the shipped models were trained on."""
    bundled = json.loads(resources.files("svrt").joinpath("data/instruments.json").read_text())
    return _parse(bundled["instruments"], "svrt/data/instruments.json")


def physics(inst: Instrument | dict) -> dict:
    """The :data:`PHYSICS_FIELDS` of an instrument (or of a dict with those keys; missing spider = 0)."""
    d = inst.to_dict() if isinstance(inst, Instrument) else dict(inst)
    return {k: float(d.get(k, 0) or 0) for k in PHYSICS_FIELDS}


def physics_differences(now: Instrument | dict, trained: Instrument | dict, rtol: float = 1e-6) -> list[str]:
    """``['pixel_arcsec 0.02 (trained on 0.059)', ...]``: the fields in which ``now`` differs."""
    a, b = physics(now), physics(trained)
    return [f"{k} {a[k]:g} (trained on {b[k]:g})" for k in PHYSICS_FIELDS
            if not math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-12)]


def check_emulated_physics(label: str, model: str, trained_physics: dict | None = None) -> None:
    """Refuse to emulate ``label`` when its physics now (the registry, ``$SVRT_INSTRUMENTS`` included)
    differ from those the model was trained on: ``trained_physics`` (label -> fields, from the model's
    metadata ``instrument_physics``) when recorded, else the bundled table. An emulator is conditioned
    on the label only, so redefining e.g. crisp8542 with 0.02" pixels would change the header and not
    one output pixel. Labels that the registry or both references do not know cannot be verified and pass."""
    try:
        inst = get_instrument(label)
    except SvrtError:
        return
    reference, source = None, f"the built-in {inst.label}"
    for name, fields_ in dict(trained_physics or {}).items():
        if str(name).lower() == inst.label.lower() and isinstance(fields_, dict):
            reference, source = fields_, f"the {inst.label} recorded in its metadata"
    if reference is None:
        builtin = {k.lower(): v for k, v in builtin_instruments().items()}
        reference = builtin.get(inst.label.lower())
    if reference is None:
        return
    diffs = physics_differences(inst, reference)
    if diffs:
        extra = os.environ.get("SVRT_INSTRUMENTS")
        where = f" by $SVRT_INSTRUMENTS ({extra})" if extra else ""
        raise SvrtError(
            f"instrument '{inst.label}' is redefined{where} with {', '.join(diffs)}; model {model} was trained on "
            f"{source} and knows an instrument only by its label, so it would ignore the new physics: give them a "
            "new label and a model trained for it, or remove the redefinition."
        )
