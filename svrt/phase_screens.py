"""Phase screens and pupil footprints: the anisoplanatic wavefronts of a layered atmosphere across the field.

Model (:class:`svrt.atmosphere.Atmosphere`): thin layers at heights h_i carrying fractions w_i of the
C_n^2. A field point at angle (a_y, a_x) from the field centre sees, in the layer at height h_i, the
pupil footprint shifted by h_i (a_y, a_x); its wavefront is the sum of the layers' phases over their
footprints (geometric optics, no scintillation, frozen screens during one short exposure). Here: FFT
phase screens with subharmonics (:func:`phase_screen`), the screens of one exposure
(:class:`LayeredScreens`), their KL coefficients at the coarse-grid nodes (:func:`wavefront_modes`,
:func:`anisoplanatic_modes`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from svrt.atmosphere import (
    R0_REFERENCE_WAVELENGTH,
    Atmosphere,
    _check_outer_scale,
    _spectrum_of_f2,
)
from svrt.errors import SvrtError
from svrt.instruments import ARCSEC_PER_RADIAN, Instrument, get_instrument
from svrt.mode_grid import N_MODES, node_positions
from svrt.optics.kl import kl_pupil_projector

_NEAR_CELLS = 3          # main-grid cells with |kx|, |ky| <= this get cell-integrated power


def _cell_power(fx: np.ndarray, fy: np.ndarray, width: float, outer_scale_m: float | None = None,
                sub: int = 16) -> np.ndarray:
    """Power (rad^2, for r0 = 1 m) to give the single frequency (fx, fy) that stands for the square
    frequency cell of side ``width`` centred on it: ``int_cell Phi(f) |f|^2 d^2f / |f_c|^2``.

    Point sampling ``Phi(f_c) width^2`` badly underestimates the cells next to f = 0, where
    Phi ~ f^(-11/3) is steep. Weighting by |f|^2 makes the cell's contribution to everything that
    is quadratic in f at low frequency exact: the structure function at separations small against
    1/f and the tip/tilt over a pupil (cf. the improved subharmonics of Johansson & Gavel 1994).
    The same holds for a von Karman spectrum (``outer_scale_m``).
    """
    u = (np.arange(sub) + 0.5) / sub - 0.5
    sx = fx[..., None, None] + u[None, :] * width
    sy = fy[..., None, None] + u[:, None] * width
    f2 = sx ** 2 + sy ** 2
    return (_spectrum_of_f2(f2, outer_scale_m) * f2).mean(axis=(-2, -1)) * width ** 2 / (fx ** 2 + fy ** 2)


@lru_cache(maxsize=16)
def _screen_amplitudes(n: int, pixel_m: float, subharmonics: int, outer_scale_m: float | None = None):
    """Amplitudes (rad, r0 = 1 m) of the FFT grid ``[n, n]`` and of each subharmonic level ``[3, 3]``."""
    df = 1.0 / (n * pixel_m)
    k = np.fft.fftfreq(n, d=1.0 / n)                                  # integer frequency indices
    ky, kx = np.meshgrid(k, k, indexing="ij")
    kr = np.hypot(kx, ky)
    kr[0, 0] = 1.0
    power = _spectrum_of_f2((kr * df) ** 2, outer_scale_m) * df ** 2
    near = (np.abs(kx) <= _NEAR_CELLS) & (np.abs(ky) <= _NEAR_CELLS)
    near[0, 0] = False
    power[near] = _cell_power(kx[near] * df, ky[near] * df, df, outer_scale_m)
    power[0, 0] = 0.0                                                 # piston
    levels = []
    k3 = np.array([-1.0, 0.0, 1.0])
    for p in range(1, subharmonics + 1):
        dfp = df / 3 ** p
        sy, sx = np.meshgrid(k3 * dfp, k3 * dfp, indexing="ij")
        sx[1, 1] = sy[1, 1] = dfp                                     # placeholder, zeroed below
        lp = _cell_power(sx, sy, dfp, outer_scale_m)
        lp[1, 1] = 0.0                                                # the centre is the next level
        levels.append(np.sqrt(lp))
    amp = np.sqrt(power)
    amp.setflags(write=False)
    return amp, tuple(levels)


def phase_screen(n: int, pixel_m: float, r0_m: float, rng: np.random.Generator | None = None,
                 subharmonics: int = 3, outer_scale_m: float | None = None) -> np.ndarray:
    """A Kolmogorov (or von Karman) phase screen ``[n, n]`` in radians, by the FFT method with subharmonics.

    Parameters
    ----------
    n : side of the screen in pixels.
    pixel_m : size of a screen pixel in metres.
    r0_m : Fried radius in metres *at the wavelength the phase refers to* (the phase is in radians
        at that wavelength).
    rng : :class:`numpy.random.Generator` (default: a fresh unseeded one).
    subharmonics : number of subharmonic levels (Lane et al. 1992). Level p adds the 3 x 3 - 1
        frequencies (-1, 0, 1) df / 3^p around f = 0, so the screen carries the tip and tilt of a
        screen 3^p times larger. 0 gives the bare FFT screen (periodic, with far too little power
        at scales comparable with the screen).
    outer_scale_m : von Karman outer scale L0 in metres (:func:`von_karman_psd`); None (default)
        or inf: Kolmogorov. The same random numbers are drawn either way, so a screen with a
        finite L0 is the Kolmogorov screen of the same generator state with its large scales damped.

    The phase is ``Re sum_k c_k a_k exp(2 pi i f_k . x)`` over the FFT frequencies f_k = k df,
    df = 1/(n pixel_m), and the subharmonic ones, with c_k complex normal (E|c|^2 = 2) and
    a_k^2 = Phi(f_k) df^2, Phi(f) = 0.023 r0^(-5/3) f^(-11/3) the Kolmogorov phase spectrum
    (f in cycles per metre; von Karman: ``(f^2 + 1/L0^2)^(-11/6)``, :func:`von_karman_psd`).
    Cells next to f = 0 (|k| <= 3 and all subharmonic cells) get the
    |f|^2-weighted power of the whole cell instead of the point value (see :func:`_cell_power`);
    piston (f = 0) is zero and the subharmonic part has zero mean over the screen.

    Accuracy: the structure function <(phi(x + r) - phi(x))^2> approaches 6.88 (r/r0)^(5/3) but
    falls short of it: by ~10-14 % at 1 pixel (no power above the Nyquist frequency) and at
    r ~ n pixel_m / 16 (Kolmogorov's D(r) takes a part of its value from scales far larger than r,
    even larger than the 3^subharmonics times larger screen), growing to ~25 % at n pixel_m / 4.
    Tip/tilt over a pupil much smaller than the screen is within ~10 % of Kolmogorov's (infinite
    outer scale). With a finite outer scale the large-scale deficit vanishes: von Karman puts little
    power beyond L0, so for L0 inside the screen the screen carries nearly all of it (L0 = n pixel_m
    / 2.5: D(r) within 1-4 % of von Karman's at 2..16 pixels; the 1-pixel deficit remains). Axes:
    ``[row (y), column (x)]``.
    """
    if not (n >= 2 and pixel_m > 0 and r0_m > 0):
        raise SvrtError(f"phase_screen needs n >= 2, pixel_m > 0 and r0_m > 0; "
                        f"got n={n}, pixel_m={pixel_m}, r0_m={r0_m}.")
    if subharmonics < 0:
        raise SvrtError(f"phase_screen needs subharmonics >= 0; got {subharmonics}.")
    outer_scale_m = _check_outer_scale(outer_scale_m)
    rng = rng if rng is not None else np.random.default_rng()
    amp, levels = _screen_amplitudes(int(n), float(pixel_m), int(subharmonics), outer_scale_m)
    scale = r0_m ** (-5.0 / 6.0)
    c = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    screen = np.fft.ifft2(c * amp).real * (scale * n * n)   # sum over k of c_k a_k exp(+2 pi i f.x)
    if subharmonics > 0:
        df = 1.0 / (n * pixel_m)
        x = (np.arange(n) - n / 2) * pixel_m                 # coordinates (m); any origin works
        k = np.array([-1.0, 0.0, 1.0])
        low = np.zeros((n, n), dtype=complex)
        for p, a in enumerate(levels, start=1):
            dfp = df / 3 ** p
            cp = a * (rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)))   # [ky, kx]
            e = np.exp(2j * np.pi * dfp * k[:, None] * x[None, :])   # [3, n]: exp(2 pi i f x), separable
            ex = (cp[:, :, None] * e[None, :, :]).sum(axis=1)          # [3 (ky), n (x)]
            for j in range(3):                                        # sum_ky e_y[ky] ex[ky] (outer
                low += np.multiply.outer(e[j], ex[j])                 # products, no BLAS wake-ups)
        low = low.real * scale
        screen = screen + low - low.mean()
    return screen


def node_field_angles(grid_shape, image_shape, pixel_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Field angles (arcsec, relative to the image centre) of the coarse-grid nodes: ``(ay [Yg], ax [Xg])``.

    Node (i, j) stands for the P x P pixel block centred on pixel ((i + 0.5) Y / Yg - 0.5,
    (j + 0.5) X / Xg - 0.5), the points where bilinear upsampling with ``align_corners=False``
    reproduces the node's value; the image centre is pixel ((Y - 1) / 2, (X - 1) / 2).
    """
    (yg, xg), (y, x) = tuple(grid_shape), tuple(image_shape)
    ay = (node_positions(y, yg) - (y - 1) / 2) * pixel_arcsec
    ax = (node_positions(x, xg) - (x - 1) / 2) * pixel_arcsec
    return ay, ax


def _screen_size(reach_m: float, diameter_m: float, pupil_px: int) -> int:
    """Side (a power of 2) of the layer screens, whose pixel is ``diameter_m / pupil_px``: the pupil
    plus twice the largest footprint shift ``reach_m``, 4 pixels of margin, and at least 4 pupil
    diameters (the lowest FFT frequencies and the subharmonics then give the tip/tilt of a screen
    4 x 3^subharmonics pupils wide)."""
    need = 2 * (reach_m + diameter_m / 2) / (diameter_m / pupil_px) + 4
    return int(2 ** np.ceil(np.log2(max(need, 4 * pupil_px))))


class LayeredScreens:
    """The frozen turbulence of one short exposure: one phase screen per layer, and what a field point sees.

    Parameters
    ----------
    screens : ``[layers, n, n]`` phase in radians at 5000 A (the reference wavelength of r0), axes
        ``[row (y), column (x)]``; screen pixel ``pixel_m`` metres. The pupil centre of the field
        centre sits on the screen centre, pixel ((n - 1) / 2, (n - 1) / 2), in every layer.
    heights_m : ``[layers]`` heights above the telescope (m).
    pixel_m : screen pixel (m).
    wavelength_angstrom : :meth:`phase` returns radians at this wavelength (the instrument's):
        the optical path is achromatic, so phase ~ 1 / lambda.
    corrections : callables ``(x_m [N], y_m [N]) -> torch.float64 [N]``, phases (rad at the
        instrument's wavelength) subtracted at *every* field point: mirrors conjugate to the pupil,
        e.g. the deformable mirror of :class:`svrt.adaptive_optics.AdaptiveOptics`.

    Geometry (geometric optics, no scintillation): a field point at angle (a_y, a_x) (rad, from the
    field centre) sees in the layer at height h the pupil footprint shifted by h (a_y, a_x); its
    wavefront at pupil point (x, y) is ``sum_i screen_i(y + h_i a_y, x + h_i a_x)``, sampled bilinearly.
    """

    def __init__(self, screens: np.ndarray, heights_m, pixel_m: float, wavelength_angstrom: float,
                 corrections: tuple = ()):
        self.screens = np.asarray(screens, dtype=np.float64)
        self.heights_m = tuple(float(h) for h in heights_m)
        if self.screens.ndim != 3 or self.screens.shape[0] != len(self.heights_m) or \
                self.screens.shape[1] != self.screens.shape[2]:
            raise SvrtError(f"layered screens must be [layers, n, n] with one height per layer; got "
                            f"{self.screens.shape} and {len(self.heights_m)} heights.")
        self.pixel_m = float(pixel_m)
        self.wavelength_angstrom = float(wavelength_angstrom)
        self.corrections = tuple(corrections)
        self._torch = {}                                   # screens as a torch tensor, per dtype

    @property
    def n(self) -> int:
        return self.screens.shape[-1]

    def corrected(self, correction) -> "LayeredScreens":
        """The same turbulence seen after one more pupil-conjugated correction (shares the screens)."""
        out = LayeredScreens.__new__(LayeredScreens)
        out.__dict__.update(self.__dict__)
        out.corrections = self.corrections + (correction,)
        return out

    def _screens_as(self, dtype):
        import torch

        if dtype not in self._torch:
            self._torch[dtype] = torch.as_tensor(self.screens, dtype=dtype)[:, None]   # [layers, 1, n, n]
        return self._torch[dtype]

    def phase(self, angle_y, angle_x, x_m, y_m, dtype=None):
        """Pupil phase of field points: ``[P, N]`` radians at the instrument's wavelength (torch).

        ``angle_y, angle_x`` ``[P]``: field angles in radians from the field centre; ``x_m, y_m``
        ``[N]``: pupil points in metres from the pupil centre (x along columns). ``dtype``: torch dtype of
        the result and of the sampling (default float64; float32, the PSF model's precision, for the
        per-pixel PSFs: its rounding, ~1e-7 rad, is far below the phase's own accuracy). Cost: one
        bilinear sample (torch ``grid_sample``) per (field point, pupil point, layer above the ground),
        ~20 us of CPU per field point for two high layers and ~1200 pupil points; the ground layer
        (h = 0) is sampled once and shared by every field point.
        """
        import torch
        import torch.nn.functional as F

        dtype = dtype or torch.float64
        ay = torch.tensor(np.asarray(angle_y, dtype=np.float64).reshape(-1, 1))
        ax = torch.tensor(np.asarray(angle_x, dtype=np.float64).reshape(-1, 1))
        x = torch.tensor(np.asarray(x_m, dtype=np.float64).reshape(1, -1))
        y = torch.tensor(np.asarray(y_m, dtype=np.float64).reshape(1, -1))
        if ay.shape != ax.shape or x.shape != y.shape:
            raise SvrtError("field angles (y, x) and pupil points (x, y) must come in pairs of equal length.")
        screens = self._screens_as(dtype)
        # grid_sample's coordinates (align_corners=True): -1 .. 1 over pixel centres 0 .. n - 1, so the
        # screen centre (n - 1) / 2, where the field centre's pupil centre sits, is 0: u = metres * k
        k = 2.0 / ((self.n - 1) * self.pixel_m)
        pupil = (torch.cat([x, y]).T * k).to(dtype)[None]                                   # [1, N, 2] (x, y)
        angle = torch.cat([ax, ay], dim=1)[:, None, :]                                      # [P, 1, 2] (x, y)
        out = None
        for i, h in enumerate(self.heights_m):
            if h == 0:                      # the ground layer: the same footprint for every field point
                grid = pupil                                                                # [1, N, 2]
            else:                           # one contiguous pass: pupil point + footprint shift
                grid = torch.add(pupil, (angle * (h * k)).to(dtype))                        # [P, N, 2]
            # bilinear, edge values beyond the screen (screens are sized to hold every footprint)
            sample = F.grid_sample(screens[i:i + 1], grid[None], mode="bilinear", padding_mode="border",
                                   align_corners=True)[0, 0]                                # [P or 1, N]
            out = sample if out is None else out + sample
        out = out.expand(ay.shape[0], x.shape[1]).clone() if out.shape[0] != ay.shape[0] else out
        out *= R0_REFERENCE_WAVELENGTH / self.wavelength_angstrom
        for correction in self.corrections:
            out -= correction(x_m, y_m).to(dtype)
        return out

    def psfs(self, psf_model, angle_y, angle_x):
        """PSFs ``[P, S, S]`` (unit sum) of field points ``angle_y, angle_x`` ``[P]`` (rad) from their full
        pupil phase on the pupil grid of ``psf_model`` (:meth:`svrt.optics.psf.PSFModel.psf_from_phase`)."""
        x, y = psf_model.pupil_points_m
        phi = self.phase(angle_y, angle_x, x, y, dtype=psf_model.dtype)
        return psf_model.psf_from_phase(phi.reshape(-1, psf_model.box, psf_model.box))


def layered_screens(instrument: str | Instrument, atmosphere: Atmosphere, n_frames: int, field_radius_rad: float,
                    rng: np.random.Generator | None = None, pupil_px: int = 64, subharmonics: int = 6):
    """Draw the turbulence of ``n_frames`` exposures: an iterator of :class:`LayeredScreens`.

    For each frame and layer a :func:`phase_screen` (at 5000 A with the layer's r0 and the atmosphere's
    outer scale) of pixel D / ``pupil_px``, large enough for the footprints of every field point within
    ``field_radius_rad`` (rad) of the field centre (:func:`_screen_size`). Frames are drawn lazily, in
    order, from ``rng``: the same generator state gives the same screens however they are used.
    """
    inst = get_instrument(instrument)
    rng = rng if rng is not None else np.random.default_rng()
    dx = inst.diameter_m / pupil_px
    n = _screen_size(max(atmosphere.heights_m) * float(field_radius_rad), inst.diameter_m, pupil_px)
    layer_r0_m = [r / 100.0 for r in atmosphere.layer_r0_cm()]
    for _ in range(n_frames):
        screens = np.stack([phase_screen(n, dx, r0_m, rng, subharmonics, atmosphere.outer_scale_m)
                            for r0_m in layer_r0_m])
        yield LayeredScreens(screens, atmosphere.heights_m, dx, inst.wavelength_angstrom)


def wavefront_modes(screens, instrument: str | Instrument, grid_shape, image_shape, n_modes: int = N_MODES,
                    pupil_px: int = 64) -> np.ndarray:
    """KL coefficients ``[L, M, Yg, Xg]`` float32 (rad at the instrument's wavelength) of the wavefronts
    of ``screens`` (an iterable of L :class:`LayeredScreens`) at the coarse-grid nodes
    (:func:`node_field_angles`): the phase on a pupil of ``pupil_px`` points across D, projected by
    weighted least squares onto piston + KL 1..M (:func:`svrt.optics.kl.kl_pupil_projector`; piston dropped)."""
    inst = get_instrument(instrument)
    yg, xg = (int(v) for v in grid_shape)
    px_m, py_m, projector = kl_pupil_projector(inst, n_modes, pupil_px)
    ay, ax = node_field_angles((yg, xg), image_shape, inst.pixel_arcsec)
    ayy, axx = np.meshgrid(ay / ARCSEC_PER_RADIAN, ax / ARCSEC_PER_RADIAN, indexing="ij")   # [Yg, Xg] rad
    node_y, node_x = ayy.reshape(-1), axx.reshape(-1)
    chunk = max(1, 2 ** 20 // px_m.size)          # nodes per block: ~1 M samples, bounded memory
    out = []
    for frame in screens:
        modes = np.empty((n_modes, node_y.size), dtype=np.float32)
        for lo in range(0, node_y.size, chunk):
            sl = slice(lo, lo + chunk)
            phase = frame.phase(node_y[sl], node_x[sl], px_m, py_m).numpy()              # [nodes, N]
            modes[:, sl] = (projector @ phase.T).astype(np.float32)
        out.append(modes.reshape(n_modes, yg, xg))
    return np.stack(out)


def anisoplanatic_modes(instrument: str | Instrument, r0_cm: float, theta0_arcsec: float | None,
                        n_frames: int, grid_shape, image_shape, n_modes: int = N_MODES,
                        rng: np.random.Generator | None = None, atmosphere: Atmosphere | None = None,
                        pupil_px: int = 64, subharmonics: int = 6, outer_scale_m: float | None = None,
                        ao_modes: int = 0, ao_lock_arcsec=(0.0, 0.0)) -> np.ndarray:
    """KL coefficients of anisoplanatic wavefronts on a coarse grid: ``[L, M, Yg, Xg]`` float32,
    radians of phase at the instrument's wavelength.

    Parameters
    ----------
    instrument : label or :class:`Instrument` (D, D2, spider, pixel scale, wavelength).
    r0_cm : Fried radius in cm at 5000 A (scaled to the instrument as lambda^(6/5)).
    theta0_arcsec : isoplanatic angle in arcsec at 5000 A; sets the heights of the layers of
        :meth:`Atmosphere.from_theta0`. None or ``inf``: a single ground layer (isoplanatic).
    n_frames : L, independent realisations (one set of layer screens per frame).
    grid_shape : (Yg, Xg), the coarse grid; node (i, j) sits at the field angle of the centre of its
        pixel block (see :func:`node_field_angles`).
    image_shape : (Y, X) in pixels, with the instrument's pixel scale this gives the field of view.
    n_modes : M, KL modes 1..M (Noll 2..M+1 rotated).
    rng : :class:`numpy.random.Generator` (default: fresh, unseeded).
    atmosphere : an :class:`Atmosphere` to use instead of ``from_theta0(r0_cm, theta0_arcsec)``.
    pupil_px : pupil sampling: points across D, and the screen pixel is D / pupil_px.
    subharmonics : passed to :func:`phase_screen`. Kolmogorov's tip/tilt (infinite outer scale)
        takes a part ~ (D / L)^(1/3) of its variance from scales beyond L, so a finite screen always
        falls short: with screens of >= 4 D, 3 levels (L ~ 100 D) give tip/tilt ~20 % low, the
        default 6 levels (L ~ 3000 D) ~7 % low, at a negligible cost. Modes 3..M are within a few %.
    outer_scale_m : von Karman outer scale L0 (m) of every layer; None: Kolmogorov (infinite).
        With ``atmosphere`` given, its own L0 is used (giving a different one here is an error).
    ao_modes : N, KL modes 1..N (tip/tilt included) corrected by a ground-conjugated adaptive
        optics locked on ``ao_lock_arcsec`` (:class:`svrt.adaptive_optics.AdaptiveOptics`); 0: none.
    ao_lock_arcsec : (y, x) field angle of the wavefront sensor's lock point (arcsec from the field
        centre, on the sky, not scaled with wavelength).

    For each frame and layer a :func:`phase_screen` (at 5000 A with the layer's r0) is drawn
    (:func:`layered_screens`). For each node the pupil footprint in layer i is shifted by
    h_i x (field angle) and the screen is sampled there by bilinear interpolation; the layers' phases
    are summed, scaled to the instrument wavelength (phase ~ 1/lambda, equivalent to r0 ~ lambda^(6/5)),
    the AO correction (the same phase at every node) is subtracted, and the result is projected onto
    the KL modes by weighted least squares over the pupil (:func:`wavefront_modes`).
    In the ground layer all footprints coincide, in high layers they move apart, so the coefficients
    vary smoothly across the field: two field points an angle a apart differ by a phase of variance
    (a / theta0)^(5/3) rad^2 at 5000 A; a mode of radial order n decorrelates once the footprints
    in the high layers are shifted by ~D / n (0.314 r0 a / theta0 for a single layer), tip/tilt
    only over much larger angles, and the ground layer's share (60 % by default) stays common.
    Their ensemble variance is ``kl_basis(M).variances * (D / r0(lambda))^(5/3)`` (the projection
    also picks up a little aliased power from modes beyond M; tip/tilt see ``subharmonics``).
    Cost: L x layers FFT screens plus L x Yg Xg x (pupil points) x (layers above ground) bilinear
    samples (~2 s of CPU for 12 frames of a 16 x 16 grid).
    """
    from svrt.adaptive_optics import AdaptiveOptics

    inst = get_instrument(instrument)
    rng = rng if rng is not None else np.random.default_rng()
    if atmosphere is None:
        atm = Atmosphere.from_theta0(r0_cm, theta0_arcsec, outer_scale_m=outer_scale_m)
    else:
        atm = atmosphere
        if outer_scale_m is not None and _check_outer_scale(outer_scale_m) != atm.outer_scale_m:
            raise SvrtError(f"outer_scale_m={outer_scale_m} differs from the outer scale of the atmosphere given "
                            f"({atm.outer_scale_m}); set it on the Atmosphere.")
    yg, xg = (int(v) for v in grid_shape)
    if not (n_frames >= 1 and yg >= 1 and xg >= 1 and pupil_px >= 8):
        raise SvrtError(f"anisoplanatic_modes needs n_frames >= 1, a grid of at least 1x1 and pupil_px >= 8; "
                        f"got {n_frames}, {yg}x{xg}, {pupil_px}.")
    ao = AdaptiveOptics(inst, ao_modes, ao_lock_arcsec, pupil_px=pupil_px)
    ay, ax = node_field_angles((yg, xg), image_shape, inst.pixel_arcsec)
    radius = max(float(np.hypot(np.abs(ay).max(), np.abs(ax).max())), ao.reach_arcsec) / ARCSEC_PER_RADIAN
    screens = layered_screens(inst, atm, n_frames, radius, rng, pupil_px, subharmonics)
    return wavefront_modes((ao.correct(s) for s in screens), inst, (yg, xg), image_shape, n_modes, pupil_px)
