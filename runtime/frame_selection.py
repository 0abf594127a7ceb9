"""Frame selection: keep the frames of a burst taken in the best seeing, by the RMS contrast of the
reference channel (the lucky-imaging criterion of SST and GREGOR pipelines: granulation contrast falls
as the seeing blurs it; Scharmer et al. 2010, Denker et al. 2005).

``select`` is a fraction in (0, 1] of the frames to keep (rounded up to at least one frame; 1 keeps every
frame, as a fraction 1.0 says), or a whole count >= 2. A count of one frame is asked for by a fraction
<= 1 / L (e.g. 0.01): the command line cannot tell ``1`` from ``1.0``, and "all" is the reading that
cannot lose data. The contrast is std / mean over the valid pixels of channel 0 inside a border of 1/8 of the side
(the edges hold light from outside the field); every channel keeps the same frames, since the channels of
one frame share its wavefront. Ties keep the earlier frame. Noise raises every frame's contrast by about
the same amount, so the ranking is kept for noise that does not change within the burst.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from svrt.errors import SvrtError

__all__ = ["frame_contrast", "frames_to_keep", "select_frames"]


def frame_contrast(frames: torch.Tensor, valid: torch.Tensor | None = None, border: float = 1 / 8) -> torch.Tensor:
    """RMS contrast std / mean of every frame ``[..., Y, X]`` over its valid pixels inside the border."""
    y, x = frames.shape[-2:]
    b = int(round(border * min(y, x)))
    f = frames[..., b:y - b, b:x - b].double()
    w = torch.ones_like(f) if valid is None else valid[..., b:y - b, b:x - b].double()
    f = torch.where(w > 0, f, torch.zeros((), dtype=f.dtype))
    n = w.sum(dim=(-2, -1)).clamp_min(1.0)
    mean = f.sum(dim=(-2, -1)) / n
    var = (w * (f - mean[..., None, None]) ** 2).sum(dim=(-2, -1)) / n
    return (var.sqrt() / mean.abs().clamp_min(1e-30)).float()


def frames_to_keep(contrast: torch.Tensor, select: float) -> list[int]:
    """Indices (sorted) of the ``select`` highest-contrast frames of ``contrast [L]``."""
    n = int(contrast.shape[0])
    if not (isinstance(select, (int, float)) and math.isfinite(select) and select > 0):
        raise SvrtError(f"select_frames must be a fraction in (0, 1] or a number of frames >= 2; got {select!r}.")
    count = max(1, math.ceil(select * n - 1e-9)) if select <= 1 else int(round(select))
    if select > 1 and abs(select - round(select)) > 1e-9:
        raise SvrtError(f"select_frames > 1 is a number of frames and must be whole; got {select!r}.")
    if count > n:
        raise SvrtError(f"select_frames asks for {count} frames but the burst has {n}.")
    order = sorted(range(n), key=lambda i: (-float(contrast[i]), i))
    return sorted(order[:count])


def select_frames(burst, select: float):
    """The validated burst (:class:`svrt.runtime.problem.ValidatedBurst`) with only the sharpest frames,
    and header cards: ``FRSEL_N`` (frames given), ``FRSEL_KEPT`` (their indices, comma-separated) and
    ``FRSEL_CONTRAST`` (every frame's contrast, comma-separated, channel 0)."""
    contrast = frame_contrast(burst.frames[0], burst.valid[0])
    keep = frames_to_keep(contrast, select)
    idx = torch.tensor(keep)
    chosen = dataclasses.replace(burst, frames=burst.frames[:, idx], valid=burst.valid[:, idx],
                                 gamma=None if burst.gamma is None else burst.gamma[:, idx])
    cards = {"FRSEL_N": int(contrast.shape[0]), "FRSEL_KEPT": ",".join(map(str, keep)),
             "FRSEL_CONTRAST": ",".join(f"{float(c):.5f}" for c in contrast)}
    return chosen, cards
