"""Figures of merit of a restoration: contrast, NMSE after filtering to the diffraction limit, and the
azimuthally averaged power spectrum (paper Fig. 10).

All functions take numpy arrays or torch tensors ``[..., Y, X]`` and return numpy values.

* :func:`contrast`: RMS contrast std / mean (the number quoted in the paper's panels).
* :func:`diffraction_limited`: the image through the erf filter of Eq. 16 with ``width = 2`` (half
  power at the diffraction cutoff D/lambda), the images mirror-padded so that the periodic FFT does not
  ring at the borders. Compare a restoration with the truth only after both went through it: what lies
  beyond the cutoff is not in any frame.
Two normalised mean squared errors, named by what they divide by (they differ by orders of magnitude on
the same images: the README's 2e-4 for the emulator is an ``nmse_power``, 0.24 for a restoration an
``nmse_variance``):

* :func:`nmse_variance`: ``sum (x - t)^2 / sum (t - <t>)^2``, normalised by the variance of the reference
  t (1 is "as bad as a flat image at the right mean"). The score of a restoration (DESIGN.md): a
  solar image's mean would swamp its contrast of a few per cent.
* :func:`nmse_power`: ``sum (x - t)^2 / sum t^2``, normalised by the reference's power: the paper's
  Eq. 12, the emulator's figure against the exact convolution (training, ``svrt validate``).
* :func:`power_spectrum`: azimuthally averaged power of the mean-subtracted, Hann-apodised image in
  bins of ``1 / min(Y, X)`` cycles per pixel, up to the Nyquist frequency 0.5.
* :func:`spectral_distance`: RMS of ``log10(P_x / P_t)`` over frequencies from the first bin to the
  cutoff: how far a power spectrum is from the truth's (0 = identical; 0.3 = a factor 2).
* :func:`compare`: all of them for a set of estimates against a truth.
* :func:`score_restoration`: **the one score** of a restoration against the truth (DESIGN.md, "Scoring a
  restoration"): registered, mean-scaled, low-passed at 0.9 of the cutoff, border dropped; NMSE,
  RMS contrasts, band power ratios and the shift. Every benchmark that compares methods uses it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from svrt.windows import hann

__all__ = ["contrast", "diffraction_limited", "nmse_variance", "nmse_power", "power_spectrum", "spectral_distance",
           "compare", "format_comparison", "score_restoration", "SCORE_BANDS", "SCORE_LOWPASS", "SCORE_BORDER"]

#: bands of the azimuthal power ratio, in units of the diffraction cutoff D/lambda
SCORE_BANDS = ((0.05, 0.3), (0.3, 0.6), (0.6, 0.9))
#: the score's low-pass: half power at this fraction of the cutoff
SCORE_LOWPASS = 0.9
#: fraction of the image side dropped at each border before the score
SCORE_BORDER = 1 / 8
#: old score keys -> the keys written now (the variance-normalised NMSE was called plain "nmse"); read from
#: results files written before the rename (benchmarks/peers.py)
LEGACY_SCORE_KEYS = {"nmse": "nmse_variance", "nmse_destretched": "nmse_variance_destretched"}


def _t(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _crop(x: torch.Tensor, margin: int) -> torch.Tensor:
    if margin <= 0:
        return x
    return x[..., margin:x.shape[-2] - margin, margin:x.shape[-1] - margin]


def contrast(image, margin: int = 0) -> np.ndarray:
    """RMS contrast std / mean over the last two axes (``margin`` pixels cut at each border)."""
    x = _crop(_t(image), margin)
    return (x.std(dim=(-2, -1), unbiased=False) / x.mean(dim=(-2, -1))).numpy()


def diffraction_limited(image, cutoff_cycles_per_pixel: float, width: float = 2.0, sharpness: float = 20.0,
                        pad: int = 32) -> np.ndarray:
    """The image filtered to the diffraction limit: erf filter of Eq. 16 (``width = 2``: half power at
    the cutoff) on the image mirror-padded by ``pad`` pixels; returns the same shape."""
    from svrt.optics.filters import erf_filter

    x = _t(image)
    shape = x.shape
    y, xx = shape[-2:]
    flat = x.reshape(-1, 1, y, xx)
    p = min(pad, y - 1, xx - 1)
    if p > 0:
        flat = F.pad(flat, (p, p, p, p), mode="reflect")
    h = erf_filter(flat.shape[-2:], cutoff_cycles_per_pixel, width, sharpness, real=True, dtype=torch.float64)
    out = torch.fft.irfft2(h * torch.fft.rfft2(flat), s=flat.shape[-2:])
    if p > 0:
        out = out[..., p:p + y, p:p + xx]
    return out.reshape(shape).numpy()


def nmse_variance(estimate, reference, margin: int = 0) -> np.ndarray:
    """``sum (x - t)^2 / sum (t - <t>)^2`` over the last two axes (float64), ``margin`` pixels cut at each
    border: the NMSE normalised by the reference's variance (the score's NMSE, DESIGN.md).

    >>> t = np.array([[1.0, 3.0]])
    >>> float(nmse_variance(np.full_like(t, 2.0), t))    # a flat image at the right mean scores 1
    1.0
    """
    x, t = _crop(_t(estimate), margin), _crop(_t(reference), margin)
    err = (x - t).pow(2).sum(dim=(-2, -1))
    den = (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).sum(dim=(-2, -1))
    return (err / den).numpy()


def nmse_power(estimate, reference, dims=(-2, -1)):
    """The paper's Eq. 12, ``sum (x - t)^2 / sum t^2`` over ``dims``: the NMSE normalised by the
    reference's power. Two tensors give a tensor (their dtype and device, differentiable: the training
    loop's held-out figure); anything else a float64 numpy array.

    >>> float(nmse_power(np.array([[1.0, 3.0]]), np.array([[1.0, 2.0]])))
    0.2
    """
    if isinstance(estimate, torch.Tensor) and isinstance(reference, torch.Tensor):
        return (estimate - reference).pow(2).sum(dim=dims) / reference.pow(2).sum(dim=dims)
    x, t = _t(estimate), _t(reference)
    return ((x - t).pow(2).sum(dim=dims) / t.pow(2).sum(dim=dims)).numpy()


def power_spectrum(image, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum: ``(frequency [cycles/pixel], power [..., n_bins])``.

    The mean is removed and a 2-D Hann window applied before the FFT; power is ``|FFT|^2 / (Y X)``
    averaged in rings of width ``1 / min(Y, X)``; the zero-frequency bin is left out."""
    x = _crop(_t(image), margin)
    y, xx = x.shape[-2:]
    win = hann((y, xx))
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * win
    spec = torch.fft.fft2(x).abs().pow(2) / (win.pow(2).sum())
    fy = torch.fft.fftfreq(y, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(xx, dtype=torch.float64)[None, :]
    r = torch.sqrt(fy * fy + fx * fx)
    step = 1.0 / min(y, xx)
    idx = torch.round(r / step).long()
    n_bins = int(round(0.5 / step)) + 1
    flat = spec.reshape(-1, y * xx)
    idx_f = idx.reshape(-1)
    keep = idx_f < n_bins
    sums = torch.zeros(flat.shape[0], n_bins, dtype=torch.float64)
    sums.index_add_(1, idx_f[keep], flat[:, keep])
    counts = torch.bincount(idx_f[keep], minlength=n_bins).to(torch.float64)
    power = sums / counts.clamp_min(1)
    freq = torch.arange(n_bins, dtype=torch.float64) * step
    power = power.reshape(*spec.shape[:-2], n_bins)
    return freq[1:].numpy(), power[..., 1:].numpy()


def spectral_distance(estimate, reference, cutoff_cycles_per_pixel: float, margin: int = 0) -> np.ndarray:
    """RMS of ``log10(P_estimate / P_reference)`` over the azimuthal bins up to the diffraction cutoff."""
    f, pe = power_spectrum(estimate, margin)
    _, pr = power_spectrum(reference, margin)
    sel = f <= min(cutoff_cycles_per_pixel, 0.5)
    ratio = np.log10(np.maximum(pe[..., sel], 1e-300) / np.maximum(pr[..., sel], 1e-300))
    return np.sqrt(np.mean(ratio ** 2, axis=-1))


def compare(truth, estimates: Mapping[str, object], cutoff_cycles_per_pixel, margin: int = 8,
            register: bool = False) -> dict:
    """Figures of each estimate ``[K, Y, X]`` against the truth ``[K, Y, X]``.

    ``cutoff_cycles_per_pixel``: one value, or one per object. Returns ``{name: {"nmse_variance": [K],
    "spectral_distance": [K], "contrast": [K]}}`` plus ``"truth": {"contrast": [K]}``; NMSE after both
    went through :func:`diffraction_limited`, ``margin`` pixels cut at each border (the emulator's and
    the filter's boundary zone). ``register=True`` adds ``"nmse_variance_registered"`` (the NMSE after the
    filtered estimate is destretched onto the filtered truth, :func:`svrt.registration.destretch`:
    the object's position is not determined by the data) and ``"shift_rms"`` (pixels)."""
    t = np.asarray(truth, dtype=np.float64)
    if t.ndim == 2:
        t = t[None]
    k = t.shape[0]
    cut = np.broadcast_to(np.asarray(cutoff_cycles_per_pixel, dtype=np.float64), (k,))
    t_dl = np.stack([diffraction_limited(t[i], float(cut[i])) for i in range(k)])
    out: dict = {"truth": {"contrast": contrast(t_dl, margin)}}
    for name, est in estimates.items():
        e = np.asarray(est, dtype=np.float64)
        if e.ndim == 2:
            e = e[None]
        e_dl = np.stack([diffraction_limited(e[i], float(cut[i])) for i in range(k)])
        out[name] = {
            "nmse_variance": nmse_variance(e_dl, t_dl, margin=margin),
            "spectral_distance": np.array(
                [spectral_distance(e_dl[i], t_dl[i], float(cut[i]), margin) for i in range(k)]
            ),
            "contrast": contrast(e_dl, margin),
        }
        if register:
            from svrt.registration import destretch

            reg = [destretch(e_dl[i], t_dl[i]) for i in range(k)]
            out[name]["nmse_variance_registered"] = nmse_variance(np.stack([r[0] for r in reg]), t_dl, margin=margin)
            out[name]["shift_rms"] = np.array([float(np.sqrt(np.mean(r[1] ** 2 + r[2] ** 2))) for r in reg])
    return out


def format_comparison(figures: dict) -> str:
    """A small text table of :func:`compare`'s output (one line per estimate, objects separated by '/')."""
    lines = [f"{'':18s} {'NMSE (variance)':>20s} {'log-spectrum RMS':>20s} {'contrast':>20s}"]

    def cell(v) -> str:
        return " / ".join(f"{float(a):.4f}" for a in np.atleast_1d(v))

    for name, fig in figures.items():
        if name == "truth":
            continue
        lines.append(f"{name:18s} {cell(fig['nmse_variance']):>20s} {cell(fig['spectral_distance']):>20s} "
                     f"{cell(fig['contrast']):>20s}")
    lines.append(f"{'truth':18s} {'':>20s} {'':>20s} {cell(figures['truth']['contrast']):>20s}")
    return "\n".join(lines)


def _band_key(band) -> str:
    return f"{band[0]:g}-{band[1]:g}"


def score_restoration(restoration, truth, cutoff_cycles_per_pixel: float, *, destretch: bool = False,
                      max_shift: float = 8.0, lowpass: float = SCORE_LOWPASS, border: float = SCORE_BORDER,
                      sharpness: float = 20.0, bands=SCORE_BANDS) -> dict:
    """The one score of a restoration ``[Y, X]`` against the truth ``[Y, X]`` (DESIGN.md, "Scoring a
    restoration"); ``cutoff_cycles_per_pixel`` is the diffraction cutoff D/lambda of the instrument.

    Steps, the same for every method:

    1. Low-pass r and t at ``lowpass`` (0.9) of the cutoff with the erf filter of Eq. 16
       (:func:`diffraction_limited` with ``width = 2 lowpass``, ``sharpness`` n = 20: H = 1/2 at 0.9,
       0.92 at 0.85, 0.002 at 1.0, < 1e-8 beyond 1.1), both mirror-padded so the periodic FFT does not
       wrap one border onto the other. An erf rather than a sharp top-hat: a top-hat rings (Gibbs)
       around every granule edge by an amount that depends on the sub-pixel position, which would make
       the NMSE depend on the registration; the erf's transition (~0.1 of the cutoff) does not ring
       measurably, yet nothing beyond ~1.05 of the cutoff, where no frame has information, is left.
       It is also the filter H the solver applies to its own object, with the same n.
    2. Register r to t: the global sub-pixel shift of :func:`svrt.registration.estimate_shift`
       (cross-correlation peak, parabolic refinement), refined twice on the shifted image, applied
       with :func:`~svrt.registration.apply_shift_field` (bicubic, mirrored borders).
       ``destretch=True`` also reports the NMSE after a smooth shift field
       (:func:`~svrt.registration.destretch`) on top of it (``nmse_variance_destretched``).
    3. Drop ``border`` (1/8) of the image side at every edge (the boundary zone of every method:
       patches, mirrored margins, the shift's resampling), then scale r to t's mean over what is left.
    4. NMSE = sum (r - t)^2 / sum (t - <t>)^2 (normalised by the truth's variance); the RMS contrast
       std / mean of r and of t; the azimuthal power ratio sum P_r / sum P_t in each band of
       ``bands`` (fractions of the cutoff; :func:`power_spectrum`, Hann window) -- 1 is the truth's
       power, < 1 a blurred restoration, > 1 noise or ringing.

    Returns a dict of plain floats (JSON-ready): ``nmse_variance``, ``contrast``, ``contrast_truth``,
    ``power_ratio`` ``{"0.05-0.3": .., "0.3-0.6": .., "0.6-0.9": ..}``, ``shift_px`` ``[dy, dx]`` (where
    r's content sat relative to t, the convention of :mod:`svrt.registration`), ``scale``
    (the factor applied to r), ``border_px``, ``lowpass`` and ``filter`` (a description); with
    ``destretch`` also ``nmse_variance_destretched`` and ``destretch_rms_px``.
    """
    from svrt.registration import apply_shift_field, estimate_shift

    r = np.asarray(restoration.detach().cpu().numpy() if isinstance(restoration, torch.Tensor) else restoration,
                   dtype=np.float64)
    t = np.asarray(truth.detach().cpu().numpy() if isinstance(truth, torch.Tensor) else truth, dtype=np.float64)
    if r.ndim != 2 or r.shape != t.shape:
        raise ValueError(f"score_restoration takes two images [Y, X] of the same shape; got {r.shape} and {t.shape}.")
    if not (np.isfinite(r).all() and np.isfinite(t).all()):
        raise ValueError("score_restoration: the restoration or the truth has NaN or Inf pixels.")
    cut = float(cutoff_cycles_per_pixel)
    width = 2.0 * lowpass
    r_lp = diffraction_limited(r, cut, width=width, sharpness=sharpness)
    t_lp = diffraction_limited(t, cut, width=width, sharpness=sharpness)

    # global sub-pixel shift, refined on the shifted image (the parabola's bias shrinks each time)
    y, x = t.shape
    dy = dx = 0.0
    reg = r_lp
    for i in range(3):
        ey, ex = estimate_shift(reg, t_lp, max_shift=max_shift if i == 0 else 2.0)
        dy, dx = dy + ey, dx + ex
        reg = apply_shift_field(r_lp, np.full((y, x), dy), np.full((y, x), dx))
        if abs(ey) < 1e-3 and abs(ex) < 1e-3:
            break

    b = int(round(border * min(y, x)))
    t_c = _crop(torch.from_numpy(t_lp), b).numpy()

    def figures(image: np.ndarray) -> tuple[float, np.ndarray, float]:
        c = _crop(torch.from_numpy(image), b).numpy()
        scale = float(t_c.mean() / c.mean()) if c.mean() != 0 else 1.0
        c = c * scale
        den = float(np.sum((t_c - t_c.mean()) ** 2))
        return float(np.sum((c - t_c) ** 2) / den), c, scale

    err, r_c, scale = figures(reg)
    f, p_r = power_spectrum(r_c)
    _, p_t = power_spectrum(t_c)
    ratios = {}
    for lo, hi in bands:
        sel = (f >= lo * cut) & (f < hi * cut)
        ratios[_band_key((lo, hi))] = (
            float(p_r[sel].sum() / p_t[sel].sum()) if sel.any() and p_t[sel].sum() > 0 else float("nan")
        )
    out = {
        "nmse_variance": err,
        "contrast": float(r_c.std() / r_c.mean()),
        "contrast_truth": float(t_c.std() / t_c.mean()),
        "power_ratio": ratios,
        "shift_px": [float(dy), float(dx)],
        "scale": scale,
        "border_px": b,
        "lowpass": float(lowpass),
        "filter": f"erf (Eq. 16), half power at {lowpass:g} D/lambda, n = {sharpness:g}, mirror-padded",
    }
    if destretch:
        from svrt.registration import destretch as _destretch

        warped, sy, sx = _destretch(reg, t_lp)
        out["nmse_variance_destretched"] = figures(warped)[0]
        out["destretch_rms_px"] = float(np.sqrt(np.mean((sy - sy.mean()) ** 2 + (sx - sx.mean()) ** 2)))
    return out
