"""Test data: images moved by a known sub-pixel shift (the registration's and the score's tests)."""

import numpy as np


def fourier_shift(img, dy, dx):
    """Content moved by (dy, dx) pixels, exactly for a periodic band-limited image."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real
