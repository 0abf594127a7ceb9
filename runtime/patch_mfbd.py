"""Patch-wise MOMFBD with the object eliminated: the wavefronts at the nodes of the solver's grid.

This is the classical multi-object multi-frame blind deconvolution (Löfdahl 2002, van Noort et al. 2005)
applied to one square patch per grid node, every patch on its own (isoplanatic inside the patch). With
the object eliminated by its least-squares (Wiener) estimate, the metric of one patch depends on the
wavefronts alone (Paxman et al. 1992, Eq. 27)::

    L(alpha) = sum_k sum_{nu < cutoff_k} [ sum_l |D_kl|^2 - |sum_l D_kl conj(S_kl)|^2 / (sum_l |S_kl|^2 + g_k) ]

``D_kl`` the spectrum of frame l of object k in the apodised patch, ``S_kl`` the OTF of the wavefront
``alpha_l`` (radians at object 0's wavelength, scaled by lambda_0 / lambda_k: the channel's wavefront,
:mod:`svrt.runtime.channel`), ``g_k`` the ratio of the
noise power to the object's power (the Wiener term that keeps the metric from fitting noise). Every
patch and frame is computed in one batch, so all patches are solved together (by the ``wavefront_optimizer``,
Nesterov descent by default); the modes are freed in steps of radial order (tip-tilt to defocus-astigmatism
to coma ... to all M), the standard way to keep MOMFBD out of the local minima of the higher orders. The
modes of the steps already fitted carry a Kolmogorov prior at the scale they were fitted to
(:func:`kolmogorov_precision`), which makes the metric a negative log posterior: without it a deep fit under
strong seeing followed the metric's negative curvature, and rounding (docs/QUALITY.md, "Rounding").

Why it is here: the spatially variant solve (:mod:`svrt.runtime.solver`) is a large non-convex problem
whose Adam iterations start from zero wavefronts; started from these wavefronts it only has to refine
them and solve for the whole-field object (no mosaic). With ``grid = 0`` the one patch is the whole
field: the spatially invariant MFBD.

Phase diversity (Paxman et al. 1992): channels that image one object (a focused channel and its
defocused partners, :mod:`svrt.optics.diversity`) form a group; ``S_jl`` is then the OTF of
``alpha_l lambda_0 / lambda_j + delta_j`` (``delta_j`` the channel's known defocus) and the object of the
group is eliminated from all its channels' frames together. With noise variance ``n_j`` per channel the
metric of a group is the same expression in whitened spectra ``D_jl / sqrt(n_j)``, ``S_jl / sqrt(n_j)``,
summed over the group's channels and frames (:meth:`PatchProblem.group_metric`).

Shapes: frames ``[K, L, Y, X]`` (normalised to a mean of 1 per object), wavefronts ``[L, M, Yg, Xg]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.mode_grid import node_positions
from svrt.optics.filters import frequency_radius
from svrt.runtime.channel import burst_channels
from svrt.runtime.object_prior import ObjectPrior, ObjectPriorFit, fit_object_power
from svrt.runtime.solver_config import solver_default
from svrt.runtime.solver_monitor import wavefront_optimizer
from svrt.windows import modified_hann

__all__ = ["PatchLayout", "patch_layout", "patch_wavefronts", "kolmogorov_precision", "mode_groups",
           "MODE_STEPS"]

# modes freed in steps: tip-tilt, + defocus and astigmatism, + coma and trefoil, ..., all
MODE_STEPS = (2, 5, 9, 14, 20, 27, 35, 44, 54, 65)


@dataclass(frozen=True)
class PatchLayout:
    """One square patch of side ``size`` per grid node: ``starts_y [Yg]`` and ``starts_x [Xg]`` are the
    first pixels (the patch centred on the node, clamped to the field)."""

    size: int
    starts_y: tuple
    starts_x: tuple

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.starts_y), len(self.starts_x)


def patch_layout(image_shape: tuple[int, int], grid_shape: tuple[int, int], patch_size: int) -> PatchLayout:
    """Patches centred on the grid nodes (node (i, j) at pixel ((i + 0.5) Y / Yg - 0.5, ...), the
    bilinear-upsampling contract), of side ``min(patch_size, Y, X)``; a 1 x 1 grid takes the largest
    centred square (the invariant MFBD)."""
    y, x = image_shape
    yg, xg = grid_shape
    size = min(y, x) if (yg == 1 and xg == 1) else min(int(patch_size), y, x)
    size -= size % 2
    if size < 16:
        raise SvrtError(f"patches of {size} pixels are too small for MOMFBD; use a larger image or patch_size.")

    def starts(n: int, ng: int) -> tuple:
        centres = node_positions(n, ng)
        return tuple(int(np.clip(round(c - (size - 1) / 2), 0, n - size)) for c in centres)

    return PatchLayout(size=size, starts_y=starts(y, yg), starts_x=starts(x, xg))


def _extract(frames: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """``[K, L, Y, X]`` -> ``[K, L, Yg, Xg, S, S]`` patches."""
    s = layout.size
    rows = torch.stack([torch.arange(a, a + s) for a in layout.starts_y])     # [Yg, S]
    cols = torch.stack([torch.arange(b, b + s) for b in layout.starts_x])     # [Xg, S]
    p = frames[:, :, rows][:, :, :, :, cols]                                   # [K, L, Yg, S, Xg, S]
    return p.permute(0, 1, 2, 4, 3, 5)


def _centred(alpha: torch.Tensor, tiptilt: bool) -> torch.Tensor:
    """``[L, ..., M]`` with the mean over frames of tip and tilt (modes 0, 1) removed."""
    if not tiptilt or alpha.shape[0] < 1:
        return alpha
    mean = alpha[..., :2].mean(dim=0, keepdim=True)
    return torch.cat([alpha[..., :2] - mean, alpha[..., 2:]], dim=-1)


class PatchProblem:
    """The spectra of every patch and the channels' OTFs; :meth:`metric` is L(alpha) summed over patches.

    channels: one :class:`~svrt.runtime.channel.Channel` per object (or its
    :class:`~svrt.instruments.Instrument`, then made into channels with ``diversity``'s known defocus);
    ``diversity`` also ties channels to one object (its groups). ``prior_fit`` makes each object's
    :class:`~svrt.runtime.object_prior.ObjectPrior` from the patch spectra (:func:`fit_object_power`)."""

    def __init__(self, frames: torch.Tensor, channels, n_modes: int, layout: PatchLayout, noise_var: torch.Tensor,
                 gamma_scale: float = 1.0, weights: torch.Tensor | None = None, attenuation=None, diversity=None,
                 prior_fit: ObjectPriorFit = fit_object_power):
        k = frames.shape[0]
        s = layout.size
        self.layout, self.n_modes, self.k = layout, n_modes, k
        dev = frames.device
        self.device = dev
        win = modified_hann(s, device=dev)
        patches = _extract(frames, layout)                                      # [K, L, Yg, Xg, S, S]
        mean = patches.mean(dim=(-2, -1), keepdim=True)
        self.spectra = torch.fft.rfft2((patches - mean) * win)                  # [K, L, Yg, Xg, S, S/2+1]
        if weights is not None:                                                 # gamma_kl as amplitude weights
            self.spectra = self.spectra * weights.sqrt()[:, :, None, None, None, None]
        nu = frequency_radius((s, s), real=True, device=dev)
        self.channels = burst_channels(channels, diversity, n_modes)
        insts = [ch.instrument for ch in self.channels]
        self.masks = [((nu <= inst.cutoff_cycles_per_pixel) & (nu > 0)).float() for inst in insts]
        self.cutoffs = [inst.cutoff_cycles_per_pixel for inst in insts]
        # OTF factor of what the M modes do not describe (svrt.optics.residual), [S, S/2+1] per object
        self.attenuation = [None if attenuation is None else attenuation(i, nu) for i in range(k)]
        # noise power per frequency: white noise of variance s^2 per pixel has E|FFT|^2 = s^2 sum(win^2)
        self.window_power = float(win.pow(2).sum())
        self.gamma_scale = float(gamma_scale)
        self.noise_var = [float(v) for v in noise_var]
        self.nu = nu
        self.count = [float(mk.sum()) * layout.shape[0] * layout.shape[1] for mk in self.masks]
        self.gamma = [None] * k
        self.powers = [None] * k
        # phase diversity: the channels of each object
        self.groups = [[i] for i in range(k)] if diversity is None else [list(g) for g in diversity.groups]
        self.prior_fit = prior_fit
        self.mode_precision = None          # [M] 1 / prior variance of each mode [rad^-2] (set_mode_prior)

    def set_object_power(self, i: int, power: ObjectPrior) -> None:
        """The object prior P_O of object ``i`` (an :class:`~svrt.runtime.object_prior.ObjectPrior`):
        gamma(nu) = s^2 / P_O(nu), the ratio of noise to object power at every frequency."""
        self.powers[i] = power
        self.gamma[i] = (self.gamma_scale * self.noise_var[i] / power(self.nu)).clamp_min(1e-12)

    def set_mode_prior(self, precision: torch.Tensor | None) -> None:
        """The Gaussian prior of the modes: ``precision [M]`` the inverse variance of each [rad^-2] (0: free),
        or None for none (:func:`kolmogorov_precision`)."""
        self.mode_precision = None if precision is None else precision.to(self.device, torch.float32)

    def otfs(self, alpha: torch.Tensor, i: int) -> torch.Tensor:
        """OTFs of object ``i`` for wavefronts ``alpha [L, Yg, Xg, M]``: ``[L, Yg, Xg, S, S/2+1]``."""
        return self.channels[i].patch_otf(alpha, self.n_modes, self.layout.size, self.device, self.attenuation[i])

    def metric(self, alpha: torch.Tensor) -> torch.Tensor:
        """Minus the log marginal likelihood of the wavefronts (the objects integrated out under their
        Gaussian prior), summed over objects and patches, per frequency::

            [sum_l |D_l|^2 - |sum_l D_l conj(S_l)|^2 / (sum_l |S_l|^2 + g)] / n + log(1 + sum_l |S_l|^2 / g)

        n = s^2 sum(w^2) the noise power, g = s^2 / P_O. The first term alone (the joint estimate of
        objects and wavefronts) prefers sharp PSFs, since a sharper PSF lets the object explain more
        of the noise; the log-determinant term is the price of that freedom and removes the bias.

        With a mode prior (:meth:`set_mode_prior`) it adds minus its log, ``sum alpha^2 precision / 2`` over
        frames, nodes and modes, divided by the first object's number of frequencies as the data terms are:
        the negative log posterior (MAP), so the prior weighs as much against one frequency as the data do."""
        total = alpha.new_zeros(())
        if self.mode_precision is not None:
            total = total + 0.5 * (alpha.pow(2) * self.mode_precision).sum() / self.count[0]
        for group in self.groups:
            if len(group) > 1:
                total = total + self.group_metric(alpha, group)
                continue
            i = group[0]
            t = self.otfs(alpha, i)
            d = self.spectra[i]
            g = self.gamma[i]
            n = self.noise_var[i] * self.window_power
            num = (d * t.conj()).sum(dim=0).abs().pow(2)                        # [Yg, Xg, S, S/2+1]
            s2 = t.abs().pow(2).sum(dim=0)
            per = (d.abs().pow(2).sum(dim=0) - num / (s2 + g)) / n + torch.log1p(s2 / g)
            total = total + (per * self.masks[i]).sum() / self.count[i]
        return total

    def group_metric(self, alpha: torch.Tensor, group: list) -> torch.Tensor:
        """The metric of one object seen in several channels ``group`` (the anchor first; phase diversity):
        with whitened spectra ``d_jl = D_jl / sqrt(n_j)`` and OTFs ``t_jl = S_jl / sqrt(n_j)`` and
        ``r = 1 / (W P_O)`` of the anchor, ``sum |d|^2 - |sum d conj(t)|^2 / (sum |t|^2 + r) + log(1 + sum |t|^2 / r)``,
        summed over the group's channels j and frames l: the single-channel metric when the group has one."""
        a = group[0]
        r = self.gamma[a] / (self.noise_var[a] * self.window_power)
        cross = sq_d = sq_t = 0.0
        for j in group:
            scale = 1.0 / math.sqrt(self.noise_var[j] * self.window_power)
            t = self.otfs(alpha, j) * scale
            d = self.spectra[j] * scale
            cross = cross + (d * t.conj()).sum(dim=0)
            sq_d = sq_d + d.abs().pow(2).sum(dim=0)
            sq_t = sq_t + t.abs().pow(2).sum(dim=0)
        per = sq_d - cross.abs().pow(2) / (sq_t + r) + torch.log1p(sq_t / r)
        return (per * self.masks[a]).sum() / self.count[a]

    def refit_object_power(self, alpha: torch.Tensor) -> None:
        """Fit every object's P_O to the patches given the wavefronts ``alpha [L, Yg, Xg, M]`` (an object seen
        in several channels: on its anchor's frames, shared by the group)."""
        with torch.no_grad():
            for group in self.groups:
                i = group[0]
                t = self.otfs(alpha, i)
                law = self.prior_fit(self.spectra[i].abs().pow(2).mean(dim=0), t.abs().pow(2).mean(dim=0),
                                     self.noise_var[i], self.window_power, self.cutoffs[i])
                for j in group:
                    self.set_object_power(j, law)


def mode_groups(top: int) -> list:
    """The modes freed together at each step of the patch stage, ``[(first, end), ...]`` up to ``top``
    (:data:`MODE_STEPS`)."""
    ends = [m for m in MODE_STEPS if m < top] + [top]
    return list(zip([0] + ends[:-1], ends))


def kolmogorov_precision(alpha: torch.Tensor, groups: list, weight: float = 1.0) -> torch.Tensor | None:
    """``[M]``: the inverse variance of every mode of ``groups`` under a Kolmogorov prior at the scale each
    group was fitted to: ``weight / (c_j s_g)``, ``s_g`` the mean square of the group's modes in ``alpha
    [L, ..., M]`` (radians) over their Kolmogorov variances ``c_j`` (:func:`svrt.optics.kl.kl_basis`), so
    ``s_g = (D/r0)^(5/3)`` for Kolmogorov wavefronts. 0 for tip and tilt (alignment and image motion) and for
    modes in no group; None when no group has a scale.

    Why each group at its own scale (empirical Bayes per radial-order step) and not one r0 for all: an AO system
    corrects the low orders and leaves the high ones, so a scale measured on other modes is wrong by the
    correction on one side of it. Measured on the 128^2 peer bursts: one scale from the step before cost the AO
    bursts 4 % of NMSE_var on the mean, each group's own 0.6 % (docs/QUALITY.md, "Rounding")."""
    from svrt.optics.kl import kl_basis
    from svrt.optics.residual import kolmogorov_scale

    m = alpha.shape[-1]
    c = torch.as_tensor(kl_basis(m).variances, dtype=torch.float64)
    precision = torch.zeros(m, dtype=torch.float64)
    found = False
    for first, end in groups:
        first = max(2, int(first))
        if end <= first:
            continue
        scale = kolmogorov_scale(alpha.movedim(-1, 1), first, end)
        if scale > 0.0:
            precision[first:end] = weight / (c[first:end] * scale)
            found = True
    return precision.float() if found else None


def patch_wavefronts(frames: torch.Tensor, channels, n_modes: int, grid_shape: tuple[int, int], noise_var,
                     patch_size: int = solver_default("patch_size"),
                     iterations: int = solver_default("patch_iterations"), gamma_scale: float = 1.0,
                     tiptilt: bool = True, weights: torch.Tensor | None = None, attenuation=None,
                     init: torch.Tensor | None = None, progress=None, fit_modes: int | None = None,
                     seed: int = 0, diversity=None,
                     start_rms: float = solver_default("start_rms"), shared: bool = False,
                     optimizer: str = solver_default("wavefront_optimizer"),
                     mode_prior: float = solver_default("mode_prior")) -> tuple[torch.Tensor, dict]:
    """Wavefronts ``[L, M, Yg, Xg]`` (radians at object 0's wavelength) at the grid nodes, from one
    object-eliminated MOMFBD per node's patch; with ``shared``, ``[L, M, 1, 1]``: one wavefront per frame
    seen through every patch, whose metrics add up (a large field as tiles of a fixed side, so the
    whole-field fit costs the same per pixel at every field size, and its OTFs are made once per frame).

    frames ``[K, L, Y, X]`` normalised; ``channels`` one :class:`~svrt.runtime.channel.Channel` (or
    :class:`~svrt.instruments.Instrument`) per object;
    ``noise_var [K]`` the noise variance per pixel of each object's frames (same units);
    ``iterations`` per mode step (:data:`MODE_STEPS` up to ``n_modes``; 0: no fit, the start's metric) of
    ``optimizer`` ('nesterov' or 'lbfgs', :func:`~svrt.runtime.solver_monitor.wavefront_optimizer`);
    ``weights [K, L]`` gamma_kl; ``attenuation(i, nu)`` the OTF factor of the unmodelled high orders;
    ``mode_prior`` the weight of the Kolmogorov prior on the modes of the steps before each step
    (:func:`kolmogorov_precision`, each step's modes at the scale they were fitted to; 0: none);
    ``init [L, M, Yg, Xg]`` a starting point (e.g. the previous burst's); ``start_rms`` [rad] the random
    start of newly freed modes (seeded; the defaults of ``patch_size``, ``iterations`` and ``start_rms`` are
    the settings', :class:`~svrt.runtime.solver_config.SolverConfig`); ``diversity`` a
    :class:`~svrt.optics.diversity.DiversitySpec` (channels tied to one object, their known defocus) or
    None. Returns the wavefronts and a
    dict with the metric before and after (the marginal likelihood, without the mode prior) and the number of
    function evaluations."""
    k, n_frames, y, x = frames.shape
    layout = patch_layout((y, x), grid_shape, patch_size)
    noise = torch.as_tensor(noise_var, dtype=torch.float32).reshape(-1)
    problem = PatchProblem(frames, channels, n_modes, layout, noise, gamma_scale, weights, attenuation, diversity)
    yg, xg = (1, 1) if shared else layout.shape
    problem.refit_object_power(torch.zeros(n_frames, yg, xg, n_modes, device=frames.device) if init is None
                               else init.permute(0, 2, 3, 1).to(frames.device, torch.float32))
    alpha = torch.zeros(n_frames, yg, xg, n_modes, device=frames.device)
    if init is not None:
        alpha = init.permute(0, 2, 3, 1).to(frames.device, torch.float32).clone()
    alpha = _centred(alpha, tiptilt)
    info = {"evaluations": 0}
    with torch.no_grad():
        info["metric_start"] = float(problem.metric(alpha))
    info["metric_start_prior"] = repr(problem.powers[0])
    top = n_modes if fit_modes is None else max(2, min(int(fit_modes), n_modes))
    steps = [end for _, end in mode_groups(top)]
    if init is not None:
        steps = [top]
    if iterations <= 0:
        steps = []
    gen = torch.Generator().manual_seed(seed)
    n_before = 0 if init is None else top
    # the groups already fitted carry the prior (the start's: all of them); a newly freed group is free in its step
    fitted_groups = [] if init is None else mode_groups(top)
    for n_free in steps:
        if mode_prior > 0:
            problem.set_mode_prior(kolmogorov_precision(alpha, fitted_groups, mode_prior))
        if n_free > n_before:
            fitted_groups.append((n_before, n_free))
            # a wavefront without even modes is a saddle point of the metric for them (an even aberration of
            # either sign gives the same MTF): start the newly freed modes off zero
            kick = start_rms * torch.randn(alpha[..., n_before:n_free].shape, generator=gen)
            alpha = torch.cat([alpha[..., :n_before], alpha[..., n_before:n_free] + kick.to(alpha), alpha[..., n_free:]], -1)
            alpha = _centred(alpha, tiptilt)
            n_before = n_free
        free = alpha[..., :n_free].clone().requires_grad_(True)
        fixed = alpha[..., n_free:].detach()
        opt = wavefront_optimizer([free], iterations, "patch", optimizer)

        def closure():
            opt.zero_grad()
            a = _centred(torch.cat([free, fixed], dim=-1), tiptilt)
            loss = problem.metric(a)
            loss.backward()
            info["evaluations"] += 1
            return loss

        opt.step(closure)
        alpha = _centred(torch.cat([free.detach(), fixed], dim=-1), tiptilt)
        problem.refit_object_power(alpha)
        if progress is not None:
            progress(n_free)
    # the figure reported is the marginal likelihood alone, as the start's (which no prior can have yet)
    problem.set_mode_prior(None)
    with torch.no_grad():
        info["metric_end"] = float(problem.metric(alpha))
    info["patch_size"] = layout.size
    info["powers"] = list(problem.powers)
    info["problem"] = problem
    info["alpha_patch"] = alpha
    return alpha.permute(0, 3, 1, 2).contiguous(), info
