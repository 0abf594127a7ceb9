"""Peer benchmark: svrt against torchmfbd's patch-wise MOMFBD and the frame average, on the same simulated
anisoplanatic bursts, in the same run, with the one score of DESIGN.md
(:func:`svrt.metrics.score_restoration`).

    python -m svrt.benchmarks.peers --out-dir benchmarks/peers-matrix --sizes 128,256 --seeds 1,2,3 --r0 7,10,15 \\
        --ao 0,20 --threads 1 --bursts-dir benchmarks/peers/bursts \\
        --results-page benchmarks/PEERS-MATRIX.md
    svrt bench --peers --out-dir peers-results --sizes 128 --seeds 1

Cases (the matrix of the command line): independent CRISP 8542 bursts made by
:func:`svrt.simulate.simulate_burst`, one per (size, r0, AO, seed), ``frames`` frames (8 at 128^2,
12 at 256^2), one object (wide band), theta0 = 2", von Karman L0 = 20 m, 1e4 photons per pixel (Poisson)
where the simulator has those keywords (``inspect.signature``; otherwise 0.5 % Gaussian noise, and AO cases
are left out with a note). Bursts are cached as FITS in ``bursts/`` (``--bursts-dir`` to share them between
output folders, e.g. to compare solver versions on the same bursts), named after the case and a hash of
the simulator's keywords, so a changed simulation is a new file.

Methods (``--methods``, comma-separated; a method with overrides is ``NAME=key:value,key:value``):

* ``frame_average``: the mean of the frames (what every method starts from).
* ``torchmfbd``: patch-wise MOMFBD of torchmfbd (optional: ``pip install -e .[peers]``) with the settings
  of its example ``examples/spot_8542``: 64-px patches, 44 KL modes, 350 AdamW iterations, the object from
  the Wiener (tophat) filter, apodization 6 px, cosine blending; on the CPU with ``gpu: -1`` (its NVML
  probe is stubbed in this process only). Overrides: ``iterations``, ``patch``, ``stride``, ``apodization``,
  ``modes``, ``lr_modes``, ``lr_obj``, ``cutoff``, ``image_filter``, ``weight``.
* ``svrt`` (any name starting with ``svrt``): the public API with its defaults,
  ``SVMOMFBD(load_solver_engine(), SolverConfig(progress=False)).solve(burst)``
  (the default forward model of every entry point, :func:`svrt.runtime.forward_choice.default_forward_model`); overrides are
  SolverConfig fields, plus ``model`` and ``backend`` for the engine. Presets: ``svrt-invariant`` (grid:0,
  one wavefront per frame) and ``svrt-exact`` (the exact optics as forward model,
  ``load_solver_engine(None, backend="psf-interpolation")``).

Timing: the wall time of each restoration (engine loading, done once per method, is reported apart as
``setup_s``), every method in the same process with the same number of torch threads (``--threads``).

Files in OUT_DIR: ``peers.json`` (every figure, versions, machine, settings; rewritten atomically after
every (case, method), so a run can be stopped and resumed: finished pairs are skipped unless ``--force``),
``peers.png`` (NMSE per case and method), ``peers-picture.png`` (truth / average / torchmfbd / svrt for
one case), and the markdown results page (``--results-page``, default ``OUT_DIR/PEERS.md``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import click
import numpy as np

from svrt.errors import SvrtError

SCHEMA = "svrt-peers/1"
DEFAULT_METHODS = ("frame_average", "torchmfbd", "svrt", "svrt-invariant")
FRAMES_BY_SIZE = {128: 8, 256: 12}
PRESETS = {"svrt-invariant": {"grid": 0}, "svrt-exact": {"model": None, "backend": "psf-interpolation"},
           "svrt-emulator": {"model": "svce-c16"}, "svrt-adam": {"method": "adam", "grid": 8, "model": "svce-c16"}}
INSTALL_HINT = "pip install -e .[peers]"

#: torchmfbd's settings from its example examples/spot_8542 (kl.yaml and spot_8542_kl_patches.py)
TORCHMFBD_DEFAULTS = {
    "patch": 64,             # [pixel] patch side
    "stride": 50,            # [pixel] largest stride between patches (the example's); lowered to tile the field
    "apodization": 6,        # [pixel] apodization border of the patches, cut when they are blended
    "weight": 30,            # [pixel] cosine blending ramp of unpatchify
    "modes": 44,             # KL modes
    "iterations": 350,       # AdamW iterations
    "lr_obj": 0.02,
    "lr_modes": 0.08,
    "image_filter": "tophat",
    "cutoff": 0.75,          # tophat filter of the Wiener object, in units of D/lambda
    "annealing_end": 0.85,   # modes switched on linearly up to this fraction of the iterations
    "simultaneous_sequences": 90,
}


# ---------------------------------------------------------------------------------------------
# cases and bursts
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One simulated burst of the matrix."""

    size: int
    frames: int
    seed: int
    r0_cm: float                      # at 5000 A
    ao_modes: int = 0                 # modes corrected on axis by the AO (0: off)
    instrument: str = "crisp8542"
    theta0_arcsec: float = 2.0        # at 5000 A
    outer_scale_m: float = 20.0       # von Karman L0
    photons: float = 1e4              # per pixel (Poisson), where the simulator has photons
    noise: float = 0.005              # Gaussian sigma / mean where it has not
    n_objects: int = 1

    @property
    def id(self) -> str:
        return f"{self.instrument}-{self.size}x{self.frames}-r0_{self.r0_cm:g}cm-ao{self.ao_modes}-seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


def simulate_keywords(case: Case, signature_of: Callable | None = None) -> tuple[dict, list]:
    """The keywords for :func:`svrt.simulate.simulate_burst` that it has: ``(kwargs, notes)``.

    Full phase screens (``wavefront="screen"``), ``outer_scale_m``, ``ao_modes`` and ``photons`` are used
    when the simulator's signature has them; without ``photons`` the noise is ``case.noise`` (Gaussian),
    with it the noise is Poisson only (``noise=0``). Raises :class:`SvrtError` for an AO case the simulator
    cannot make."""
    if signature_of is None:
        from svrt.simulate import simulate_burst as signature_of
    params = inspect.signature(signature_of).parameters
    kw = {"instrument": case.instrument, "size": case.size, "n_frames": case.frames, "n_objects": case.n_objects,
          "seed": case.seed, "r0_cm": float(case.r0_cm), "theta0_arcsec": float(case.theta0_arcsec),
          "progress": False}
    notes = []
    if "wavefront" in params:
        kw["wavefront"] = "screen"
    else:
        notes.append("simulate_burst has no full phase screens (wavefront): KL modes on a coarse grid")
    if "outer_scale_m" in params:
        kw["outer_scale_m"] = float(case.outer_scale_m)
    else:
        notes.append("simulate_burst has no outer_scale_m: Kolmogorov (infinite L0)")
    if "ao_modes" in params:
        kw["ao_modes"] = int(case.ao_modes)
    elif case.ao_modes:
        raise SvrtError(f"Case {case.id} asks for AO ({case.ao_modes} modes) but simulate_burst has no ao_modes "
                        f"keyword in this install; use --ao 0.")
    if "photons" in params and case.photons:
        kw["photons"] = float(case.photons)
        kw["noise"] = 0.0
    else:
        kw["noise"] = float(case.noise)
        if case.photons:
            notes.append(f"simulate_burst has no photons: Gaussian noise {case.noise:g} of the mean instead")
    return kw, notes


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def burst_for(case: Case, bursts_dir: Path, progress: bool = False):
    """``(burst, info)``: the case's burst from the cache ``bursts_dir``, simulated and written there first
    when missing. ``info`` has ``path``, ``keywords``, ``notes``, ``hash`` and ``simulate_s`` (None when cached)."""
    from svrt.fileio import read_burst, write_burst
    from svrt.simulate import simulate_burst

    kw, notes = simulate_keywords(case, simulate_burst)
    key = _hash(kw)
    path = Path(bursts_dir) / f"{case.id}-{key}.fits"
    info = {"path": str(path), "keywords": {k: v for k, v in kw.items() if k != "progress"}, "notes": notes,
            "hash": key, "simulate_s": None}
    if path.exists():
        return read_burst(path), info
    t0 = time.perf_counter()
    burst = simulate_burst(**kw)
    info["simulate_s"] = round(time.perf_counter() - t0, 2)
    burst.header["PEERCASE"] = case.id[:68]
    burst.header["PEERHASH"] = key
    write_burst(path, burst, overwrite=True)
    return burst, info


def build_cases(sizes=(128,), seeds=(1, 2, 3), r0s=(7.0, 10.0, 15.0), ao=(0, 20), frames: dict | int | None = None,
                **common) -> list:
    """The matrix, in the order it is run: size, seed, r0, AO, so that a stopped run has covered every
    condition for the first seeds (``frames``: one number, or per size; default 8 at 128^2 and 12 at 256^2)."""
    out = []
    for size in sizes:
        if isinstance(frames, int):
            n = frames
        else:
            table = {**FRAMES_BY_SIZE, **(frames or {})}
            n = table.get(size, 8 if size <= 128 else 12)
        for seed in seeds:
            for r0 in r0s:
                for a in ao:
                    out.append(Case(size=int(size), frames=int(n), seed=int(seed), r0_cm=float(r0), ao_modes=int(a),
                                    **common))
    return out


# ---------------------------------------------------------------------------------------------
# methods: one small interface
# ---------------------------------------------------------------------------------------------

class Runner:
    """A restoration method. ``prepare()`` once (untimed: imports, engine loading), then
    ``restore(burst) -> objects [K, Y, X]`` (timed) for every burst; ``describe()`` is what is recorded
    (the method's kind and every setting); ``versions()`` the versions of the code that ran."""

    kind = "?"

    def __init__(self, name: str, options: dict | None = None):
        self.name = name
        self.options = dict(options or {})
        self.info: dict = {}

    def prepare(self) -> None:
        return None

    def restore(self, burst) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "options": self.options}

    def versions(self) -> dict:
        return {}


class FrameAverage(Runner):
    kind = "frame_average"

    def __init__(self, name: str, options: dict | None = None):
        super().__init__(name, options)
        if self.options:
            raise SvrtError(f"Method {name} (the frame average) takes no settings; got {sorted(self.options)}.")

    def restore(self, burst) -> np.ndarray:
        return np.asarray(burst.frames, dtype=np.float64).mean(axis=1).astype(np.float32)


def _svrt_version() -> dict:
    from svrt.benchmarks.machine import _version, git_info

    return {"svrt": _version("svrt"), **{f"svrt_{k}": v for k, v in git_info().items()}}


class SvrtRunner(Runner):
    """svrt's public API: ``SVMOMFBD(load_solver_engine(model, backend=...), SolverConfig(**overrides))``."""

    kind = "svrt"

    def __init__(self, name: str, options: dict | None = None, device: str = "cpu"):
        from svrt.runtime.solver import SolverConfig

        opts = {**PRESETS.get(name, {}), **(options or {})}
        super().__init__(name, opts)
        self.model = opts.pop("model", None)
        self.backend = opts.pop("backend", None)
        self.device = device
        known = set(SolverConfig.__dataclass_fields__)
        bad = sorted(set(opts) - known)
        if bad:
            raise SvrtError(f"Method {name}: {', '.join(bad)} is not a SolverConfig field (nor model, backend); "
                            f"known: {', '.join(sorted(known))}.")
        opts.setdefault("progress", False)
        self.config = SolverConfig(**opts)
        if self.model is None and self.backend is None:          # what every entry point loads by default
            from svrt.runtime.forward_choice import default_forward_model

            self.backend = default_forward_model(self.config.method)[0]
        self.engine = None

    def prepare(self) -> None:
        from svrt.runtime.solver import load_solver_engine

        if self.engine is None:
            self.engine = load_solver_engine(self.model, backend=self.backend, device=self.device)

    def restore(self, burst) -> np.ndarray:
        from svrt.runtime.solver import SVMOMFBD

        self.prepare()
        result = SVMOMFBD(self.engine, self.config).solve(burst)
        self.info = {"iterations": int(len(result.loss["total"])), "time_per_iteration_s": result.time_per_iteration,
                     "stop": str(result.header.get("STOP", ""))}
        return np.asarray(result.objects, dtype=np.float32)

    def describe(self) -> dict:
        ident = {}
        if self.engine is not None:
            i = self.engine.identity
            ident = {"model": i.model, "backend": i.backend, "device": i.device, "precision": i.precision,
                     "model_hash": i.model_hash}
        return {"kind": self.kind, "options": {"model": self.model, "backend": self.backend, **{
            k: v for k, v in self.options.items() if k not in ("model", "backend")}},
                "solver_config": self.config.to_dict(), "engine": ident}

    def versions(self) -> dict:
        return _svrt_version()


def torchmfbd_available() -> tuple[bool, str]:
    """``(True, "")`` when torchmfbd can be imported, else ``(False, the reason)``."""
    import importlib.util

    if importlib.util.find_spec("torchmfbd") is None:
        return False, f"torchmfbd is not installed: {INSTALL_HINT}"
    return True, ""


@contextlib.contextmanager
def _quiet_torchmfbd(td):
    """In this process only, for the duration of one restoration: torchmfbd's NVML probe (nvitop's
    ``Device.all``, which warns and may abort without an NVIDIA driver) answers "no GPU", its progress
    bars are off and its INFO logging is muted."""
    import functools
    import logging

    from tqdm.auto import tqdm

    class _NoGPU:
        @staticmethod
        def all():
            return []

    import torchmfbd.kl_modes as kl

    saved = [(td, "Device", td.Device), (td, "tqdm", td.tqdm), (kl, "tqdm", kl.tqdm)]
    td.Device = _NoGPU
    td.tqdm = kl.tqdm = functools.partial(tqdm, disable=True)
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        logging.disable(previous)


def patch_grid(size: int, patch: int, max_stride: int) -> tuple[int, int]:
    """``(patch, stride)`` such that patches of ``patch`` pixels, ``stride`` apart, tile ``size`` pixels
    exactly (first patch at 0, last ending at ``size``), with the largest stride <= ``max_stride``."""
    patch = min(patch, size)
    if patch == size:
        return patch, patch
    span = size - patch
    n = math.ceil(span / max_stride)
    while span % n:
        n += 1
    return patch, span // n


class TorchMFBDRunner(Runner):
    """torchmfbd's patch-wise (spatially invariant per patch) MOMFBD, as in its example spot_8542."""

    kind = "torchmfbd"

    def __init__(self, name: str, options: dict | None = None, device: str = "cpu"):
        bad = sorted(set(options or {}) - set(TORCHMFBD_DEFAULTS))
        if bad:
            raise SvrtError(f"Method {name}: {', '.join(bad)} is not a torchmfbd setting; known: "
                            f"{', '.join(sorted(TORCHMFBD_DEFAULTS))}.")
        super().__init__(name, {**TORCHMFBD_DEFAULTS, **(options or {})})
        self.device = device

    def prepare(self) -> None:
        ok, why = torchmfbd_available()
        if not ok:
            raise SvrtError(why)
        import torchmfbd  # noqa: F401

    def config(self, instruments) -> dict:
        """torchmfbd's configuration (the example's kl.yaml) for objects seen by ``instruments``."""
        o = self.options
        inst = instruments[0]
        gpu = int(str(self.device).split(":")[1]) if str(self.device).startswith("cuda:") else (
            0 if str(self.device) == "cuda" else -1)
        cfg = {
            "telescope": {"diameter": float(inst.diameter_cm), "central_obscuration": float(inst.obscuration_cm)},
            "images": {"n_pixel": int(o["patch"]), "pix_size": float(inst.pixel_arcsec),
                       "apodization_border": int(o["apodization"]), "remove_gradient_apodization": False},
            "optimization": {"gpu": gpu, "transform": "softplus", "softplus_scale": 1.0, "lr_obj": float(o["lr_obj"]),
                             "lr_modes": float(o["lr_modes"]), "lr_prior": 0.1, "show_object_info": False,
                             "filter_loss": "wiener"},
            "regularization": {"iuwt1": {"variable": "object", "lambda": 0.0, "nbands": 5}},
            "psf": {"model": "kl", "nmax_modes": int(o["modes"]), "orthogonalize": True},
            "initialization": {"object": "contrast", "modes_std": 0.0},
            "annealing": {"type": "linear", "start_pct": 0.0, "end_pct": float(o["annealing_end"])},
        }
        for k, i in enumerate(instruments):
            cfg[f"object{k + 1}"] = {"wavelength": float(i.wavelength_angstrom), "image_filter": str(o["image_filter"]),
                                     "cutoff": [float(o["cutoff"]), float(o["cutoff"])]}
        return cfg

    def restore(self, burst) -> np.ndarray:
        """Frames normalised by their means (as the example does), cut into patches that tile the field,
        restored, blended back (the outer ``apodization`` pixels of the field, which no patch covers after
        its apodized border is cut, keep the frame average) and multiplied back by the mean."""
        import torch
        import yaml

        self.prepare()
        import torchmfbd
        import torchmfbd.deconvolution as td

        from svrt.instruments import get_instrument

        o = self.options
        insts = [get_instrument(label) for label in burst.instruments]
        if len({(i.pixel_arcsec, i.diameter_cm, i.obscuration_cm) for i in insts}) > 1:
            raise SvrtError("The torchmfbd peer needs every object on the same telescope and pixel scale.")
        frames = np.asarray(burst.frames, dtype=np.float32)          # [K, L, Y, X]
        k, n_frames, y, x = frames.shape
        if y != x:
            raise SvrtError(f"The torchmfbd peer needs square frames; got {y}x{x}.")
        patch, stride = patch_grid(y, int(o["patch"]), int(o["stride"]))
        apod = int(o["apodization"])
        cfg = self.config(insts)
        cfg["images"]["n_pixel"] = patch
        out = frames.mean(axis=1).astype(np.float64)                 # border pixels keep the average
        with tempfile.TemporaryDirectory(prefix="svrt-torchmfbd-") as tmp, _quiet_torchmfbd(td):
            path = Path(tmp) / "kl.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            dec = torchmfbd.Deconvolution(str(path))
            patchers, means = [], []
            for kk in range(k):
                m = frames[kk].mean(axis=(-1, -2), keepdims=True)
                means.append(float(frames[kk].mean()))
                data = torch.from_numpy(frames[kk] / m)[None]        # [1, L, Y, X]
                pt = torchmfbd.Patchify4D()
                patches = pt.patchify(data, patch_size=patch, stride_size=stride, flatten_sequences=True)
                dec.add_frames(patches, id_object=kk, id_diversity=0, diversity=0.0)
                patchers.append(pt)
            dec.deconvolve(infer_object=False, optimizer="adamw", simultaneous_sequences=int(o["simultaneous_sequences"]),
                           n_iterations=int(o["iterations"]))
            for kk in range(k):
                obj = patchers[kk].unpatchify(dec.obj[kk], apodization=apod, weight_type="cosine",
                                              weight_params=int(o["weight"]))
                obj = obj.detach().cpu().numpy().reshape(obj.shape[-2:])
                out[kk, apod:apod + obj.shape[0], apod:apod + obj.shape[1]] = obj * means[kk]
        self.info = {"patch": patch, "stride": stride, "patches": int(patchers[0].n_patches),
                     "covered_px": [apod, apod + obj.shape[0]]}
        return out.astype(np.float32)

    def versions(self) -> dict:
        from svrt.benchmarks.machine import _version

        return {"torchmfbd": _version("torchmfbd")}


def _value(text: str):
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def split_methods(texts) -> list:
    """Method specs from comma-separated text(s): ``"frame_average,svrt-fast=iterations:5,grid:0,torchmfbd"``
    gives ``["frame_average", "svrt-fast=iterations:5,grid:0", "torchmfbd"]`` (a ``key:value`` without
    ``=`` belongs to the method before it)."""
    if isinstance(texts, str):
        texts = [texts]
    specs: list = []
    for text in texts:
        started = False
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part and "=" not in part and started:
                specs[-1] += "," + part
            else:
                specs.append(part)
                started = True
    return specs


def parse_method(spec: str, device: str = "cpu") -> Runner:
    """A :class:`Runner` from ``NAME`` or ``NAME=key:value,key:value`` (see the module's docstring)."""
    name, _, rest = spec.partition("=")
    name = name.strip()
    if not name:
        raise SvrtError(f"Method '{spec}' has no name; write NAME or NAME=key:value,key:value.")
    options = {}
    for item in (p.strip() for p in rest.split(",") if p.strip()):
        key, sep, val = item.partition(":")
        if not sep or not key.strip():
            raise SvrtError(f"Method '{spec}': '{item}' is not key:value.")
        options[key.strip()] = _value(val)
    low = name.lower()
    if low in ("frame_average", "average"):
        return FrameAverage(name, options)
    if low.startswith("torchmfbd"):
        return TorchMFBDRunner(name, options, device=device)
    if low.startswith("svrt"):
        return SvrtRunner(name, options, device=device)
    raise SvrtError(f"Unknown method '{name}'; names start with frame_average, torchmfbd or svrt.")


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load_results(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        return {"schema": SCHEMA, "created": _now(), "cases": {}, "methods": {}, "runs": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SvrtError(f"Cannot read the results file {path}: {exc}; move it away or use another --out-dir.") from None
    if data.get("schema") != SCHEMA:
        raise SvrtError(f"The results file {path} is not a {SCHEMA} file (schema {data.get('schema')!r}).")
    data.setdefault("cases", {})
    data.setdefault("methods", {})
    data.setdefault("runs", [])
    for case in data["cases"].values():
        for record in case.get("results", {}).values():
            _rename_score_keys(record.get("score") or {})
    return data


def _rename_score_keys(score: dict) -> None:
    """Files written before the two NMSEs had distinct names call the variance-normalised one ``nmse``."""
    from svrt.metrics import LEGACY_SCORE_KEYS

    for old, new in LEGACY_SCORE_KEYS.items():
        if old in score:
            score.setdefault(new, score.pop(old))


def save_results(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a crash leaves the previous file)."""
    from svrt.fileio import atomic_write

    data["updated"] = _now()
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, default=_json_default))


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def is_finished(data: dict, case_id: str, method: str, description: dict, burst_hash: str) -> bool:
    """Whether (case, method) has a result of this method's settings on this burst."""
    rec = data.get("cases", {}).get(case_id, {}).get("results", {}).get(method)
    if not rec or rec.get("status") != "ok":
        return False
    if rec.get("burst_hash") != burst_hash:
        return False
    return _settings_key(rec.get("method", {})) == _settings_key(description)


def _settings_key(description: dict) -> str:
    """What identifies a method's settings (the engine's identity is known only after loading)."""
    d = {k: v for k, v in description.items() if k != "engine"}
    return _hash(d)


def score_objects(objects, truth, instruments, destretch: bool = True) -> list:
    """:func:`score_restoration` of each object ``[K, Y, X]`` against the truth ``[K, Y, X]`` (with
    ``destretch``, also the NMSE after a smooth shift field, reported beside the headline)."""
    from svrt.instruments import get_instrument
    from svrt.metrics import score_restoration

    return [score_restoration(objects[k], truth[k], get_instrument(instruments[k]).cutoff_cycles_per_pixel,
                              destretch=destretch) for k in range(len(truth))]


@dataclass
class PeerSettings:
    cases: list
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))
    threads: int | None = 2
    device: str = "cpu"
    force: bool = False
    picture_case: str | None = None


def run_peers(out_dir, settings: PeerSettings, *, bursts_dir=None, results_page=None, command: str = "",
              progress: bool = True) -> dict:
    """Restore and score every (case, method); returns the results dict (also in ``OUT_DIR/peers.json``).

    peers.json is rewritten after every (case, method), the figures and the results page after every case,
    so a stopped run leaves a consistent partial report. One run per OUT_DIR at a time."""
    import torch
    from tqdm.auto import tqdm

    from svrt.benchmarks.machine import git_info, machine_info, versions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bursts = Path(bursts_dir) if bursts_dir else out / "bursts"
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    runners = [parse_method(s, settings.device) for s in settings.methods]
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise SvrtError(f"Method names must differ; got {', '.join(names)}.")
    json_path = out / "peers.json"
    data = load_results(json_path)
    run_versions = versions()
    for r in runners:
        with contextlib.suppress(Exception):
            run_versions.update({k: v for k, v in r.versions().items() if v is not None})
    data.update({"machine": machine_info(settings.device), "versions": run_versions, "git": git_info(),
                 "command": command, "torch_threads": torch.get_num_threads(),
                 "torch_interop_threads": torch.get_num_interop_threads(),
                 "settings": {"cases": [c.to_dict() for c in settings.cases], "methods": list(settings.methods),
                              "threads": settings.threads, "device": settings.device,
                              "bursts_dir": str(bursts)}})
    data["runs"].append({"started": _now(), "command": command, "git": data["git"]})
    save_results(json_path, data)

    prepared: dict = {}
    written = ran = False
    bar = tqdm(settings.cases, desc="peers", unit="case", disable=not progress, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.id)
        entry = data["cases"].setdefault(case.id, {"params": case.to_dict(), "results": {}})
        try:
            burst, info = burst_for(case, bursts, progress=False)
        except Exception as exc:  # a case the simulator cannot make is skipped, with the reason
            why = str(exc) if isinstance(exc, SvrtError) else f"simulation failed ({type(exc).__name__}: {exc})"
            entry.update({"params": case.to_dict(), "skipped": why})
            save_results(json_path, data)
            bar.write(f"{case.id}: skipped ({why})")
            continue
        entry.pop("skipped", None)
        entry.update({"params": case.to_dict(), "burst": _relative(info["path"], out), "burst_hash": info["hash"],
                      "simulate_keywords": info["keywords"], "simulate_notes": info["notes"]})
        if info["simulate_s"] is not None:
            entry["simulate_s"] = info["simulate_s"]
        ran = False
        for runner in runners:
            desc = runner.describe()
            if not settings.force and is_finished(data, case.id, runner.name, desc, info["hash"]):
                continue
            ran = True
            bar.set_postfix_str(f"{case.id} {runner.name}")
            rec = {"status": "failed", "burst_hash": info["hash"], "method": desc, "finished": None}
            try:
                if runner.name not in prepared:
                    t0 = time.perf_counter()
                    runner.prepare()
                    prepared[runner.name] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                objects = runner.restore(burst)
                wall = time.perf_counter() - t0
                scores = score_objects(objects, burst.truth, burst.instruments)
                rec.update({"status": "ok", "wall_s": round(wall, 3), "setup_s": prepared[runner.name],
                            "score": scores[0], "scores": scores, "info": dict(runner.info),
                            "method": runner.describe(), "versions": runner.versions(),
                            "torch_threads": torch.get_num_threads()})
                (out / "restorations").mkdir(exist_ok=True)
                np.save(out / "restorations" / f"{case.id}--{runner.name}.npy", objects[0])
                bar.write(f"{case.id} {runner.name:16s} NMSE {scores[0]['nmse_variance']:.4f}  {wall:7.1f} s")
            except SvrtError as exc:
                rec["error"] = str(exc)
                bar.write(f"{case.id} {runner.name}: {exc}")
            except Exception as exc:  # a peer that crashes must not stop the run; its traceback is kept
                rec["error"] = f"{type(exc).__name__}: {exc}"
                rec["traceback"] = traceback.format_exc(limit=8)
                bar.write(f"{case.id} {runner.name}: failed ({type(exc).__name__}: {exc})")
            rec["finished"] = _now()
            entry["results"][runner.name] = rec
            save_results(json_path, data)
        if ran and case is not settings.cases[-1]:
            with contextlib.suppress(Exception):  # a figure must not stop the run; the final write reports errors
                write_outputs(out, data, results_page=results_page, picture_case=settings.picture_case)
                written = True
    bar.close()
    data["runs"][-1]["finished"] = _now()
    save_results(json_path, data)
    if ran or not written:
        write_outputs(out, data, results_page=results_page, picture_case=settings.picture_case)
    return data


def _relative(path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# summaries, figures and the results page
# ---------------------------------------------------------------------------------------------

def _ok(data: dict, case_id: str, method: str) -> dict | None:
    rec = data["cases"].get(case_id, {}).get("results", {}).get(method)
    return rec if rec and rec.get("status") == "ok" else None


def method_names(data: dict) -> list:
    """Methods present in the results, in the order of the last run's settings, then the others."""
    order = [parse_name(s) for s in data.get("settings", {}).get("methods", [])]
    seen = []
    for c in data["cases"].values():
        for m in c.get("results", {}):
            if m not in seen:
                seen.append(m)
    return [m for m in order if m in seen] + [m for m in seen if m not in order]


def parse_name(spec: str) -> str:
    return spec.partition("=")[0].strip()


def summarize(data: dict) -> dict:
    """Per method: cases done, median / mean NMSE, median band power ratios and contrast, median wall time,
    and wins / losses / ties against torchmfbd (NMSE on the cases both finished; a tie is within 1 %)."""
    methods = method_names(data)
    cases = list(data["cases"])
    ref = next((m for m in methods if m.lower() == "torchmfbd"), None)
    out = {}
    for m in methods:
        recs = [r for c in cases if (r := _ok(data, c, m))]
        if not recs:
            out[m] = {"cases": 0}
            continue
        nm = [r["score"]["nmse_variance"] for r in recs]
        nd = [r["score"]["nmse_variance_destretched"] for r in recs if "nmse_variance_destretched" in r["score"]]
        s = {"cases": len(recs), "nmse_median": statistics.median(nm), "nmse_mean": statistics.fmean(nm),
             "nmse_min": min(nm), "nmse_max": max(nm),
             "nmse_destretched_median": statistics.median(nd) if nd else None,
             "wall_s_median": statistics.median(r["wall_s"] for r in recs),
             "contrast_median": statistics.median(r["score"]["contrast"] for r in recs),
             "power_ratio_median": {b: statistics.median(r["score"]["power_ratio"][b] for r in recs)
                                    for b in recs[0]["score"]["power_ratio"]}}
        if ref and m != ref:
            w = l = t = 0
            for c in cases:
                a, b = _ok(data, c, m), _ok(data, c, ref)
                if a and b:
                    x, y = a["score"]["nmse_variance"], b["score"]["nmse_variance"]
                    if abs(x - y) <= 0.01 * max(x, y):
                        t += 1
                    elif x < y:
                        w += 1
                    else:
                        l += 1
            s["vs_torchmfbd"] = {"wins": w, "losses": l, "ties": t}
        out[m] = s
    truth_c = [r["score"]["contrast_truth"] for c in cases for m in methods if (r := _ok(data, c, m))]
    out["_truth"] = {"contrast_median": statistics.median(truth_c) if truth_c else float("nan")}
    return out


def _case_label(params: dict) -> str:
    return f"{params['size']} r0={params['r0_cm']:g} AO{params['ao_modes']} s{params['seed']}"


def plot_nmse(data: dict, path: Path) -> None:
    """NMSE per case (x) and method (markers), log scale; a second panel with the 0.3-0.6 band power ratio."""
    from svrt.pictures import save_png, subplots

    methods = method_names(data)
    cases = [c for c in data["cases"] if any(_ok(data, c, m) for m in methods)]
    if not cases:
        return
    fig, axes = subplots(2, 1, figsize=(max(7.0, 0.45 * len(cases) + 3), 7), sharex=True)
    markers = "osD^vP*X"
    xs = np.arange(len(cases))
    for i, m in enumerate(methods):
        vals = [(_ok(data, c, m) or {}).get("score") for c in cases]
        ys = [v["nmse_variance"] if v else np.nan for v in vals]
        hp = [v["power_ratio"].get("0.3-0.6", np.nan) if v else np.nan for v in vals]
        off = (i - (len(methods) - 1) / 2) * 0.08
        axes[0].plot(xs + off, ys, markers[i % len(markers)], label=m, alpha=0.85)
        axes[1].plot(xs + off, hp, markers[i % len(markers)], label=m, alpha=0.85)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("NMSE (registered, 0.9 D/$\\lambda$)")
    axes[0].grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, ncol=min(4, len(methods)))
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("power ratio r/t, 0.3-0.6 D/$\\lambda$")
    axes[1].grid(alpha=0.3, which="both")
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels([_case_label(data["cases"][c]["params"]) for c in cases], rotation=70, fontsize=7)
    axes[0].set_title("svrt peers: same bursts, same score, same run")
    fig.tight_layout()
    save_png(fig, path)


def _picture_case(data: dict, wanted: str | None) -> str | None:
    if wanted and wanted in data["cases"]:
        return wanted
    methods = method_names(data)
    best, best_n = None, 0
    for c in data["cases"]:
        n = sum(1 for m in methods if _ok(data, c, m))
        if n > best_n:
            best, best_n = c, n
    return best


def plot_picture(out: Path, data: dict, path: Path, case_id: str | None = None) -> str | None:
    """Truth / frame average / torchmfbd / svrt (those present) for one case, registered to the truth by the
    score's shift and shown on the truth's grey scale. Returns the case shown."""
    from matplotlib.patches import Rectangle

    from svrt.fileio import read_burst
    from svrt.pictures import save_png, subplots
    from svrt.registration import apply_shift_field

    case_id = _picture_case(data, case_id)
    if case_id is None:
        return None
    entry = data["cases"][case_id]
    try:
        burst = read_burst(out / entry["burst"])
    except Exception:
        return None
    methods = method_names(data)
    pick = []
    for want in ("frame_average", "torchmfbd", "svrt"):
        m = next((m for m in methods if m.lower() == want and _ok(data, case_id, m)), None)
        if m is None and want == "svrt":
            m = next((m for m in methods if m.lower().startswith("svrt") and _ok(data, case_id, m)), None)
        if m:
            pick.append(m)
    truth = burst.truth[0].astype(np.float64)
    lo, hi = np.percentile(truth, [0.5, 99.5])
    panels = [("truth", truth, None)]
    for m in pick:
        f = out / "restorations" / f"{case_id}--{m}.npy"
        if not f.exists():
            continue
        img = np.load(f).astype(np.float64)
        sc = _ok(data, case_id, m)["score"]
        dy, dx = sc["shift_px"]
        img = apply_shift_field(img, np.full(img.shape, dy), np.full(img.shape, dx)) * sc["scale"]
        panels.append((m, img, sc["nmse_variance"]))
    b = int(round(truth.shape[0] / 8))
    fig, axes = subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (name, img, err) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.add_patch(Rectangle((b - 0.5, b - 0.5), img.shape[1] - 2 * b, img.shape[0] - 2 * b, fill=False,
                                   ec="y", lw=0.6, ls="--"))
        ax.set_title(name if err is None else f"{name}\nNMSE {err:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{case_id} (dashed: the scored region)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    save_png(fig, path)
    return case_id


def _f(v, fmt="{:.4f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v)


def markdown_page(data: dict, page_dir: Path | None = None, out_dir: Path | None = None,
                  picture_case: str | None = None) -> str:
    """The results page, generated from the results dict alone."""
    methods = method_names(data)
    cases = list(data["cases"])
    lines = (_page_intro(data, cases, methods) + _page_summary(data, methods) + _page_nmse(data, cases, methods)
             + _page_walls(data, cases, methods) + _page_failures(data, cases))
    if page_dir is not None and out_dir is not None:
        lines += _page_figures(page_dir, out_dir)
    return "\n".join(lines + _page_methods(data, cases)) + "\n"


def _page_intro(data: dict, cases: list, methods: list) -> list:
    """What was run, how it is scored, on which machine."""
    m = data.get("machine", {})
    v = data.get("versions", {})
    lines = ["# svrt against its peers", "",
             "<!-- generated by python -m svrt.benchmarks.peers from peers.json: do not edit by hand -->", "",
             "Every method restores the same simulated anisoplanatic bursts (CRISP 8542, `svrt.simulate.simulate_burst`) "
             "on the same machine (one run, or resumed runs listed below), and every restoration gets the one score of DESIGN.md "
             "(`svrt.metrics.score_restoration`): registered to the truth (global sub-pixel shift), scaled to its "
             "mean, both low-passed at 0.9 D/λ (erf filter, mirror-padded), a border of 1/8 of the side dropped, "
             "NMSE = Σ(r − t)² / Σ(t − ⟨t⟩)². Lower is better; 0 is perfect, and about 1 is as bad as a flat image. "
             "Power ratios are the azimuthal power of r over t in bands of the cutoff: 1 is the truth's, < 1 blurred, > 1 "
             "over-sharpened or noisy.", ""]
    lines += ["Command (the latest run):", "", "```", data.get("command", ""), "```", ""]
    earlier = [r.get("command") for r in data.get("runs", [])[:-1] if r.get("command")]
    if earlier:
        lines += ["Results of earlier runs into the same folder are kept (finished (case, method) pairs are not rerun); "
                  "their commands:", ""] + [f"- `{c}`" for c in dict.fromkeys(earlier)] + [""]
    threads = sorted({rec.get("torch_threads") for c in cases for rec in data["cases"][c].get("results", {}).values()
                      if rec.get("status") == "ok" and rec.get("torch_threads")})
    thread_text = (f"{threads[0]} intra-op threads for every method" if len(threads) == 1 else
                   f"intra-op threads {', '.join(map(str, threads))} (per result in peers.json: compare wall times "
                   f"only between results with the same count)" if threads else
                   f"{data.get('torch_threads', '?')} intra-op threads")
    lines += [f"Machine: {m.get('cpu', '?')}, {m.get('cpus_usable', '?')} usable cores, device {m.get('device', 'cpu')}; "
              f"torch {v.get('torch', '?')} with {thread_text}; "
              f"svrt {v.get('svrt', '?')} (commit {str(data.get('git', {}).get('commit', '?'))[:10]}"
              f"{', with local changes' if data.get('git', {}).get('dirty') else ''}); torchmfbd {v.get('torchmfbd', 'not installed')}. "
              f"Updated {data.get('updated', '?')}.", ""]
    done = sum(1 for c in cases if any(_ok(data, c, mm) for mm in methods))
    lines += [f"Cases with results: {done} of {len(cases)}.", ""]
    return lines


def _page_summary(data: dict, methods: list) -> list:
    """One row per method: medians, ranges, wins against torchmfbd."""
    summary = summarize(data)
    lines = ["## Summary", "",
              "| method | cases | median NMSE | mean NMSE | min – max | median NMSE destretched | "
              "median power ratio 0.05–0.3 / 0.3–0.6 / 0.6–0.9 | median contrast | median wall [s] | "
              "vs torchmfbd (win/loss/tie) |",
              "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for mm in methods:
        s = summary[mm]
        if not s.get("cases"):
            lines.append(f"| {mm} | 0 | - | - | - | - | - | - | - | - |")
            continue
        pr = " / ".join(_f(x, "{:.2f}") for x in s["power_ratio_median"].values())
        vs = s.get("vs_torchmfbd")
        vs_txt = f"{vs['wins']}/{vs['losses']}/{vs['ties']}" if vs else "-"
        lines.append(f"| {mm} | {s['cases']} | {_f(s['nmse_median'])} | {_f(s['nmse_mean'])} | "
                     f"{_f(s['nmse_min'])} – {_f(s['nmse_max'])} | {_f(s.get('nmse_destretched_median'))} | {pr} | {_f(s['contrast_median'])} | "
                     f"{_f(s['wall_s_median'], '{:.1f}')} | {vs_txt} |")
    lines += ["", f"Truth's median RMS contrast (after the same low-pass and border): "
                  f"{_f(summary['_truth']['contrast_median'])}. Wins, losses and ties count the cases where a method's "
                  "NMSE is lower than, higher than or within 1 % of torchmfbd's. 'Destretched' is the NMSE after a smooth "
                  "shift field (32-px blocks) on top of the global shift: what is left once local warps are forgiven.", ""]
    return lines


def _page_nmse(data: dict, cases: list, methods: list) -> list:
    """The NMSE of every case and method, the best in bold."""
    lines = ["## Per case: NMSE", "", "| case | r0 [cm] | AO | seed | " + " | ".join(methods) + " |",
              "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in methods) + " |"]
    for c in cases:
        p = data["cases"][c]["params"]
        vals = []
        best = min((r["score"]["nmse_variance"] for mm in methods if (r := _ok(data, c, mm))), default=None)
        for mm in methods:
            r = _ok(data, c, mm)
            if r:
                t = _f(r["score"]["nmse_variance"])
                vals.append(f"**{t}**" if best is not None and r["score"]["nmse_variance"] == best else t)
            else:
                rec = data["cases"][c].get("results", {}).get(mm)
                vals.append("failed" if rec else ("skipped" if data["cases"][c].get("skipped") else "-"))
        lines.append(f"| {c} | {p['r0_cm']:g} | {p['ao_modes']} | {p['seed']} | " + " | ".join(vals) + " |")
    lines += ["", "Bold: the best of the row.", ""]
    return lines


def _page_walls(data: dict, cases: list, methods: list) -> list:
    """The wall time of every case and method."""
    lines = ["## Per case: wall time [s]", "", "| case | " + " | ".join(methods) + " |",
              "| --- | " + " | ".join("---:" for _ in methods) + " |"]
    for c in cases:
        vals = [_f((_ok(data, c, mm) or {}).get("wall_s"), "{:.1f}") for mm in methods]
        lines.append(f"| {c} | " + " | ".join(vals) + " |")
    lines += ["", "Wall time of the restoration alone (each method's one-off setup, e.g. loading the emulator, is "
                  "`setup_s` in peers.json); the methods of one run share one process and its torch threads (each result "
                  "records its own count). The machine may be shared: compare times within a case.", ""]
    return lines


def _page_failures(data: dict, cases: list) -> list:
    """The failed (case, method) pairs and the skipped cases, if any."""
    failures = [(c, mm, rec.get("error", "")) for c in cases for mm, rec in data["cases"][c].get("results", {}).items()
                if rec.get("status") != "ok"]
    skipped = [(c, data["cases"][c]["skipped"]) for c in cases if data["cases"][c].get("skipped")]
    if not (failures or skipped):
        return []
    return (["## Failures and skipped cases", ""] + [f"- {c} / {mm}: {err}" for c, mm, err in failures]
            + [f"- {c}: {why}" for c, why in skipped] + [""])


def _page_figures(page_dir: Path, out_dir: Path) -> list:
    """Links to the figures, relative to the page."""
    rel = _relative(Path(out_dir), Path(page_dir))
    lines = ["## Figures", "", f"![NMSE per case and method]({rel}/peers.png)", ""]
    if (Path(out_dir) / "peers-picture.png").exists():
        lines += [f"![truth, frame average, torchmfbd and svrt for one case]({rel}/peers-picture.png)", ""]
    return lines


def _page_methods(data: dict, cases: list) -> list:
    """Each method's settings, the bursts, and torchmfbd's licence and settings."""
    lines = ["## Methods", ""]
    seen = set()
    for c in cases:
        for mm, rec in data["cases"][c].get("results", {}).items():
            if mm in seen or rec.get("status") != "ok":
                continue
            seen.add(mm)
            d = rec.get("method", {})
            opts = ", ".join(f"{k}={val}" for k, val in (d.get("options") or {}).items())
            extra = ""
            if d.get("engine"):
                e = d["engine"]
                extra = f"; engine {e.get('model')} ({e.get('backend')}, {e.get('device')}, {e.get('precision')})"
            lines.append(f"- **{mm}** ({d.get('kind')}): {opts or 'defaults'}{extra}.")
    notes = sorted({n for c in cases for n in data["cases"][c].get("simulate_notes", [])})
    lines += ["", "## Bursts", "",
              "Simulator keywords of each case are in peers.json (`simulate_keywords`); the bursts are cached as FITS "
              "(`burst`), so a later run, or another solver version, restores the very same frames."]
    if notes:
        lines += ["", "Notes from the simulator in this install:", ""] + [f"- {n}" for n in notes]
    lines += ["", "## torchmfbd", "",
              "torchmfbd (A. Asensio Ramos) is an optional dependency (`pip install -e .[peers]`), imported only by this "
              "harness, never vendored. Its LICENSE file is MIT, while its package metadata carries the "
              "'GNU General Public License v3 (GPLv3)' classifier; svrt does not ship or link it, so either way nothing of "
              "it enters svrt's BSD-3-Clause distribution. It runs here on the CPU (`gpu: -1`); its NVML probe "
              "(nvitop) is stubbed and its logging muted inside the harness process only. Settings are those of its "
              "example `examples/spot_8542` (64-px patches, 44 KL modes, 350 AdamW iterations, Wiener object with a "
              "tophat at 0.75 D/λ); the stride is lowered from 50 px so that the patches tile the field exactly, and the "
              "outer 6 px that no apodized patch covers keep the frame average (they lie in the dropped border).", ""]
    return lines


def write_outputs(out: Path, data: dict, results_page=None, picture_case: str | None = None) -> None:
    """peers.png, peers-picture.png and the markdown page, from the results dict."""
    from svrt.fileio import atomic_write

    out = Path(out)
    plot_nmse(data, out / "peers.png")
    plot_picture(out, data, out / "peers-picture.png", picture_case)
    page = Path(results_page) if results_page else out / "PEERS.md"
    text = markdown_page(data, page.parent, out, picture_case)
    with atomic_write(page) as tmp:
        Path(tmp).write_text(text)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def _list(text, cast, option: str) -> tuple:
    try:
        vals = tuple(cast(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SvrtError(f"{option} takes a comma-separated list of numbers; got '{text}'.") from None
    if not vals:
        raise SvrtError(f"{option} needs at least one value; got '{text}'.")
    return vals


def _frames(text: str | None):
    if text is None:
        return None
    if ":" not in text:
        return int(text)
    out = {}
    for part in text.split(","):
        try:
            s, n = part.split(":")
            out[int(s)] = int(n)
        except ValueError:
            raise SvrtError(f"--frames takes N or SIZE:N,SIZE:N (e.g. 128:8,256:12); got '{text}'.") from None
    return out


@click.command("peers")
@click.option("--out-dir", "out_dir", type=click.Path(file_okay=False), default="peers-results", show_default=True,
              help="Where peers.json, the figures, bursts/ and restorations/ go.")
@click.option("--bursts-dir", "bursts_dir", type=click.Path(file_okay=False), default=None,
              help="Cache of simulated bursts (default OUT_DIR/bursts); share it to compare runs on the same bursts.")
@click.option("--methods", "methods", multiple=True, metavar="LIST",
              help="Comma-separated methods, NAME or NAME=key:value,key:value "
                   "(default frame_average,torchmfbd,svrt,svrt-invariant).")
@click.option("--sizes", default="128", show_default=True, help="Burst sizes (pixels), e.g. 128,256.")
@click.option("--frames", default=None, metavar="N|SIZE:N,...", help="Frames per burst (default 8 at 128, 12 at 256).")
@click.option("--seeds", default="1,2,3", show_default=True)
@click.option("--r0", "r0", default="7,10,15", show_default=True, help="Fried radii in cm at 5000 A.")
@click.option("--ao", default="0,20", show_default=True, help="AO modes corrected on axis; 0 = no AO.")
@click.option("--theta0", type=float, default=2.0, show_default=True, help="Isoplanatic angle [arcsec] at 5000 A.")
@click.option("--outer-scale", "outer_scale", type=float, default=20.0, show_default=True, help="von Karman L0 [m].")
@click.option("--photons", type=float, default=1e4, show_default=True, help="Photons per pixel (Poisson), where the simulator has it.")
@click.option("--noise", type=float, default=0.005, show_default=True, help="Gaussian noise / mean where it has no photons.")
@click.option("--instrument", default="crisp8542", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="torch intra-op threads for every method.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:i] for svrt and torchmfbd.")
@click.option("--force", is_flag=True, help="Rerun finished (case, method) pairs.")
@click.option("--results-page", "results_page", type=click.Path(dir_okay=False), default=None,
              help="Markdown results page (default OUT_DIR/PEERS.md), e.g. benchmarks/PEERS-MATRIX.md.")
@click.option("--picture-case", "picture_case", default=None, help="Case id shown in peers-picture.png.")
@click.option("--report-only", "report_only", is_flag=True, help="Only regenerate the figures and the page from peers.json.")
@click.option("--progress/--no-progress", default=True, help="Progress bar over the cases on stderr.")
def peers_command(out_dir, bursts_dir, methods, sizes, frames, seeds, r0, ao, theta0, outer_scale, photons, noise,
                  instrument, threads, device, force, results_page, picture_case, report_only, progress):
    """Restore the same simulated anisoplanatic bursts with svrt, torchmfbd's patch-wise MOMFBD and the frame
    average, score them identically (DESIGN.md, "Scoring a restoration") and write peers.json, peers.png,
    peers-picture.png and a markdown results page. Resumable: finished (case, method) pairs are skipped.

    \b
    Example (the 128^2 matrix, ~30-60 min on 2 cores):
      python -m svrt.benchmarks.peers --out-dir benchmarks/peers-matrix --results-page benchmarks/PEERS-MATRIX.md
      python -m svrt.benchmarks.peers --methods frame_average,svrt,svrt-fast=iterations:10,grid:16 --seeds 1
    """
    out = Path(out_dir)
    if report_only:
        data = load_results(out / "peers.json")
        write_outputs(out, data, results_page=results_page, picture_case=picture_case)
        click.echo(f"wrote the figures and {results_page or out / 'PEERS.md'}")
        return
    cases = build_cases(sizes=_list(sizes, int, "--sizes"), seeds=_list(seeds, int, "--seeds"),
                        r0s=_list(r0, float, "--r0"), ao=_list(ao, int, "--ao"), frames=_frames(frames),
                        instrument=instrument, theta0_arcsec=theta0, outer_scale_m=outer_scale, photons=photons,
                        noise=noise)
    specs = split_methods(methods) if methods else list(DEFAULT_METHODS)
    prog = "python -m svrt.benchmarks.peers" if sys.argv[0].endswith("peers.py") else "svrt"
    command = " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])
    settings = PeerSettings(cases=cases, methods=specs, threads=threads, device=device, force=force,
                            picture_case=picture_case)
    data = run_peers(out, settings, bursts_dir=bursts_dir, results_page=results_page, command=command,
                     progress=progress)
    summary = summarize(data)
    for name in method_names(data):
        s = summary[name]
        if s.get("cases"):
            click.echo(f"{name:20s} {s['cases']:3d} cases  median NMSE {s['nmse_median']:.4f}  "
                       f"median wall {s['wall_s_median']:.1f} s")


def main(argv=None) -> None:
    try:
        peers_command.main(args=argv, prog_name="python -m svrt.benchmarks.peers", standalone_mode=False)
    except SvrtError as exc:
        click.echo(f"svrt peers: error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
