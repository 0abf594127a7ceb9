"""Kolmogorov turbulence: random KL coefficients for a Fried radius, and anisoplanatic mode fields.

r0 convention: a Fried radius is given in cm *at a reference wavelength* (default 5000 A) and scaled to
the instrument's wavelength as r0(lambda) = r0_ref (lambda / lambda_ref)^(6/5). Coefficients are radians
of phase at the instrument's wavelength.
"""

from __future__ import annotations

import numpy as np

from svrt.errors import SvrtError
from svrt.instruments import Instrument, get_instrument
from svrt.optics.kl import kl_basis

R0_REFERENCE_WAVELENGTH = 5000.0  # Angstrom


def r0_at_wavelength(r0_cm: float, wavelength_angstrom: float,
                     reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> float:
    """Fried radius (cm) at ``wavelength_angstrom`` given ``r0_cm`` at ``reference_angstrom``."""
    if not r0_cm > 0:
        raise SvrtError(f"r0 must be positive (cm); got {r0_cm}.")
    return r0_cm * (wavelength_angstrom / reference_angstrom) ** 1.2


def kl_standard_deviations(instrument: str | Instrument, r0_cm: float, n_modes: int = 44,
                           reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> np.ndarray:
    """RMS (radians) of each KL coefficient ``[n_modes]``: sqrt(variance_l (D/r0(lambda))^(5/3))."""
    inst = get_instrument(instrument)
    r0 = r0_at_wavelength(r0_cm, inst.wavelength_angstrom, reference_angstrom)
    return np.sqrt(kl_basis(n_modes).variances * (inst.diameter_cm / r0) ** (5 / 3))


def kolmogorov_coefficients(instrument: str | Instrument, r0_cm: float, n_modes: int = 44,
                            size: int | tuple = (), rng: np.random.Generator | None = None,
                            reference_angstrom: float = R0_REFERENCE_WAVELENGTH) -> np.ndarray:
    """Random KL coefficients ``[*size, n_modes]`` (radians) of Kolmogorov wavefronts (Roddier 1990)."""
    rng = rng if rng is not None else np.random.default_rng()
    size = (size,) if isinstance(size, int) else tuple(size)
    sd = kl_standard_deviations(instrument, r0_cm, n_modes, reference_angstrom)
    return (rng.standard_normal(size + (n_modes,)) * sd).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Phase screens and a layered atmosphere: anisoplanatic wavefronts across the field of view
# ----------------------------------------------------------------------------------------------
#
# Model. The turbulence is a few thin layers at heights h_i (m) carrying fractions w_i of the
# integrated C_n^2 (sum w_i = 1). A layer alone has the Fried radius r0_i = r0 w_i^(-3/5), so the
# phase structure functions add up to that of r0. The isoplanatic angle of the profile is
# (Fried 1982, zenith, no cos z factors)
#     theta0 = 0.314 r0 / h_eff,   h_eff = (sum_i w_i h_i^(5/3))^(3/5),
# with r0 and theta0 at the same wavelength (both scale as lambda^(6/5), h_eff does not).
# The default profile for a given (r0, theta0) is a ground layer (w = 0.6, h = 0: the telescope and
# near-ground seeing, identical for every field point) plus two free-atmosphere layers with
# w = 0.25 at h and w = 0.15 at 3 h, where h follows from theta0. A star (a field point) at angle
# (a_y, a_x) from the field centre sees, in the layer at height h_i, the pupil footprint shifted by
# h_i (a_y, a_x); the wavefront of the field point is the sum of the layers' phases over their
# footprints (geometric optics, no scintillation, frozen screens during one short exposure).

from functools import lru_cache  # noqa: E402  (kept with the code that uses them)

from svrt.instruments import ARCSEC_PER_RADIAN  # noqa: E402

DEFAULT_GROUND_FRACTION = 0.6
DEFAULT_HIGH_FRACTIONS = (0.25, 0.15)
DEFAULT_HIGH_RELATIVE_HEIGHTS = (1.0, 3.0)
DEFAULT_THETA0_ARCSEC = 2.0  # at 5000 A; a typical daytime value at a good site


# Phi(f) = C r0^(-5/3) f^(-11/3), f in cycles per metre, with the exact C = 0.0228956 (not the rounded
# 0.023) so that screens and the KL variances of svrt.optics.zernike agree.
from svrt.optics.zernike import KOLMOGOROV_C as KOLMOGOROV_PSD  # noqa: E402
_NEAR_CELLS = 3          # main-grid cells with |kx|, |ky| <= this get cell-integrated power


def _cell_power(fx: np.ndarray, fy: np.ndarray, width: float, sub: int = 16) -> np.ndarray:
    """Power (rad^2, for r0 = 1 m) to give the single frequency (fx, fy) that stands for the square
    frequency cell of side ``width`` centred on it: ``int_cell Phi(f) |f|^2 d^2f / |f_c|^2``.

    Point sampling ``Phi(f_c) width^2`` badly underestimates the cells next to f = 0, where
    Phi ~ f^(-11/3) is steep. Weighting by |f|^2 makes the cell's contribution to everything that
    is quadratic in f at low frequency exact: the structure function at separations small against
    1/f and the tip/tilt over a pupil (cf. the improved subharmonics of Johansson & Gavel 1994).
    """
    u = (np.arange(sub) + 0.5) / sub - 0.5
    sx = fx[..., None, None] + u[None, :] * width
    sy = fy[..., None, None] + u[:, None] * width
    f2 = sx ** 2 + sy ** 2
    return (KOLMOGOROV_PSD * f2 ** (-5.0 / 6.0)).mean(axis=(-2, -1)) * width ** 2 / (fx ** 2 + fy ** 2)


@lru_cache(maxsize=16)
def _screen_amplitudes(n: int, pixel_m: float, subharmonics: int):
    """Amplitudes (rad, r0 = 1 m) of the FFT grid ``[n, n]`` and of each subharmonic level ``[3, 3]``."""
    df = 1.0 / (n * pixel_m)
    k = np.fft.fftfreq(n, d=1.0 / n)                                  # integer frequency indices
    ky, kx = np.meshgrid(k, k, indexing="ij")
    kr = np.hypot(kx, ky)
    kr[0, 0] = 1.0
    power = KOLMOGOROV_PSD * (kr * df) ** (-11.0 / 3.0) * df ** 2
    near = (np.abs(kx) <= _NEAR_CELLS) & (np.abs(ky) <= _NEAR_CELLS)
    near[0, 0] = False
    power[near] = _cell_power(kx[near] * df, ky[near] * df, df)
    power[0, 0] = 0.0                                                 # piston
    levels = []
    k3 = np.array([-1.0, 0.0, 1.0])
    for p in range(1, subharmonics + 1):
        dfp = df / 3 ** p
        sy, sx = np.meshgrid(k3 * dfp, k3 * dfp, indexing="ij")
        sx[1, 1] = sy[1, 1] = dfp                                     # placeholder, zeroed below
        lp = _cell_power(sx, sy, dfp)
        lp[1, 1] = 0.0                                                # the centre is the next level
        levels.append(np.sqrt(lp))
    amp = np.sqrt(power)
    amp.setflags(write=False)
    return amp, tuple(levels)


def phase_screen(n: int, pixel_m: float, r0_m: float, rng: np.random.Generator | None = None,
                 subharmonics: int = 3) -> np.ndarray:
    """A Kolmogorov phase screen ``[n, n]`` in radians, by the FFT method with subharmonics.

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

    The phase is ``Re sum_k c_k a_k exp(2 pi i f_k . x)`` over the FFT frequencies f_k = k df,
    df = 1/(n pixel_m), and the subharmonic ones, with c_k complex normal (E|c|^2 = 2) and
    a_k^2 = Phi(f_k) df^2, Phi(f) = 0.023 r0^(-5/3) f^(-11/3) the Kolmogorov phase spectrum
    (f in cycles per metre). Cells next to f = 0 (|k| <= 3 and all subharmonic cells) get the
    |f|^2-weighted power of the whole cell instead of the point value (see :func:`_cell_power`);
    piston (f = 0) is zero and the subharmonic part has zero mean over the screen.

    Accuracy: the structure function <(phi(x + r) - phi(x))^2> approaches 6.88 (r/r0)^(5/3) but
    falls short of it: by ~10-14 % at 1 pixel (no power above the Nyquist frequency) and at
    r ~ n pixel_m / 16 (Kolmogorov's D(r) takes a part of its value from scales far larger than r,
    even larger than the 3^subharmonics times larger screen), growing to ~25 % at n pixel_m / 4.
    Tip/tilt over a pupil much smaller than the screen is within ~10 % of Kolmogorov's (infinite
    outer scale). Axes: ``[row (y), column (x)]``.
    """
    if not (n >= 2 and pixel_m > 0 and r0_m > 0):
        raise SvrtError(f"phase_screen needs n >= 2, pixel_m > 0 and r0_m > 0; got n={n}, pixel_m={pixel_m}, r0_m={r0_m}.")
    if subharmonics < 0:
        raise SvrtError(f"phase_screen needs subharmonics >= 0; got {subharmonics}.")
    rng = rng if rng is not None else np.random.default_rng()
    amp, levels = _screen_amplitudes(int(n), float(pixel_m), int(subharmonics))
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


class Atmosphere:
    """Thin turbulent layers above the telescope.

    ``heights_m`` (m above the telescope) and ``fractions`` (of the integrated C_n^2, summing to 1)
    of each layer and the total Fried radius ``r0_cm`` (cm at 5000 A). Layer i alone has
    ``r0_i = r0 * w_i^(-3/5)``. The isoplanatic angle is ``theta0 = 0.314 r0 / h_eff`` with
    ``h_eff = (sum_i w_i h_i^(5/3))^(3/5)`` (infinite for a pure ground layer).

    Example
    -------
    >>> atm = Atmosphere.from_theta0(r0_cm=10.0, theta0_arcsec=2.0)
    >>> [round(h) for h in atm.heights_m]       # ground layer, then h and 3 h
    [0, 2923, 8770]
    >>> round(atm.theta0_arcsec(), 3)          # at 5000 A
    2.0
    """

    def __init__(self, r0_cm: float, heights_m, fractions):
        if not r0_cm > 0:
            raise SvrtError(f"r0 must be positive (cm at 5000 A); got {r0_cm}.")
        h = np.asarray(heights_m, dtype=float).reshape(-1)
        w = np.asarray(fractions, dtype=float).reshape(-1)
        if h.size == 0 or h.shape != w.shape:
            raise SvrtError(f"an atmosphere needs as many layer heights as fractions; got {h.size} and {w.size}.")
        if np.any(h < 0) or np.any(w <= 0) or not np.all(np.isfinite(h)):
            raise SvrtError("layer heights must be finite and >= 0 m and layer fractions > 0.")
        self.r0_cm = float(r0_cm)
        self.heights_m = tuple(float(v) for v in h)
        self.fractions = tuple(float(v) for v in w / w.sum())

    @classmethod
    def from_theta0(cls, r0_cm: float, theta0_arcsec: float | None = DEFAULT_THETA0_ARCSEC,
                    ground_fraction: float = DEFAULT_GROUND_FRACTION,
                    high_fractions=DEFAULT_HIGH_FRACTIONS,
                    high_relative_heights=DEFAULT_HIGH_RELATIVE_HEIGHTS) -> "Atmosphere":
        """The default profile: a ground layer with ``ground_fraction`` of the C_n^2 at h = 0 and high
        layers with ``high_fractions`` at heights ``h * high_relative_heights``, h chosen so that the
        profile's isoplanatic angle is ``theta0_arcsec`` (arcsec at 5000 A, like ``r0_cm``).
        ``theta0_arcsec`` None or infinite: all the turbulence in the ground layer (isoplanatic)."""
        if not r0_cm > 0:
            raise SvrtError(f"r0 must be positive (cm at 5000 A); got {r0_cm}.")
        if theta0_arcsec is None or np.isinf(theta0_arcsec):
            return cls(r0_cm, [0.0], [1.0])
        if not theta0_arcsec > 0:
            raise SvrtError(f"the isoplanatic angle theta0 must be positive (arcsec at 5000 A); got {theta0_arcsec}.")
        wh = np.asarray(high_fractions, dtype=float)
        rel = np.asarray(high_relative_heights, dtype=float)
        if not (0 <= ground_fraction < 1) or wh.shape != rel.shape or wh.size == 0 or np.any(rel <= 0):
            raise SvrtError("a layered atmosphere needs 0 <= ground_fraction < 1 and one positive relative height per high layer.")
        wh = wh / wh.sum() * (1.0 - ground_fraction)
        h_eff = 0.314 * (r0_cm / 100.0) / (theta0_arcsec / ARCSEC_PER_RADIAN)
        h = h_eff / float(np.sum(wh * rel ** (5.0 / 3.0))) ** 0.6
        heights = [0.0] + list(h * rel)
        fractions = [ground_fraction] + list(wh)
        if ground_fraction == 0:
            heights, fractions = heights[1:], fractions[1:]
        return cls(r0_cm, heights, fractions)

    @property
    def effective_height_m(self) -> float:
        """h_eff = (sum w_i h_i^(5/3))^(3/5) in metres."""
        return float(np.sum(np.asarray(self.fractions) * np.asarray(self.heights_m) ** (5.0 / 3.0)) ** 0.6)

    def theta0_arcsec(self, wavelength_angstrom: float = R0_REFERENCE_WAVELENGTH) -> float:
        """Isoplanatic angle 0.314 r0 / h_eff (arcsec) at ``wavelength_angstrom`` (inf without high layers)."""
        h = self.effective_height_m
        if h == 0:
            return float("inf")
        r0 = r0_at_wavelength(self.r0_cm, wavelength_angstrom) / 100.0
        return 0.314 * r0 / h * ARCSEC_PER_RADIAN

    def layer_r0_cm(self) -> tuple:
        """Fried radius of each layer alone (cm at 5000 A): r0 w_i^(-3/5)."""
        return tuple(self.r0_cm * w ** (-0.6) for w in self.fractions)

    def __repr__(self) -> str:
        layers = ", ".join(f"{w:.2f}@{h:.0f}m" for h, w in zip(self.heights_m, self.fractions))
        return f"Atmosphere(r0={self.r0_cm:g} cm at 5000 A, layers=[{layers}], theta0={self.theta0_arcsec():.3g}\")"


def node_field_angles(grid_shape, image_shape, pixel_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Field angles (arcsec, relative to the image centre) of the coarse-grid nodes: ``(ay [Yg], ax [Xg])``.

    Node (i, j) stands for the P x P pixel block centred on pixel ((i + 0.5) Y / Yg - 0.5,
    (j + 0.5) X / Xg - 0.5), the points where bilinear upsampling with ``align_corners=False``
    reproduces the node's value; the image centre is pixel ((Y - 1) / 2, (X - 1) / 2).
    """
    (yg, xg), (y, x) = tuple(grid_shape), tuple(image_shape)
    ay = ((np.arange(yg) + 0.5) * y / yg - y / 2) * pixel_arcsec
    ax = ((np.arange(xg) + 0.5) * x / xg - x / 2) * pixel_arcsec
    return ay, ax


@lru_cache(maxsize=8)
def _pupil_projector(inst: Instrument, n_modes: int, pupil_px: int):
    """Pupil sample points and the least-squares projector onto piston + KL 1..M.

    Returns ``(x_m [N], y_m [N], projector [M, N])``: coordinates (m, pupil centre at 0) of the N
    grid points inside the pupil (``pupil_px`` points across D) and the matrix that maps phase
    samples to KL coefficients (weighted by the pupil amplitude, piston fitted and dropped).
    """
    from svrt.optics.pupil import make_pupil, pupil_coordinates

    amp = make_pupil(pupil_px, pupil_px, inst.obscuration_cm / inst.diameter_cm, inst.spider_count,
                     inst.spider_width_cm / inst.diameter_cm)
    x, y = pupil_coordinates(pupil_px, pupil_px)
    keep = amp > 0
    x, y, w = x[keep], y[keep], amp[keep]
    modes = kl_basis(n_modes).evaluate(np.hypot(x, y), np.arctan2(y, x))       # [M, N]
    design = np.concatenate([np.ones((1, x.size)), modes]).T                    # [N, M + 1]
    # weighted least squares by the normal equations: the (M + 1) x (M + 1) Gram matrix of nearly
    # orthogonal modes is well conditioned, and this avoids an SVD of the [N, M + 1] matrix
    gram = (design * w[:, None]).T @ design
    projector = np.linalg.solve(gram, design.T * w[None, :])                    # [M + 1, N]
    radius = inst.diameter_m / 2
    out = (x * radius, y * radius, np.ascontiguousarray(projector[1:]))
    for a in out:
        a.setflags(write=False)
    return out


def _screen_size(reach_m: float, diameter_m: float, pupil_px: int) -> int:
    """Side (a power of 2) of the layer screens, whose pixel is ``diameter_m / pupil_px``: the pupil
    plus twice the largest footprint shift ``reach_m``, 4 pixels of margin, and at least 4 pupil
    diameters (the lowest FFT frequencies and the subharmonics then give the tip/tilt of a screen
    4 x 3^subharmonics pupils wide)."""
    need = 2 * (reach_m + diameter_m / 2) / (diameter_m / pupil_px) + 4
    return int(2 ** np.ceil(np.log2(max(need, 4 * pupil_px))))


def anisoplanatic_modes(instrument: str | Instrument, r0_cm: float, theta0_arcsec: float | None,
                        n_frames: int, grid_shape, image_shape, n_modes: int = 44,
                        rng: np.random.Generator | None = None, atmosphere: Atmosphere | None = None,
                        pupil_px: int = 64, subharmonics: int = 6) -> np.ndarray:
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

    For each frame and layer a :func:`phase_screen` (at 5000 A with the layer's r0) is drawn. For
    each node the pupil footprint in layer i is shifted by h_i x (field angle) and the screen is
    sampled there by bilinear interpolation; the layers' phases are summed, scaled to the instrument
    wavelength (phase ~ 1/lambda, equivalent to r0 ~ lambda^(6/5)) and projected onto the KL modes by
    weighted least squares over the pupil (a precomputed projector; piston is fitted and dropped).
    In the ground layer all footprints coincide, in high layers they move apart, so the coefficients
    vary smoothly across the field: two field points an angle a apart differ by a phase of variance
    (a / theta0)^(5/3) rad^2 at 5000 A; a mode of radial order n decorrelates once the footprints
    in the high layers are shifted by ~D / n (0.314 r0 a / theta0 for a single layer), tip/tilt
    only over much larger angles, and the ground layer's share (60 % by default) stays common.
    Their ensemble variance is ``kl_basis(M).variances * (D / r0(lambda))^(5/3)`` (the projection
    also picks up a little aliased power from modes beyond M; tip/tilt see ``subharmonics``).
    Cost: L x layers FFT screens plus L x Yg Xg x (pupil points) bilinear samples (~3 s for
    12 frames of a 16 x 16 grid).
    """
    from scipy.ndimage import map_coordinates

    inst = get_instrument(instrument)
    rng = rng if rng is not None else np.random.default_rng()
    atm = atmosphere if atmosphere is not None else Atmosphere.from_theta0(r0_cm, theta0_arcsec)
    yg, xg = (int(v) for v in grid_shape)
    if not (n_frames >= 1 and yg >= 1 and xg >= 1 and pupil_px >= 8):
        raise SvrtError(f"anisoplanatic_modes needs n_frames >= 1, a grid of at least 1x1 and pupil_px >= 8; "
                        f"got {n_frames}, {yg}x{xg}, {pupil_px}.")
    px_m, py_m, projector = _pupil_projector(inst, n_modes, pupil_px)
    ay, ax = node_field_angles((yg, xg), image_shape, inst.pixel_arcsec)
    ayy, axx = np.meshgrid(ay / ARCSEC_PER_RADIAN, ax / ARCSEC_PER_RADIAN, indexing="ij")   # [Yg, Xg] rad
    dx = inst.diameter_m / pupil_px
    reach = max(h for h in atm.heights_m) * float(np.max(np.hypot(ayy, axx)))
    n = _screen_size(reach, inst.diameter_m, pupil_px)
    c = (n - 1) / 2
    scale = R0_REFERENCE_WAVELENGTH / inst.wavelength_angstrom
    out = np.empty((n_frames, n_modes, yg * xg), dtype=np.float32)
    layer_r0_m = [r / 100.0 for r in atm.layer_r0_cm()]
    node_y, node_x = ayy.reshape(-1), axx.reshape(-1)
    chunk = max(1, 2 ** 20 // px_m.size)          # nodes per block: ~1 M samples, bounded memory
    for frame in range(n_frames):
        screens = [phase_screen(n, dx, r0_m, rng, subharmonics) for r0_m in layer_r0_m]
        for lo in range(0, node_y.size, chunk):
            sl = slice(lo, lo + chunk)
            phase = np.zeros((node_y[sl].size, px_m.size))
            for h, screen in zip(atm.heights_m, screens):
                # sample positions (screen pixels) of every (node, pupil point): [nodes, N]
                rr = (py_m[None, :] + h * node_y[sl, None]) / dx + c
                cc = (px_m[None, :] + h * node_x[sl, None]) / dx + c
                phase += map_coordinates(screen, [rr.ravel(), cc.ravel()], order=1, mode="nearest").reshape(rr.shape)
            out[frame, :, sl] = (projector @ (phase * scale).T).astype(np.float32)
    return out.reshape(n_frames, n_modes, yg, xg)
