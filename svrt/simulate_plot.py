"""The quick look of a simulated burst (``svrt simulate`` writes it beside the burst): truth, frames,
the defocus across the field and the local loss of contrast, drawn through :mod:`svrt.pictures`."""

from __future__ import annotations

import os

import numpy as np

from svrt.mode_grid import per_pixel_modes
from svrt.optics.kl import defocus_mode_index
from svrt.simulate import local_contrast_ratio


def plot_burst(burst, path, title: str | None = None) -> str:
    """PNG quick look of a burst (object 0): truth, first frame, frame average, the defocus
    coefficient of frame 0 across the field (the bilinearly upsampled coarse modes) and, with a
    truth, the local contrast of frame 0 relative to the truth's (the spatially variant blur).
    Atomic write."""
    from svrt.pictures import save_png, subplots

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
    fig, axes = subplots(1, n, figsize=(4.2 * n, 5.0), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(unit)
    if burst.modes is not None:
        j = defocus_mode_index(burst.modes.shape[1])
        mode = per_pixel_modes(burst.modes[0], (y, x))[j].numpy()
        lim = float(np.max(np.abs(mode))) or 1.0
        _colour_panel(fig, axes[len(panels)], mode, f"frame 0: KL {j + 1} (defocus) [rad]", unit, cmap="RdBu_r",
                      vmin=-lim, vmax=lim, extent=ext)
    if show_contrast:
        ratio = local_contrast_ratio(k0[0], burst.truth[0], block)
        by, bx = ratio.shape
        cext = [0, bx * block * pix, 0, by * block * pix] if ext else None
        _colour_panel(fig, axes[-1], ratio, f"frame 0: contrast / truth's ({block} px blocks)", unit, cmap="magma",
                      vmin=0, vmax=max(1.0, float(ratio.max())), extent=cext)
    if title:
        fig.suptitle(title)
    save_png(fig, path, dpi=90)
    return os.fspath(path)


def _colour_panel(fig, ax, image, title: str, unit: str, **imshow) -> None:
    """One map with its colour bar."""
    im = ax.imshow(image, origin="lower", **imshow)
    ax.set_title(title)
    ax.set_xlabel(unit)
    fig.colorbar(im, ax=ax, shrink=0.8)


def burst_title(burst) -> str:
    """One line naming the settings of a simulated burst (its header cards)."""
    h = burst.header
    th = h.get("THETA0")
    th = f"{th:g}\"" if th else "none (isoplanatic)"
    extra = [f"L0 = {h['L0']:g} m" if h.get("L0") else "",
             f"AO {h['AOMODES']} modes" if h.get("AOMODES") else "",
             f"{h['PHOTONS']:g} e-/px" if h.get("PHOTONS") else ""]
    extra = "".join(", " + e for e in extra if e)
    return (f"{burst.instruments[0]} ({h.get('WAVEFRNT', 'kl')}): r0 = {h.get('R0', 0):g} cm at 5000 A, "
            f"theta0 = {th}{extra}, "
            f"noise = {h.get('NOISE', 0):g}, grid {h.get('GRID')}x{h.get('GRID')}, PSF {h.get('PSFSIZE')} px, "
            f"seed {h.get('SEED')}")
