"""The spatially variant convolution emulator (SVCE): a conditional U-Net (paper Sect. 2.2).

``f(o, alpha)`` convolves an object ``o [B, 1, Y, X]`` with the PSF given at every pixel by the KL
coefficients ``alpha [B, M, Y, X]`` (radians), for the instrument selected by a one-hot vector.

Architecture (one description shared by trainer, export and runtime):

- Encoder of 5 levels with C, 2C, 4C, 8C, 8C channels (3x3 conv + BN + ReLU twice per level,
  2x2 max-pooling between). The decoder upsamples bilinearly, concatenates the skip of the same
  level (so the deepest decoder input has 16C channels) and applies two conv + BN + ReLU; a final
  1x1 conv gives the image. This bilinear U-Net is the variant whose size at C = 64 and M = 44 is
  the paper's 17.3 M parameters (a literal 16C-channel bottleneck would have ~31 M).
- FiLM: a fully connected net (one-hot -> 64 -> 64 -> 2, ReLU) gives two scalars gamma, beta shared
  by all encoder levels below the first, applied as ``gamma * p_hat + beta`` between the two convs.
- Beyond the paper (both switchable in :class:`EmulatorConfig`, both free of parameters):
  ``normalize``: the network sees the object with its mean removed and divided by the 8-norm of
  what is left, ``x = (o - <o>) / s``, ``s = <|o - <o>|^8>^(1/8)``, and the output is mapped back,
  ``f = <o> + s g(x)``. A convolution with a unit-sum PSF (mirrored borders) obeys
  ``f(a o + b) = a f(o) + b`` exactly; so does the emulator, by construction: a solar image with a
  pedestal and 10 % contrast and a [0, 1] photograph are the same input to the network, the mean
  passes through untouched (photometry cannot drift) and the network spends nothing on learning the
  pedestal. (Models trained before this normalisation, such as stages 1-2 of svce-c16, divided by the
  8-norm of o itself, ``normalization="p8"``, which is still read: trained on [0, 1] images, such a
  model was worse than the identity on a granulation scene at the diffraction limit.) A high-order
  norm (close to the maximum but smooth, so gradients have no kinks) keeps x of order 1 for every
  scene, point-source fields included;
  ``residual``: the network predicts the difference between the blurred and the sharp image.

The core module needs Y and X to be multiples of 16; :func:`emulate` pads other sizes
(reflection, split evenly between the two sides) and crops the result back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.instruments import default_conditioning
from svrt.mode_grid import N_MODES

MULTIPLE = 16  # four 2x2 poolings
NORM_EPS = 1e-6
NORM_P = 8
NORM_TINY = 1e-30
#: "centred-p8": x = (o - <o>) / 8-norm(o - <o>); "p8": x = o / 8-norm(o) (older models, still read)
NORMALIZATIONS = ("centred-p8", "p8")


def normalization_scale(obj: torch.Tensor) -> torch.Tensor:
    """The emulator's input normalisation ``s = <|obj|^p>^(1/p) + eps`` per sample, ``[B, 1, 1, 1]``, p = 8.

    Computed as ``m (<(|obj|/m)^p> + tiny)^(1/p)`` with m = max|obj|: m keeps ``|obj|^8`` from
    overflowing float32 for objects in raw counts, and ``tiny`` (1e-30; the mean is >= 1/(Y X) otherwise)
    keeps the gradient finite for an all-zero input, such as a flat object once centred."""
    a = obj.abs()
    m = a.amax(dim=(-2, -1), keepdim=True).detach().clamp_min(NORM_EPS)
    return m * ((a / m).pow(NORM_P).mean(dim=(-2, -1), keepdim=True) + NORM_TINY).pow(1.0 / NORM_P) + NORM_EPS


def normalize_input(obj: torch.Tensor, config: "EmulatorConfig") -> tuple:
    """``(x, scale, mean)`` for an object ``[B, 1, Y, X]``: the network's input ``x`` and what maps its
    output back (``out = y * scale + mean``); ``scale``/``mean`` are None where not used."""
    if not config.normalize:
        return obj, None, None
    if config.normalization == "centred-p8":
        mean = obj.mean(dim=(-2, -1), keepdim=True)
        centred = obj - mean
        scale = normalization_scale(centred)
        return centred / scale, scale, mean
    scale = normalization_scale(obj)
    return obj / scale, scale, None


def map_output_back(y: torch.Tensor, x: torch.Tensor, scale, mean, config: "EmulatorConfig") -> torch.Tensor:
    """The emulated frame from the network's output ``y`` on the input ``(x, scale, mean)`` of
    :func:`normalize_input`: ``x`` added back for a residual network, then ``y * scale + mean``."""
    if config.residual:
        y = y + x
    if config.normalize:
        y = y * scale
    if mean is not None:
        y = y + mean
    return y


DEFAULT_MODEL = "svce-c16"


@dataclass
class EmulatorConfig:
    """Everything needed to rebuild the network; stored in the weights' JSON metadata."""

    width: int = 64                    # C
    n_modes: int = N_MODES             # M
    instruments: list = field(default_factory=default_conditioning)   # one-hot order
    film_hidden: int = 64
    normalize: bool = True
    residual: bool = True
    normalization: str = "centred-p8"  # the input normalisation the weights were trained with (NORMALIZATIONS)

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise SvrtError(f"model trained with input normalisation '{self.normalization}'; this svrt implements "
                            f"{', '.join(NORMALIZATIONS)}: retrain it with this version.")

    @property
    def n_conditions(self) -> int:
        return len(self.instruments)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EmulatorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {"normalization": "p8", **d}      # files written before the field existed used the 8-norm of o
        return cls(**{k: v for k, v in d.items() if k in known})


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EncoderLevel(nn.Module):
    """Two conv+BN+ReLU; FiLM (``gamma * p_hat + beta``) between them when conditioned."""

    def __init__(self, cin: int, cout: int, conditioned: bool):
        super().__init__()
        self.first = ConvBNReLU(cin, cout)
        self.second = ConvBNReLU(cout, cout)
        self.conditioned = conditioned

    def forward(self, x, gamma, beta):
        x = self.first(x)
        if self.conditioned:
            x = gamma * x + beta
        return self.second(x)


class DecoderLevel(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip, two conv+BN+ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.first = ConvBNReLU(cin, cin // 2)
        self.second = ConvBNReLU(cin // 2, cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.second(self.first(torch.cat([skip, x], dim=1)))


class SVCE(nn.Module):
    """Conditional U-Net: ``forward(obj [B,1,Y,X], modes [B,M,Y,X], condition [B,I]) -> [B,1,Y,X]``.

    ``condition`` is the one-hot instrument vector (:meth:`one_hot`); Y, X multiples of 16.
    """

    def __init__(self, config: EmulatorConfig):
        super().__init__()
        self.config = config
        c = config.width
        self.film = nn.Sequential(nn.Linear(config.n_conditions, config.film_hidden), nn.ReLU(),
                                  nn.Linear(config.film_hidden, config.film_hidden), nn.ReLU(),
                                  nn.Linear(config.film_hidden, 2))
        widths = [c, 2 * c, 4 * c, 8 * c, 8 * c]
        cin = [config.n_modes + 1] + widths[:-1]
        self.encoder = nn.ModuleList(EncoderLevel(a, b, conditioned=i > 0) for i, (a, b) in enumerate(zip(cin, widths)))
        # decoder: in = 2 * (channels of the level below), out = channels of the next level up
        self.decoder = nn.ModuleList([DecoderLevel(16 * c, 4 * c), DecoderLevel(8 * c, 2 * c),
                                      DecoderLevel(4 * c, c), DecoderLevel(2 * c, c)])
        self.head = nn.Conv2d(c, 1, 1)

    def film_parameters(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma, beta ``[B, 1, 1, 1]`` for a one-hot ``condition [B, I]``.

        The FiLM net is trained to output (gamma - 1, beta) so that an untrained net starts as identity.
        """
        gb = self.film(condition)
        return (1.0 + gb[:, 0]).view(-1, 1, 1, 1), gb[:, 1].view(-1, 1, 1, 1)

    def forward_with_film(self, obj, modes, gamma, beta):
        x, scale, mean = normalize_input(obj, self.config)
        h = torch.cat([x, modes], dim=1)
        skips = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = level(h, gamma, beta)
            skips.append(h)
        for level, skip in zip(self.decoder, reversed(skips[:-1])):
            h = level(h, skip)
        return map_output_back(self.head(h), x, scale, mean, self.config)

    def forward(self, obj, modes, condition):
        gamma, beta = self.film_parameters(condition)
        return self.forward_with_film(obj, modes, gamma, beta)

    def one_hot(self, instrument: str, batch: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
        """The conditioning vector ``[batch, I]`` of an instrument this model was trained for."""
        labels = [s.lower() for s in self.config.instruments]
        if instrument.lower() not in labels:
            raise SvrtError(f"the model was trained for instruments {', '.join(self.config.instruments)}, "
                            f"not '{instrument}'.")
        v = torch.zeros(batch, len(labels), device=device, dtype=dtype)
        v[:, labels.index(instrument.lower())] = 1
        return v


def count_parameters(model: nn.Module) -> int:
    """The trained weights (frozen ones included: a loaded model has none that require a gradient)."""
    return sum(p.numel() for p in model.parameters())


def padding_for(y: int, x: int, multiple: int = MULTIPLE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that brings (y, x) to multiples of ``multiple``."""
    py, px = (-y) % multiple, (-x) % multiple
    return px // 2, px - px // 2, py // 2, py - py // 2


def emulate(model: SVCE, obj: torch.Tensor, modes: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on any size: reflect-pad to a multiple of 16, run, crop. Shapes as :class:`SVCE`."""
    pad = padding_for(*obj.shape[-2:])
    if not any(pad):
        return model(obj, modes, condition)
    mode = "reflect" if min(obj.shape[-2:]) > max(pad) else "replicate"
    out = model(F.pad(obj, pad, mode=mode), F.pad(modes, pad, mode=mode), condition)
    return out[..., pad[2]:pad[2] + obj.shape[-2], pad[0]:pad[0] + obj.shape[-1]]


# --------------------------------------------------------------------------- weights on disk

def bundled_models_dir() -> Path:
    return Path(str(resources.files("svrt").joinpath("data/models")))


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A path to a ``.safetensors`` file, or the name of a bundled model (default :data:`DEFAULT_MODEL`)."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists():
        if not p.exists():
            raise SvrtError(f"{p}: model file not found.")
        return p
    candidate = bundled_models_dir() / f"{name_or_path}.safetensors"
    if candidate.exists():
        return candidate
    names = sorted(q.stem for q in bundled_models_dir().glob("*.safetensors"))
    raise SvrtError(f"unknown model '{name_or_path}'; bundled models are {', '.join(names) or 'none'}, "
                    "or give a path to a .safetensors file.")


def save_model(path: str | Path, model: SVCE, metadata: dict | None = None) -> dict:
    """Write weights (safetensors) with JSON metadata inside the file and beside it (``.json``).

    Returns the metadata written (config, parameter count, content hash, plus ``metadata``).
    """
    from safetensors.torch import save_file

    from svrt.fileio import atomic_write

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(metadata or {})
    meta["config"] = model.config.to_dict()
    meta["parameters"] = count_parameters(model)
    meta["sha256"] = state_hash(tensors)
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"svrt": json.dumps(meta)})
    with atomic_write(path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def state_hash(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].numpy().tobytes())
    return h.hexdigest()[:16]


def _config_from_metadata(meta: dict, path: Path) -> "EmulatorConfig":
    """The :class:`EmulatorConfig` of a model file's metadata, or one :class:`SvrtError` sentence."""
    if "config" not in meta:
        raise SvrtError(f"{path}: the metadata (safetensors key 'svrt') has no 'config'; expected the emulator's "
                        "architecture (width, n_modes, instruments, ...) as written by svrt train.")
    cfg = meta["config"]
    if not isinstance(cfg, dict):
        raise SvrtError(f"{path}: metadata 'config' is a {type(cfg).__name__}; expected an object with width, n_modes, "
                        "instruments, ...")
    problems = []
    for key in ("width", "n_modes", "film_hidden"):
        if key in cfg and (not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or not 1 <= cfg[key] <= 4096):
            problems.append(f"{key} = {cfg[key]!r} (expected an integer from 1 to 4096)")
    for key in ("width", "n_modes"):
        if key not in cfg:
            problems.append(f"{key} missing")
    inst = cfg.get("instruments")
    if not (isinstance(inst, list) and inst and all(isinstance(i, str) and i.strip() for i in inst)
            and len({i.lower() for i in inst}) == len(inst)):
        problems.append(f"instruments = {inst!r} (expected a list of distinct instrument labels)")
    for key in ("normalize", "residual"):
        if key in cfg and not isinstance(cfg[key], bool):
            problems.append(f"{key} = {cfg[key]!r} (expected true or false)")
    if "normalization" in cfg and cfg["normalization"] not in NORMALIZATIONS:
        problems.append(f"normalization = {cfg['normalization']!r} (expected one of {', '.join(NORMALIZATIONS)})")
    if problems:
        raise SvrtError(f"{path}: metadata 'config' is malformed: {'; '.join(problems)}.")
    try:
        return EmulatorConfig.from_dict(cfg)
    except SvrtError:
        raise
    except (TypeError, ValueError) as exc:
        raise SvrtError(f"{path}: metadata 'config' is malformed ({exc}).") from None


def check_device(device, available: bool = True) -> "torch.device":
    """``torch.device`` of a device string (cpu, cuda, cuda:N, ...), or one :class:`SvrtError`
    sentence about the device (never about the model file). With ``available`` the device must also
    exist for torch here (back ends with their own CUDA runtime, onnxruntime-gpu and TensorRT, check
    that themselves)."""
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError):
        raise SvrtError(f"device '{device}' is not a device torch knows; expected cpu, cuda or cuda:N.") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SvrtError(f"device '{device}' is not supported; expected cpu, cuda or cuda:N.")
    if not available:
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SvrtError(f"device '{device}' was asked for but no CUDA GPU is visible to torch here; use --device "
                            "cpu.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise SvrtError(f"device '{device}' does not exist: this machine has {n} CUDA GPU(s), cuda:0 to "
                            f"cuda:{n - 1}.")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SvrtError(f"device '{device}' was asked for but Apple's MPS is not available here; use --device cpu.")
    return dev


def read_weights_file(path: Path) -> tuple[dict, dict]:
    """The tensors and the JSON metadata (safetensors key ``svrt``) of a model file, never unpickled; each
    failure one :class:`SvrtError` sentence naming the file. Shared by every model kind (the U-Net here,
    the PSF-basis emulator of :mod:`svrt.psf_emulator`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("svrt")
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SvrtError(f"{path}: not a readable safetensors file ({exc}); the file may be truncated.") from None
    if raw is None:
        raise SvrtError(f"{path}: safetensors metadata key 'svrt' missing; expected an svrt emulator file.")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SvrtError(f"{path}: the metadata (safetensors key 'svrt') is not valid JSON ({exc.msg} at character "
                        f"{exc.pos}); the file is corrupt or was not written by svrt.") from None
    if not isinstance(meta, dict):
        raise SvrtError(f"{path}: the metadata (safetensors key 'svrt') is a {type(meta).__name__}; expected a JSON "
                        "object.")
    return tensors, meta


def load_weights_into(model: nn.Module, tensors: dict, meta: dict, path: Path) -> None:
    """Load ``tensors`` into ``model`` after checking that they match its architecture, that their content
    hash equals the ``sha256`` of the metadata (a flipped bit or an edited tensor is caught) and that every
    weight is finite (NaN or Inf weights give NaN images)."""
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError:  # tensors of the wrong shape
        missing, unexpected = ["(shape mismatch)"], []
    if missing or unexpected:
        raise SvrtError(f"{path}: weights do not match the architecture in its metadata "
                        f"(missing {len(missing)}, unexpected {len(unexpected)} tensors).")
    recorded = meta.get("sha256")
    if not isinstance(recorded, str) or not recorded:
        raise SvrtError(f"{path}: the metadata records no 'sha256' of the weights, so they cannot be verified; "
                        "save the model with svrt (save_model) to record it.")
    actual = state_hash(tensors)
    if actual != recorded[:len(actual)]:
        raise SvrtError(f"{path}: the weights' hash {actual} differs from the {recorded} recorded in its metadata; the "
                        "file is corrupt (a flipped bit, a partial copy) or its tensors were edited.")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise SvrtError(f"{path}: {len(bad)} weight tensor(s) hold NaN or Inf values ({', '.join(sorted(bad)[:3])}); "
                        "the model would give NaN images: retrain it or use another model.")


def model_kind(name_or_path: str | Path | None) -> str:
    """``"svce"`` (the U-Net) or ``"psf-basis"`` (:mod:`svrt.psf_emulator`) for a model file or bundled name:
    the metadata's ``kind`` (files written before the PSF-basis emulator have none: the U-Net). Reads the
    header only."""
    from safetensors import SafetensorError, safe_open

    path = resolve_model_path(name_or_path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("svrt") or "{}"
        kind = json.loads(raw).get("kind", "svce")
    except (SafetensorError, OSError, ValueError, AttributeError):
        return "svce"  # load_model gives the precise sentence
    return kind if isinstance(kind, str) else "svce"


def load_model(name_or_path: str | Path | None = None, device="cpu") -> tuple[SVCE, dict]:
    """Load a model (eval mode) and its metadata; never unpickles (safetensors only).

    Verified on loading, each failure one :class:`SvrtError` sentence naming the file: the metadata
    is JSON with a well-formed ``config``; the tensors match that architecture; the weights' content
    hash equals the ``sha256`` recorded in the metadata (a flipped bit or an edited tensor is caught);
    every weight is finite (NaN or Inf weights give NaN images). ``device`` is checked first
    (:func:`check_device`), so a bad device is never blamed on the file."""
    dev = check_device(device)
    path = resolve_model_path(name_or_path)
    tensors, meta = read_weights_file(path)
    if meta.get("kind", "svce") != "svce":
        raise SvrtError(f"{path} is a {meta['kind']} model, not the U-Net emulator; load it with "
                        "svrt.runtime.engine.load_engine, which picks its back end.")
    config = _config_from_metadata(meta, path)
    try:
        model = SVCE(config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SvrtError(f"{path}: metadata 'config' does not describe a buildable emulator ({exc}).") from None
    load_weights_into(model, tensors, meta, path)
    return model.to(dev).eval(), meta
