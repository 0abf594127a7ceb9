"""Solar-like scenes (true objects) at a given pixel scale: granulation, a sunspot, point sources.

Every scene is a ``numpy.float32`` array ``[Y, X]`` of intensities normalised so that the quiet Sun
averages 1 (point sources: 0 background), deterministic for an integer ``seed``. The construction is
done in physical units (arcsec): the random structure depends only on the seed and on the field of
view ``Y * pixel_arcsec`` by ``X * pixel_arcsec``, so the same seed and field at another pixel scale
gives the same scene, resampled. Granulation is periodic across the field edges (convenient for FFT
convolution); the sunspot sits at the field centre.

Granulation is a perturbed power (weighted Voronoi) diagram: polygonal cells of mean spacing
``cell_arcsec`` with dome-shaped, textured, size-dependent bright interiors, narrow dark intergranular
lanes, a few exploding granules with dark centres and magnetic bright points at some lane junctions.

Example
-------
>>> from svrt.scenes import make_scene, make_objects
>>> obj = make_scene("granulation", 384, 0.059, seed=3)        # [384, 384], mean 1, rms 12 %
>>> objs = make_objects("sunspot", 2, (256, 320), 0.059, seed=3)  # [2, 256, 320]
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from svrt.errors import SvrtError

SCENE_KINDS = ("granulation", "sunspot", "points")

# Random streams: numpy.random.default_rng([seed, tag]) with one fixed tag per ingredient, so that
# changing one ingredient never shifts the random numbers of another.
_T_SEEDS, _T_WEIGHTS, _T_WARP_Y, _T_WARP_X, _T_TEXTURE, _T_LANE, _T_NETWORK = 1, 2, 3, 4, 5, 6, 7
_T_SPOT_SHAPE, _T_FILAMENTS, _T_UMBRA, _T_DOTS, _T_POINTS = 11, 12, 13, 14, 21
_T_VARIANT, _T_VARIANT_NOISE = 100, 1000
_DEFAULT_CONTRAST, _DEFAULT_CELL = 0.12, 1.3
_CHUNK = 1 << 16      # pixels per chunk of the cell search (memory ~ 60 MB per chunk)


# ----------------------------------------------------------------------------------------------
# validation and small helpers
# ----------------------------------------------------------------------------------------------

def _shape2(shape) -> tuple[int, int]:
    """``shape`` as ``(Y, X)`` positive ints (an int means a square)."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        dims = (int(shape), int(shape))
    else:
        try:
            dims = tuple(shape)
        except TypeError:
            dims = ()
        if len(dims) != 2 or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                                     for d in dims):
            raise SvrtError(f"scene shape {shape!r} is not an int or a pair (Y, X) of ints.")
        dims = (int(dims[0]), int(dims[1]))
    if dims[0] <= 0 or dims[1] <= 0:
        raise SvrtError(f"scene shape {dims} must be positive in both dimensions.")
    return dims


def _pixel(pixel_arcsec) -> float:
    try:
        p = float(pixel_arcsec)
    except (TypeError, ValueError):
        p = float("nan")
    if not (math.isfinite(p) and p > 0):
        raise SvrtError(f"pixel scale {pixel_arcsec!r} arcsec must be a positive finite number.")
    return p


def _seed(seed) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise SvrtError(f"seed {seed!r} must be a non-negative integer.")
    return int(seed)


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise SvrtError(f"{name} {value!r} must be a positive finite number.")
    return v


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _hash01(a: np.ndarray, b: np.ndarray, c: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) numbers from integer triples (splitmix64 finaliser)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         ^ b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
         ^ c.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
         ^ np.uint64(((salt & 0xFFFFFFFF) * 0x27D4EB2F165667C5) & 0xFFFFFFFFFFFFFFFF))
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


def _fourier_field(rng: np.random.Generator, shape: tuple[int, int], p: float, kmax: float,
                   envelope) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field on the periodic field of view, sampled at pixel centres.

    The random coefficients are drawn for the harmonics ``(m / Ly, n / Lx)`` (cycles/arcsec) with
    ``|k| <= kmax`` in an order that depends on the field size in arcsec only, so the same field is
    obtained at any pixel scale (modes beyond the pixel grid's Nyquist frequency are dropped).
    ``envelope(k)`` is the amplitude spectrum as a function of ``|k|`` in cycles/arcsec.
    """
    ny, nx = shape
    ly, lx = ny * p, nx * p
    mm, nn = int(math.floor(kmax * ly)), int(math.floor(kmax * lx))
    m = np.arange(-mm, mm + 1)
    n = np.arange(-nn, nn + 1)
    ky = (m / ly)[:, None]
    kx = (n / lx)[None, :]
    k = np.hypot(ky, kx)
    z = rng.standard_normal((m.size, n.size)) + 1j * rng.standard_normal((m.size, n.size))
    amp = np.where((k <= kmax) & (k > 0), envelope(k), 0.0)
    # shift the sample points to the pixel centres (i + 1/2) p
    coef = z * amp * np.exp(1j * np.pi * p * (ky + kx))
    rows = np.abs(m) < ny / 2.0
    cols = np.abs(n) < nx / 2.0
    spec = np.zeros((ny, nx), dtype=np.complex128)
    spec[np.ix_(m[rows] % ny, n[cols] % nx)] = coef[np.ix_(rows, cols)]
    field = np.fft.ifft2(spec).real
    std = field.std()
    return field / std if std > 0 else field


def _min_image(d: np.ndarray, length: float) -> np.ndarray:
    return (d + 0.5 * length) % length - 0.5 * length


# ----------------------------------------------------------------------------------------------
# granulation
# ----------------------------------------------------------------------------------------------

def _power_cells(tree, centres, weight, q, ly, lx, s):
    """Per query point ``q [N, 2]`` (arcsec, periodic plane): owner cell of the power diagram, the
    cells across its two nearest edges, distance to the owner centre, rounded distance to the cell
    edge and distance to the cell vertex shared with those two neighbours (inf if not a real vertex).
    """
    kq = min(7, centres.shape[0])
    _, idx = tree.query(q, k=kq)
    idx = idx.reshape(-1, kq)
    dy = _min_image(centres[idx, 0] - q[:, None, 0], ly)
    dx = _min_image(centres[idx, 1] - q[:, None, 1], lx)
    pd = dy * dy + dx * dx - weight[idx]
    own = np.argmin(pd, axis=1)
    rows = np.arange(q.shape[0])
    own_id = idx[rows, own]
    pd_own = pd[rows, own]
    d1 = np.sqrt(dy[rows, own] ** 2 + dx[rows, own] ** 2)
    # distance to the edge shared with each neighbour j: (pd_j - pd_i) / (2 |c_i - c_j|)
    sep = np.hypot(dy - dy[rows, own][:, None], dx - dx[rows, own][:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = (pd - pd_own[:, None]) / (2.0 * sep)
    edge[rows, own] = np.inf
    edge[~np.isfinite(edge)] = np.inf
    order = np.argsort(edge, axis=1)[:, :2]
    oa, ob = order[:, 0], order[:, 1]
    ea = np.maximum(edge[rows, oa], 0.0)
    ja, jb = idx[rows, oa], idx[rows, ob]
    # the power-diagram vertex shared by cells own, ja, jb (relative to the pixel): it solves
    # 2 (c_j - c_i) . v = pd_j - pd_i for j = ja, jb; it is a real vertex when no neighbour is nearer
    a11 = 2.0 * (dy[rows, oa] - dy[rows, own])
    a12 = 2.0 * (dx[rows, oa] - dx[rows, own])
    a21 = 2.0 * (dy[rows, ob] - dy[rows, own])
    a22 = 2.0 * (dx[rows, ob] - dx[rows, own])
    b1, b2 = pd[rows, oa] - pd_own, pd[rows, ob] - pd_own
    det = a11 * a22 - a12 * a21
    with np.errstate(divide="ignore", invalid="ignore"):
        vy = (b1 * a22 - b2 * a12) / det
        vx = (a11 * b2 - a21 * b1) / det
    vy = np.nan_to_num(vy, nan=1e3, posinf=1e3, neginf=-1e3)
    vx = np.nan_to_num(vx, nan=1e3, posinf=1e3, neginf=-1e3)
    pdv = (dy - vy[:, None]) ** 2 + (dx - vx[:, None]) ** 2 - weight[idx]
    real_vertex = np.min(pdv, axis=1) >= pdv[rows, own] - 1e-3 * s * s
    dvert = np.where(real_vertex, np.hypot(vy, vx), np.inf)
    # smooth minimum over all edges: rounded granule corners, wider dark lane junctions
    ksoft = 0.045 * s
    esoft = np.maximum(ea - ksoft * np.log(np.sum(np.exp(-(np.minimum(edge, ea[:, None] + 50 * ksoft)
                                                          - ea[:, None]) / ksoft), axis=1)), 0.0)
    return own_id, ja, jb, d1, esoft, dvert


def _granulation_parts(shape: tuple[int, int], p: float, seed: int, cell_arcsec: float) -> dict:
    """The raw ingredients of the granulation (float64 ``[Y, X]`` maps, arbitrary units)."""
    ny, nx = shape
    ly, lx = ny * p, nx * p
    s = cell_arcsec

    # cell centres: a fully jittered grid of spacing ~s on the periodic field, power weights for sizes
    gy, gx = max(2, round(ly / s)), max(2, round(lx / s))
    sy, sx = ly / gy, lx / gx
    r = _rng(seed, _T_SEEDS)
    jit = r.uniform(-0.5, 0.5, size=(gy, gx, 2)) * 0.9
    cy = ((np.arange(gy)[:, None] + 0.5 + jit[..., 0]) * sy) % ly
    cx = ((np.arange(gx)[None, :] + 0.5 + jit[..., 1]) * sx) % lx
    centres = np.stack([cy.ravel(), cx.ravel()], axis=1)
    ncell = centres.shape[0]
    size = _rng(seed, _T_WEIGHTS).standard_normal(ncell)                # granule size parameter
    wr = _rng(seed, _T_WEIGHTS + 50)
    weight = 0.12 * s * s * size                                        # power-diagram weights, arcsec^2
    bright = 1.0 + 0.10 * size + 0.07 * wr.standard_normal(ncell)       # larger granules are brighter
    explode = np.clip((size - 1.0) / 0.8, 0.0, 1.0)                     # largest ones get dark centres

    # pixel centres in arcsec, warped by a smooth displacement field: irregular, curved lanes
    yy = (np.arange(ny) + 0.5)[:, None] * p
    xx = (np.arange(nx) + 0.5)[None, :] * p
    kw = 1.0 / s

    def warp_env(k):
        return np.exp(-0.5 * (k / (0.55 * kw)) ** 2)

    # rms displacement 0.06 s, rms strain ~0.3: bends the lanes without folding the plane
    amp = 0.06 * s
    wy = yy + amp * _fourier_field(_rng(seed, _T_WARP_Y), shape, p, 1.8 * kw, warp_env)
    wx = xx + amp * _fourier_field(_rng(seed, _T_WARP_X), shape, p, 1.8 * kw, warp_env)
    q = np.stack([(wy % ly).ravel(), (wx % lx).ravel()], axis=1)

    # nearest centres in the periodic plane (in chunks of pixels to bound the memory)
    tree = cKDTree(centres, boxsize=(ly * (1 + 1e-12), lx * (1 + 1e-12)))
    npix = q.shape[0]
    own_id = np.empty(npix, dtype=np.int64)
    ja, jb = np.empty_like(own_id), np.empty_like(own_id)
    d1, ea_f, dvert = np.empty(npix), np.empty(npix), np.empty(npix)
    for lo in range(0, npix, _CHUNK):
        sl = slice(lo, min(npix, lo + _CHUNK))
        own_id[sl], ja[sl], jb[sl], d1[sl], ea_f[sl], dvert[sl] = _power_cells(
            tree, centres, weight, q[sl], ly, lx, s)

    def img(a):
        return a.reshape(ny, nx)

    # granule interiors: a dome from the centre to the edge, bright ring-ish texture, exploding centres
    u = img(ea_f / (ea_f + d1 + 1e-9))                                  # 1 at the centre, 0 at the edge
    texture = _fourier_field(_rng(seed, _T_TEXTURE), shape, p, 2.6 / s * 3.0,
                             lambda k: np.exp(-0.5 * ((k - 1.9 / s) / (0.9 / s)) ** 2))
    b = img(bright[own_id])
    ex = img(explode[own_id])
    rel = img(d1) / (img(d1 + ea_f) + 1e-9)
    granule = b * (1.0 - 0.32 * (1.0 - u) ** 2) + 0.055 * texture
    granule = granule * (1.0 - 0.38 * ex * np.exp(-(rel / 0.45) ** 2))

    # intergranular lanes: a dark floor reached within ~w of the edge, width and depth vary
    lane_n = _fourier_field(_rng(seed, _T_LANE), shape, p, 3.0 / s, lambda k: np.exp(-(k * s / 1.2) ** 2))
    lane_n = np.tanh(0.6 * lane_n)                                      # bounded: no extreme lanes
    w = 0.10 * s * (1.0 + 0.3 * lane_n)
    lane_level = 0.54 + 0.10 * lane_n
    e = img(ea_f)
    inside = 1.0 - np.exp(-(e / w) ** 2)
    intensity = lane_level + (granule - lane_level) * inside

    # magnetic bright points at some lane junctions (the junction of cells own, ja, jb), clustered in a
    # network pattern
    trip = np.sort(np.stack([own_id, ja, jb]), axis=0)
    h = img(_hash01(trip[0], trip[1], trip[2], seed))
    hamp = img(_hash01(trip[0], trip[1], trip[2], seed + 7919))
    net = _fourier_field(_rng(seed, _T_NETWORK), shape, p, 0.6 / s, lambda k: np.exp(-(k * s * 3.0) ** 2))
    prob = 0.04 + 0.30 * _smoothstep((net - 0.3) / 1.2)
    sigma_bp = 0.05 * s
    bp_shape = np.exp(-img(dvert) ** 2 / (2.0 * sigma_bp ** 2))
    bp = np.where(h < prob, 0.45 + 0.4 * hamp, 0.0) * bp_shape
    intensity = intensity + bp
    return {"intensity": intensity, "bp": bp, "lane": 1.0 - inside, "u": u}


def granulation(shape, pixel_arcsec, seed, contrast=_DEFAULT_CONTRAST, cell_arcsec=_DEFAULT_CELL) -> np.ndarray:
    """Quiet-Sun continuum granulation.

    Parameters
    ----------
    shape : int or (Y, X)
        Size in pixels (an int means a square).
    pixel_arcsec : float
        Pixel scale in arcsec per pixel; the granules are built in arcsec, so their size in pixels
        is ``cell_arcsec / pixel_arcsec``.
    seed : int
        Non-negative integer; the same seed gives the same scene.
    contrast : float
        RMS contrast std/mean of the result (quiet-Sun continuum: 0.10-0.15).
    cell_arcsec : float
        Mean spacing of the granule centres in arcsec; the variance per logarithmic wavenumber,
        k^2 P(k), peaks near 1 / cell_arcsec. Fields smaller than two cells get two cells.

    Returns
    -------
    numpy.ndarray, float32, ``[Y, X]``
        Intensity in units of the mean quiet Sun: mean exactly 1, std/mean equal to ``contrast``.
        Periodic across the field edges.
    """
    shp = _shape2(shape)
    p = _pixel(pixel_arcsec)
    sd = _seed(seed)
    c = _positive(contrast, "granulation contrast")
    s = _positive(cell_arcsec, "granulation cell size (arcsec)")
    return _normalise(_granulation_parts(shp, p, sd, s)["intensity"], c)


def _normalise(raw: np.ndarray, contrast: float) -> np.ndarray:
    z = raw - raw.mean()
    std = z.std()
    out = 1.0 + contrast * (z / std if std > 0 else z)
    return np.maximum(out, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# sunspot
# ----------------------------------------------------------------------------------------------

def _spot_radii(shape, p, umbra_radius_arcsec, penumbra_radius_arcsec) -> tuple[float, float]:
    fov = min(shape) * p
    rp = (min(8.0, 0.3 * fov) if penumbra_radius_arcsec is None
          else _positive(penumbra_radius_arcsec, "penumbra radius (arcsec)"))
    ru = (0.45 * rp if umbra_radius_arcsec is None
          else _positive(umbra_radius_arcsec, "umbra radius (arcsec)"))
    if ru >= rp:
        raise SvrtError(f"umbra radius {ru:g} arcsec must be smaller than the penumbra radius {rp:g} arcsec.")
    return ru, rp


def _sunspot_parts(shape, p, seed, ru, rp) -> dict:
    """Spot intensity map, its weight (1 inside the spot, 0 in the quiet Sun) and the umbra weight."""
    ny, nx = shape
    yy = (np.arange(ny) + 0.5)[:, None] * p - 0.5 * ny * p
    xx = (np.arange(nx) + 0.5)[None, :] * p - 0.5 * nx * p
    r = np.hypot(yy, xx)
    th = np.arctan2(yy, xx)

    # irregular outline: low azimuthal orders
    rs = _rng(seed, _T_SPOT_SHAPE)
    orders = np.arange(2, 7)
    a_u = rs.normal(0.0, 0.045, orders.size) / np.sqrt(orders - 1)
    a_p = rs.normal(0.0, 0.05, orders.size) / np.sqrt(orders - 1)
    ph_u = rs.uniform(0, 2 * np.pi, orders.size)
    ph_p = rs.uniform(0, 2 * np.pi, orders.size)
    mod_u = 1.0 + np.sum(a_u[:, None, None] * np.cos(orders[:, None, None] * th + ph_u[:, None, None]), 0)
    mod_p = 1.0 + np.sum(a_p[:, None, None] * np.cos(orders[:, None, None] * th + ph_p[:, None, None]), 0)

    # penumbral filaments: a random field on a polar grid (theta, rho), fine in theta, long in rho
    n_th, n_rho = 2048, 64
    n_fil = max(24.0, 2 * np.pi * 0.5 * (ru + rp) / 0.22)     # filaments ~0.2 arcsec wide mid-way
    rf = _rng(seed, _T_FILAMENTS)
    spec = np.fft.fft2(rf.standard_normal((n_rho, n_th)))
    f_th = np.fft.fftfreq(n_th, 1.0 / n_th)[None, :]          # azimuthal order
    f_rho = np.fft.fftfreq(n_rho, 1.0 / n_rho)[:, None]       # cycles across the penumbra (x 1/2)
    spec *= np.exp(-0.5 * (f_th / n_fil) ** 2) * np.exp(-0.5 * (f_rho / 3.0) ** 2)
    fil = np.fft.ifft2(spec).real
    fil /= fil.std()
    edge_noise = np.fft.ifft(np.fft.fft(rf.standard_normal(n_th)) *
                             np.exp(-0.5 * (np.fft.fftfreq(n_th, 1.0 / n_th) / 12.0) ** 2)).real
    edge_noise /= edge_noise.std()
    twist_noise = np.fft.ifft(np.fft.fft(rf.standard_normal(n_th)) *
                              np.exp(-0.5 * (np.fft.fftfreq(n_th, 1.0 / n_th) / 6.0) ** 2)).real
    twist_noise /= twist_noise.std()

    t_idx = (th % (2 * np.pi)) / (2 * np.pi) * n_th
    head = ndimage.map_coordinates(fil, [np.zeros_like(t_idx), t_idx], order=1, mode="grid-wrap")
    outer = np.interp(t_idx, np.arange(n_th + 1), np.append(edge_noise, edge_noise[0]))
    ru_t = ru * mod_u * (1.0 - 0.04 * np.maximum(head, 0.0))  # bright filament heads intrude the umbra
    rp_t = rp * mod_p * (1.0 + 0.05 * outer)                  # ragged outer boundary
    rho = (r - ru_t) / (rp_t - ru_t)
    rho_idx = np.clip(rho, 0.0, 1.0) * (n_rho / 2.0 - 1)      # use half the (periodic) rho axis
    # filaments are slightly curved: the azimuth drifts with radius by a few filament widths
    twist = np.interp(t_idx, np.arange(n_th + 1), np.append(twist_noise, twist_noise[0]))
    t_fil = t_idx + (1.2 * n_th / n_fil) * twist * np.clip(rho, 0.0, 1.0) ** 1.5
    f = ndimage.map_coordinates(fil, [rho_idx, t_fil], order=1, mode="grid-wrap")
    f = np.clip(f, -2.5, 2.5)
    grains = np.exp(-(np.clip(rho, 0, None) / 0.12) ** 2) * np.maximum(f, 0.0)   # penumbral grains
    penumbra = 0.73 + 0.11 * f + 0.10 * grains + 0.04 * np.clip(rho, 0.0, 1.0)

    # umbra: dark, slightly structured floor plus a few umbral dots
    umb_field = _fourier_field(_rng(seed, _T_UMBRA), shape, p, 2.0, lambda k: np.exp(-(k / 0.7) ** 2))
    umbra = 0.15 + 0.025 * umb_field + 0.04 * _smoothstep((r / ru_t - 0.55) / 0.45)
    rd = _rng(seed, _T_DOTS)
    n_dots = int(max(4, round(0.6 * np.pi * ru * ru)))
    dr = ru * np.sqrt(rd.uniform(0.0, 0.85, n_dots))
    dth = rd.uniform(0, 2 * np.pi, n_dots)
    dy0, dx0 = dr * np.sin(dth), dr * np.cos(dth)
    damp = rd.uniform(0.08, 0.3, n_dots)
    dsig = rd.uniform(0.06, 0.11, n_dots)
    for y0, x0, a, sg in zip(dy0, dx0, damp, dsig):
        lo_y = max(0, int((y0 + 0.5 * ny * p - 4 * sg) / p))
        hi_y = min(ny, int((y0 + 0.5 * ny * p + 4 * sg) / p) + 2)
        lo_x = max(0, int((x0 + 0.5 * nx * p - 4 * sg) / p))
        hi_x = min(nx, int((x0 + 0.5 * nx * p + 4 * sg) / p) + 2)
        sub = (yy[lo_y:hi_y] - y0) ** 2 + (xx[:, lo_x:hi_x] - x0) ** 2
        umbra[lo_y:hi_y, lo_x:hi_x] += a * np.exp(-sub / (2 * sg * sg))

    w_umbra = 1.0 / (1.0 + np.exp(np.clip((r - ru_t) / 0.06, -50, 50)))
    w_spot = 1.0 / (1.0 + np.exp(np.clip((r - rp_t) / (0.12 + 0.15 * np.maximum(f, 0.0)), -50, 50)))
    spot = w_umbra * umbra + (1.0 - w_umbra) * penumbra
    return {"spot": spot, "w_spot": w_spot, "w_umbra": w_umbra}


def sunspot(shape, pixel_arcsec, seed, umbra_radius_arcsec=None, penumbra_radius_arcsec=None) -> np.ndarray:
    """A sunspot at the field centre surrounded by granulation.

    Parameters
    ----------
    shape : int or (Y, X)
        Size in pixels (an int means a square).
    pixel_arcsec : float
        Pixel scale in arcsec per pixel.
    seed : int
        Non-negative integer; the same seed gives the same scene.
    umbra_radius_arcsec, penumbra_radius_arcsec : float or None
        Mean radii in arcsec (the outlines are irregular). Defaults: penumbra
        ``min(8, 0.3 * min(Y, X) * pixel_arcsec)`` so that the spot fits the field, umbra 0.45 of it.

    Returns
    -------
    numpy.ndarray, float32, ``[Y, X]``
        Intensity in units of the quiet Sun (the surrounding granulation has mean 1 and 12 % rms
        contrast): umbra ~0.15-0.2 with umbral dots up to ~0.45, filamentary penumbra ~0.6-0.9.
    """
    shp = _shape2(shape)
    p = _pixel(pixel_arcsec)
    sd = _seed(seed)
    ru, rp = _spot_radii(shp, p, umbra_radius_arcsec, penumbra_radius_arcsec)
    gran = granulation(shp, p, sd)
    return _compose_spot(gran, _sunspot_parts(shp, p, sd, ru, rp))


def _compose_spot(gran: np.ndarray, parts: dict) -> np.ndarray:
    out = (1.0 - parts["w_spot"]) * gran.astype(np.float64) + parts["w_spot"] * parts["spot"]
    return np.maximum(out, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# point sources
# ----------------------------------------------------------------------------------------------

def _point_parts(shape, seed, n_sources, amplitude_range, margin):
    ny, nx = _shape2(shape)
    sd = _seed(seed)
    if not (isinstance(margin, numbers.Integral) and 0 <= margin and 2 * margin < min(ny, nx)):
        raise SvrtError(f"point-source margin {margin!r} must be a non-negative int below half the scene size.")
    free = (ny - 2 * margin) * (nx - 2 * margin)
    if n_sources is None:
        n_sources = max(1, round(ny * nx / 1024))
    if not (isinstance(n_sources, numbers.Integral) and 0 < n_sources <= free):
        raise SvrtError(f"number of point sources {n_sources!r} must be a positive int of at most {free}.")
    lo, hi = (float(v) for v in amplitude_range)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise SvrtError(f"point-source amplitude range {amplitude_range!r} must satisfy 0 < low <= high.")
    r = _rng(sd, _T_POINTS)
    flat = r.choice(free, size=int(n_sources), replace=False)
    iy = flat // (nx - 2 * margin) + margin
    ix = flat % (nx - 2 * margin) + margin
    amp = r.uniform(lo, hi, int(n_sources))
    return (ny, nx), iy, ix, amp


def point_sources(shape, seed, n_sources=None, amplitude_range=(0.1, 1.0), margin=0) -> np.ndarray:
    """Point-like sources: single bright pixels on a black background.

    Parameters
    ----------
    shape : int or (Y, X)
        Size in pixels (an int means a square).
    seed : int
        Non-negative integer; the same seed gives the same positions and amplitudes.
    n_sources : int or None
        Number of sources (distinct pixels); default one per 1024 pixels (64 on 256 x 256).
    amplitude_range : (low, high)
        Amplitudes are uniform in this range (intensity units; background 0).
    margin : int
        Keep the sources at least this many pixels from the field edges.

    Returns
    -------
    numpy.ndarray, float32, ``[Y, X]``: zero except at the ``n_sources`` source pixels.
    """
    shp, iy, ix, amp = _point_parts(shape, seed, n_sources, amplitude_range, margin)
    out = np.zeros(shp, dtype=np.float32)
    out[iy, ix] = amp
    return out


# ----------------------------------------------------------------------------------------------
# dispatch and multi-object scenes
# ----------------------------------------------------------------------------------------------

def _check_kind(kind) -> str:
    if kind not in SCENE_KINDS:
        raise SvrtError(f"unknown scene kind {kind!r}; known kinds are {', '.join(SCENE_KINDS)}.")
    return kind


def make_scene(kind, shape, pixel_arcsec, seed) -> np.ndarray:
    """One scene of the given kind (``SCENE_KINDS``) with default parameters.

    ``shape`` is an int or ``(Y, X)`` in pixels, ``pixel_arcsec`` the pixel scale in arcsec (checked
    but unused for ``"points"``), ``seed`` a non-negative int. Returns float32 ``[Y, X]``.
    """
    _check_kind(kind)
    shp = _shape2(shape)
    p = _pixel(pixel_arcsec)
    sd = _seed(seed)
    if kind == "granulation":
        return granulation(shp, p, sd)
    if kind == "sunspot":
        return sunspot(shp, p, sd)
    return point_sources(shp, sd)


def _granulation_variant(parts: dict, cont: np.ndarray, p: float, seed: int, k: int) -> np.ndarray:
    """Narrow-band-like image of the same granulation: lower contrast, partly reversed, brightenings."""
    shape = cont.shape
    rv = _rng(seed, _T_VARIANT, k)
    z0 = (cont - cont.mean()) / cont.std()
    smooth = ndimage.gaussian_filter(z0, 0.35 / p, mode="wrap")
    smooth /= smooth.std()
    bpw = ndimage.gaussian_filter(parts["bp"], 0.07 / p, mode="wrap")
    bpw /= max(bpw.std(), 1e-12)
    noise = _fourier_field(_rng(seed, _T_VARIANT_NOISE, k), shape, p, 3.0, lambda q: np.exp(-(q / 1.2) ** 2))
    if k == 1:  # a fixed, clearly different companion: mostly reversed, low contrast, bright points
        a, b, g, c = 0.6, 0.5, 0.3, 0.07
    else:
        a, b, g, c = rv.uniform(0.4, 0.9), rv.uniform(0.0, 0.5), rv.uniform(0.1, 0.6), rv.uniform(0.05, 0.10)
    raw = a * z0 - b * smooth + g * bpw + 0.25 * noise
    return _normalise(raw, c).astype(np.float64)


def make_objects(kind, n_objects, shape, pixel_arcsec, seed) -> np.ndarray:
    """``n_objects`` images of one field seen simultaneously through one instrument.

    Object 0 is ``make_scene(kind, shape, pixel_arcsec, seed)`` (the wide-band continuum). Objects
    1, 2, ... are narrow-band-like companions of the same field, correlated with object 0 but
    different: for granulation lower contrast (5-10 %), partly reversed granulation and enhanced
    bright points; for a sunspot the same with a weaker spot contrast; for points the same
    positions with other amplitudes. Object 1 is a fixed recipe, further objects random variants.

    Returns float32 ``[K, Y, X]`` with ``K = n_objects``.
    """
    _check_kind(kind)
    if not (isinstance(n_objects, numbers.Integral) and not isinstance(n_objects, bool) and n_objects >= 1):
        raise SvrtError(f"number of objects {n_objects!r} must be a positive int.")
    shp = _shape2(shape)
    p = _pixel(pixel_arcsec)
    sd = _seed(seed)
    out = np.empty((int(n_objects),) + shp, dtype=np.float32)
    if n_objects == 1 or kind == "points":
        out[0] = make_scene(kind, shp, p, sd)
    if n_objects == 1:
        return out
    if kind == "points":
        _, iy, ix, amp = _point_parts(shp, sd, None, (0.1, 1.0), 0)
        for k in range(1, n_objects):
            fac = _rng(sd, _T_VARIANT, k).uniform(0.3, 1.5, amp.size)
            obj = np.zeros(shp, dtype=np.float32)
            obj[iy, ix] = amp * fac
            out[k] = obj
        return out
    # the same computation as granulation() / sunspot() with default parameters, done once
    parts = _granulation_parts(shp, p, sd, _DEFAULT_CELL)
    cont32 = _normalise(parts["intensity"], _DEFAULT_CONTRAST)
    cont = cont32.astype(np.float64)
    if kind == "sunspot":
        ru, rp = _spot_radii(shp, p, None, None)
        spot = _sunspot_parts(shp, p, sd, ru, rp)
        out[0] = _compose_spot(cont32, spot)
    else:
        out[0] = cont32
    for k in range(1, n_objects):
        var = _granulation_variant(parts, cont, p, sd, k)
        if kind == "sunspot":
            depth = 0.55 if k == 1 else _rng(sd, _T_VARIANT + 1, k).uniform(0.4, 0.9)
            spot_k = 1.0 - depth * (1.0 - spot["spot"])
            var = (1.0 - spot["w_spot"]) * var + spot["w_spot"] * spot_k
        out[k] = np.maximum(var, 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# figure
# ----------------------------------------------------------------------------------------------

def plot_scenes(path, pixel_arcsec=0.059, size=256, seed=1) -> str:
    """Write a PNG with the three scene kinds side by side (top) and their object 1 (bottom).

    Axes are in arcsec; the grey scale spans the 0.2-99.8 percentiles of each image. Point
    sources are dilated to 3 x 3 pixels for display only. The file is
    written atomically (:func:`svrt.pictures.save_png`). Returns ``path``.
    """
    from svrt.pictures import save_png, subplots

    p = _pixel(pixel_arcsec)
    shp = _shape2(size)
    ext = [0, shp[1] * p, 0, shp[0] * p]
    fig, axes = subplots(2, 3, figsize=(13.5, 9.2), constrained_layout=True)
    names = {"granulation": "granulation", "sunspot": "sunspot", "points": "point sources"}
    for col, kind in enumerate(SCENE_KINDS):
        objs = make_objects(kind, 2, shp, p, seed)
        for row in range(2):
            img = objs[row]
            if kind == "points":
                img = ndimage.maximum_filter(img, size=3)
            ax = axes[row, col]
            lo, hi = (0.0, float(img.max())) if kind == "points" else np.percentile(img, [0.2, 99.8])
            im = ax.imshow(img, origin="lower", cmap="gray", extent=ext, interpolation="nearest",
                           vmin=lo, vmax=hi)
            if kind == "points":
                title = f"{names[kind]} (object {row}, shown 3x3 px)"
            else:
                title = (f"{names[kind]} object {row}: mean {img.mean():.2f}, "
                         f"rms {img.std() / img.mean() * 100:.1f} %")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("x [arcsec]")
            ax.set_ylabel("y [arcsec]")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"svrt.scenes, {shp[0]}x{shp[1]} px at {p:g} arcsec/px, seed {seed} "
                 "(top: object 0, wide band; bottom: object 1, narrow band)")
    return save_png(fig, path, dpi=110)
