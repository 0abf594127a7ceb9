"""Figures of merit of a restoration: contrast, NMSE after filtering to the diffraction limit, and the
azimuthally averaged power spectrum (paper Fig. 10).

All functions take numpy arrays or torch tensors ``[..., Y, X]`` and return numpy values.

* :func:`contrast`: RMS contrast std / mean (the number quoted in the paper's panels).
* :func:`diffraction_limited`: the image through the erf filter of Eq. 16 with ``width = 2`` (half
  power at the diffraction cutoff D/lambda), the images mirror-padded so that the periodic FFT does not
  ring at the borders. Compare a restoration with the truth only after both went through it: what lies
  beyond the cutoff is not in any frame.
* :func:`nmse`: ``<(x - t)^2> / <(t - <t>)^2>``, the mean squared error normalised by the variance of
  the reference t (so 1 is "as bad as a flat image at the right mean"); ``normalization="power"``
  divides by ``<t^2>`` instead (the paper's emulator NMSE).
* :func:`power_spectrum`: azimuthally averaged power of the mean-subtracted, Hann-apodised image in
  bins of ``1 / min(Y, X)`` cycles per pixel, up to the Nyquist frequency 0.5.
* :func:`spectral_distance`: RMS of ``log10(P_x / P_t)`` over frequencies from the first bin to the
  cutoff: how far a power spectrum is from the truth's (0 = identical; 0.3 = a factor 2).
* :func:`compare`: all of them for a set of estimates against a truth.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["contrast", "diffraction_limited", "nmse", "power_spectrum", "spectral_distance", "compare",
           "format_comparison"]


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


def nmse(estimate, reference, normalization: str = "variance", margin: int = 0) -> np.ndarray:
    """Normalised mean squared error over the last two axes: ``<(x - t)^2> / <(t - <t>)^2>``
    (``normalization="variance"``) or ``/ <t^2>`` (``"power"``); ``margin`` pixels cut at each border."""
    x, t = _crop(_t(estimate), margin), _crop(_t(reference), margin)
    err = (x - t).pow(2).mean(dim=(-2, -1))
    if normalization == "variance":
        den = (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(-2, -1))
    elif normalization == "power":
        den = t.pow(2).mean(dim=(-2, -1))
    else:
        raise ValueError(f"normalization must be 'variance' or 'power'; got {normalization!r}")
    return (err / den).numpy()


def power_spectrum(image, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum: ``(frequency [cycles/pixel], power [..., n_bins])``.

    The mean is removed and a 2-D Hann window applied before the FFT; power is ``|FFT|^2 / (Y X)``
    averaged in rings of width ``1 / min(Y, X)``; the zero-frequency bin is left out."""
    x = _crop(_t(image), margin)
    y, xx = x.shape[-2:]
    win = torch.outer(torch.hann_window(y, periodic=False, dtype=torch.float64),
                      torch.hann_window(xx, periodic=False, dtype=torch.float64))
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

    ``cutoff_cycles_per_pixel``: one value, or one per object. Returns ``{name: {"nmse": [K],
    "spectral_distance": [K], "contrast": [K]}}`` plus ``"truth": {"contrast": [K]}``; NMSE after both
    went through :func:`diffraction_limited`, ``margin`` pixels cut at each border (the emulator's and
    the filter's boundary zone). ``register=True`` adds ``"nmse_registered"`` (the NMSE after the
    filtered estimate is destretched onto the filtered truth, :func:`svrt.runtime.registration.destretch`:
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
            "nmse": nmse(e_dl, t_dl, margin=margin),
            "spectral_distance": np.array([spectral_distance(e_dl[i], t_dl[i], float(cut[i]), margin) for i in range(k)]),
            "contrast": contrast(e_dl, margin),
        }
        if register:
            from svrt.runtime.registration import destretch

            reg = [destretch(e_dl[i], t_dl[i]) for i in range(k)]
            out[name]["nmse_registered"] = nmse(np.stack([r[0] for r in reg]), t_dl, margin=margin)
            out[name]["shift_rms"] = np.array([float(np.sqrt(np.mean(r[1] ** 2 + r[2] ** 2))) for r in reg])
    return out


def format_comparison(figures: dict) -> str:
    """A small text table of :func:`compare`'s output (one line per estimate, objects separated by '/')."""
    lines = [f"{'':18s} {'NMSE':>20s} {'log-spectrum RMS':>20s} {'contrast':>20s}"]

    def cell(v) -> str:
        return " / ".join(f"{float(a):.4f}" for a in np.atleast_1d(v))

    for name, fig in figures.items():
        if name == "truth":
            continue
        lines.append(f"{name:18s} {cell(fig['nmse']):>20s} {cell(fig['spectral_distance']):>20s} {cell(fig['contrast']):>20s}")
    lines.append(f"{'truth':18s} {'':>20s} {'':>20s} {cell(figures['truth']['contrast']):>20s}")
    return "\n".join(lines)
