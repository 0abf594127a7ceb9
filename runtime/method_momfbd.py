"""The default method (``method="momfbd"``), in three stages, each a well-posed problem:

1. wavefronts at the nodes of the grid from an object-eliminated MOMFBD of the patch around each node
   (:mod:`svrt.runtime.patch_mfbd`: the log marginal likelihood of the wavefronts, L-BFGS, modes freed by
   radial order up to ``fit_modes``; fitting more modes than the noise supports over-restores);
2. the whole-field objects given those wavefronts with the spatially variant forward model of the
   engine (per-pixel wavefronts, no mosaic), by Wiener-preconditioned conjugate gradients
   (:mod:`svrt.runtime.object_solve`) under the Wiener prior ``1 / P_O`` fitted to the burst
   (:mod:`svrt.runtime.object_prior`): the regularisation follows the noise, no hand-tuned lambda_o;
   it stops when the loss falls by less than ``tolerance`` per iteration or at ``time_budget``;
3. optionally (``refine_rounds``) rounds of SV wavefront refinement with the objects fixed
   (:func:`refine_modes`) and object solves.

The data weights are ``gamma_kl / s_kl^2`` with ``s_kl^2`` the noise variance of frame (k, l) estimated
beyond the diffraction cutoff (:func:`svrt.runtime.problem.noise_variances`), times the pixel mask.
With ``high_order="kolmogorov"`` the wavefront beyond the fitted modes enters as its mean OTF, from the
r0 of the fitted modes (:mod:`svrt.optics.residual`).

Phase diversity (``ctx.diversity``, :mod:`svrt.optics.diversity`): channels that image one object (a
focused channel and its defocused partners) share one unknown object: the patch stage eliminates it from
all their frames together, the object stage solves one object per group (the data terms of all its
channels, the preconditioner summed over them, one prior) and every channel's forward model adds its
known defocus. The objects are returned once per channel (the group's object in every row).

With a checkpoint (``config.checkpoint``, :mod:`svrt.runtime.checkpoint`) the state is written after the
first object solve and after every refinement round but the last; a resumed solve skips the patch stage
and continues with the next round, to the same result.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from svrt.runtime.loss import grad_sq_mean
from svrt.runtime.plan import batches
from svrt.runtime.problem import MethodResult, SolveContext, noise_variances
from svrt.runtime.solver_config import fitted_modes, grid_shape, whole_field_tiles
from svrt.runtime.solver_monitor import Monitor, StoppingRule, wavefront_optimizer

__all__ = ["solve_momfbd", "refine_modes"]


def solve_momfbd(ctx: SolveContext, data_n, pix_w, init_o, init_a, t_start: float):
    """Patch wavefronts (object eliminated) -> Wiener objects with the SV forward model -> rounds of
    SV wavefront refinement and object solves. Everything in normalised units on the device.
    Returns the :class:`~svrt.runtime.problem.MethodResult` (cropped to the field; ``cards``: the stages')."""
    from svrt.runtime.object_solve import solve_objects

    cfg = ctx.config
    dev = ctx.device
    k, n_frames, y, x = data_n.shape
    # phase diversity: the unknown objects are one per group of channels; owner[k] is channel k's row
    spec = ctx.diversity
    groups = [[i] for i in range(k)] if spec is None else spec.groups
    owner = list(range(k)) if spec is None else spec.owner
    m = cfg.margin
    grid = grid_shape((y, x), cfg.grid)
    shape_p = (y + 2 * m, x + 2 * m)                   # the object with its margin
    stop = ctx.stop if ctx.stop is not None else StoppingRule.of(cfg, t_start)
    # the loss table, the callback with every row (as SVMOMFBD.solve documents), the stage bar
    monitor = Monitor(ctx.callback)
    info: dict = {}
    monitor.open_progress(cfg.progress, "SV-MOMFBD")

    def record(j_total, j_data, j_prior, j_modes, dt):
        monitor.end_iteration(monitor.row(j_total, j_data, j_prior, j_modes, dt))

    # noise of every frame, and the data weights 1 / s_kl^2 (times gamma_kl and the pixel mask)
    nvar = noise_variances(data_n, ctx.insts, dev)                                   # [K, L]
    w_kl = ctx.gamma.to(dev) / nvar
    weights = w_kl[:, :, None, None] * (pix_w if pix_w is not None else 1.0)

    ck = ctx.checkpoint
    resumed = ck.take() if ck is not None else None
    if resumed is not None:
        # continue after the stage the checkpoint was written at: the patch stage is not repeated
        tensors, state, saved = resumed
        prior, attenuation, o, a, rounds_done = _restore(tensors, state, len(groups), shape_p, ck.path.name, dev)
        info.update(state["info"])
        monitor.resume(saved)
    else:
        # 1. wavefronts at the nodes: object-eliminated MOMFBD of each node's patch
        monitor.stage("wavefronts per patch")
        alpha, problem = _node_wavefronts(ctx, data_n, nvar, init_a, grid, info)
        attenuation = _high_order_attenuation(ctx, alpha, problem, shape_p, info)
        prior = _wiener_prior(ctx, problem, alpha, groups, shape_p, info)
    field = _FieldModel(ctx, data_n, weights, w_kl, pix_w, attenuation, prior, owner, groups, shape_p)

    def object_stage(o, a_eff):
        last = [time.perf_counter()]

        def row(j, j_data, j_prior):   # each iteration recorded (and called back) as it ends, with its own time
            now = time.perf_counter()
            record(j, j_data, j_prior, 0.0, now - last[0])
            last[0] = now

        res = solve_objects(lambda oo: field.value_and_grad(oo, a_eff), lambda oo: field.emulate(oo, a_eff), o,
                            prior, field.denominator(a_eff), field.weighted_sq, cfg.object_iterations,
                            cfg.tolerance, stop.deadline, on_row=row)
        info["OBJ_STOP"] = res.stop_reason
        info["OBJ_ITERS"] = info.get("OBJ_ITERS", 0) + res.iterations
        return res.objects

    def save(o, a, rounds_done):
        if ck is not None:
            _save_checkpoint(ck, o, a, prior, attenuation, rounds_done, info, monitor.history)

    # 2. the objects with the SV forward model, started from the frame average (field + mirrored margin)
    if resumed is None:
        monitor.stage("objects")
        o = _first_objects(init_o.detach().to(dev), groups, m)
        a = ctx.centred(alpha.to(dev))
        o = object_stage(o, a)
        # chi^2 per weighted sample of this first solution (one wavefront per frame when coarse_to_fine):
        # ~1 where it explains the data down to the noise
        info["CHI2_FIRST"] = round(monitor.history["data"][-1] / max(1, int((weights > 0).expand_as(data_n).sum())), 4)
        rounds_done = 0
        save(o, a, rounds_done)

    # 3. rounds of SV wavefront refinement (objects fixed) and object solves
    n_rounds = _refinement_rounds(cfg, grid, info)
    for rnd in range(rounds_done, n_rounds):
        if stop.out_of_time():
            info["STOP"] = "time budget"
            break
        monitor.stage(f"refine {rnd + 1}/{cfg.refine_rounds}")
        a = refine_modes(ctx, o if spec is None else o[owner], a, data_n, weights, field.attenuate, (y, x), record)
        o = object_stage(o, a)
        rounds_done += 1
        if rounds_done < n_rounds:
            save(o, a, rounds_done)
    info["ROUNDS"] = rounds_done
    info.setdefault("STOP", info.get("OBJ_STOP", ""))
    monitor.close()

    # the restoration: o through the erf filter of Eq. 16 (o is already band-limited by the prior)
    o_star = ctx.filtered(o, [ctx.insts[g[0]] for g in groups])
    with torch.no_grad():
        model = field.emulate(o, a)
    if spec is not None:
        o, o_star = o[owner], o_star[owner]              # the group's object in every channel's row
        info["DIVERSITY"] = True
    crop = (slice(None), slice(m, m + y), slice(m, m + x))
    return MethodResult(o[crop], o_star[crop], a, model, monitor.arrays(), method_used="momfbd", cards=info)


def _first_objects(average, groups: list, m: int):
    """``[K_obj, Y + 2m, X + 2m]``: each object starts from its (first) channel's frame average
    ``[K, Y, X]``, mirrored into the margin (replicated where the margin exceeds the field)."""
    o = average[[g[0] for g in groups]]
    if m > 0:
        mode = "reflect" if m < min(average.shape[-2:]) else "replicate"
        o = F.pad(o[:, None], (m, m, m, m), mode=mode)[:, 0]
    return o


def _save_checkpoint(ck, o, a, prior, attenuation, rounds_done: int, info: dict, history: dict) -> None:
    """The state a resumed solve continues from (:func:`_restore` reads it back)."""
    tensors = {"o": o, "a": a, "prior": prior}
    for i, att in enumerate(attenuation):
        if att is not None:
            tensors[f"attenuation/{i}"] = att
    ck.save(tensors, {"rounds_done": rounds_done, "info": dict(info)}, history)


def _node_wavefronts(ctx: SolveContext, data_n, nvar, init_a, grid: tuple[int, int], info: dict):
    """Stage 1: the wavefronts ``[L, M, Yg, Xg]`` at the nodes and the patch problem (its object power laws),
    with coarse to fine: one wavefront per frame from the whole field (the most data, no patch edges), then
    every node's patch starts from it (and keeps it with ``node_iterations = 0``)."""
    from svrt.runtime.patch_mfbd import patch_wavefronts

    cfg = ctx.config
    t_stage = time.perf_counter()
    # fit_modes capped by what the field's data support (small fields: fewer modes, not noise fitted)
    info["FIT_MODES_USED"] = fitted_modes(cfg, tuple(data_n.shape), ctx.n_modes)
    common = dict(tiptilt=cfg.tiptilt, fit_modes=info["FIT_MODES_USED"], diversity=ctx.diversity,
                  start_rms=cfg.start_rms, optimizer=cfg.wavefront_optimizer, mode_prior=cfg.mode_prior)

    def fit(layout: dict, iterations: int, init=None):
        return patch_wavefronts(data_n, ctx.channels, ctx.n_modes, noise_var=nvar.mean(dim=1), iterations=iterations,
                                init=init, **layout, **common)

    # the whole field: one patch, or tiles of whole_field_tile sharing each frame's wavefront on a large field
    tiles = whole_field_tiles(cfg, tuple(data_n.shape[-2:]))
    whole = dict(grid_shape=tiles, patch_size=cfg.whole_field_tile or cfg.patch_size, shared=tiles != (1, 1))
    whole_field = None
    if init_a is None and grid != (1, 1) and cfg.coarse_to_fine:
        glob, whole_field = fit(whole, cfg.patch_iterations)
        init_a = glob.expand(-1, -1, *grid).contiguous()
    node_iterations = cfg.patch_iterations if (cfg.node_iterations is None or init_a is None) else cfg.node_iterations
    nodes = whole if grid == (1, 1) else dict(grid_shape=grid, patch_size=cfg.patch_size)
    keep_start = init_a is not None and grid != (1, 1) and node_iterations == 0
    alpha, pinfo = fit(nodes, 0 if keep_start else max(1, node_iterations), init_a)
    if keep_start:
        alpha = init_a                     # the nodes keep the start; the SV refinement moves them
    info["PATCH_SIZE_USED"] = pinfo["patch_size"]
    info["PATCH_METRIC0"] = round(pinfo["metric_start"], 6)
    info["PATCH_METRIC"] = round(pinfo["metric_end"], 6)
    info["PATCH_EVALS"] = pinfo["evaluations"]
    info["T_PATCH"] = round(time.perf_counter() - t_stage, 3)
    # the object's power spectrum (the Wiener prior) from the whole field where it was solved: the most data,
    # and the same prior as the invariant solution, which an isoplanatic burst then reproduces exactly
    return alpha, (whole_field or pinfo)["problem"]


def _high_order_attenuation(ctx: SolveContext, alpha, problem, shape_p: tuple[int, int], info: dict) -> list:
    """With ``high_order="kolmogorov"``: the mean OTF of the wavefront beyond the fitted modes, from the r0
    of the fitted modes, for every channel on the object's grid ``[Y + 2m, X + 2m]`` (and on the patch
    problem, whose object power laws are refitted with it); otherwise a None per channel."""
    from svrt.optics.filters import frequency_radius
    from svrt.optics.residual import estimate_d_over_r0, fitting_error_variance

    cfg = ctx.config
    if cfg.high_order != "kolmogorov":
        return [None] * len(ctx.insts)
    n_fit = info["FIT_MODES_USED"]
    d_r0 = estimate_d_over_r0(alpha[:, :n_fit])
    info["D_OVER_R0"] = round(d_r0, 3)
    info["FIT_ERR_RAD2"] = round(fitting_error_variance(d_r0, n_fit), 4)
    nu = frequency_radius(shape_p, real=False, device=ctx.device)
    nu_s = frequency_radius((problem.layout.size,) * 2, real=True, device=ctx.device)
    # each channel at its own wavelength (Channel.attenuation: D / r0 scales as lambda^(-6/5))
    problem.attenuation = [ch.attenuation(nu_s, d_r0, n_fit) for ch in ctx.channels]
    if problem.layout.shape not in ((1, 1), tuple(alpha.shape[2:])):
        alpha = alpha.mean(dim=(2, 3), keepdim=True)     # tiles sharing a wavefront: the field's mean one
    problem.refit_object_power(alpha.permute(0, 2, 3, 1))
    return [ch.attenuation(nu, d_r0, n_fit) for ch in ctx.channels]


def _wiener_prior(ctx: SolveContext, problem, alpha, groups: list, shape_p: tuple[int, int], info: dict):
    """``[K_obj, Y + 2m, X + 2m]``: the Wiener prior ``prior_scale / P_O(nu)`` of every object, from the
    power law fitted on the patches (0 at nu = 0: the mean is free)."""
    from svrt.optics.filters import frequency_radius

    nu_p = frequency_radius(shape_p, real=False, device=ctx.device)
    prior = torch.empty(len(groups), *shape_p, device=ctx.device)
    for i, members in enumerate(groups):
        law = problem.powers[members[0]]                       # an ObjectPrior (runtime/object_prior.py)
        info.update({f"{key}{i}": value for key, value in law.cards().items()})
        r = ctx.config.prior_scale / law(nu_p)
        r[0, 0] = 0.0
        prior[i] = r
    return prior


def _refinement_rounds(cfg, grid: tuple[int, int], info: dict) -> int:
    """How many rounds of SV refinement: none with one wavefront per frame (the whole-field
    object-eliminated solve is the refined solution already; refining it against fixed objects only
    degraded it on the 128^2 peer bursts), none for an isoplanatic burst (the first solution explains the
    data to the noise, chi^2 <= refine_above, and per-node wavefronts only fit the noise: they lost 7-15 %
    NMSE on theta0 = 20" bursts, benchmarks/PEERS-ISO.md), else ``refine_rounds``."""
    if cfg.refine_iterations <= 0 or grid == (1, 1):
        return 0
    if cfg.refine_above > 0 and info.get("CHI2_FIRST", float("inf")) <= cfg.refine_above:
        info["SV"] = "skipped: isoplanatic"
        return 0
    return cfg.refine_rounds


class _FieldModel:
    """The data term of the whole field through the SV forward model of every channel, for the object
    solve: objects ``o [K_obj, Y + 2m, X + 2m]`` (channel k sees object ``owner[k]``), wavefronts
    ``a_eff [L, M, Yg, Xg]``, frames ``[K, L, Y, X]``."""

    def __init__(self, ctx: SolveContext, data_n, weights, w_kl, pix_w, attenuation, prior, owner, groups, shape_p):
        self.ctx, self.data_n, self.weights, self.w_kl, self.pix_w = ctx, data_n, weights, w_kl, pix_w
        self.attenuation, self.prior, self.owner, self.groups, self.shape_p = attenuation, prior, owner, groups, shape_p
        self.k, self.n_frames, self.y, self.x = data_n.shape
        self.batches = batches(self.k, self.n_frames, ctx.plan.batch)
        # the preconditioner's PSFs: side min(64, field), even
        self.psf_size = min(64, *shape_p) - min(64, *shape_p) % 2

    def attenuate(self, o_k, i):
        """Object ``o_k`` through channel i's OTF of the unfitted modes (none: unchanged)."""
        if self.attenuation[i] is None:
            return o_k
        return torch.fft.ifft2(torch.fft.fft2(o_k) * self.attenuation[i]).real

    def value_and_grad(self, o, a_eff):
        """(sum w (f(o) - d)^2, its gradient in o, the model frames ``[K, L, Y, X]``)."""
        grad = torch.zeros_like(o)
        model = torch.empty(self.k, self.n_frames, self.y, self.x, device=o.device)
        total = 0.0
        for kk, idx in self.batches:
            ok = o[self.owner[kk]].detach().requires_grad_(True)
            with torch.enable_grad():
                pred = self.ctx.models[kk].predict(self.attenuate(ok, kk), a_eff, idx, (self.y, self.x))
                term = (self.weights[kk, idx] * (pred - self.data_n[kk, idx]).pow(2)).sum()
                (g,) = torch.autograd.grad(term, ok)
            grad[self.owner[kk]] += g
            model[kk, idx] = pred.detach()
            total += float(term.detach())
        return total, grad, model

    def emulate(self, o, a_eff):
        """The model frames ``[K, L, Y, X]`` of objects o and wavefronts a_eff."""
        out = torch.empty(self.k, self.n_frames, self.y, self.x, device=o.device)
        with torch.no_grad():
            for kk, idx in self.batches:
                out[kk, idx] = self.ctx.models[kk].predict(self.attenuate(o[self.owner[kk]], kk), a_eff, idx,
                                                           (self.y, self.x))
        return out

    def weighted_sq(self, r):
        return float((self.weights * r.pow(2)).sum())

    def denominator(self, a_eff):
        """2 (sum_l w_kl |S_kl|^2 + R_k) with S_kl the OTF of frame l's field-mean wavefront (for an object
        seen in several channels, the sum over them of the data part): the CG preconditioner."""
        ctx, dev = self.ctx, self.prior.device
        mean_a = a_eff.mean(dim=(-2, -1))                                                     # [L, M]
        out = torch.empty(len(self.groups), *self.shape_p, device=dev)
        data_part = []
        for i, channel in enumerate(ctx.channels):
            t = channel.field_otf(mean_a, ctx.n_modes, self.psf_size, self.shape_p, dev, self.attenuation[i])
            mean_w = self.w_kl[i] * (float(self.pix_w[i].mean()) if self.pix_w is not None else 1.0)
            data_part.append((mean_w[:, None, None] * t.abs().pow(2)).sum(dim=0))
        for g, members in enumerate(self.groups):
            part = data_part[members[0]]
            for j in members[1:]:
                part = part + data_part[j]
            out[g] = 2.0 * (part + self.prior[g])
        return out.clamp_min(1e-12 * float(out.max()))


def _restore(tensors: dict, state: dict, k: int, shape_p: tuple, name: str, dev):
    """The state a checkpoint of :func:`solve_momfbd` holds: (prior [K, *shape_p], attenuation (K OTFs or
    None), o [K, *shape_p], alpha [L, M, Yg, Xg], rounds done), on ``dev``; one SvrtError sentence when a
    key is missing or has the wrong shape."""
    from svrt.errors import SvrtError

    for key, shape in (("o", (k, *shape_p)), ("prior", (k, *shape_p)), ("a", None)):
        t = tensors.get(key)
        if t is None or (shape is not None and tuple(t.shape) != shape):
            raise SvrtError(f"Checkpoint {name} lacks '{key}' of shape {shape or '[L, M, Yg, Xg]'} "
                            f"(got {None if t is None else tuple(t.shape)}).")
    rounds = state.get("rounds_done")
    if not isinstance(rounds, int) or rounds < 0 or not isinstance(state.get("info"), dict):
        raise SvrtError(f"Checkpoint {name} has no valid 'rounds_done' and 'info' in its state.")
    attenuation = [tensors[f"attenuation/{i}"].to(dev) if f"attenuation/{i}" in tensors else None for i in range(k)]
    return (tensors["prior"].to(dev), attenuation, tensors["o"].to(dev), tensors["a"].to(dev), rounds)


def refine_modes(ctx: SolveContext, o, a, data_n, weights, attenuate, size, record):
    """The node wavefronts fitted with the objects fixed (``wavefront_optimizer``): the data term of the SV forward model plus
    lambda_alpha <|grad alpha|^2> (the wavefront varies smoothly across the field)."""
    cfg = ctx.config
    k, n_frames = data_n.shape[:2]
    field_batches = batches(k, n_frames, ctx.plan.batch)
    o_in = [attenuate(o[kk], kk).detach() for kk in range(k)]
    n_node = a.shape[1] if cfg.node_modes is None else min(int(cfg.node_modes), a.shape[1])
    free = a[:, :n_node].detach().clone().requires_grad_(True)
    fixed = a[:, n_node:].detach()
    opt = wavefront_optimizer([free], cfg.refine_iterations, "refine", cfg.wavefront_optimizer)
    scale = [None]

    def closure():
        opt.zero_grad()
        t0 = time.perf_counter()
        total = 0.0
        for kk, idx in field_batches:
            pred = ctx.models[kk].predict(o_in[kk], ctx.centred(torch.cat([free, fixed], dim=1)), idx, size)
            term = (weights[kk, idx] * (pred - data_n[kk, idx]).pow(2)).sum()
            term.backward()
            total += float(term.detach())
        if scale[0] is None:
            scale[0] = total / max(1, n_frames)       # lambda_alpha relative to one frame's data term
        reg = cfg.lambda_modes * scale[0] * grad_sq_mean(ctx.centred(torch.cat([free, fixed], dim=1))).sum()
        if reg.requires_grad:
            reg.backward()
        record(total + float(reg.detach()), total, float("nan"), float(reg.detach()), time.perf_counter() - t0)
        return torch.as_tensor(total + float(reg.detach()))

    opt.step(closure)
    return ctx.centred(torch.cat([free.detach(), fixed], dim=1))
