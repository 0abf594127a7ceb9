"""Train the PSF-basis emulator (:mod:`svrt.psf_emulator`): ``svrt train-psf-basis``.

1. Wavefronts of the solver's regime (:func:`draw_wavefronts`): Kolmogorov KL coefficients for r0 in
   ``r0_min_cm..r0_max_cm`` at 5000 A; half AO-corrected (KL 1-20 scaled by 0.05-0.4), half uncorrected,
   scaled by 0.3-1 (the peer matrix's strong seeing without AO is the top of that range).
2. Their tilt (:class:`CentredOptics`): each mode's least-squares x/y phase ramp on the pupil, i.e. the image
   motion ``T [M, 2]`` in pixels per radian; and the exact PSFs of the wavefronts without it (centred), on
   the work box.
3. The principal components of those centred PSFs (:func:`pca_basis`): the basis, kept to ``n_basis``.
4. A network from the coefficients to the basis weights, fitted to the weights of the exact centred PSFs and
   to their derivative along a random direction per wavefront (central differences of exact PSFs, the same
   differences of the network): the solver fits wavefronts by the gradient, so the derivative is trained, not
   hoped for. Adam, warm-up and cosine decay; a resumable checkpoint (safetensors + JSON) in the run folder.
5. Validation on held-out wavefronts of both regimes against exact PSFs of the solver's size
   (:func:`validate`): the PSF error, the forward NMSE of a solar scene (the paper's Eq. 12) and the cosine of
   the mode gradient of a spatially variant fit with exact optics'; written into the weights' metadata.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES
from svrt.trainer.psf_basis_config import PSFBasisTrainConfig

AO_MODES = 20                  # KL modes an AO corrects in the "ao" regime
AO_RESIDUAL = (0.05, 0.4)      # the factor left on them
OPEN_SCALE = (0.3, 1.0)        # the factor on an uncorrected wavefront
FD_STEP = 0.02                 # central-difference step, radians
N_FIT = 8000                   # PSFs the principal components are computed from


def draw_coefficients(n: int, regime: str, rng: np.random.Generator, instrument: str = "crisp8542",
                      n_modes: int = N_MODES, r0_range=(5.0, 20.0)) -> np.ndarray:
    """``[n, n_modes]`` KL coefficients (radians at the instrument's wavelength) of the regime ``ao`` (KL 1-20
    scaled by a factor in :data:`AO_RESIDUAL`) or ``open`` (uncorrected), r0 uniform in ``r0_range`` cm at
    5000 A."""
    from svrt.atmosphere import kl_standard_deviations

    r0 = rng.uniform(*r0_range, size=n)
    # Kolmogorov: every coefficient's RMS scales as r0^(-5/6), so one table serves every r0
    sd = kl_standard_deviations(instrument, 10.0, n_modes)[None] * (10.0 / r0[:, None]) ** (5 / 6)
    coef = rng.standard_normal((n, n_modes)) * sd
    if regime == "ao":
        coef[:, :AO_MODES] *= rng.uniform(*AO_RESIDUAL, size=(n, 1))
    elif regime != "open":
        raise ValueError(f"unknown regime {regime!r}")
    return coef.astype(np.float32)


def draw_wavefronts(n: int, rng: np.random.Generator, cfg: PSFBasisTrainConfig) -> torch.Tensor:
    """``[n, M]``: half :func:`draw_coefficients` ``ao``, half ``open`` scaled by :data:`OPEN_SCALE`, shuffled."""
    r0 = (cfg.r0_min_cm, cfg.r0_max_cm)
    ao = draw_coefficients(n // 2, "ao", rng, cfg.instrument, cfg.n_modes, r0)
    op = draw_coefficients(n - n // 2, "open", rng, cfg.instrument, cfg.n_modes, r0)
    op *= rng.uniform(*OPEN_SCALE, size=(len(op), 1)).astype(np.float32)
    a = np.concatenate([ao, op])
    return torch.from_numpy(a[rng.permutation(n)])


def pca_basis(psfs: torch.Tensor, n_components: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean ``[S, S]``, components ``[R, S, S]`` by decreasing singular value, singular values ``[R]``)
    of PSFs ``[P, S, S]``. With ``n_components`` only the first R = n_components, by a randomised SVD
    (Halko et al. 2011; 10 extra columns and 6 power iterations: the spectrum decays fast), and one more
    value at the end: the root of the variance the R components leave."""
    p, s, _ = psfs.shape
    flat = psfs.reshape(p, -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    if n_components is None:
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
        return mean.reshape(s, s), vh.reshape(-1, s, s), sv
    torch.manual_seed(0)
    _, sv, v = torch.svd_lowrank(centred, q=min(n_components + 10, *centred.shape), niter=6)
    sv, v = sv[:n_components], v[:, :n_components]
    left = (centred.pow(2).sum() - sv.pow(2).sum()).clamp_min(0).sqrt()
    return mean.reshape(s, s), v.T.reshape(-1, s, s), torch.cat([sv, left[None]])


class CentredOptics:
    """The exact optics the emulator learns, split into the tilt and the centred PSF.

    ``ramps [M, 3]``: each mode's least-squares fit ``gx x + gy y + p`` on the pupil (x, y in pupil-grid
    pixels, radians per pixel); ``tilt [M, 2]``: the image motion it causes, ``g N / (2 pi q)`` camera pixels
    per radian (a phase ramp of ``2 pi f / N`` per grid pixel moves the forward-FFT PSF by f fine pixels,
    :mod:`svrt.optics.psf`)."""

    def __init__(self, instrument: str, n_modes: int, work_size: int):
        from svrt.optics.psf import PSFModel

        self.model = m = PSFModel(instrument, n_modes, psf_size=work_size)
        inside = (m.amplitude > 0).reshape(-1)
        nb = m.box
        yy, xx = torch.meshgrid(torch.arange(nb, dtype=torch.float64), torch.arange(nb, dtype=torch.float64),
                                indexing="ij")
        design = torch.stack([xx.reshape(-1), yy.reshape(-1), torch.ones(nb * nb, dtype=torch.float64)], 1)
        self._grid = design.to(torch.float32)                                          # [nb^2, 3]
        modes = m.modes.reshape(n_modes, -1).double()                                  # [M, nb^2]
        fit = torch.linalg.lstsq(design[inside], modes[:, inside].T).solution          # [3, M]
        self.ramps = fit.T.to(torch.float32)                                           # [M, 3]
        self.tilt = self.ramps[:, :2] * (m.n_fft / (2 * math.pi * m.q))                # [M, 2]

    def centred_psfs(self, a: torch.Tensor) -> torch.Tensor:
        """Exact unit-sum PSFs ``[P, W, W]`` of the wavefronts ``a [P, M]`` without their tilt."""
        m = self.model
        nb = m.box
        ramp = (a @ self.ramps @ self._grid.T).reshape(-1, nb, nb)
        return m.psf_from_phase(m.phase(a) - ramp)


def _project(psfs: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Weights ``[P, K]`` of PSFs ``[P, W, W]`` on the orthonormal ``basis [K, W, W]`` after removing ``mean``."""
    k = basis.shape[0]
    return (psfs.reshape(len(psfs), -1) - mean.reshape(-1)) @ basis.reshape(k, -1).T


def make_training_set(cfg: PSFBasisTrainConfig, optics: CentredOptics, log=print) -> dict:
    """The wavefronts, the basis and the targets: ``a [N, M]``, ``mean [W, W]``, ``basis [K, W, W]``,
    ``weights [N, K]`` (exact centred PSFs projected), ``direction [N, M]`` (random unit vectors in radians:
    the solver's gradient is in radians, and every mode moves the PSF about as much per radian, so every mode's
    derivative is trained alike, not in proportion to its Kolmogorov amplitude) and ``derivative [N, K]`` (the
    weights' central difference along it per radian), ``mode_scale [M]``, ``explained`` (the fraction of the
    fit PSFs' variance the basis keeps)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(cfg.seed)
    a = draw_wavefronts(cfg.n_train, rng, cfg)
    scale = a.std(0).clamp_min(1e-6)
    with torch.no_grad():
        mean, basis, sv = pca_basis(optics.centred_psfs(a[:min(N_FIT, len(a))]), cfg.n_basis)
    explained = float(1 - sv[-1] ** 2 / (sv ** 2).sum())
    mean, basis = mean.float(), basis.float()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    direction = torch.randn(len(a), cfg.n_modes, generator=g)
    direction /= direction.norm(dim=1, keepdim=True)
    weights, derivative = [], []
    chunk = 2000
    for i in tqdm(range(0, len(a), chunk), desc="exact PSFs", unit="chunk", mininterval=2):
        ai, step = a[i:i + chunk], FD_STEP * direction[i:i + chunk]
        with torch.no_grad():
            weights.append(_project(optics.centred_psfs(ai), mean, basis))
            plus = _project(optics.centred_psfs(ai + step), mean, basis)
            minus = _project(optics.centred_psfs(ai - step), mean, basis)
        derivative.append((plus - minus) / (2 * FD_STEP))
    log(f"basis: {cfg.n_basis} components keep {explained:.6f} of the centred PSFs' variance")
    return {"a": a, "mean": mean, "basis": basis, "weights": torch.cat(weights), "direction": direction,
            "derivative": torch.cat(derivative), "mode_scale": scale,
            "explained": torch.tensor(explained)}


def learning_rate(step: int, cfg: PSFBasisTrainConfig) -> float:
    """Linear warm-up over the first 5 % of the steps, then cosine decay to 1 % of ``cfg.lr``."""
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def batch_loss(model, data: dict, idx: torch.Tensor, cfg: PSFBasisTrainConfig) -> tuple[torch.Tensor, dict]:
    """Squared error of the weights and of their derivative along the direction, each relative to the
    target's mean square (so both are of order one and ``jacobian_weight`` reads as a ratio)."""
    a, w, d, v = data["a"][idx], data["weights"][idx], data["derivative"][idx], data["direction"][idx]
    pred = model.weights(a)
    value = (pred - w).pow(2).sum(1).mean() / data["weights_ms"]
    terms = {"value": value}
    loss = value
    if cfg.jacobian_weight > 0:
        step = FD_STEP * v
        dpred = (model.weights(a + step) - model.weights(a - step)) / (2 * FD_STEP)
        slope = (dpred - d).pow(2).sum(1).mean() / data["derivative_ms"]
        terms["slope"] = slope
        loss = loss + cfg.jacobian_weight * slope
    return loss, terms


def train_psf_basis(cfg: PSFBasisTrainConfig, out: str | Path, run_dir: str | Path, command: str = "",
                    log=print) -> dict:
    """Train and write the emulator to ``out`` (safetensors + JSON, :func:`svrt.psf_emulator.save_psf_emulator`).
    The training set (``run_dir/data.safetensors``) and the checkpoint (``run_dir/checkpoint.safetensors``) are
    reused when they exist, so a stopped run resumes. Returns the metadata written."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from svrt.fileio import atomic_write
    from svrt.psf_emulator import PSFBasisConfig, PSFBasisEmulator, save_psf_emulator
    from svrt.trainer.train import load_checkpoint, write_checkpoint

    started = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optics = CentredOptics(cfg.instrument, cfg.n_modes, cfg.work_size)
    data_path = run_dir / "data.safetensors"
    if data_path.exists():
        data = load_file(str(data_path))
        if data["basis"].shape[0] != cfg.n_basis or data["a"].shape != (cfg.n_train, cfg.n_modes):
            raise SvrtError(f"{data_path} holds a training set of another recipe; give another --run-dir.")
        log(f"training set from {data_path}")
    else:
        data = make_training_set(cfg, optics, log)
        with atomic_write(data_path) as tmp:
            save_file({k: v.contiguous() for k, v in data.items()}, str(tmp))
    data["weights_ms"] = data["weights"].pow(2).sum(1).mean()
    data["derivative_ms"] = data["derivative"].pow(2).sum(1).mean()
    torch.manual_seed(cfg.seed)
    model = PSFBasisEmulator(PSFBasisConfig(instrument=cfg.instrument, n_modes=cfg.n_modes, psf_size=cfg.psf_size,
                                            work_size=cfg.work_size, n_basis=cfg.n_basis, hidden=cfg.hidden,
                                            depth=cfg.depth))
    model.mean.copy_(data["mean"])
    model.basis.copy_(data["basis"])
    model.tilt.copy_(optics.tilt)
    model.mode_scale.copy_(data["mode_scale"])
    model.weight_scale.copy_(data["weights"].std(0).clamp_min(1e-12))
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    ckpt = run_dir / "checkpoint.safetensors"
    state = {"step": 0, "seconds": 0.0, "history": []}
    if ckpt.exists():
        state = load_checkpoint(ckpt, model, opt, "cpu")
        log(f"resuming from {ckpt} at step {state['step']}")
    gen = torch.Generator().manual_seed(cfg.seed + 2 + state["step"])
    seconds0, t0 = state["seconds"], time.time()
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="train-psf-basis", mininterval=2)
    model.train()
    while state["step"] < cfg.steps:
        if cfg.minutes is not None and seconds0 + time.time() - t0 > 60 * cfg.minutes:
            log(f"time budget of {cfg.minutes} min reached at step {state['step']}")
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(state["step"], cfg)
        idx = torch.randint(0, len(data["a"]), (cfg.batch,), generator=gen)
        loss, terms = batch_loss(model, data, idx, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        bar.update(1)
        if state["step"] % 100 == 0:
            bar.set_postfix({k: f"{v.item():.2e}" for k, v in terms.items()})
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps:
            state["history"].append({"step": state["step"], **{k: float(v.detach()) for k, v in terms.items()}})
            state["seconds"] = seconds0 + time.time() - t0
            write_checkpoint(ckpt, model, opt, state)
    bar.close()
    model.eval()
    log("validating against exact optics")
    validation = validate(model, cfg, n_grid=cfg.val_grids)
    meta = {"name": Path(out).stem, "command": command, "recipe": asdict(cfg), "step": state["step"],
            "train_seconds": round(state["seconds"] + time.time() - started, 1),
            "basis_explained_variance": float(data["explained"]), "history": state["history"],
            "regime": {"r0_cm_at_5000A": [cfg.r0_min_cm, cfg.r0_max_cm], "ao_modes": AO_MODES,
                       "ao_residual": list(AO_RESIDUAL), "open_scale": list(OPEN_SCALE)},
            "validation": validation,
            "trained": "svrt.trainer.psf_basis: PCA of exact centred PSFs, network fitted to their basis weights "
                       "and to their derivative along a random direction (central differences)"}
    save_psf_emulator(out, model, meta)
    return meta


def validate(model, cfg: PSFBasisTrainConfig, n_grid: int = 8, size: int = 96) -> dict:
    """Per regime (``ao``, ``open`` at full strength), on wavefronts of a seed stream the training never saw,
    against exact PSFs of the emulator's size (:class:`svrt.optics.psf.PSFModel`): the PSF's relative error,
    the forward NMSE_power (Eq. 12) and NMSE_var of a granulation scene convolved with it, medians and 95th
    percentiles; and the cosine between the mode gradients of ``0.5 |f(O, a) - D|^2`` through the emulator and
    through exact optics, for a spatially variant model on a 4 x 4 node grid
    (:func:`svrt.optics.psf_interpolation.interpolated_psf_convolve`), D made with other wavefronts."""
    from svrt.instruments import get_instrument
    from svrt.metrics import nmse_power, nmse_variance
    from svrt.optics.convolution import fft_convolve
    from svrt.optics.psf import PSFModel
    from svrt.optics.psf_interpolation import interpolated_psf_convolve
    from svrt.scenes import make_scene

    exact = PSFModel(cfg.instrument, cfg.n_modes, psf_size=cfg.psf_size)
    scene = torch.from_numpy(make_scene("granulation", size, get_instrument(cfg.instrument).pixel_arcsec,
                                        cfg.seed + 77)).float()
    out = {}
    for i, regime in enumerate(("ao", "open")):
        rng = np.random.default_rng(10_000 + cfg.seed + i)
        a = torch.from_numpy(draw_coefficients(cfg.n_val, regime, rng, cfg.instrument, cfg.n_modes,
                                               (cfg.r0_min_cm, cfg.r0_max_cm)))
        with torch.no_grad():
            s_true, s_emul = exact(a), model(a)
            psf_err = (s_emul - s_true).pow(2).sum((-2, -1)) / s_true.pow(2).sum((-2, -1))
            n_img = min(200, len(a))
            img_true = fft_convolve(scene.double(), s_true[:n_img].double(), boundary="reflect")
            img_emul = fft_convolve(scene.double(), s_emul[:n_img].double(), boundary="reflect")
            p = nmse_power(img_emul, img_true).numpy()
            v = np.asarray(nmse_variance(img_emul, img_true))
        cosines = []
        for _ in range(n_grid):
            true_modes = torch.from_numpy(draw_coefficients(16, regime, rng, cfg.instrument, cfg.n_modes)).T
            guess = true_modes + 0.3 * torch.from_numpy(draw_coefficients(16, regime, rng, cfg.instrument,
                                                                          cfg.n_modes)).T
            true_modes, guess = true_modes.reshape(1, -1, 4, 4), guess.reshape(1, -1, 4, 4)
            with torch.no_grad():
                data = interpolated_psf_convolve(scene[None], true_modes, exact)
            grads = []
            for psf_model in (exact, model):
                x = guess.clone().requires_grad_(True)
                loss = 0.5 * (interpolated_psf_convolve(scene[None], x, psf_model) - data).pow(2).sum()
                grads.append(torch.autograd.grad(loss, x)[0].reshape(-1))
            cosines.append(float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)))
        out[regime] = {"psf_relative_error_median": float(psf_err.median()),
                       "psf_relative_error_p95": float(psf_err.quantile(0.95)),
                       "nmse_power_median": float(np.median(p)), "nmse_power_p95": float(np.percentile(p, 95)),
                       "nmse_variance_median": float(np.median(v)), "nmse_variance_p95": float(np.percentile(v, 95)),
                       "gradient_cosine_min": min(cosines), "gradient_cosine_median": float(np.median(cosines))}
    return out
