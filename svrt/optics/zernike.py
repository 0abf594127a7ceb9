"""Zernike polynomials in Noll's ordering and their Kolmogorov covariance (Noll 1976).

Normalisation: each polynomial has unit RMS over the unit disk, so a coefficient is the RMS phase
(radians) it contributes. j = 1 is piston, 2 and 3 tip and tilt (x and y), 4 defocus.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

# Noll (1976), Table IV: residual phase variance after removing Zernikes 1..J, in units of (D/r0)^(5/3) rad^2.
NOLL_RESIDUALS = (1.0299, 0.582, 0.134, 0.111, 0.0880, 0.0648, 0.0587, 0.0525, 0.0463, 0.0401,
                  0.0377, 0.0352, 0.0328, 0.0304, 0.0279, 0.0267, 0.0255, 0.0243, 0.0232, 0.0220, 0.0208)

# The exact Kolmogorov phase spectrum Phi(f) = C f^(-11/3) r0^(-5/3) (f in cycles per metre) has
# C = (24/5 Gamma(6/5))^(5/6) Gamma(11/6)^2 / (2 pi^(11/3)) = 0.0228956. Noll used the rounded 0.023
# (via 6.88 for the structure-function constant), hence his 1.0299 where the exact piston-removed
# variance is 1.03242 (numerically integrated in tests/test_optics.py); his table is thus ~0.25 % low.
KOLMOGOROV_C = (24 / 5 * math.gamma(6 / 5)) ** (5 / 6) * math.gamma(11 / 6) ** 2 / (2 * math.pi ** (11 / 3))
PISTON_REMOVED_VARIANCE = 1.03242  # (D/r0)^(5/3) rad^2, with KOLMOGOROV_C

# K in Noll's Eq. (25): C pi^(8/3) 2^(-5/3) Gamma(14/3) (= 2.2461); Wang & Markey's 0.0072 is C / 2^(5/3).
_NOLL_K = KOLMOGOROV_C * math.pi ** (8 / 3) * 2 ** (-5 / 3) * math.gamma(14 / 3)


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal order m of Noll index j >= 1 (m > 0: cos, m < 0: sin).

    >>> [noll_to_nm(j) for j in (1, 2, 3, 4, 5, 6)]    # piston, tip, tilt, defocus, the two astigmatisms
    [(0, 0), (1, 1), (1, -1), (2, 0), (2, -2), (2, 2)]
    """
    if j < 1:
        raise ValueError("Noll indices start at 1")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2 - 1           # position within radial order n, 0..n
    m_abs = 2 * ((k + 1) // 2) if n % 2 == 0 else 2 * (k // 2) + 1
    if m_abs == 0:
        return n, 0
    return n, (m_abs if j % 2 == 0 else -m_abs)   # Noll: even j -> cos, odd j -> sin


def radial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """The radial polynomial R_n^|m|(rho)."""
    m = abs(m)
    out = np.zeros_like(rho, dtype=np.float64)
    for s in range((n - m) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s) / (
            math.factorial(s) * math.factorial((n + m) // 2 - s) * math.factorial((n - m) // 2 - s))
        out += c * rho ** (n - 2 * s)
    return out


def zernike(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Z_j(rho, theta) with unit RMS over the unit disk (zero outside is the caller's business)."""
    n, m = noll_to_nm(j)
    r = radial(n, m, rho)
    if m == 0:
        return math.sqrt(n + 1) * r
    ang = np.cos(m * theta) if m > 0 else np.sin(-m * theta)
    return math.sqrt(2 * (n + 1)) * r * ang


def noll_covariance(j_max: int) -> np.ndarray:
    """Kolmogorov covariance <a_i a_j> of the Zernike coefficients 2..j_max, in (D/r0)^(5/3) rad^2.

    Noll (1976) Eq. (25) with Wang & Markey's closed form; non-zero only for equal |m| and, for
    m != 0, equal parity (both cos or both sin). Returns ``[j_max - 1, j_max - 1]`` (index 0 is j = 2).
    """
    js = range(2, j_max + 1)
    nm = [noll_to_nm(j) for j in js]
    cov = np.zeros((len(nm), len(nm)))
    for a, (n1, m1) in enumerate(nm):
        for b, (n2, m2) in enumerate(nm):
            if abs(m1) != abs(m2) or (m1 != 0 and np.sign(m1) != np.sign(m2)):
                continue
            m = abs(m1)
            sign = (-1) ** ((n1 + n2 - 2 * m) // 2)
            log_val = (gammaln(14 / 3) + gammaln((n1 + n2 - 5 / 3) / 2)
                       - gammaln((n1 - n2 + 17 / 3) / 2) - gammaln((n2 - n1 + 17 / 3) / 2)
                       - gammaln((n1 + n2 + 23 / 3) / 2))
            cov[a, b] = _NOLL_K * sign * math.sqrt((n1 + 1) * (n2 + 1)) * math.exp(log_val - gammaln(14 / 3))
    return cov

