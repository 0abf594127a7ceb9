"""The training loop: Adam with cosine decay (3e-4 -> 6e-5), loss of Eq. 11, best-validation weights,
resumable checkpoints (``run_dir/checkpoint.safetensors``), mixed precision on CUDA, a progress bar with the losses."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from svrt.emulator import SVCE, EmulatorConfig, save_model
from svrt.metrics import nmse_power
from svrt.trainer.images import DEFAULT_MIX
from svrt.trainer.loss import emulator_loss
from svrt.trainer.pairs import PairGenerator, PairStream, fixed_set
from svrt.trainer.train_config import TrainConfig  # noqa: F401  (re-exported: the recipe)

R0_BINS = (3.0, 5.0, 8.0, 11.0, 15.0, float("inf"))   # the last bin: the weak wavefronts (r0 > 15 cm)


def progress(step: int, seconds: float, cfg: TrainConfig) -> float:
    """How far training is, 0..1: steps done over cfg.steps, or time spent over cfg.minutes if that is
    further, so that a wall-clock budget still ends with the learning rate decayed."""
    t = step / max(cfg.steps, 1)
    if cfg.minutes:
        t = max(t, seconds / (60.0 * cfg.minutes))
    return min(t, 1.0)


def learning_rate(step: int, cfg: TrainConfig, seconds: float = 0.0) -> float:
    """Cosine decay from lr_start to lr_end over the run (:func:`progress`)."""
    t = progress(step, seconds, cfg)
    return cfg.lr_end + 0.5 * (cfg.lr_start - cfg.lr_end) * (1 + math.cos(math.pi * t))


def _batch_to(batch: dict, device) -> tuple:
    obj = batch["obj"].to(device, non_blocking=True)
    target = batch["target"].to(device, non_blocking=True)
    coef = batch["coefficients"].to(device)
    modes = coef[:, :, None, None].expand(-1, -1, obj.shape[-2], obj.shape[-1])
    idx = torch.as_tensor(batch["instrument"], device=device)
    return obj, modes, idx, target


@torch.no_grad()
def evaluate(model: SVCE, val: dict, device, batch: int = 32) -> dict:
    """NMSE (Eq. 12) on a held-out set: overall median/mean, per instrument, per r0 bin, per source."""
    model.eval()
    scores, losses = [], []
    for i in range(0, len(val["obj"]), batch):
        sl = slice(i, i + batch)
        obj, modes, idx, target = _batch_to(
            {k: val[k][sl] for k in ("obj", "target", "coefficients", "instrument")}, device
        )
        cond = torch.nn.functional.one_hot(idx, model.config.n_conditions).float()
        y = model(obj, modes, cond)
        scores.append(nmse_power(y, target, dims=(-3, -2, -1)).cpu())
        losses.append(float(emulator_loss(y, target)["total"]) * len(obj))
    s = torch.cat(scores).numpy()
    out = {"loss": sum(losses) / len(s), "nmse_power_mean": float(s.mean()), "nmse_power_median": float(np.median(s)),
           "per_instrument": {}, "per_r0_bin": {}, "per_source": {}}
    for k, label in enumerate(model.config.instruments):
        sel = val["instrument"].numpy() == k
        if sel.any():
            out["per_instrument"][label] = float(s[sel].mean())
    r0 = val["r0"].numpy()
    for lo, hi in zip(R0_BINS[:-1], R0_BINS[1:]):
        sel = (r0 >= lo) & (r0 < hi)
        if sel.any():
            out["per_r0_bin"][f"{lo:g}-{hi:g}"] = float(s[sel].mean())
    for name in sorted(set(val["source"])):
        sel = np.array([src == name for src in val["source"]])
        out["per_source"][name] = float(s[sel].mean())
    return out


def train(cfg: TrainConfig, out: str | Path, run_dir: str | Path, command: str = "", log=print) -> dict:
    """Train and write the best-validation weights to ``out`` (safetensors + JSON). Resumes from
    ``run_dir/checkpoint.safetensors`` when it exists (safetensors + JSON: nothing is unpickled)."""
    from tqdm.auto import tqdm


    device = torch.device(cfg.device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = SVCE(EmulatorConfig(width=cfg.width, n_modes=cfg.n_modes, instruments=list(cfg.instruments),
                                normalize=cfg.normalize, normalization=cfg.normalization,
                                residual=cfg.residual)).to(device)
    initialised_from = _initialise(model, cfg) if cfg.init_from else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_start)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    generator = PairGenerator(list(cfg.instruments), cfg.n_modes, boundary=cfg.boundary,
                              weak_fraction=cfg.weak_fraction)
    val = fixed_set(generator, cfg.val_size, seed=10_000 + cfg.seed)   # held out: its own seed stream
    state = {"step": 0, "best": float("inf"), "history": [], "seconds": 0.0}
    ckpt = run_dir / "checkpoint.safetensors"
    if ckpt.exists():
        state = load_checkpoint(ckpt, model, opt, device)
        log(f"resuming from {ckpt} at step {state['step']}")
    loader = _pair_loader(generator, cfg, state["step"], log)
    started = time.time()
    seconds0 = state["seconds"]
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="train", dynamic_ncols=True, mininterval=2)

    def elapsed() -> float:
        return seconds0 + time.time() - started

    def save_checkpoint():
        state["seconds"] = elapsed()
        write_checkpoint(ckpt, model, opt, state)

    meta_base = _weights_metadata(cfg, generator, command, initialised_from)
    it = _endless(loader)
    model.train()
    while progress(state["step"], elapsed(), cfg) < 1.0:
        obj, modes, idx, target = _batch_to(next(it), device)
        cond = torch.nn.functional.one_hot(idx, model.config.n_conditions).float()
        for g in opt.param_groups:
            g["lr"] = learning_rate(state["step"], cfg, elapsed())
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            y = model(obj, modes, cond)
        terms = emulator_loss(y.float(), target)
        _optimiser_step(model, opt, scaler, terms["total"], use_amp, state, log)
        state["step"] += 1
        bar.update(1)
        shown = {k: terms[k].detach().item() for k in ("total", "mse", "grad")}
        bar.set_postfix(loss=f"{shown['total']:.2e}", mse=f"{shown['mse']:.2e}", grad=f"{shown['grad']:.2e}",
                        best=f"{state['best']:.2e}")
        last = progress(state["step"], elapsed(), cfg) >= 1.0
        if state["step"] % cfg.val_every == 0 or last:
            v = evaluate(model, val, device)
            model.train()
            state["history"].append({"step": state["step"], "train_loss": terms["total"].detach().item(), **{
                k: v[k] for k in ("loss", "nmse_power_mean", "nmse_power_median")}})
            if v["loss"] < state["best"]:
                state["best"] = v["loss"]
                save_model(out, model.eval(), {**meta_base, "step": state["step"], "validation": v,
                                               "train_seconds": elapsed(),
                                               "history": state["history"]})
                model.train()
            log(f"step {state['step']}: val loss {v['loss']:.3e}, NMSE (Eq. 12) mean {v['nmse_power_mean']:.2e} "
                f"median {v['nmse_power_median']:.2e} (best {state['best']:.3e})")
        if state["step"] % cfg.checkpoint_every == 0 or last:
            save_checkpoint()
    if state["step"] < cfg.steps:
        log(f"time budget of {cfg.minutes} min reached at step {state['step']}")
    save_checkpoint()
    bar.close()
    return state


def _weights_metadata(cfg: TrainConfig, generator: PairGenerator, command: str, initialised_from) -> dict:
    """The JSON metadata of the weights (the step, validation and history are added at each save): the
    recipe, the loss, the image source, the pairs, the validation set, the versions."""
    return {
        "svrt_version": __import__("svrt").__version__, "command": command, "recipe": asdict(cfg),
        "loss": "Eq. 11: MSE + 10 * Sobel-gradient MSE + 1 * flux term", "image_source": {
            "mix": DEFAULT_MIX, "description": "solar scenes of svrt.scenes (granulation, sunspot) at 0.03-0.07 "
                                               "arcsec/px; "
            "procedural textures (f^-beta random fields, 1 <= beta <= 4, thresholded, with discs/bars/lines); crops of "
            "matplotlib's sample images; point-source fields (20 %); random 90-degree rotations and flips"},
        "pairs": {"size": generator.size, "crop": generator.crop, "boundary": generator.boundary,
                  "apodization_px": generator.apodization if generator.boundary == "apodize" else None,
                  "r0_cm_at_5000A": list(generator.r0_range), "psf_field_px": generator.psf_field,
                  "weak_fraction": generator.weak_fraction,
                  "weak": "that fraction of wavefronts scaled by u ~ U(0, 1): r0 -> r0 u^(-6/5), down to the "
                          "diffraction limit",
                  "psf": "spatially invariant, Kolmogorov KL coefficients (Roddier 1990), FFT convolution"},
        "initialised_from": initialised_from,
        "pair_cache": cfg.pair_cache and {"path": Path(cfg.pair_cache).name, "pairs": cfg.cache_pairs},
        "validation_set": f"{cfg.val_size} held-out pairs from an independent seed ({10_000 + cfg.seed})",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }


def _optimiser_step(model, opt, scaler, loss, use_amp: bool, state: dict, log) -> None:
    """Back-propagate ``loss`` and step: through the gradient scaler on a GPU (it skips the steps whose
    gradients overflowed), else only with finite gradients (one bad batch must not turn every weight into
    NaN; the step is counted in ``state["skipped_steps"]``)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if use_amp:
        scaler.step(opt)
    elif _finite_gradients(model):
        opt.step()
    else:
        state["skipped_steps"] = state.get("skipped_steps", 0) + 1
        log(f"step {state['step']}: non-finite loss or gradient, step skipped")
    scaler.update()


def _finite_gradients(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)


def _pair_loader(generator: PairGenerator, cfg: TrainConfig, step: int, log):
    """Batches of fresh pairs (an endless stream seeded by the step, so a resumed run sees new pairs) or,
    with ``cfg.pair_cache``, of cached pairs in a shuffled order (the cache is made first if missing)."""
    common = dict(batch_size=cfg.batch, num_workers=cfg.workers, collate_fn=_collate,
                  persistent_workers=cfg.workers > 0)
    if not cfg.pair_cache:
        return torch.utils.data.DataLoader(PairStream(generator, seed=cfg.seed * 1000 + step), **common)
    from svrt.trainer.pair_cache import CachedPairs, write_pair_cache

    if not Path(cfg.pair_cache).exists():
        log(f"making the pair cache {cfg.pair_cache} ({cfg.cache_pairs} pairs)")
        write_pair_cache(cfg.pair_cache, generator, cfg.cache_pairs, seed=cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed * 1000 + step)
    return torch.utils.data.DataLoader(CachedPairs(cfg.pair_cache, generator), shuffle=True, drop_last=True,
                                       generator=order, **common)


def _endless(loader):
    """Batches forever: a stream goes on by itself, a cache starts a new shuffled epoch."""
    while True:
        yield from loader


def _initialise(model: SVCE, cfg: TrainConfig) -> dict:
    """Copy the weights of ``cfg.init_from`` into ``model`` (same architecture); returns its provenance."""
    from svrt.emulator import load_model, resolve_model_path
    from svrt.errors import SvrtError

    source, meta = load_model(cfg.init_from)
    # the input normalisation has no parameters: weights trained with another one are a valid start
    shape = {k: v for k, v in source.config.to_dict().items() if k != "normalization"}
    if shape != {k: v for k, v in model.config.to_dict().items() if k != "normalization"}:
        raise SvrtError(f"{cfg.init_from}: architecture {source.config.to_dict()} differs from the one to train "
                        f"{model.config.to_dict()}; --init-from needs the same width, modes and instruments.")
    model.load_state_dict(source.state_dict())
    from svrt.records import file_sha256

    path = resolve_model_path(cfg.init_from)
    return {"model": path.name, "file_sha256": file_sha256(path), "step": meta.get("step"),
            "normalization": source.config.normalization,
            "command": meta.get("command"), "pairs": meta.get("pairs"), "train_seconds": meta.get("train_seconds"),
            "initialised_from": meta.get("initialised_from")}


def write_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """The resumable training state as safetensors (model, Adam moments) + JSON (step, history,
    optimiser hyper-parameters): nothing is pickled, so a checkpoint can be shared and committed."""
    from safetensors.torch import save_file

    from svrt.fileio import atomic_write

    sd = opt.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous().reshape(torch.as_tensor(v).shape)
    meta = {"state": json.dumps(state), "param_groups": json.dumps(sd["param_groups"])}
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, device) -> dict:
    """Restore what :func:`write_checkpoint` wrote; returns the JSON state."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            optim_state.setdefault(int(i), {})[name] = v.cpu() if name == "step" else v
    opt.load_state_dict({"state": optim_state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


def _collate(items: list) -> dict:
    return {"obj": torch.stack([i["obj"] for i in items]), "target": torch.stack([i["target"] for i in items]),
            "coefficients": torch.stack([i["coefficients"] for i in items]),
            "instrument": torch.tensor([i["instrument"] for i in items])}
