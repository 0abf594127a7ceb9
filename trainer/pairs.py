"""Training pairs as in the paper's Sect. 2.3: a sharp image, a random Kolmogorov wavefront, its PSF,
FFT convolution, with two changes that make every target a function of what the network sees.

- ``boundary="reflect"`` (default): the image is convolved mirrored across its edges. The paper's
  recipe (``boundary="apodize"``: apodise a larger image with a 12-px Hanning border, convolve, crop)
  makes the border of every target depend on pixels outside the crop that the network never sees; with
  seeing PSFs tens of pixels wide that unknown light reaches deep into the 128-px crop, an error no
  training can remove (the first shipped model: held-out NMSE 5.5e-3 whole, 4.3e-3 without a 32-px
  border). Mirroring is the emulator's boundary rule: without a margin, a frame is the convolution of
  the mirrored object; with a margin (the solver's, the validation's) the rule only touches the margin.
- ``weak_fraction`` (default 0.3) of the wavefronts are scaled by u ~ U(0, 1): the same Kolmogorov
  statistics with r0 -> r0 u^(-6/5), down to the diffraction limit (u = 0). Adaptive-optics residuals
  and the paper's own Fig. 4-5 test (zero modes but a defocus bump) live there; a model trained on
  r0 = 3-15 cm alone scored NMSE 1.5e-2 at u = 0.3 and 2.7e-2 at the diffraction limit.

One pair: ``obj [1, 128, 128]``, ``target [1, 128, 128]``, ``coefficients [M]`` (radians, constant over
the image: spatially invariant PSF), ``instrument`` index, ``r0`` (cm at 5000 A). The network receives
the coefficients broadcast to every pixel ``[M, 128, 128]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from svrt.atmosphere import kolmogorov_coefficients
from svrt.mode_grid import N_MODES
from svrt.optics.convolution import fft_convolve
from svrt.optics.psf import PSFModel
from svrt.trainer.images import random_image
from svrt.trainer.train_config import BOUNDARIES, WEAK_FRACTION
from svrt.windows import flat_top_window

CROP = 128        # the network's training size
APODIZATION = 12  # Hanning transition in pixels at each border
R0_RANGE = (3.0, 15.0)  # cm at 5000 A


@dataclass
class PairGenerator:
    """Makes training pairs for a list of instruments (the model's conditioning order)."""

    instruments: list
    n_modes: int = N_MODES
    crop: int = CROP
    apodization: int = APODIZATION
    r0_range: tuple = R0_RANGE
    psf_field: int = 128
    boundary: str = "reflect"          # or "apodize": the paper's recipe
    weak_fraction: float = WEAK_FRACTION

    def __post_init__(self):
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"unknown pair boundary '{self.boundary}'; expected one of {', '.join(BOUNDARIES)}.")
        margin = self.apodization if self.boundary == "apodize" else 0
        self.size = self.crop + 2 * margin
        self.window = flat_top_window((self.size, self.size), self.apodization) if margin else None
        self._psf = {}

    def psf_model(self, label: str) -> PSFModel:
        if label not in self._psf:
            self._psf[label] = PSFModel(label, self.n_modes, field=self.psf_field)
        return self._psf[label]

    def sample(self, rng: np.random.Generator) -> dict:
        index = int(rng.integers(len(self.instruments)))
        label = self.instruments[index]
        r0 = float(rng.uniform(*self.r0_range))
        coef = kolmogorov_coefficients(label, r0, self.n_modes, rng=rng)
        if rng.random() < self.weak_fraction:
            u = float(rng.uniform())
            coef = coef * u
            r0 = r0 * u ** -1.2 if u > 0 else float("inf")
        img, source = random_image(rng, self.size)
        obj = torch.from_numpy(img)
        psf = self.psf_model(label)(torch.from_numpy(coef))
        if self.window is None:
            target = fft_convolve(obj, psf, boundary="reflect")
        else:
            obj = obj * self.window
            a, c = self.apodization, self.crop
            target = fft_convolve(obj, psf, boundary="zero")[a:a + c, a:a + c]
            obj = obj[a:a + c, a:a + c]
        return {"obj": obj[None].contiguous(), "target": target[None].contiguous(),
                "coefficients": torch.from_numpy(coef), "instrument": index, "r0": r0, "source": source}


class PairStream(torch.utils.data.IterableDataset):
    """An endless stream of pairs; each worker has its own seed, so the stream is reproducible."""

    def __init__(self, generator: PairGenerator, seed: int):
        self.generator, self.seed = generator, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.generator.sample(rng)


def fixed_set(generator: PairGenerator, n: int, seed: int) -> dict:
    """A held-out set of ``n`` pairs, stacked: obj/target ``[n, 1, C, C]``, coefficients ``[n, M]``, ..."""
    rng = np.random.default_rng(seed)
    items = [generator.sample(rng) for _ in range(n)]
    out = {k: torch.stack([it[k] for it in items]) for k in ("obj", "target", "coefficients")}
    out["instrument"] = torch.tensor([it["instrument"] for it in items])
    out["r0"] = torch.tensor([it["r0"] for it in items])
    out["source"] = [it["source"] for it in items]
    return out
