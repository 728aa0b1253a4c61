"""Image formation shared by every MR phantom: tissue fractions -> signal, bias field, blur, Rician noise.

All functions take and return arrays on the same voxel grid; geometry stays with the caller's Volume.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def signal_from_fractions(fractions: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Partial-volume signal: sum over tissues of fraction x mean signal.

    fractions : (n_tissues, I, J, K) float array summing to 1 over the first axis.
    """
    return np.tensordot(table.astype(np.float32), fractions.astype(np.float32, copy=False), axes=(0, 0))


def bias_field(shape: tuple[int, int, int], spacing: np.ndarray, rng: np.random.Generator, *,
               strength: float = 0.25, scale_mm: float = 60.0, modes: int = 6) -> np.ndarray:
    """Smooth multiplicative coil-sensitivity field around 1, exp(strength x s) with s in [-1, 1].

    A sum of a few random low-frequency separable cosine modes (wavelengths >= ``scale_mm``): cheap on any grid size
    and smooth by construction.
    """
    axes = [np.arange(n) * sp for n, sp in zip(shape, spacing, strict=True)]
    total = np.zeros(shape, dtype=np.float32)
    for _ in range(modes):
        factors = []
        for x in axes:
            freq = rng.uniform(0.0, 1.0) / scale_mm
            phase = rng.uniform(0, 2 * np.pi)
            factors.append(np.cos(2 * np.pi * freq * x + phase).astype(np.float32))
        total += rng.normal() * factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    total /= np.abs(total).max() + 1e-12
    return np.exp(strength * total).astype(np.float32)


def blur(image: np.ndarray, spacing: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """Gaussian point-spread blur of the given full width at half maximum (mm); 0 leaves the image unchanged."""
    if fwhm_mm <= 0:
        return image
    sigma = fwhm_mm / 2.3548 / np.asarray(spacing, dtype=float)
    return ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")


def rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the complex signal plus Gaussian noise in both channels (Rician statistics)."""
    if sigma <= 0:
        return image.astype(np.float32, copy=False)
    real = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)
