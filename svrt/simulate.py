"""Bursts of solar frames blurred by an anisoplanatic (spatially variant) atmosphere.

A burst is K objects (e.g. wide band and narrow band, :func:`svrt.scenes.make_objects`) seen through
L short exposures. In frame l every object sees the same wavefront; the wavefront differs across the
field because of high turbulent layers (:func:`svrt.phase_screens.anisoplanatic_modes`).

Two wavefront models (``wavefront=``):

- ``"kl"`` (default): every pixel's wavefront is the bilinear upsampling of 44 KL coefficients at the
  coarse-grid nodes, exactly the model the SV-MOMFBD solver fits. Good for testing the solver's
  machinery; as evidence of its accuracy it is an *inverse crime* (data made with the model that
  inverts them).
- ``"screen"``: every pixel's PSF comes from the full phase of the layered screens over that pixel's
  own footprints: all the spatial frequencies of the screens (the seeing halo of the high orders, which
  44 modes lack), and the exact field dependence rather than a bilinear one. The solver's model
  (44 modes on a coarse grid) is then an approximation, as it is for real data.

Options common to both: a von Karman outer scale (``outer_scale_m``), a ground-conjugated adaptive
optics locked on the field centre (``ao_modes``, :class:`svrt.adaptive_optics.AdaptiveOptics`),
Gaussian noise (``noise``) and photon noise (``photons``). The recipe:

1. PSF size S: chosen from the burst's own wavefronts (:func:`choose_psf_size`): the smallest multiple
   of 8 pixels whose box holds >= 98 % of the PSF's energy for 95 % of the coarse-grid nodes
   (CRISP 8542 A: 88, 72, 56, 48, 40 px for r0 = 5, 7, 10, 15, >= 20 cm at 5000 A), capped at
   ``MAX_PSF_SIZE``; or ``psf_size`` if given.
2. Scene: ``make_objects(scene, K, (Y + S - 1, X + S - 1), pixel, seed)``: the field plus a margin of
   the PSF size, so that the exact convolution needs no boundary condition (``boundary="valid"``,
   no dark or mirrored borders). TRUTH is its central [K, Y, X] crop, starting at ``S - 1 - S // 2``.
3. Modes: ``anisoplanatic_modes`` on the coarse grid [L, M, Yg, Xg] (radians at the instrument's
   wavelength, after the AO correction if any): MODES of the burst, in both wavefront models the KL
   projection of the true wavefront at the nodes. For ``"kl"`` the per-pixel coefficients are the
   bilinear upsampling
   ``torch.nn.functional.interpolate(coarse, size=(Y, X), mode="bilinear", align_corners=False)``,
   the contract the SV-MOMFBD solver relies on (:func:`svrt.mode_grid.per_pixel_modes`).
4. Frames: the exact per-pixel convolution (Eq. 1, :func:`svrt.optics.convolution.spatially_variant_convolve`),
   one call per frame for all K objects, with a :class:`~svrt.optics.psf.PSFModel` of S pixels
   computed on a pupil of at least ``MIN_PUPIL_PX`` grid pixels (:func:`burst_psf_model`). For
   ``"screen"`` the PSF of each pixel is :meth:`~svrt.phase_screens.LayeredScreens.psfs` of its own field
   angle (:func:`svrt.optics.convolution.spatially_variant_convolve_psfs`), on a pupil of at least
   ``SAMPLES_PER_R0`` samples per r0 (at the instrument's wavelength).
5. Noise: photon noise first if ``photons`` (Poisson, ``photons`` photo-electrons per pixel at the
   frame's mean), then Gaussian, standard deviation ``noise`` x the mean of each noiseless frame
   (object k, frame l).

Random streams: the scene uses ``seed``; the atmosphere ``numpy.random.default_rng([seed, 1])``, the
noise ``default_rng([seed, 2])``. The same arguments give the same burst.

``wavefront="screen"``. The screens (pixel D / ``SCREEN_PUPIL_PX``, :func:`screen_pupil_samples`)
are sampled, for every pixel, at that pixel's own footprint in every layer, on the PSF model's
pupil grid (>= 3 samples per r0), and the PSF is ``|FFT(A exp(i phase))|^2`` with the conventions of
:class:`~svrt.optics.psf.PSFModel` (:meth:`~svrt.optics.psf.PSFModel.psf_from_phase`). This is
exact per pixel, not an interpolation of phase maps between coarser field points: the bilinear
screen samples (two high layers x ~1200 pupil points, torch ``grid_sample``: ~20 us of CPU per
pixel) cost a fifth of the PSF itself (~90 us at S = 96) and of the convolution (~26 us), so
evaluating the phase on a coarser grid of field points and interpolating the maps would save
< 15 % and add an interpolation error. The PSF box is chosen from the screens' own PSFs: their
seeing halo (the high orders) is wider than the 44 modes' (r0 = 7 cm: S = 96 against 72 px).

Cost, measured on this machine (2 cores shared with other jobs, load ~5; one torch thread, one
burst at a time), CRISP 8542, r0 = 7 cm at 5000 A, theta0 = 2", K = 2, wall (CPU):

==============  =================  ===================
wavefront       128^2 x 8 frames   256^2 x 12 frames
==============  =================  ===================
"kl" (S = 72)   12 s (9 s)         74 s (53 s)
"screen" (96)   23 s (22 s)        136 s (110 s)
==============  =================  ===================

i.e. ~70 and ~140 us of CPU per pixel and frame. With torch's default two threads the same machine
under that load took 78 s for the 128^2 x 8 screen burst (thread contention): on a busy host use
``torch.set_num_threads(1)``.

The quick look: :mod:`svrt.simulate_plot`; the command ``svrt simulate``: :mod:`svrt.simulate_cli`.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from svrt.atmosphere import DEFAULT_THETA0_ARCSEC, R0_REFERENCE_WAVELENGTH
from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES, per_pixel_modes

MAX_PSF_SIZE = 256          # cap on the PSF box (the cost of the exact convolution grows as S^2)
MIN_PUPIL_PX = 24           # pupil sampling of the PSF model (grid pixels across D)
PSF_ENERGY_FRACTION = 0.98  # the PSF box holds this fraction of the energy ...
PSF_NODE_QUANTILE = 0.95    # ... for this fraction of the coarse-grid nodes
MAX_MODES = 152             # KL modes from the Zernikes of radial orders 1..16 (svrt.optics.kl)
WAVEFRONTS = ("kl", "screen")
SAMPLES_PER_R0 = 3.0        # wavefront="screen": pupil samples per r0 (instrument wavelength) of the PSF model
SCREEN_PUPIL_PX = 64        # wavefront="screen": screen pixel D / 64 (and >= 2 SAMPLES_PER_R0 per r0)

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
    "WAVEFRNT": "wavefront model: kl (44-mode grid) or screen (full)",
    "L0": "[m] von Karman outer scale (0 = infinite, Kolmogorov)",
    "AOMODES": "KL modes 1..N corrected by the AO (0 = no AO)",
    "AOLOCKY": "[arcsec] AO lock point, y from the field centre",
    "AOLOCKX": "[arcsec] AO lock point, x from the field centre",
    "PHOTONS": "photo-electrons per pixel at frame mean (0 = none)",
    "PUPILPX": "[pixel] pupil samples across D of the PSF model",
    "SCREENPX": "[pixel] phase-screen samples across D",
}
for _i in range(8):
    HEADER_COMMENTS[f"LAYH{_i}"] = f"[m] height of turbulent layer {_i}"
    HEADER_COMMENTS[f"LAYW{_i}"] = f"fraction of Cn2 in layer {_i}"


def _register_header_comments() -> None:
    """Give svrt.fileio the comments of our cards (it writes a comment for the keys it knows)."""
    from svrt.fileio import register_header_comments
    from svrt.optics.diversity import DIVERSITY_COMMENTS

    register_header_comments(HEADER_COMMENTS)
    register_header_comments(DIVERSITY_COMMENTS)


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------

def burst_psf_model(instrument, psf_size: int, n_modes: int = N_MODES, min_pupil_px: float = MIN_PUPIL_PX):
    """The :class:`~svrt.optics.psf.PSFModel` of a simulated burst: S = ``psf_size`` pixels cut from a
    computed field of ``max(S + 8, ceil(min_pupil_px * lambda/(D pix)))`` pixels (the FFT period; the
    8 extra pixels keep the halo that wraps around the period out of the box). The pupil grid has
    field / (lambda/(D pix)) >= ``min_pupil_px`` samples across D."""
    from svrt.instruments import get_instrument
    from svrt.optics.psf import PSFModel

    inst = get_instrument(instrument)
    need = math.ceil(min_pupil_px * inst.sampling)
    field = max(psf_size + 8, need + need % 2)
    return PSFModel(inst, n_modes=n_modes, psf_size=psf_size, field=field, min_pupil_px=MIN_PUPIL_PX)


def screen_pupil_samples(instrument, r0_cm: float) -> tuple[int, float]:
    """Pupil sampling for ``wavefront="screen"``: ``(screen_px, psf_pupil_px)``, samples across D of the
    phase screens and (at least) of the PSF model's pupil grid.

    The full phase has structure down to r0, so the PSF's pupil grid must resolve it:
    ``SAMPLES_PER_R0`` (3) samples per r0 at the instrument's wavelength (a phase difference of
    6.88 (1/3)^(5/3) = 1.1 rad^2 between neighbours), and never fewer than ``MIN_PUPIL_PX``. The
    screens are at least twice finer (``SCREEN_PUPIL_PX`` = 64 across D, more for very small r0), so
    that sampling them on the PSF's grid picks up the phase between grid points instead of
    interpolating over it.
    """
    from svrt.atmosphere import r0_at_wavelength
    from svrt.instruments import get_instrument

    inst = get_instrument(instrument)
    d_over_r0 = inst.diameter_cm / r0_at_wavelength(r0_cm, inst.wavelength_angstrom)
    psf_px = max(float(MIN_PUPIL_PX), SAMPLES_PER_R0 * d_over_r0)
    return max(SCREEN_PUPIL_PX, math.ceil(2 * psf_px)), psf_px


def choose_psf_size(instrument, coarse_modes, max_size: int = MAX_PSF_SIZE,
                    energy: float = PSF_ENERGY_FRACTION, quantile: float = PSF_NODE_QUANTILE,
                    max_nodes: int = 128, rng: np.random.Generator | None = None, node_psfs=None) -> int:
    """PSF box (pixels, a multiple of 8, >= 16) that holds the burst's PSFs.

    The PSFs of (up to ``max_nodes``, a random subset) coarse-grid nodes ``coarse_modes
    [L, M, Yg, Xg]`` are computed in a large field (4 seeing widths lambda/r0 plus 3 tilt rms on each
    side of the centre, at least 128 px, with D/r0 estimated from the variance of the coefficients
    beyond tip/tilt) and the smallest box is
    taken whose energy is >= ``energy`` for a fraction ``quantile`` of them. At CRISP 8542 A the
    diffraction halo alone loses 2.0 % outside 40 px and 1.3 % outside 56 px, so good seeing gives
    40 px; r0 = 10 cm at 5000 A (D/r0 = 5.3 at 8542 A) gives 56 px, r0 = 5 cm 88 px.
    Capped at ``max_size``. ``node_psfs(model, index)``: the PSFs ``[n, big, big]`` of the nodes with flat
    indices ``index [n]`` into [L, Yg, Xg] from the big-field ``model`` (a :class:`PSFModel`) when the
    burst's PSFs do not come from the coefficients (``wavefront="screen"``: their halo is wider).
    """
    import torch

    from svrt.instruments import get_instrument
    from svrt.optics.kl import kl_basis
    from svrt.optics.psf import PSFModel

    inst = get_instrument(instrument)
    a = np.asarray(coarse_modes, dtype=np.float64)
    m = a.shape[1]
    nodes = np.moveaxis(a, 1, -1).reshape(-1, m)
    index = np.arange(nodes.shape[0])
    if nodes.shape[0] > max_nodes:
        rng = rng if rng is not None else np.random.default_rng(0)
        index = np.sort(rng.choice(nodes.shape[0], max_nodes, replace=False))
        nodes = nodes[index]
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
        psf = model(coef[lo:lo + chunk], chunk=chunk) if node_psfs is None else node_psfs(model, index[lo:lo + chunk])
        psf = psf.to(torch.float64)                                                  # [c, big, big]
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
        raise SvrtError(f"{name} must be {'positive' if positive else 'zero or positive'} and finite ({unit}); got "
                        f"{value!r}.")
    return v


def _validate(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, scene, nodes,
              n_modes, psf_size, wavefront, outer_scale_m, photons):
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
    nodes = max(1, size // 16) if nodes is None else _check_int(nodes, "nodes", 1)
    if size < nodes:
        raise SvrtError(f"size {size} is too small for a grid of {nodes} nodes per side; "
                        f"use a size of at least {nodes} pixels or fewer nodes.")
    n_modes = _check_int(n_modes, "the number of modes", 2)
    if n_modes > MAX_MODES:
        raise SvrtError(f"the number of modes {n_modes} is more than the {MAX_MODES} KL modes svrt builds "
                        "(Zernike radial orders 1..16).")
    if psf_size is not None:
        # a box narrower than the Airy core (first dark ring, 2.44 lambda/D across) cuts the blur off: no PSF
        core = 2.44 * inst.sampling
        psf_size = _check_int(psf_size, "psf_size", 1)
        if psf_size < math.ceil(core) + 1:
            raise SvrtError(f"psf_size {psf_size} is smaller than the diffraction core of {inst.label} (its first dark "
                            f"ring is {core:.1f} pixels across); expected at least {math.ceil(core) + 1} pixels, or "
                            "none for the default.")
    if wavefront not in WAVEFRONTS:
        raise SvrtError(f"wavefront must be 'kl' (44 KL modes on the coarse grid) or 'screen' (the full phase "
                        f"screens at every pixel); got {wavefront!r}.")
    if outer_scale_m is not None and not (isinstance(outer_scale_m, numbers.Real) and outer_scale_m == math.inf):
        outer_scale_m = _check_float(outer_scale_m, "the outer scale L0", True, "m, or None for Kolmogorov")
    else:
        outer_scale_m = None                                      # infinite: Kolmogorov
    if photons is not None:
        photons = _check_float(photons, "photons", False,
                               "photo-electrons per pixel at the frame mean, 0 or None for none")
        photons = photons or None
    return (inst, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, nodes, n_modes, psf_size, outer_scale_m,
            photons)


# ----------------------------------------------------------------------------------------------
# the simulation
# ----------------------------------------------------------------------------------------------

def _nodes_of(nodes: int | None, grid: int | None) -> int | None:
    """The node count from ``nodes`` or its deprecated alias ``grid`` (one warning sentence; both given: an
    SvrtError)."""
    if grid is None:
        return nodes
    if nodes is not None:
        raise SvrtError(f"simulate_burst got nodes={nodes!r} and grid={grid!r}; grid is the deprecated name of "
                        "nodes, give nodes only.")
    from svrt.checks import warn

    warn("simulate_burst(grid=...) is deprecated: it counts nodes per side, now nodes=... (grid means pixels per "
         "node in the solver).")
    return grid


def simulate_burst(instrument="crisp8542", size: int = 256, n_frames: int = 12, n_objects: int = 2,
                   seed: int = 1, r0_cm: float = 10.0, theta0_arcsec: float | None = DEFAULT_THETA0_ARCSEC,
                   noise: float = 0.01, scene: str = "granulation", nodes: int | None = None,
                   n_modes: int = N_MODES, progress: bool = True, psf_size: int | None = None,
                   wavefront: str = "kl", outer_scale_m: float | None = None, ao_modes: int = 0,
                   ao_lock_arcsec=(0.0, 0.0), photons: float | None = None, diversity: float | None = None,
                   grid: int | None = None):
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
    nodes : Yg = Xg, nodes per side of the coarse mode grid (default ``size // 16``, one node per
        16 x 16 pixels as in the paper).
    grid : the earlier name of ``nodes``, deprecated (a warning): everywhere else ``grid`` is the solver's
        P, pixels per node.
    n_modes : M, KL modes (default :data:`svrt.mode_grid.N_MODES`, 44).
    progress : show a tqdm progress bar (pixel rows of all frames) on stderr.
    psf_size : PSF box in pixels; default from :func:`choose_psf_size` (>= 98 % of the energy
        of 95 % of the PSFs, a multiple of 8, at most ``MAX_PSF_SIZE``).
    wavefront : "kl" (default): each pixel's PSF from the bilinearly upsampled KL coefficients of the
        coarse grid (the solver's own model). "screen": each pixel's PSF from the full phase of the
        layered screens over its own footprints (see below); MODES stays the KL projection at the nodes.
    outer_scale_m : von Karman outer scale L0 in metres of every layer (None: Kolmogorov, infinite).
    ao_modes : N, KL modes 1..N (tip/tilt included) removed by a ground-conjugated adaptive optics
        whose wavefront sensor locks on ``ao_lock_arcsec`` (:class:`svrt.adaptive_optics.AdaptiveOptics`):
        small residuals there, growing anisoplanatism away from it. 0: no AO.
    ao_lock_arcsec : (y, x) of the lock point, arcsec from the field centre (default: the centre).
    photons : photo-electrons per pixel at each frame's mean: Poisson noise (variance = mean / photons
        in units of the frame's mean), drawn before the Gaussian ``noise``. None or 0: none.
    diversity : W, waves peak-to-valley of defocus (:mod:`svrt.optics.diversity`). Adds one phase-diversity
        channel K (so the burst holds K + 1 channels): object 0 seen through the same wavefronts plus the
        defocus (``"kl"``: its KL projection added to the coefficients; ``"screen"``: the exact phase
        ``a4 sqrt(3) (2 rho^2 - 1)`` added to the screens' phase), with cards ``DIVERSK = W`` and
        ``DIVOBJK = 0``; TRUTH K is TRUTH 0. Its noise is drawn after the other channels'. None or 0: none.

    Returns a Burst with ``frames [K, L, Y, X]``, ``truth [K, Y, X]``, ``modes [L, M, Yg, Xg]`` (radians
    at the instrument's wavelength, after the AO), the instrument label per object and a header with
    TELESCOP, INSTRUME, WAVELNTH [A], CDELT1/2 [arcsec] and the settings (R0, R0WAVE, R0INST, THETA0,
    NOISE, SEED, SCENE, GRID, NMODES, PSFSIZE, NLAYERS, LAYHi [m], LAYWi, WAVEFRNT, L0 [m], AOMODES,
    AOLOCKY/X [arcsec], PHOTONS, PUPILPX, SCREENPX). A simulation has no date: DATE-OBS is J2000.0 and
    EXPTIME 12 ms (``svrt.fileio.standard.SIMULATION_DATE``, ``SIMULATION_EXPTIME``), so that the files
    carry standard times (the pointing is disk centre, ``DEFAULT_POINTING``, when they are written).

    The model and cost of ``wavefront="screen"``: the module doc.
    """
    import torch

    from svrt.adaptive_optics import AdaptiveOptics
    from svrt.atmosphere import Atmosphere
    from svrt.fileio import Burst
    from svrt.scenes import make_objects

    nodes = _nodes_of(nodes, grid)
    (inst, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, nodes, n_modes, psf_size, outer_scale_m,
     photons) = _validate(instrument, size, n_frames, n_objects, seed, r0_cm, theta0_arcsec, noise, scene, nodes,
                          n_modes, psf_size, wavefront, outer_scale_m, photons)
    ao = AdaptiveOptics(inst, ao_modes, ao_lock_arcsec)
    y = x = size
    atmosphere = Atmosphere.from_theta0(r0_cm, theta0_arcsec, outer_scale_m=outer_scale_m)
    waves = _burst_wavefronts(inst, atmosphere, n_frames, (nodes, nodes), (y, x), n_modes, ao, wavefront,
                              np.random.default_rng([seed, 1]))
    if psf_size is None:
        psf_size = choose_psf_size(inst, waves.coarse, node_psfs=waves.node_psfs)
    s = psf_size
    model = burst_psf_model(inst, s, n_modes, waves.min_pupil_px)
    scene_big = make_objects(scene, n_objects, (y + s - 1, x + s - 1), inst.pixel_arcsec, seed)
    b = s - 1 - s // 2
    truth = scene_big[:, b:b + y, b:b + x].copy()
    obj = torch.as_tensor(scene_big)
    noise_rng = np.random.default_rng([seed, 2])
    frames = _frames_through(obj, waves, model, (y, x), f"simulate {inst.label} {y}x{x}x{n_frames} ({wavefront})",
                             progress)
    frames = add_noise(frames, noise, photons, noise_rng)
    if diversity:
        defocused = _diversity_frames(diversity, obj[:1], waves, model, inst, (y, x), progress)
        frames = np.concatenate([frames, add_noise(defocused, noise, photons, noise_rng)])
        truth = np.concatenate([truth, truth[:1]])
    header = _burst_header(inst, atmosphere, model, ao, r0_cm=r0_cm, theta0_arcsec=theta0_arcsec, noise=noise,
                           seed=seed, scene=scene, nodes=nodes, n_modes=n_modes, psf_size=s, wavefront=wavefront,
                           outer_scale_m=outer_scale_m, photons=photons, screen_px=waves.screen_px)
    if diversity:
        header.update({f"DIVERS{n_objects}": float(diversity), f"DIVOBJ{n_objects}": 0})
    _register_header_comments()
    return Burst(frames=frames, instruments=[inst.label] * len(frames), truth=truth, modes=waves.coarse, header=header)


@dataclass
class _Wavefronts:
    """The wavefronts of a burst: ``coarse [L, M, Yg, Xg]`` (MODES) and, for ``wavefront="screen"``, the
    frames' :class:`~svrt.phase_screens.LayeredScreens`, the PSFs at the nodes (to choose the PSF size),
    the pixels' field angles ``(ay [Y], ax [X])`` (rad) and the pupil sampling of the screens' PSFs."""

    coarse: np.ndarray
    screens: list | None = None
    node_psfs: Any = None
    pixel_angles: tuple | None = None
    min_pupil_px: float = MIN_PUPIL_PX
    screen_px: int = SCREEN_PUPIL_PX


def _burst_wavefronts(inst, atmosphere, n_frames: int, grid_shape, shape, n_modes: int, ao, wavefront: str,
                      rng: np.random.Generator) -> _Wavefronts:
    """The KL coefficients at the nodes of every frame (after the AO), and the screens for "screen"."""
    from svrt.instruments import ARCSEC_PER_RADIAN
    from svrt.phase_screens import anisoplanatic_modes, node_field_angles, wavefront_modes

    if wavefront == "kl":
        return _Wavefronts(anisoplanatic_modes(inst, atmosphere.r0_cm, None, n_frames, grid_shape, shape,
                                               n_modes=n_modes, rng=rng, atmosphere=atmosphere,
                                               pupil_px=SCREEN_PUPIL_PX, ao_modes=ao.n_modes,
                                               ao_lock_arcsec=ao.lock_arcsec))
    screen_px, min_pupil_px = screen_pupil_samples(inst, atmosphere.r0_cm)
    screens = burst_screens(inst, atmosphere, n_frames, shape, rng, ao, screen_px)
    # pixel field angles (rad) from the image centre: the nodes of a grid of one node per pixel
    pixel_angles = tuple(a / ARCSEC_PER_RADIAN for a in node_field_angles(shape, shape, inst.pixel_arcsec))
    return _Wavefronts(wavefront_modes(screens, inst, grid_shape, shape, n_modes, pupil_px=screen_px), screens,
                       _screen_node_psfs(screens, inst, grid_shape, shape), pixel_angles, min_pupil_px, screen_px)


def _frames_through(obj, waves: _Wavefronts, model, shape, desc: str, progress: bool, d_kl=None,
                    d_phase=None) -> np.ndarray:
    """The noiseless frames ``[K, L, Y, X]`` of ``obj [K, Y + S - 1, X + S - 1]`` through every frame's
    wavefront: per pixel the bilinear KL coefficients of the coarse grid (plus ``d_kl [M, 1, 1]``) or,
    with screens, the full phase of the screens over the pixel's footprints (plus ``d_phase [1, N]``)."""
    from tqdm.auto import tqdm

    from svrt.optics.convolution import spatially_variant_convolve, spatially_variant_convolve_psfs

    y, x = shape
    n_frames = waves.coarse.shape[0]
    out = np.empty((obj.shape[0], n_frames, y, x), dtype=np.float32)
    rows = max(1, 256 // x)  # ~256 PSFs per block: fastest on a CPU (cache); memory ~ K S^2 256 floats
    with tqdm(total=n_frames * y, desc=desc, unit="row", disable=not progress, leave=False,
              dynamic_ncols=True) as bar:
        for frame in range(n_frames):
            if waves.screens is None:
                coef = per_pixel_modes(waves.coarse[frame], (y, x))                 # [M, Y, X]
                if d_kl is not None:
                    coef = coef + d_kl
                img = spatially_variant_convolve(obj, coef, model, boundary="valid", rows_per_chunk=rows,
                                                 progress=bar.update)
            else:
                img = spatially_variant_convolve_psfs(obj, _psf_rows(waves.screens[frame], model, waves.pixel_angles,
                                                                     x, d_phase),
                                                      (y, x), model.psf_size, boundary="valid", rows_per_chunk=rows,
                                                      progress=bar.update, dtype=model.dtype)
            out[:, frame] = img.numpy()
    return out


def _psf_rows(screen, model, pixel_angles, x: int, d_phase=None):
    """``psf_rows(r0, r1)``: the PSFs ``[(r1 - r0) X, S, S]`` of pixel rows r0..r1-1 from the full phase of
    ``screen`` over each pixel's footprints (:meth:`~svrt.phase_screens.LayeredScreens.psfs`), plus
    ``d_phase``."""
    pixel_y, pixel_x = pixel_angles
    px, py = model.pupil_points_m

    def psf_rows(r0, r1):
        phi = screen.phase(np.repeat(pixel_y[r0:r1], x), np.tile(pixel_x, r1 - r0), px, py, dtype=model.dtype)
        if d_phase is not None:
            phi = phi + d_phase
        return model.psf_from_phase(phi.reshape(-1, model.box, model.box))

    return psf_rows


def _diversity_frames(waves_pv: float, obj, waves: _Wavefronts, model, inst, shape, progress: bool):
    """The frames ``[1, L, Y, X]`` (noiseless) of the object ``obj [1, Y + S - 1, X + S - 1]`` through every
    frame's wavefront plus a defocus of ``waves_pv`` waves P-V: with screens (wavefront "screen") the
    exact defocus phase added to each pixel's full phase, else its KL projection added to the coefficients."""
    import torch

    from svrt.optics.diversity import defocus_phase, diversity_coefficients

    n_modes = waves.coarse.shape[1]
    d_kl = torch.as_tensor(diversity_coefficients(waves_pv, n_modes), dtype=torch.float32)[:, None, None]
    px, py = model.pupil_points_m
    d_phase = torch.as_tensor(defocus_phase(waves_pv, px, py, inst.diameter_m), dtype=model.dtype)[None]   # [1, N]
    return _frames_through(obj, waves, model, shape, f"simulate diversity channel ({waves_pv:g} waves P-V)", progress,
                           d_kl=d_kl, d_phase=d_phase)


def _burst_header(inst, atmosphere, model, ao, *, r0_cm, theta0_arcsec, noise, seed, scene, nodes, n_modes, psf_size,
                  wavefront, outer_scale_m, photons, screen_px) -> dict:
    """The header of a simulated burst: the instrument's cards and every setting (the module doc)."""
    from svrt.atmosphere import r0_at_wavelength
    from svrt.fileio.standard import SIMULATION_DATE, SIMULATION_EXPTIME

    header = {
        "DATE-OBS": SIMULATION_DATE,       # a simulation has no date: J2000.0, documented (svrt.fileio.standard)
        "EXPTIME": SIMULATION_EXPTIME,
        "TELESCOP": inst.telescope,
        "INSTRUME": inst.instrument,
        "WAVELNTH": float(inst.wavelength_angstrom),
        "CDELT1": float(inst.pixel_arcsec),
        "CDELT2": float(inst.pixel_arcsec),
        "SIMULATE": True,
        "R0": float(r0_cm),
        "R0WAVE": R0_REFERENCE_WAVELENGTH,
        "R0INST": round(r0_at_wavelength(r0_cm, inst.wavelength_angstrom), 4),
        "THETA0": float(theta0_arcsec) if theta0_arcsec is not None else 0.0,
        "NOISE": float(noise),
        "SEED": int(seed),
        "SCENE": scene,
        "GRID": int(nodes),           # the file's card keeps its name (readers of older bursts)
        "NMODES": int(n_modes),
        "PSFSIZE": int(psf_size),
        "NLAYERS": len(atmosphere.heights_m),
        "WAVEFRNT": wavefront,
        "L0": float(outer_scale_m or 0.0),
        "AOMODES": ao.n_modes,
        "AOLOCKY": ao.lock_arcsec[0],
        "AOLOCKX": ao.lock_arcsec[1],
        "PHOTONS": float(photons or 0.0),
        "PUPILPX": round(float(model.pupil_diameter_px), 3),
        "SCREENPX": int(screen_px),
    }
    for i, (h, w) in enumerate(zip(atmosphere.heights_m, atmosphere.fractions)):
        header[f"LAYH{i}"] = round(h, 1)
        header[f"LAYW{i}"] = round(w, 4)
    return header


def burst_screens(instrument, atmosphere, n_frames: int, image_shape, rng: np.random.Generator, ao=None,
                  screen_px: int = SCREEN_PUPIL_PX) -> list:
    """The turbulence of a ``wavefront="screen"`` burst: ``n_frames`` :class:`~svrt.phase_screens.LayeredScreens`
    (pixel D / ``screen_px``) drawn from ``rng`` (the burst's ``default_rng([seed, 1])``), large enough for
    every pixel of an ``image_shape`` field and the AO lock point, each seen through ``ao`` (an
    :class:`~svrt.adaptive_optics.AdaptiveOptics`; None: none)."""
    from svrt.instruments import ARCSEC_PER_RADIAN, get_instrument
    from svrt.phase_screens import layered_screens

    inst = get_instrument(instrument)
    y, x = image_shape
    corner = float(np.hypot((y - 1) / 2, (x - 1) / 2)) * inst.pixel_arcsec           # arcsec
    radius = max(corner, ao.reach_arcsec if ao is not None else 0.0) / ARCSEC_PER_RADIAN
    frames = layered_screens(inst, atmosphere, n_frames, radius, rng, pupil_px=screen_px)
    return [ao.correct(f) if ao is not None else f for f in frames]


def _screen_node_psfs(screens, inst, grid_shape, image_shape):
    """``node_psfs`` for :func:`choose_psf_size`: the full-phase PSFs of coarse-grid nodes (flat indices
    into [L, Yg, Xg], sorted) from a frame's :class:`~svrt.phase_screens.LayeredScreens`."""
    import torch

    from svrt.instruments import ARCSEC_PER_RADIAN
    from svrt.phase_screens import node_field_angles

    ay, ax = (a / ARCSEC_PER_RADIAN for a in node_field_angles(grid_shape, image_shape, inst.pixel_arcsec))

    def node_psfs(model, index):
        frame, iy, ix = np.unravel_index(np.asarray(index), (len(screens),) + tuple(grid_shape))
        return torch.cat([screens[f].psfs(model, ay[iy[frame == f]], ax[ix[frame == f]])
                          for f in np.unique(frame)])                     # sorted index: frames in order

    return node_psfs


def add_noise(frames: np.ndarray, noise: float, photons: float | None, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of noiseless ``frames [K, L, Y, X]`` (float32).

    Photon noise (``photons``, None or 0: none): each frame (k, l) is scaled to ``photons`` photo-electrons
    per pixel at its mean, drawn from a Poisson distribution and scaled back, so a pixel of value v
    gets variance ``v <frame> / photons`` (mean / photons at the frame's mean). Then Gaussian noise of
    standard deviation ``noise`` x the noiseless frame's mean (read noise, or a stand-in for photon
    noise at high counts). Both from ``rng`` (the burst's noise stream), Poisson first.
    """
    mean = frames.mean(axis=(2, 3), keepdims=True)
    out = frames
    if photons:
        scale = np.where(mean > 0, mean, 1.0) / photons                  # units per photo-electron
        counts = rng.poisson(np.clip(frames, 0.0, None) / scale)
        out = (counts * scale).astype(np.float32)
    if noise > 0:
        sigma = noise * mean
        out = out + (rng.standard_normal(frames.shape) * sigma).astype(np.float32)
    return out


def truth_with_margin(burst) -> np.ndarray:
    """The objects the frames were made of: TRUTH plus the margin of the PSF size, ``[K, Y + S - 1, X + S - 1]``
    with TRUTH at offset ``S - 1 - S // 2``. Rebuilt from the header (SCENE, SEED, PSFSIZE, CDELT1) and
    checked against TRUTH, so that a burst that was not made by :func:`simulate_burst` is refused."""
    from svrt.errors import SvrtError
    from svrt.scenes import make_objects

    h = burst.header
    missing = [k for k in ("SCENE", "SEED", "PSFSIZE", "CDELT1") if k not in h]
    if missing or burst.truth is None:
        raise SvrtError(f"burst header lacks {', '.join(missing) or 'TRUTH'}; expected a burst written by svrt "
                        "simulate.")
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

def local_contrast_ratio(frame: np.ndarray, truth: np.ndarray, block: int) -> np.ndarray:
    """RMS contrast of ``frame`` over that of ``truth`` in ``block`` x ``block`` pixel blocks:
    ``[Y // block, X // block]``, 1 = unblurred. A map of how strongly each part of the field is blurred."""
    y, x = (frame.shape[0] // block) * block, (frame.shape[1] // block) * block

    def contrast(a):
        b = a[:y, :x].reshape(y // block, block, x // block, block)
        return b.std(axis=(1, 3)) / np.abs(b.mean(axis=(1, 3))).clip(1e-12)

    return contrast(frame) / contrast(truth).clip(1e-12)
