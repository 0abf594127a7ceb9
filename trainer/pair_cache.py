"""An HDF5 cache of generated training pairs, for hosts where making pairs is the bottleneck.

On a GPU a width-64 step takes tens of milliseconds while one pair (a PSF, an FFT convolution, a solar
scene) takes ~10 ms of one CPU core, so a batch of 32 can cost more to make than to train on. A cache
made once (``svrt train --pair-cache pairs.h5 --cache-pairs 100000``; ~13 GB, ~30 CPU-minutes per
100 000 pairs and worker) is then read in a shuffled order every epoch. On this project's 2-core CPU it
does not help: the network, not the pairs, is the cost there.

Layout: ``obj``, ``target`` ``[N, 1, C, C]`` float32 (one chunk per pair), ``coefficients`` ``[N, M]``,
``instrument`` ``[N]`` (index into the recipe's ``instruments``), ``r0`` ``[N]`` (cm at 5000 A, inf for
the diffraction limit), ``source`` ``[N]`` (strings); attribute ``recipe``: the generator's settings as
JSON, checked against the trainer's before any pair is used. Cached pairs are not augmented again: a
rotated target would need a rotated PSF, i.e. other coefficients.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from svrt.errors import SvrtError
from svrt.trainer.pairs import PairGenerator


def recipe(generator: PairGenerator) -> dict:
    """The settings that decide what a pair is: the generator's fields, in JSON form (a cache made with
    other settings is refused)."""
    return json.loads(json.dumps({f.name: getattr(generator, f.name) for f in dataclasses.fields(generator)}))


def write_pair_cache(path: str | Path, generator: PairGenerator, n: int, seed: int, progress: bool = True) -> Path:
    """Generate ``n`` pairs from ``numpy.random.default_rng([seed, 7])`` into ``path`` (written atomically)."""
    import h5py
    from tqdm.auto import tqdm

    from svrt.fileio import atomic_write

    if n < 1:
        raise SvrtError(f"a pair cache needs at least one pair; got {n}.")
    c, m = generator.crop, generator.n_modes
    rng = np.random.default_rng([seed, 7])
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        obj = f.create_dataset("obj", (n, 1, c, c), "f4", chunks=(1, 1, c, c))
        target = f.create_dataset("target", (n, 1, c, c), "f4", chunks=(1, 1, c, c))
        coef = f.create_dataset("coefficients", (n, m), "f4")
        inst = f.create_dataset("instrument", (n,), "i4")
        r0 = f.create_dataset("r0", (n,), "f8")
        source = f.create_dataset("source", (n,), h5py.string_dtype())
        for i in tqdm(range(n), desc=f"pair cache {path.name}", disable=not progress, dynamic_ncols=True):
            p = generator.sample(rng)
            obj[i], target[i], coef[i] = p["obj"].numpy(), p["target"].numpy(), p["coefficients"].numpy()
            inst[i], r0[i], source[i] = p["instrument"], p["r0"], p["source"]
        f.attrs["recipe"] = json.dumps(recipe(generator))
        f.attrs["seed"] = seed
    return path


class CachedPairs(torch.utils.data.Dataset):
    """The pairs of a cache as a map-style dataset (items like :meth:`PairGenerator.sample`).

    The file is opened lazily in each DataLoader worker (h5py handles must not cross a fork)."""

    def __init__(self, path: str | Path, generator: PairGenerator):
        import h5py

        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                stored = json.loads(f.attrs["recipe"])
                self.n = int(f["obj"].shape[0])
        except (OSError, KeyError, ValueError) as exc:
            raise SvrtError(f"{self.path}: not a readable svrt pair cache ({exc}); expected the HDF5 file of "
                            "svrt train --pair-cache.") from None
        wanted = recipe(generator)
        if stored != wanted:
            diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise SvrtError(f"{self.path}: pairs made with other settings ({', '.join(diff)}); expected "
                            f"{ {k: wanted[k] for k in diff} }: delete it or name another cache.")
        self._file = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        f = self._file
        return {"obj": torch.from_numpy(f["obj"][i]), "target": torch.from_numpy(f["target"][i]),
                "coefficients": torch.from_numpy(f["coefficients"][i]), "instrument": int(f["instrument"][i]),
                "r0": float(f["r0"][i]), "source": f["source"][i].decode()}
