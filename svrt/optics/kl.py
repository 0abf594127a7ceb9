"""Karhunen-Loeve modes of Kolmogorov turbulence as rotations of Zernike polynomials (Roddier 1990).

The KL modes diagonalise the Kolmogorov covariance of the Zernike coefficients
(:func:`svrt.optics.zernike.noll_covariance`). The covariance only couples Zernikes of equal |m| and
equal parity (cos with cos, sin with sin), so it is diagonalised block by block: each KL mode is a pure
cos or sin mode of one azimuthal order, and degenerate cos/sin pairs are not mixed.
Modes are sorted by decreasing variance; KL 1 and 2 are tip and tilt (with a little coma).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from svrt.errors import SvrtError
from svrt.mode_grid import N_MODES
from svrt.optics.pupil import make_pupil, pupil_coordinates
from svrt.optics.zernike import noll_covariance, noll_to_nm, zernike

DEFAULT_ZERNIKE_ORDER = 16  # KL built from Zernikes 2..153 (radial orders 1..16)


@dataclass(frozen=True)
class KLBasis:
    """``coefficients [n_modes, J]`` express KL_l = sum_j coefficients[l, j] Z_{j+2};
    ``variances [n_modes]`` are the KL variances in (D/r0)^(5/3) rad^2."""

    coefficients: np.ndarray
    variances: np.ndarray

    @property
    def n_modes(self) -> int:
        return len(self.variances)

    def evaluate(self, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """KL modes on points of the unit disk: returns ``[n_modes, *rho.shape]``."""
        used = np.flatnonzero(np.any(np.abs(self.coefficients) > 1e-12, axis=0))
        z = np.stack([zernike(int(j) + 2, rho, theta) for j in used])
        return np.tensordot(self.coefficients[:, used], z, axes=1)


@lru_cache(maxsize=8)
def kl_basis(n_modes: int = N_MODES, zernike_order: int = DEFAULT_ZERNIKE_ORDER) -> KLBasis:
    """The first ``n_modes`` KL modes built from the Zernikes of radial order 1..``zernike_order``."""
    j_max = (zernike_order + 1) * (zernike_order + 2) // 2
    if n_modes > j_max - 1:
        raise ValueError(f"{n_modes} KL modes need more Zernikes than order {zernike_order} gives")
    cov = noll_covariance(j_max)
    classes: dict[tuple[int, int], list[int]] = {}
    for idx, j in enumerate(range(2, j_max + 1)):
        n, m = noll_to_nm(j)
        classes.setdefault((abs(m), int(np.sign(m))), []).append(idx)
    modes = []  # (variance, first Noll index of the class, rank in class, coefficient vector)
    for members in classes.values():
        block = cov[np.ix_(members, members)]
        w, v = np.linalg.eigh(block)
        for rank, k in enumerate(np.argsort(w)[::-1]):
            vec = np.zeros(j_max - 1)
            vec[members] = v[:, k] * np.sign(v[np.argmax(np.abs(v[:, k])), k])  # dominant Zernike positive
            modes.append((w[k], members[0], rank, vec))
    # sort by variance; exact ties (cos/sin pairs) keep Noll order; round so float noise cannot reorder pairs
    modes.sort(key=lambda t: (-round(t[0], 12), t[1]))
    chosen = modes[:n_modes]
    return KLBasis(coefficients=np.stack([c[3] for c in chosen]), variances=np.array([c[0] for c in chosen]))


def defocus_mode_index(n_modes: int = N_MODES) -> int:
    """0-based index, in a coefficient vector ``[M]`` (KL 1..M), of the KL mode dominated by Zernike 4
    (n = 2, m = 0: defocus). Found from the KL rotation matrix rather than assumed.

    >>> defocus_mode_index(44)     # KL 3, right after tip and tilt
    2
    """
    c = np.abs(kl_basis(n_modes).coefficients)          # [M, J], column j-2 is Noll j
    dominant = c.argmax(axis=1) + 2
    hits = np.flatnonzero(dominant == 4)
    if hits.size == 0:
        raise SvrtError(f"no KL mode among the first {n_modes} is dominated by Zernike 4 (defocus).")
    return int(hits[0])


def kl_residual_variances(n_modes: int = N_MODES) -> np.ndarray:
    """Residual phase variance after correcting piston and the first J KL modes, J = 0..n_modes,
    in (D/r0)^(5/3) rad^2 (compare Noll's Delta_{J+1} for Zernikes)."""
    from svrt.optics.zernike import PISTON_REMOVED_VARIANCE

    return PISTON_REMOVED_VARIANCE - np.concatenate([[0.0], np.cumsum(kl_basis(n_modes).variances)])


@lru_cache(maxsize=8)
def kl_pupil_projector(inst, n_modes: int, pupil_px: int):
    """Pupil sample points and the least-squares projector onto piston + KL 1..M of ``inst``'s pupil (an
    :class:`~svrt.instruments.Instrument`): what the phase screens' wavefronts and the AO's wavefront sensor
    are projected with.

    Returns ``(x_m [N], y_m [N], projector [M, N])``: coordinates (m, pupil centre at 0) of the N
    grid points inside the pupil (``pupil_px`` points across D) and the matrix that maps phase
    samples to KL coefficients (weighted by the pupil amplitude, piston fitted and dropped).
    """
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
