"""A label map as it would look after the knee moved rigidly in the scanner: the validation input of registration
and change (a knee paired with its own moved, re-gridded copy must report no change)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core import LabelVolume


def _output_box(index_map: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Output-grid box that receives the input box [lo, hi] (inclusive), with a 2-voxel margin."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    inverse = np.linalg.inv(index_map)
    out = corners @ inverse[:3, :3].T + inverse[:3, 3]
    a = np.maximum(np.floor(out.min(axis=0)).astype(int) - 2, 0)
    b = np.minimum(np.ceil(out.max(axis=0)).astype(int) + 3, np.array(shape))
    return tuple(slice(int(i), int(j)) for i, j in zip(a, b, strict=True))


def rigidly_moved_labels(labels: LabelVolume, move: np.ndarray) -> LabelVolume:
    """The anatomy moved by the 4x4 RAS transform ``move`` and re-sampled on the same grid.

    Each label's indicator is interpolated linearly (only over the part of the grid the label can reach) and a voxel
    takes the label whose fraction is at least one half; background where the labels' fractions sum below one half;
    the nearest label where no class has a majority (three-label junctions). Nearest-neighbour alone would
    stair-step every boundary a second time.
    """
    move = np.asarray(move, float)
    index_map = np.linalg.inv(labels.affine) @ np.linalg.inv(move) @ labels.affine
    arr = labels.array
    shape = arr.shape
    nearest = ndimage.affine_transform(arr, index_map[:3, :3], index_map[:3, 3], order=0, mode="constant", cval=0)
    best = np.zeros(shape, np.float32)
    total = np.zeros(shape, np.float32)
    winner = np.zeros(shape, arr.dtype)
    for value in np.unique(arr):
        if value == 0:
            continue
        where = np.argwhere(arr == value)
        lo, hi = where.min(axis=0) - 1, where.max(axis=0) + 1
        box = _output_box(index_map, lo, hi, shape)
        start = np.array([s.start for s in box], float)
        # output index o (inside the box) -> input index: M (o + start) + t
        offset = index_map[:3, :3] @ start + index_map[:3, 3]
        size = tuple(s.stop - s.start for s in box)
        fraction = ndimage.affine_transform((arr == value).astype(np.float32), index_map[:3, :3], offset,
                                            output_shape=size, order=1, mode="constant", cval=0.0)
        total[box] += fraction
        better = fraction > best[box]
        best[box][better] = fraction[better]
        winner[box][better] = value
    out = np.where(best >= 0.5, winner, np.where(total < 0.5, 0, nearest)).astype(arr.dtype)
    return LabelVolume(out, labels.affine, labels.meta)
