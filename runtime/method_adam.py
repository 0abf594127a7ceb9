"""The paper's method (``method="adam"``): joint AdamW on the objects and the modes (Eqs. 13-17).

The unknowns are the objects ``o_k [K, Y + 2m, X + 2m]`` (the field plus ``margin`` m on every side) and
the KL wavefront coefficients ``alpha_l [L, M, Yg, Xg]`` on the coarse grid. The loss (Eq. 17) is ::

    L = sum_{k,l} < gamma_kl w_klxy (i_kl - f(o*_k, s_k alpha_l))^2 >_xy       (data)
        + lambda_o     sum_k < |grad o*_k|^2 >_xy                                (reg_object)
        + lambda_alpha sum_l sum_m < |grad alpha_lm|^2 >_nodes                   (reg_modes)

with ``< >`` a mean over pixels (or grid nodes), so the lambdas do not depend on the image size, while the
data term grows with the number of frames as in Eq. 17 (:mod:`svrt.runtime.loss`). AdamW with two learning
rates (objects ``lr_objects``, the paper's 10^-1.7; modes ``lr_modes``, 10^-0.5) for ``iterations`` steps.

* **Two-scale modes** (``global_modes``): ``alpha_l(node) = g_l + a_l(node)``, a wavefront common to the
  frame plus a per-node part, with learning rates ``lr_modes`` (g) and ``lr_nodes`` (a). The model is the
  same (the sum is what the forward model sees and what is written); only the optimisation is better
  conditioned: Adam moves every parameter by about its learning rate per step whatever the size of its
  gradient, so per-node parameters alone jitter from node to node, while g follows the gradient of the
  whole field.
* **Scale.** The gradients of the data term accumulate batch by batch (:func:`svrt.runtime.plan.batches`);
  FP16 engines on CUDA use a dynamic loss scale (2^16, halved on overflow).
* **Tiles** (:func:`solve_tiled`): when even one frame of the field does not fit the memory bound, the
  field is solved in overlapping tiles blended with raised-cosine weights.
* **Checkpoints** (``config.checkpoint``, :mod:`svrt.runtime.checkpoint`): every ``checkpoint_every``
  iterations the parameters, the AdamW state, the loss scale and the history are written; a resumed solve
  continues with the next iteration, to the same result (not for tiles).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from svrt.errors import SvrtError
from svrt.mode_grid import node_positions, sample_coarse
from svrt.runtime.forward_model import emulate
from svrt.runtime.loss import grad_sq_mean
from svrt.runtime.plan import batches
from svrt.runtime.problem import MethodResult, SolveContext
from svrt.runtime.solver_config import grid_shape
from svrt.runtime.solver_monitor import Monitor, StoppingRule
from svrt.windows import blend_weights

__all__ = ["solve_field", "solve_tiled"]


def solve_field(ctx: SolveContext, data_n, pix_w, init_o, init_a, tile_label: str):
    """Optimise one field (the whole image or a tile); everything in normalised units on the device.

    The unknown object covers the field plus ``margin`` pixels on every side (initialised by mirroring
    ``init_o``), so that light from outside the field has somewhere to come from; only the field is
    compared with the frames. Returns the :class:`~svrt.runtime.problem.MethodResult` cropped to the field."""
    cfg = ctx.config
    k, n_frames, y, x = data_n.shape
    insts, plan = ctx.insts, ctx.plan
    m = cfg.margin
    o0 = init_o.detach()
    if m > 0:
        mode = "reflect" if m < min(y, x) else "replicate"
        o0 = F.pad(o0[:, None], (m, m, m, m), mode=mode)[:, 0]
    o = o0.clone().requires_grad_(True)
    a = ctx.centred(init_a.detach()).clone().requires_grad_(True)
    mode_params = [a]
    groups = [{"params": [o], "lr": cfg.lr_objects, "weight_decay": cfg.weight_decay_objects}]
    g = None
    if cfg.global_modes and a.shape[-2] * a.shape[-1] > 1:
        # alpha_l(node) = g_l + a_l(node): Adam moves the frame's common wavefront g_l with the gradient
        # of the whole field, the nodes only refine it (the same model, better conditioned steps)
        g = torch.zeros(a.shape[0], a.shape[1], 1, 1, device=a.device, dtype=a.dtype, requires_grad=True)
        mode_params.append(g)
        groups.append({"params": [g], "lr": cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})
        groups.append({"params": [a], "lr": cfg.lr_nodes or cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})
    else:
        groups.append({"params": [a], "lr": cfg.lr_modes, "weight_decay": cfg.weight_decay_modes})

    def modes_now():
        return ctx.centred(a if g is None else a + g)

    opt = torch.optim.AdamW(groups)
    fp16 = ctx.fp16
    loss_scale = float(cfg.loss_scale) if cfg.loss_scale is not None else (2.0 ** 16 if fp16 else 1.0)
    field_batches = batches(k, n_frames, plan.batch)
    # the loss table, the callback, the bar and the checkpoint cadence (svrt.runtime.solver_monitor)
    monitor = Monitor(ctx.callback, tile_label, checkpoint_every=cfg.checkpoint_every, last=cfg.iterations)
    ck = ctx.checkpoint
    params = [o] + ([g] if g is not None else []) + [a]          # the order of the optimiser's groups
    start = 1
    resumed = ck.take() if ck is not None else None
    if resumed is not None:
        start, loss_scale = _restore(resumed, opt, params, monitor.history, cfg.iterations, ck.path.name)
    monitor.open_progress(cfg.progress, "SV-MOMFBD" + (f" {tile_label}" if tile_label else ""), total=cfg.iterations,
                          initial=start - 1)
    stop = ctx.stop if ctx.stop is not None else StoppingRule()
    cards: dict = {}
    try:
        for it in range(start, cfg.iterations + 1):
            t0 = time.perf_counter()
            data_total, reg_o, reg_a, loss_scale = _gradients(ctx, opt, o, modes_now, [o] + mode_params, data_n,
                                                              pix_w, field_batches, loss_scale)
            if loss_scale != 1.0:
                for p in [o] + mode_params:
                    if p.grad is not None:
                        p.grad.div_(loss_scale)
            opt.step()
            with torch.no_grad():
                a.copy_(ctx.centred(a))
                if g is not None:
                    g.copy_(ctx.centred(g))
            dt = time.perf_counter() - t0
            reg_object, reg_modes = float(reg_o.detach()), float(reg_a.detach())
            row = {"iteration": it, "total": data_total + reg_object + reg_modes, "data": data_total,
                   "reg_object": reg_object, "reg_modes": reg_modes, "time_s": dt}
            monitor.end_iteration(row, save=None if ck is None else
                                  lambda: _save(ck, opt, params, monitor.history, it, loss_scale))
            if it < cfg.iterations and stop.out_of_time():
                cards["STOP"] = "time budget"
                break
    finally:
        monitor.close()
    history = monitor.arrays()
    with torch.no_grad():
        a = modes_now().detach()
        o_star = ctx.filtered(o.detach(), insts)
        model = emulate(ctx.models, o_star, ctx.centred(a), field_batches, (y, x))
    crop = (slice(None), slice(m, m + y), slice(m, m + x))
    return MethodResult(o.detach()[crop], o_star[crop], a, model, history, method_used="adam", cards=cards)


def _gradients(ctx: SolveContext, opt, o, modes_now, params, data_n, pix_w, field_batches, loss_scale: float):
    """One evaluation of the loss, its gradients accumulated into ``params`` (scaled by ``loss_scale``):
    the data term batch by batch, then the regularisation. With fp16, overflowing gradients are computed
    again at half the loss scale (8 tries). Returns (data term, reg_object, reg_modes, loss scale)."""
    cfg, insts, gamma = ctx.config, ctx.insts, ctx.gamma
    y, x = data_n.shape[-2:]
    npix = float(y * x)
    for _attempt in range(8):
        opt.zero_grad(set_to_none=True)
        data_total = 0.0
        # data term, batch by batch (gradients accumulate into o and a)
        for kk, idx in field_batches:
            o_star_k = ctx.filtered(o[kk:kk + 1], [insts[kk]])[0]
            a_eff = modes_now()
            pred = ctx.models[kk].predict(o_star_k, a_eff, idx, (y, x))
            resid = pred - data_n[kk, idx]
            w = gamma[kk, idx][:, None, None]
            if pix_w is not None:
                w = w * pix_w[kk, idx]
            term = (w * resid.pow(2)).sum() / npix
            (term * loss_scale).backward()
            data_total += float(term.detach())
        # regularisation
        o_star = ctx.filtered(o, insts)
        reg_o = cfg.lambda_obj * grad_sq_mean(o_star).sum()
        reg_a = cfg.lambda_modes * grad_sq_mean(modes_now()).sum()
        reg = reg_o + reg_a
        if reg.requires_grad:
            (reg * loss_scale).backward()
        grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
        if grads_ok and math.isfinite(data_total):
            return data_total, reg_o, reg_a, loss_scale
        if not ctx.fp16:
            raise SvrtError("the loss or its gradient became NaN/Inf; lower the learning rates "
                            "(lr_objects, lr_modes) or check the input frames.")
        loss_scale /= 2.0
    raise SvrtError("FP16 gradients overflow even at a small loss scale; use precision fp32.")


def _save(ck, opt, params, history, it: int, loss_scale: float) -> None:
    """Checkpoint after iteration ``it``: the parameters ``params`` (o [K, Y+2m, X+2m], g [L, M, 1, 1] when
    two-scale, a [L, M, Yg, Xg]), the AdamW state of each, the loss scale and the history so far."""
    tensors = {}
    for i, (name, p) in enumerate(zip(_names(params), params)):
        tensors[name] = p.detach()
        for key, value in opt.state.get(p, {}).items():
            tensors[f"opt/{i}/{key}"] = torch.as_tensor(value)
    ck.save(tensors, {"iteration": it, "loss_scale": loss_scale}, history)


def _names(params) -> list:
    return ["o", "g", "a"] if len(params) == 3 else ["o", "a"]


def _restore(resumed, opt, params, history, iterations: int, name: str):
    """Load a checkpoint written by :func:`_save` into ``params``, ``opt`` and ``history``; returns (the
    next iteration, the loss scale)."""
    tensors, state, hist = resumed
    it = state.get("iteration")
    if not isinstance(it, int) or not 1 <= it < iterations:
        raise SvrtError(f"Checkpoint {name} holds iteration {it!r}; expected 1..{iterations - 1} for this run.")
    for i, (pname, p) in enumerate(zip(_names(params), params)):
        t = tensors.get(pname)
        if t is None or tuple(t.shape) != tuple(p.shape):
            raise SvrtError(f"Checkpoint {name} lacks '{pname}' of shape {tuple(p.shape)} "
                            f"(got {None if t is None else tuple(t.shape)}).")
        with torch.no_grad():
            p.copy_(t.to(p.device, p.dtype))
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            v = tensors.get(f"opt/{i}/{key}")
            if v is None:
                raise SvrtError(f"Checkpoint {name} lacks the optimiser state 'opt/{i}/{key}'.")
            st[key] = v if key == "step" else v.to(p.device, p.dtype)
        opt.state[p] = st
    for key in history:
        history[key] = list(hist.get(key, []))
        if len(history[key]) != it:
            raise SvrtError(f"Checkpoint {name} holds {len(history[key])} values of history/{key}; expected {it}.")
    return it + 1, float(state.get("loss_scale", 1.0))


def solve_tiled(ctx: SolveContext, data_n, pix_w, init_o, init_a):
    """Solve overlapping tiles one after another and blend them with raised-cosine weights (ramps over
    the overlap on the sides inside the field). The burst stays in host memory; only one tile's frames
    are on the device at a time. Objects and model are blended per pixel; the modes of the global grid
    are the blend of every tile's bilinear mode field sampled at the global nodes' positions. Returns the
    blended :class:`~svrt.runtime.problem.MethodResult`."""
    cfg = ctx.config
    k, n_frames, y, x = data_n.shape
    dev = ctx.device
    yg, xg = grid_shape((y, x), cfg.grid)
    field_tiles = ctx.plan.tiles
    ramp = ctx.plan.overlap
    acc_o = torch.zeros(k, y, x)
    acc_os = torch.zeros(k, y, x)
    acc_m = torch.zeros(k, n_frames, y, x)
    acc_w = torch.zeros(y, x)
    acc_a = torch.zeros(n_frames, ctx.n_modes, yg, xg)
    acc_aw = torch.zeros(yg, xg)
    # pixel coordinates of the global nodes (bilinear, align_corners=False)
    py, px = torch.from_numpy(node_positions(y, yg)), torch.from_numpy(node_positions(x, xg))
    init_a = init_a.detach().to("cpu")
    history = None
    cards: dict = {}
    for t, (y0, x0, ty, tx) in enumerate(field_tiles):
        sl = (slice(y0, y0 + ty), slice(x0, x0 + tx))
        tyg, txg = (math.ceil(ty / cfg.grid), math.ceil(tx / cfg.grid)) if cfg.grid else (1, 1)
        # the tile's initial modes: the global field sampled at the tile's node positions
        ty_n, tx_n = torch.from_numpy(y0 + node_positions(ty, tyg)), torch.from_numpy(x0 + node_positions(tx, txg))
        ia = sample_coarse(init_a, ty_n, tx_n, (y, x)).to(dev)
        pw = None if pix_w is None else pix_w[..., sl[0], sl[1]].contiguous().to(dev)
        tile = solve_field(ctx, data_n[..., sl[0], sl[1]].contiguous().to(dev), pw,
                           init_o[:, sl[0], sl[1]].contiguous().to(dev), ia, tile_label=f"tile {t + 1}/{len(field_tiles)}")
        o, o_star, a, model, hist = tile.objects, tile.objects_filtered, tile.modes, tile.model, tile.history
        cards.update(tile.cards)                       # STOP of a tile cut by the time budget
        wy = torch.as_tensor(blend_weights(y, y0, ty, ramp), dtype=torch.float32)
        wx = torch.as_tensor(blend_weights(x, x0, tx, ramp), dtype=torch.float32)
        w = wy[:, None] * wx[None, :]
        acc_o[:, sl[0], sl[1]] += w * o.cpu()
        acc_os[:, sl[0], sl[1]] += w * o_star.cpu()
        acc_m[:, :, sl[0], sl[1]] += w * model.cpu()
        acc_w[sl[0], sl[1]] += w
        # global nodes inside this tile (a contiguous range along each axis)
        iy = torch.nonzero((py >= y0 - 0.5) & (py <= y0 + ty - 0.5)).flatten()
        ix = torch.nonzero((px >= x0 - 0.5) & (px <= x0 + tx - 0.5)).flatten()
        if iy.numel() and ix.numel():
            sampled = sample_coarse(a.detach().cpu(), py[iy] - y0, px[ix] - x0, (ty, tx))
            wny = torch.as_tensor(np.interp(py[iy].numpy() - y0, np.arange(ty), wy.numpy()), dtype=torch.float32)
            wnx = torch.as_tensor(np.interp(px[ix].numpy() - x0, np.arange(tx), wx.numpy()), dtype=torch.float32)
            wn = wny[:, None] * wnx[None, :]
            ys, xs = slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)
            acc_a[:, :, ys, xs] += wn * sampled
            acc_aw[ys, xs] += wn
        area = ty * tx / float(y * x)
        if history is None:
            history = {key: (v.copy() if key == "iteration" else v * (area if key != "time_s" else 1.0))
                       for key, v in hist.items()}
        else:
            for key, v in hist.items():
                if key != "iteration":
                    history[key] = history[key] + (v * area if key != "time_s" else v)
    acc_w = acc_w.clamp_min(1e-12)
    o = (acc_o / acc_w).to(dev)
    o_star = (acc_os / acc_w).to(dev)
    model = (acc_m / acc_w).to(dev)
    a = ctx.centred(acc_a / acc_aw.clamp_min(1e-12)).to(dev)
    return MethodResult(o, o_star, a, model, history, method_used="adam", cards=cards)
