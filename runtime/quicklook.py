"""Quick-look PNG of a restoration, laid out like the paper's Fig. 10.

One row per object: the first frame (contrast), the residual ``i_k1 - f(o*_k, alpha_1)`` of the model
(NMSE), the frame average (contrast), the SV-MOMFBD restoration (contrast), the truth when known
(simulations), and the azimuthally averaged power spectra (every frame, the average, the restoration,
the truth) with the diffraction cutoff marked. matplotlib (Agg) is imported inside the function; the
file is written atomically.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_restoration"]


def plot_restoration(path: str | os.PathLike, frames, objects, model, instruments, truth=None,
                     title: str | None = None, pixel_arcsec: float | None = None, mask=None) -> str:
    """Write the Fig. 10-like PNG. ``frames [K, L, Y, X]``, ``objects [K, Y, X]``, ``model [K, L, Y, X]``,
    ``truth [K, Y, X]`` or None, ``instruments`` one label per object. Returns the path."""
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.NullFormatter below)

    from svrt.instruments import get_instrument
    from svrt.metrics import contrast, nmse_power, power_spectrum
    from svrt.pictures import save_png, subplots

    frames = np.asarray(frames, dtype=np.float64)
    objects = np.asarray(objects, dtype=np.float64)
    model = np.asarray(model, dtype=np.float64)
    if frames.ndim == 3:
        frames = frames[None]
    k, n_frames, y, x = frames.shape
    valid = np.isfinite(frames) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(frames))
    cnt = valid.sum(axis=1)
    avg = np.where(cnt > 0, np.where(valid, frames, 0).sum(axis=1) / np.maximum(cnt, 1), np.nan)
    avg = np.where(np.isfinite(avg), avg, np.nanmean(avg))
    first = np.where(valid[:, 0], frames[:, 0], avg)
    truth = None if truth is None else np.asarray(truth, dtype=np.float64).reshape(k, y, x)
    ext = [0, x * pixel_arcsec, 0, y * pixel_arcsec] if pixel_arcsec else None
    unit = "arcsec" if ext else "pixel"

    n_img = 5 if truth is not None else 4
    fig, axes = subplots(k, n_img + 1, figsize=(3.0 * (n_img + 1.25), 3.0 * k + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n_img + [1.25]})
    for i in range(k):
        inst = get_instrument(instruments[i]) if instruments else None
        resid = first[i] - model[i, 0]
        r_nmse = float(nmse_power(model[i, 0], first[i]))
        rr = float(np.percentile(np.abs(resid), 99.5)) or 1.0
        panels = [("frame 1", first[i], f"contrast {100 * float(contrast(first[i])):.1f} %", "gray"),
                  ("frame 1 - model", resid, f"NMSE (power, Eq. 12) {r_nmse:.2e}", "RdBu_r"),
                  (f"average of {n_frames}", avg[i], f"contrast {100 * float(contrast(avg[i])):.1f} %", "gray"),
                  ("SV-MOMFBD", objects[i], f"contrast {100 * float(contrast(objects[i])):.1f} %", "gray")]
        if truth is not None:
            panels.append(("truth", truth[i], f"contrast {100 * float(contrast(truth[i])):.1f} %", "gray"))
        for j, (name, img, label, cmap) in enumerate(panels):
            ax = axes[i, j]
            # each panel on its own 0.5-99.5 % scale (as in the paper); the residual symmetric about 0
            vmin, vmax = (-rr, rr) if cmap == "RdBu_r" else tuple(np.percentile(img, [0.5, 99.5]))
            ax.imshow(img, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, extent=ext, interpolation="nearest")
            head = f"{name}" + (f"  [{instruments[i]}]" if j == 0 and instruments else "")
            ax.set_title(head, fontsize=9)
            ax.text(
                0.03,
                0.03,
                label,
                transform=ax.transAxes,
                fontsize=8,
                color="yellow" if cmap == "gray" else "black",
                bbox=dict(facecolor="black" if cmap == "gray" else "white", alpha=0.5, lw=0, pad=1.5),
            )
            ax.tick_params(labelsize=7)
            if i == k - 1:
                ax.set_xlabel(unit, fontsize=8)
        ax = axes[i, n_img]
        f, p_frames = power_spectrum(np.where(valid[i], frames[i], avg[i][None]))
        for lidx in range(n_frames):
            ax.loglog(f, p_frames[lidx], color="tab:blue", alpha=0.45, lw=0.7, label="frames" if lidx == 0 else None)
        ax.loglog(f, power_spectrum(avg[i])[1], color="tab:green", lw=1.2, label="average")
        ax.loglog(f, power_spectrum(objects[i])[1], color="tab:orange", lw=1.5, label="SV-MOMFBD")
        if truth is not None:
            ax.loglog(f, power_spectrum(truth[i])[1], color="black", lw=1.0, ls="--", label="truth")
        if inst is not None and inst.cutoff_cycles_per_pixel < 0.5:
            ax.axvline(inst.cutoff_cycles_per_pixel, color="gray", ls=":", lw=1, label="D/$\\lambda$")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title("azimuthally averaged power", fontsize=9)
        ax.set_xlabel("frequency [cycles/pixel]", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=90)
    return os.fspath(path)
