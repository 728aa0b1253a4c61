"""A label map as it would look after the knee moved rigidly in the scanner: the validation input of registration
and change (a knee paired with its own moved, re-gridded copy must report no change)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core import LabelVolume


def rigidly_moved_labels(labels: LabelVolume, move: np.ndarray) -> LabelVolume:
    """The anatomy moved by the 4x4 RAS transform ``move`` and re-sampled on the same grid.

    Each label's indicator is interpolated linearly and every voxel takes the label of largest fraction (partial-
    volume-consistent boundaries, unlike nearest-neighbour, which would stair-step them twice).
    """
    move = np.asarray(move, float)
    index_map = np.linalg.inv(labels.affine) @ np.linalg.inv(move) @ labels.affine
    arr = labels.array
    best = np.zeros(arr.shape, np.float32)
    out = np.zeros(arr.shape, arr.dtype)
    for value in np.unique(arr):
        fraction = ndimage.affine_transform((arr == value).astype(np.float32), index_map[:3, :3], index_map[:3, 3],
                                            order=1, mode="constant", cval=1.0 if value == 0 else 0.0)
        better = fraction > best
        best[better] = fraction[better]
        out[better] = value
    return LabelVolume(out, labels.affine, labels.meta)
