"""Smooth fields whose 0.5 level locates a surface to a fraction of a voxel, on a crop around one cartilage plate.

A binary label map only says on which side of the surface each voxel centre lies; blurring the indicator with a
Gaussian of about one (largest) voxel and taking the 0.5 level recovers a smooth surface that averages the staircase
over neighbouring voxels (sub-voxel accuracy for surfaces much flatter than the blur). Probability (partial-volume)
maps already carry the sub-voxel position and are used with only a light blur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: blur (mm, Gaussian sigma) applied to binary indicators before taking their 0.5 level
BINARY_SIGMA_MM = 0.55
#: light blur (mm) for probability maps (removes interpolation kinks, keeps the 0.5 level in place)
PROBABILITY_SIGMA_MM = 0.15
#: blur for the field whose gradient gives the bone normal (smoother normals, same surface)
NORMAL_SIGMA_MM = 1.0
#: light blur of the binary bone + cartilage indicator used to find where a normal ray leaves the cartilage: a
#: wide blur would round the plate's edges and defect walls; the staircase error it leaves is averaged instead by
#: smoothing the thickness values along the plate (THICKNESS_SIGMA_MM)
UNION_SIGMA_MM = 0.2
#: tangential smoothing of per-point thickness measured on binary labels (neighbours on the same plate only)
THICKNESS_SIGMA_MM = 0.7


@dataclass(frozen=True)
class Crop:
    """A box of the full grid: ``lo`` (inclusive) and ``hi`` (exclusive) voxel indices."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices selecting the box."""
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi, strict=True))  # type: ignore[return-value]


def crop_around(mask: np.ndarray, spacing: np.ndarray, margin_mm: float) -> Crop:
    """Bounding box of ``mask`` grown by ``margin_mm`` (clipped to the grid)."""
    # per-axis projections: far cheaper than listing every voxel of a large mask
    first, last = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        first.append(present[0])
        last.append(present[-1])
    margin = np.ceil(margin_mm / np.asarray(spacing)).astype(int)
    lo = np.maximum(np.array(first) - margin, 0)
    hi = np.minimum(np.array(last) + margin + 1, np.array(mask.shape))
    return Crop(tuple(int(v) for v in lo), tuple(int(v) for v in hi))


def smooth_indicator(mask: np.ndarray, spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian-blurred indicator (float32), sigma given in mm and converted per axis."""
    sigma = [sigma_mm / s for s in spacing]
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma=sigma, mode="nearest", truncate=3.0)


def smooth_probability(prob: np.ndarray, spacing: np.ndarray, sigma_mm: float = PROBABILITY_SIGMA_MM) -> np.ndarray:
    """Lightly blurred probability map (float32)."""
    sigma = [sigma_mm / s for s in spacing]
    return ndimage.gaussian_filter(np.asarray(prob, dtype=np.float32), sigma=sigma, mode="nearest", truncate=3.0)


def dilate_cube(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary dilation by a (2r+1)^3 cube: a separable maximum filter, several times faster than
    ``binary_dilation`` with a cube structuring element and identical to it."""
    return ndimage.maximum_filter(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8),
                                  size=2 * radius + 1, mode="constant", cval=0).astype(bool)

