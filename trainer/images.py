"""The image source for training: diverse sharp images, since Stable ImageNet-1K is not reachable here.

Mix (fractions are :data:`DEFAULT_MIX`):
- ``solar``: granulation and sunspot scenes of :mod:`svrt.scenes` at random pixel scales;
- ``texture``: procedural textures: Gaussian random fields with power spectra f^-beta (beta 1-4),
  thresholded into sharp-edged patches, plus random discs, bars and lines (edges of every orientation);
- ``photo``: real images that matplotlib ships in its sample data (a photograph, a topography map,
  a digital elevation model, an MRI slice, a drawing), random crops at random scales;
- ``points``: fields of point-like sources on a black background (20 %, as in the paper, so that the
  network learns the shape of the PSF itself).
Every image is returned as float32 ``[S, S]`` in [0, 1], randomly rotated by multiples of 90 deg and flipped.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache

import numpy as np

DEFAULT_MIX = {"solar": 0.35, "texture": 0.25, "photo": 0.20, "points": 0.20}


def _normalise(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


@lru_cache(maxsize=1)
def sample_photos() -> tuple:
    """Grey-scale float32 images from matplotlib's sample data (skipped silently if absent)."""
    import matplotlib

    base = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    out = []

    def add(img):
        if img is not None and min(img.shape[:2]) >= 160:
            out.append(_normalise(img.mean(axis=2) if img.ndim == 3 else img))

    try:
        import matplotlib.image as mpimg
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
            p = os.path.join(base, name)
            if os.path.exists(p):
                img = mpimg.imread(p)
                add(img[..., :3] if img.ndim == 3 else img)
        for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
            p = os.path.join(base, name)
            if os.path.exists(p):
                with np.load(p, allow_pickle=False) as f:
                    add(np.asarray(f[key], dtype=np.float32))
        p = os.path.join(base, "s1045.ima.gz")
        if os.path.exists(p):
            with gzip.open(p) as f:
                add(np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32))
    except Exception:  # sample data is a bonus, never a failure
        pass
    return tuple(out)


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural texture with a random power spectrum and sharp edges."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    beta = rng.uniform(1.0, 4.0)
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * f ** (-beta / 2)).real
    field = (field - field.mean()) / (field.std() + 1e-12)
    kind = rng.integers(3)
    if kind == 0:       # sharp-edged patches
        img = np.tanh(field * rng.uniform(2, 20))
    elif kind == 1:     # quantised levels
        img = np.floor(field * rng.uniform(1, 3))
    else:
        img = field
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(0, 8)):   # discs, bars and lines
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(2, size / 4)]
        val = rng.uniform(-2, 2)
        if rng.random() < 0.5:
            img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, val, img)
        else:
            a = rng.uniform(0, np.pi)
            d = np.abs((yy - cy) * np.cos(a) - (xx - cx) * np.sin(a))
            img = np.where(d < rng.uniform(0.5, 4), val, img)
    return _normalise(img)


def points(rng: np.random.Generator, size: int) -> np.ndarray:
    """Randomly placed point sources (one pixel, random amplitude) on black."""
    img = np.zeros((size, size), np.float32)
    n = rng.integers(3, 30)
    img[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.uniform(0.2, 1.0, n)
    return img / img.max()


N_SOLAR_SCENES = 256   # distinct solar scenes; a scene is a pure function of its id


@lru_cache(maxsize=64)
def solar_scene(scene_id: int, size: int) -> np.ndarray:
    """Solar scene number ``scene_id`` (kind, pixel scale and seed derived from the id); cached because
    a scene costs ~0.2 s while a crop of it costs nothing."""
    from svrt.scenes import make_scene

    r = np.random.default_rng([scene_id, 7])
    kind = "granulation" if r.random() < 0.7 else "sunspot"
    return make_scene(kind, max(size, 256), float(r.uniform(0.03, 0.07)), int(r.integers(2**31)))


def solar(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of one of :data:`N_SOLAR_SCENES` solar scenes; depends only on ``rng``."""
    scene = solar_scene(int(rng.integers(N_SOLAR_SCENES)), size)
    y0, x0 = rng.integers(0, scene.shape[0] - size + 1), rng.integers(0, scene.shape[1] - size + 1)
    return _normalise(scene[y0:y0 + size, x0:x0 + size])


def photo(rng: np.random.Generator, size: int) -> np.ndarray:
    photos = sample_photos()
    if not photos:
        return texture(rng, size)
    img = photos[rng.integers(len(photos))]
    scale = rng.uniform(0.5, 1.0)
    crop = int(min(min(img.shape), max(size, size / scale)))
    y0 = rng.integers(0, img.shape[0] - crop + 1)
    x0 = rng.integers(0, img.shape[1] - crop + 1)
    patch = img[y0:y0 + crop, x0:x0 + crop]
    if crop != size:  # resample to size with bilinear interpolation
        from scipy.ndimage import zoom
        patch = zoom(patch, size / crop, order=1)[:size, :size]
    return _normalise(patch)


SOURCES = {"solar": solar, "texture": texture, "photo": photo, "points": points}


def random_image(rng: np.random.Generator, size: int, mix: dict | None = None) -> tuple[np.ndarray, str]:
    """One augmented training image ``[size, size]`` in [0, 1] and the name of its source."""
    mix = mix or DEFAULT_MIX
    names = list(mix)
    p = np.array([mix[n] for n in names], float)
    name = names[rng.choice(len(names), p=p / p.sum())]
    img = SOURCES[name](rng, size)
    img = np.rot90(img, rng.integers(4))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    return np.ascontiguousarray(img, dtype=np.float32), name
