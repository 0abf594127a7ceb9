"""``svrt simulate``: bursts of solar frames blurred by an anisoplanatic (spatially variant) atmosphere.

A burst is K objects (e.g. wide band and narrow band, :func:`svrt.scenes.make_objects`) seen through
L short exposures. In frame l every object sees the same wavefront; the wavefront differs across the
field because of high turbulent layers (:func:`svrt.atmosphere.anisoplanatic_modes`). The recipe:

1. PSF size S: chosen from the burst's own wavefronts (:func:`choose_psf_size`): the smallest multiple
   of 8 pixels whose box holds >= 98 % of the PSF's energy for 95 % of the coarse-grid nodes
   (CRISP 8542 A: 88, 72, 56, 48, 40 px for r0 = 5, 7, 10, 15, >= 20 cm at 5000 A), capped at
   ``MAX_PSF_SIZE``; or ``psf_size`` if given.
2. Scene: ``make_objects(scene, K, (Y + S - 1, X + S - 1), pixel, seed)``: the field plus a margin of
   the PSF size, so that the exact convolution needs no boundary condition (``boundary="valid"``,
   no dark or mirrored borders). TRUTH is its central [K, Y, X] crop, starting at ``S - 1 - S // 2``.
3. Modes: ``anisoplanatic_modes`` on the coarse grid [L, M, Yg, Xg] (radians at the instrument's
   wavelength). The per-pixel coefficients are the bilinear upsampling
   ``torch.nn.functional.interpolate(coarse, size=(Y, X), mode="bilinear", align_corners=False)``,
   the contract the SV-MOMFBD solver relies on (:func:`per_pixel_modes`).
4. Frames: the exact per-pixel convolution (Eq. 1, :func:`svrt.optics.convolution.spatially_variant_convolve`),
   one call per frame for all K objects, with a :class:`~svrt.optics.psf.PSFModel` of S pixels
   computed on a pupil of at least ``MIN_PUPIL_PX`` grid pixels (:func:`burst_psf_model`).
5. Noise: Gaussian, standard deviation ``noise`` x the mean of each frame (object k, frame l).

Random streams: the scene uses ``seed``; the atmosphere ``numpy.random.default_rng([seed, 1])``, the
noise ``default_rng([seed, 2])``. The same arguments give the same burst.

Example
-------
>>> from svrt.simulate import simulate_burst
>>> burst = simulate_burst("crisp8542", size=64, n_frames=2, n_objects=2, seed=1, progress=False)
>>> burst.frames.shape, burst.modes.shape
((2, 2, 64, 64), (2, 44, 4, 4))
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import click
import numpy as np

from svrt.atmosphere import DEFAULT_THETA0_ARCSEC
from svrt.errors import SvrtError

MAX_PSF_SIZE = 256          # cap on the PSF box (the cost of the exact convolution grows as S^2)
MIN_PUPIL_PX = 24           # pupil sampling of the PSF model (grid pixels across D)
PSF_ENERGY_FRACTION = 0.98  # the PSF box holds this fraction of the energy ...
PSF_NODE_QUANTILE = 0.95    # ... for this fraction of the coarse-grid nodes
R0_REFERENCE = 5000.0       # Angstrom
MAX_MODES = 152             # KL modes from the Zernikes of radial orders 1..16 (svrt.optics.kl)

# Comments (with units) of the header cards written by the simulation.
HEADER_COMMENTS = {
    "R0": "[cm] Fried radius r0 at R0WAVE",
    "R0WAVE": "[Angstrom] wavelength of R0 and THETA0",
    "R0INST": "[cm] r0 at WAVELNTH (r0 ~ lambda^(6/5))",
    "THETA0": "[arcsec] isoplanatic angle at R0WAVE (0 = none)",
    "NOISE": "Gaussian noise sigma / mean of each frame",
    "SEED": "random seed of scene, atmosphere and noise",
    "SCENE": "scene kind (svrt.scenes)",
    "GRID": "Yg = Xg, coarse grid of MODES (nodes per side)",
    "NMODES": "M, number of KL modes (Noll 2..M+1 rotated)",
    "PSFSIZE": "[pixel] side of the PSF box of the convolution",
    "NLAYERS": "number of turbulent layers",
    "SIMULATE": "svrt simulate: exact per-pixel convolution",
    "INSTRUME": "instrument",
}
for _i in range(8):
    HEADER_COMMENTS[f"LAYH{_i}"] = f"[m] height of turbulent layer {_i}"
    HEADER_COMMENTS[f"LAYW{_i}"] = f"fraction of Cn2 in layer {_i}"


def _register_header_comments() -> None:
    """Give svrt.fileio the comments of our cards (it writes a comment for the keys it knows)."""
    from svrt.fileio import register_header_comments

    register_header_comments(HEADER_COMMENTS)


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------

def per_pixel_modes(coarse, shape):
    """Bilinear upsampling of coarse modes ``[..., M, Yg, Xg]`` to ``[..., M, Y, X]`` (torch, float32).

    Exactly ``torch.nn.functional.interpolate(coarse, size=shape, mode="bilinear", align_corners=False)``:
    the contract between the simulation and the solver.
    """
    import torch
    import torch.nn.functional as F

    c = torch.as_tensor(np.asarray(coarse, dtype=np.float32))
    squeeze = c.dim() == 3
    if squeeze:
        c = c[None]
    out = F.interpolate(c, size=tuple(int(v) for v in shape), mode="bilinear", align_corners=False)
    return out[0] if squeeze else out


def burst_psf_model(instrument, psf_size: int, n_modes: int = 44):
    """The :class:`~svrt.optics.psf.PSFModel` of a simulated burst: S = ``psf_size`` pixels cut from a
    computed field of ``max(S + 8, ceil(MIN_PUPIL_PX * lambda/(D pix)))`` pixels (the FFT period; the
    8 extra pixels keep the halo that wraps around the period out of the box)."""
    from svrt.instruments import get_instrument
    from svrt.optics.psf import PSFModel

    inst = get_instrument(instrument)
    need = math.ceil(MIN_PUPIL_PX * inst.sampling)
    field = max(psf_size + 8, need + need % 2)
    return PSFModel(inst, n_modes=n_modes, psf_size=psf_size, field=field, min_pupil_px=MIN_PUPIL_PX)


def choose_psf_size(instrument, coarse_modes, max_size: int = MAX_PSF_SIZE,
                    energy: float = PSF_ENERGY_FRACTION, quantile: float = PSF_NODE_QUANTILE,
                    max_nodes: int = 128, rng: np.random.Generator | None = None) -> int:
    """PSF box (pixels, a multiple of 8, >= 16) that holds the burst's PSFs.

    The PSFs of (up to ``max_nodes``, a random subset) coarse-grid nodes ``coarse_modes
    [L, M, Yg, Xg]`` are computed in a large field (4 seeing widths lambda/r0 plus 3 tilt rms on each
    side of the centre, at least 128 px, with D/r0 estimated from the variance of the coefficients
    beyond tip/tilt) and the smallest box is
    taken whose energy is >= ``energy`` for a fraction ``quantile`` of them. At CRISP 8542 A the
    diffraction halo alone loses 2.0 % outside 40 px and 1.3 % outside 56 px, so good seeing gives
    40 px; r0 = 10 cm at 5000 A (D/r0 = 5.3 at 8542 A) gives 56 px, r0 = 5 cm 88 px.
    Capped at ``max_size``.
    """
    import torch

    from svrt.instruments import get_instrument
    from svrt.optics.kl import kl_basis
    from svrt.optics.psf import PSFModel

    inst = get_instrument(instrument)
    a = np.asarray(coarse_modes, dtype=np.float64)
    m = a.shape[1]
    nodes = np.moveaxis(a, 1, -1).reshape(-1, m)
    if nodes.shape[0] > max_nodes:
        rng = rng if rng is not None else np.random.default_rng(0)
        nodes = nodes[np.sort(rng.choice(nodes.shape[0], max_nodes, replace=False))]
    # D/r0 from the variance of the modes beyond tip/tilt: sum_l var_l = (D/r0)^(5/3) sum_l v_l
    v = kl_basis(m).variances
    ratio = float(np.mean(nodes[:, 2:] ** 2) / np.mean(v[2:])) if m > 2 else 1.0
    d_over_r0 = max(ratio, 1e-6) ** 0.6
    seeing_px = max(d_over_r0, 1.0) * inst.sampling            # lambda/r0 in pixels
    tilt_px = 2 / math.pi * float(np.sqrt(np.mean(nodes[:, :2] ** 2))) * inst.sampling
    big = int(min(2 * max_size, max(128, 2 * (4 * seeing_px + 3 * tilt_px))))
    big += (-big) % 16
    model = PSFModel(inst, n_modes=m, psf_size=big, field=big, min_pupil_px=MIN_PUPIL_PX)
    sizes = list(range(16, max_size + 1, 8))
    c = big // 2
    chunk = max(1, 2 ** 21 // (model.n_fft ** 2))                   # bounded memory (~16 MB per block)
    held = []                                                        # [n, len(sizes)] energy in each box
    coef = torch.as_tensor(nodes, dtype=torch.float32)
    for lo in range(0, coef.shape[0], chunk):
        psf = model(coef[lo:lo + chunk], chunk=chunk).to(torch.float64)             # [c, big, big]
        held.append(torch.stack([psf[:, c - s // 2:c - s // 2 + s, c - s // 2:c - s // 2 + s].sum(dim=(-2, -1))
                                 for s in sizes], dim=-1))
    q = torch.quantile(torch.cat(held), 1.0 - quantile, dim=0)
    for s, value in zip(sizes, q.tolist()):
        if value >= energy:
            return s
    return max_size


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SvrtError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_float(value, name: str, positive: bool, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SvrtError(f"{name} must be a number ({unit}); got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise SvrtError(f"{name} must be {'positive' if positive else 'zero or positive'} and finite ({unit}); got {value!r}.")
    return v


def _validate(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, scene, grid,
              n_modes, psf_size):
    from svrt.instruments import get_instrument
    from svrt.scenes import SCENE_KINDS

    inst = get_instrument(instrument)
    size = _check_int(size, "size", 8)
    n_frames = _check_int(n_frames, "the number of frames", 1)
    n_objects = _check_int(n_objects, "the number of objects", 1)
    seed = _check_int(seed, "seed", 0)
    r0_cm = _check_float(r0_cm, "r0", True, "cm at 5000 A")
    if theta0_arcsec is not None:
        theta0_arcsec = _check_float(theta0_arcsec, "theta0", True, "arcsec at 5000 A")
    noise = _check_float(noise, "noise", False, "a fraction of the mean intensity")
    if scene not in SCENE_KINDS:
        raise SvrtError(f"unknown scene '{scene}'; expected one of {', '.join(SCENE_KINDS)}.")
    grid = max(1, size // 16) if grid is None else _check_int(grid, "grid", 1)
    if size < grid:
        raise SvrtError(f"size {size} is too small for a grid of {grid} nodes per side; "
                        f"use a size of at least {grid} pixels or a smaller grid.")
    n_modes = _check_int(n_modes, "the number of modes", 2)
    if n_modes > MAX_MODES:
        raise SvrtError(f"the number of modes {n_modes} is more than the {MAX_MODES} KL modes svrt builds "
                        "(Zernike radial orders 1..16).")
    if psf_size is not None:
        psf_size = _check_int(psf_size, "psf_size", 1)
    return inst, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, grid, n_modes, psf_size


# ----------------------------------------------------------------------------------------------
# the simulation
# ----------------------------------------------------------------------------------------------

def simulate_burst(instrument="crisp8542", size: int = 256, n_frames: int = 12, n_objects: int = 2,
                   seed: int = 1, r0_cm: float = 10.0, theta0_arcsec: float | None = DEFAULT_THETA0_ARCSEC,
                   noise: float = 0.01, scene: str = "granulation", grid: int | None = None,
                   n_modes: int = 44, progress: bool = True, psf_size: int | None = None):
    """Simulate an anisoplanatic burst; returns a :class:`svrt.fileio.Burst`.

    Parameters
    ----------
    instrument : label (``svrt instruments``) or :class:`~svrt.instruments.Instrument`.
    size : Y = X, the side of the frames in pixels.
    n_frames : L, short exposures. n_objects : K, objects sharing each frame's wavefront.
    seed : non-negative int; the same arguments give the same burst.
    r0_cm : Fried radius in cm at 5000 A (scaled to the instrument as lambda^(6/5)).
    theta0_arcsec : isoplanatic angle in arcsec at 5000 A (2" is a good daytime value); sets the
        heights of the high layers (:class:`svrt.atmosphere.Atmosphere`). None: one ground layer,
        the same PSF everywhere.
    noise : Gaussian noise, standard deviation as a fraction of each frame's mean (0: none).
    scene : "granulation", "sunspot" or "points" (:mod:`svrt.scenes`).
    grid : Yg = Xg, nodes per side of the coarse mode grid (default ``size // 16``, one node per
        16 x 16 pixels as in the paper).
    n_modes : M, KL modes (default 44).
    progress : show a tqdm progress bar (pixel rows of all frames) on stderr.
    psf_size : PSF box in pixels; default from :func:`choose_psf_size` (>= 98 % of the energy
        of 95 % of the PSFs, a multiple of 8, at most ``MAX_PSF_SIZE``).

    Returns a Burst with ``frames [K, L, Y, X]``, ``truth [K, Y, X]``, ``modes [L, M, Yg, Xg]`` (radians
    at the instrument's wavelength), the instrument label per object and a header with TELESCOP,
    INSTRUME, WAVELNTH [A], CDELT1/2 [arcsec] and the settings (R0, R0WAVE, R0INST, THETA0, NOISE,
    SEED, SCENE, GRID, NMODES, PSFSIZE, NLAYERS, LAYHi [m], LAYWi). No DATE-OBS: a simulation has none.
    Cost: one PSF per pixel and frame, ~100 us of CPU each (S = 56, a 72 x 72 FFT): 256^2 x 12
    frames take ~75 s of CPU time (measured on one thread; 1-1.5 min on two idle cores).
    """
    import torch
    from tqdm import tqdm

    from svrt.atmosphere import Atmosphere, anisoplanatic_modes, r0_at_wavelength
    from svrt.fileio import Burst
    from svrt.optics.convolution import spatially_variant_convolve
    from svrt.scenes import make_objects

    (inst, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, grid, n_modes,
     psf_size) = _validate(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise,
                           scene, grid, n_modes, psf_size)
    y = x = size
    atmosphere = Atmosphere.from_theta0(r0_cm, theta0_arcsec)
    coarse = anisoplanatic_modes(inst, r0_cm, theta0_arcsec, n_frames, (grid, grid), (y, x), n_modes=n_modes,
                                 rng=np.random.default_rng([seed, 1]), atmosphere=atmosphere)
    if psf_size is None:
        psf_size = choose_psf_size(inst, coarse)
    s = psf_size
    model = burst_psf_model(inst, s, n_modes)
    scene_big = make_objects(scene, n_objects, (y + s - 1, x + s - 1), inst.pixel_arcsec, seed)
    b = s - 1 - s // 2
    truth = scene_big[:, b:b + y, b:b + x].copy()
    obj = torch.as_tensor(scene_big)
    frames = np.empty((n_objects, n_frames, y, x), dtype=np.float32)
    rows = max(1, 256 // x)  # ~256 PSFs per block: fastest on a CPU (cache); memory ~ K S^2 256 floats
    noise_rng = np.random.default_rng([seed, 2])
    with tqdm(total=n_frames * y, desc=f"simulate {inst.label} {y}x{x}x{n_frames}", unit="row",
              disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for frame in range(n_frames):
            coef = per_pixel_modes(coarse[frame], (y, x))                           # [M, Y, X]
            out = spatially_variant_convolve(obj, coef, model, boundary="valid", rows_per_chunk=rows,
                                             progress=bar.update)
            frames[:, frame] = out.numpy()
    if noise > 0:
        sigma = noise * frames.mean(axis=(2, 3), keepdims=True)
        frames += (noise_rng.standard_normal(frames.shape) * sigma).astype(np.float32)
    header = {
        "TELESCOP": inst.telescope,
        "INSTRUME": inst.instrument,
        "WAVELNTH": float(inst.wavelength_angstrom),
        "CDELT1": float(inst.pixel_arcsec),
        "CDELT2": float(inst.pixel_arcsec),
        "SIMULATE": True,
        "R0": float(r0_cm),
        "R0WAVE": R0_REFERENCE,
        "R0INST": round(r0_at_wavelength(r0_cm, inst.wavelength_angstrom), 4),
        "THETA0": float(theta0_arcsec) if theta0_arcsec is not None else 0.0,
        "NOISE": float(noise),
        "SEED": int(seed),
        "SCENE": scene,
        "GRID": int(grid),
        "NMODES": int(n_modes),
        "PSFSIZE": int(s),
        "NLAYERS": len(atmosphere.heights_m),
    }
    for i, (h, w) in enumerate(zip(atmosphere.heights_m, atmosphere.fractions)):
        header[f"LAYH{i}"] = round(h, 1)
        header[f"LAYW{i}"] = round(w, 4)
    _register_header_comments()
    return Burst(frames=frames, instruments=[inst.label] * n_objects, truth=truth, modes=coarse, header=header)


def truth_with_margin(burst) -> np.ndarray:
    """The objects the frames were made of: TRUTH plus the margin of the PSF size, ``[K, Y + S - 1, X + S - 1]``
    with TRUTH at offset ``S - 1 - S // 2``. Rebuilt from the header (SCENE, SEED, PSFSIZE, CDELT1) and
    checked against TRUTH, so that a burst that was not made by :func:`simulate_burst` is refused."""
    from svrt.errors import SvrtError
    from svrt.scenes import make_objects

    h = burst.header
    missing = [k for k in ("SCENE", "SEED", "PSFSIZE", "CDELT1") if k not in h]
    if missing or burst.truth is None:
        raise SvrtError(f"burst header lacks {', '.join(missing) or 'TRUTH'}; expected a burst written by svrt simulate.")
    k, y, x = np.shape(burst.truth)
    s = int(h["PSFSIZE"])
    big = make_objects(str(h["SCENE"]), k, (y + s - 1, x + s - 1), float(h["CDELT1"]), int(h["SEED"]))
    b = s - 1 - s // 2
    if not np.allclose(big[:, b:b + y, b:b + x], burst.truth, rtol=1e-6, atol=1e-6 * float(np.abs(big).max())):
        raise SvrtError("TRUTH differs from the scene its header describes (SCENE, SEED, PSFSIZE, CDELT1); "
                        "expected an unmodified burst of svrt simulate.")
    return big


# ----------------------------------------------------------------------------------------------
# quick look
# ----------------------------------------------------------------------------------------------

def defocus_index(n_modes: int) -> int:
    """0-based index of the KL mode dominated by defocus (Noll 4)."""
    from svrt.optics.kl import kl_basis

    return int(np.argmax(np.abs(kl_basis(n_modes).coefficients[:, 2])))


def local_contrast_ratio(frame: np.ndarray, truth: np.ndarray, block: int) -> np.ndarray:
    """RMS contrast of ``frame`` over that of ``truth`` in ``block`` x ``block`` pixel blocks:
    ``[Y // block, X // block]``, 1 = unblurred. A map of how strongly each part of the field is blurred."""
    y, x = (frame.shape[0] // block) * block, (frame.shape[1] // block) * block

    def contrast(a):
        b = a[:y, :x].reshape(y // block, block, x // block, block)
        return b.std(axis=(1, 3)) / np.abs(b.mean(axis=(1, 3))).clip(1e-12)

    return contrast(frame) / contrast(truth).clip(1e-12)


def plot_burst(burst, path, title: str | None = None) -> str:
    """PNG quick look of a burst (object 0): truth, first frame, frame average, the defocus
    coefficient of frame 0 across the field (the bilinearly upsampled coarse modes) and, with a
    truth, the local contrast of frame 0 relative to the truth's (the spatially variant blur).
    Atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svrt.fileio import atomic_write

    k0 = burst.frames[0]
    y, x = burst.shape
    pix = burst.header.get("CDELT1")
    ext = [0, x * pix, 0, y * pix] if isinstance(pix, (int, float)) else None
    unit = "arcsec" if ext else "pixel"
    ref = burst.truth[0] if burst.truth is not None else k0.mean(axis=0)
    lo, hi = np.percentile(ref, [0.5, 99.5])
    panels = [("truth (object 0)", burst.truth[0] if burst.truth is not None else None),
              ("frame 0", k0[0]), (f"average of {burst.n_frames} frames", k0.mean(axis=0))]
    panels = [p for p in panels if p[1] is not None]
    block = max(16, min(y, x) // 8)
    show_contrast = burst.truth is not None and min(y, x) >= 2 * block
    n = len(panels) + (burst.modes is not None) + show_contrast
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 5.0), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(unit)
    if burst.modes is not None:
        j = defocus_index(burst.modes.shape[1])
        mode = per_pixel_modes(burst.modes[0], (y, x))[j].numpy()
        ax = axes[len(panels)]
        lim = float(np.max(np.abs(mode))) or 1.0
        im = ax.imshow(mode, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, extent=ext)
        ax.set_title(f"frame 0: KL {j + 1} (defocus) [rad]")
        ax.set_xlabel(unit)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if show_contrast:
        ratio = local_contrast_ratio(k0[0], burst.truth[0], block)
        ax = axes[-1]
        by, bx = ratio.shape
        cext = [0, bx * block * pix, 0, by * block * pix] if ext else None
        im = ax.imshow(ratio, origin="lower", cmap="magma", vmin=0, vmax=max(1.0, float(ratio.max())), extent=cext)
        ax.set_title(f"frame 0: contrast / truth's ({block} px blocks)")
        ax.set_xlabel(unit)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return os.fspath(path)


def _title(burst) -> str:
    h = burst.header
    th = h.get("THETA0")
    th = f"{th:g}\"" if th else "none (isoplanatic)"
    return (f"{burst.instruments[0]}: r0 = {h.get('R0', 0):g} cm at 5000 A, theta0 = {th}, "
            f"noise = {h.get('NOISE', 0):g}, grid {h.get('GRID')}x{h.get('GRID')}, PSF {h.get('PSFSIZE')} px, "
            f"seed {h.get('SEED')}")


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

@click.command("simulate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--instrument", default="crisp8542", show_default=True, help="Instrument label (see `svrt instruments`).")
@click.option("--size", default=256, show_default=True, type=int, help="Frame side Y = X in pixels.")
@click.option("--frames", "n_frames", default=12, show_default=True, type=int, help="L, frames (short exposures).")
@click.option("--objects", "n_objects", default=2, show_default=True, type=int,
              help="K, objects sharing the wavefront (e.g. wide band, narrow band).")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed (scene, atmosphere, noise).")
@click.option("--r0", "r0_cm", default=10.0, show_default=True, type=float, help="Fried radius [cm at 5000 A].")
@click.option("--theta0", "theta0", default=str(DEFAULT_THETA0_ARCSEC), show_default=True,
              help="Isoplanatic angle [arcsec at 5000 A]; 'none' for a single ground layer (no anisoplanatism).")
@click.option("--noise", default=0.01, show_default=True, type=float,
              help="Gaussian noise sigma as a fraction of each frame's mean (0: none).")
@click.option("--scene", default="granulation", show_default=True, help="granulation, sunspot or points.")
@click.option("--grid", default=None, type=int, help="Nodes per side of the coarse mode grid [default: size // 16].")
@click.option("--modes", "n_modes", default=44, show_default=True, type=int, help="M, number of KL modes.")
@click.option("--psf-size", default=None, type=int,
              help="PSF box in pixels [default: holds >= 98 % of the energy of 95 % of the PSFs].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output burst: .fits (default format of the solar community) or .h5.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--png", "png", default=None, type=click.Path(dir_okay=False),
              help="Quick-look PNG [default: the output name with .png].")
@click.option("--no-png", is_flag=True, help="Do not write the quick-look PNG.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def simulate_command(instrument, size, n_frames, n_objects, seed, r0_cm, theta0, noise, scene, grid, n_modes,
                     psf_size, output, overwrite, png, no_png, quiet):
    """Simulate a burst of K objects x L frames blurred by an anisoplanatic atmosphere.

    Each frame is the exact per-pixel convolution (one PSF per pixel) of a solar scene with the
    wavefront of a layered Kolmogorov atmosphere (a ground layer plus high layers set by THETA0),
    plus Gaussian noise. The file holds FRAMES [K, L, Y, X], TRUTH [K, Y, X] and the true MODES
    [L, M, Yg, Xg] (KL coefficients in radians); a PNG quick look is written next to it.

    \b
    Example:
      svrt simulate --instrument crisp8542 --size 256 --frames 12 --objects 2 --seed 1 -o burst.fits
      svrt simulate --size 128 --frames 4 --r0 7 --theta0 1.5 --scene sunspot -o spot.h5
    """
    from svrt.fileio import check_output, file_format, write_burst

    th = str(theta0).strip().lower()
    if th in ("none", "inf", "infinity"):
        theta0_arcsec = None
    else:
        try:
            theta0_arcsec = float(th)
        except ValueError:
            raise SvrtError(f"--theta0 must be a number of arcsec at 5000 A or 'none'; got '{theta0}'.") from None
    file_format(output)
    check_output(output, overwrite)
    png_path = None if no_png else (png or str(_png_name(output)))
    if png_path is not None:
        if Path(png_path).resolve() == Path(output).resolve():
            raise SvrtError(f"the PNG {png_path} and the output {output} are the same file; choose another --png.")
        if not str(png_path).lower().endswith(".png"):
            raise SvrtError(f"the quick look {png_path} must be a .png file.")
        check_output(png_path, overwrite)
    burst = simulate_burst(instrument, size, n_frames, n_objects, seed, r0_cm=r0_cm, theta0_arcsec=theta0_arcsec,
                           noise=noise, scene=scene, grid=grid, n_modes=n_modes, progress=not quiet,
                           psf_size=psf_size)
    write_burst(output, burst, overwrite=overwrite)
    k, n, y, x = burst.frames.shape
    msg = f"wrote {output}: {k} objects x {n} frames of {y}x{x}, modes {tuple(burst.modes.shape)}, PSF {burst.header['PSFSIZE']} px"
    if png_path is not None:
        plot_burst(burst, png_path, _title(burst))
        msg += f"; quick look {png_path}"
    click.echo(msg)


def _png_name(output) -> Path:
    p = Path(output)
    name = p.name
    low = name.lower()
    for suffix in (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".hdf5", ".h5", ".hdf", ".he5"):
        if low.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".png")
    return p.with_name(name + ".png")
