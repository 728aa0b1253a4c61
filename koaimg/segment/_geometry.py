"""Grids for inference: exact RAS reorientation, the isotropic working grid, and resampling between grids.

The network always sees arrays whose axes run R, A, S (a pure transpose/flip of the input, no interpolation) on an
isotropic working grid that spans the input's field of view. Probabilities come back to the native grid by sampling the
working grid at each native voxel centre through the composed affines, so the inverse is exact up to one trilinear
interpolation of a smooth probability map (labels are never interpolated).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

__all__ = ["WorkingGrid", "ras_transform", "resample", "to_ras_array"]


def ras_transform(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(perm, flip) with ``to_ras_array(a, perm, flip)`` indexed R, A, S; nearest axes for oblique affines."""
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    # ornt[i] = (new axis of input axis i, flip); build the permutation of input axes into output order
    perm = np.argsort(ornt[:, 0]).astype(int)
    flip = ornt[perm, 1] < 0
    return perm, flip


def to_ras_array(array: np.ndarray, perm: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Transpose then flip the three spatial axes of ``array`` (exact, a view)."""
    out = array.transpose(tuple(perm))
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flip)]


def ras_affine(affine: np.ndarray, shape: tuple[int, int, int], perm: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Affine of the reoriented array (same voxels, same world positions)."""
    a = affine[:, [*perm, 3]].copy()
    n = np.asarray(shape)[perm]
    for axis, f in enumerate(flip):
        if f:
            a[:3, 3] += a[:3, axis] * (n[axis] - 1)
            a[:3, axis] = -a[:3, axis]
    return a


class WorkingGrid:
    """An isotropic grid with the reoriented input's axis directions, covering the same field of view."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int], spacing_mm: float) -> None:
        self.native_affine = np.asarray(affine, dtype=np.float64)
        self.native_shape = tuple(int(s) for s in shape)
        self.perm, self.flip = ras_transform(self.native_affine)
        ras = ras_affine(self.native_affine, self.native_shape, self.perm, self.flip)
        self.ras_affine = ras
        self.ras_shape = tuple(int(s) for s in np.asarray(self.native_shape)[self.perm])
        sp = np.linalg.norm(ras[:3, :3], axis=0)
        extent = sp * np.asarray(self.ras_shape)  # edge-to-edge field of view along each axis (mm)
        self.shape = tuple(int(max(1, round(e / spacing_mm))) for e in extent)
        step = extent / np.asarray(self.shape)  # ~spacing_mm, exact fit of the field of view
        direction = ras[:3, :3] / sp
        corner = ras[:3, 3] - ras[:3, :3] @ np.full(3, 0.5)  # outer corner of voxel 0
        self.affine = np.eye(4)
        self.affine[:3, :3] = direction * step
        self.affine[:3, 3] = corner + self.affine[:3, :3] @ np.full(3, 0.5)
        self.spacing = step

    def to_working(self, array: np.ndarray) -> np.ndarray:
        """Native-grid image -> working grid (trilinear, area-averaged first when the working grid is coarser)."""
        ras = np.ascontiguousarray(to_ras_array(array, self.perm, self.flip), dtype=np.float32)
        native_sp = np.linalg.norm(self.ras_affine[:3, :3], axis=0)
        return resample(ras, self.ras_affine, self.affine, self.shape, antialias=self.spacing / native_sp)

    def labels_to_working(self, labels: np.ndarray) -> np.ndarray:
        """Native-grid label map -> working grid by nearest neighbour (training on images of the phantom's own
        acquisition simulator: the targets must sit on the grid the network sees)."""
        ras = np.ascontiguousarray(to_ras_array(labels, self.perm, self.flip), dtype=np.float32)
        out = resample(ras, self.ras_affine, self.affine, self.shape, mode="nearest")
        return np.rint(out).astype(np.uint8)

    def native_slabs(self, channels: torch.Tensor, k_slab: int = 16) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(C, working...) maps sampled at the native voxel centres, slab by slab along the native third axis:
        yields (k0, k1, (C, I, J, k1 - k0)). Chunked so that a 7-class map of a DESS grid never sits in memory twice."""
        src = torch.as_tensor(channels, dtype=torch.float32)
        to_src = np.linalg.inv(self.affine) @ self.native_affine
        kdim = self.native_shape[2]
        for k0 in range(0, kdim, k_slab):
            k1 = min(kdim, k0 + k_slab)
            yield k0, k1, _sample(src, to_src, (self.native_shape[0], self.native_shape[1], k1 - k0), k0)


def _sample(src: torch.Tensor, to_src: np.ndarray, shape: tuple[int, int, int], k0: int = 0,
            mode: str = "bilinear", separable: bool = True) -> torch.Tensor:
    """Sample (C, X, Y, Z) ``src`` at index ``to_src @ ijk`` for every ijk of ``shape`` (k offset by k0); edge clamp.
    ``mode="nearest"`` for label maps (a label is never interpolated). Axis-matched grids take the separable path
    (``separable=False`` forces ``grid_sample``, the reference)."""
    axes = _matching_axes(to_src) if mode == "bilinear" and separable else None
    if axes is not None:
        return _sample_separable(src, to_src, shape, k0, axes)
    ii, jj, kk = (torch.arange(n, dtype=torch.float64) for n in shape)
    kk = kk + k0
    m = torch.as_tensor(to_src, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ii, jj, kk, indexing="ij"), dim=-1)
    pos = grid @ m[:3, :3].T + m[:3, 3]  # source index, (I, J, K, 3)
    size = torch.tensor(src.shape[1:], dtype=torch.float64)
    norm = 2.0 * pos / torch.clamp(size - 1, min=1) - 1.0
    # grid_sample wants (x, y, z) = (last, middle, first) source axis
    g = norm.flip(-1).to(torch.float32)[None]
    out = F.grid_sample(src[None], g, mode=mode, padding_mode="border", align_corners=True)
    return out[0]


def _matching_axes(to_src: np.ndarray) -> np.ndarray | None:
    """For each destination axis, the one source axis it runs along, when the two grids differ only by a permutation,
    flips, scales and a shift (the working grid keeps the reoriented input's axis directions, so this is the rule);
    None for a genuinely rotated pair."""
    m = np.abs(np.asarray(to_src, dtype=np.float64)[:3, :3])
    axes = m.argmax(axis=0)
    if sorted(axes.tolist()) != [0, 1, 2]:
        return None
    off = m.sum(axis=0) - m[axes, [0, 1, 2]]
    return axes if np.all(off <= 1e-9 * m[axes, [0, 1, 2]]) else None


def _sample_separable(src: torch.Tensor, to_src: np.ndarray, shape: tuple[int, int, int], k0: int,
                      axes: np.ndarray) -> torch.Tensor:
    """Trilinear sampling as three 1-D linear interpolations (trilinear is their tensor product), the same values as
    ``grid_sample`` (align_corners, border clamp) at a fraction of its cost: each output voxel reads two planes per
    axis instead of building and following a per-voxel coordinate grid. Why: returning seven probability channels
    to a 384 x 384 x 160 DESS grid took longer than the network itself."""
    t = src
    for axis in (2, 0, 1):  # the slab axis first: it shrinks the working grid to the slab before the others grow
        s_axis = int(axes[axis])
        n_src = t.shape[1 + s_axis]
        idx = torch.arange(shape[axis], dtype=torch.float64) + (k0 if axis == 2 else 0)
        pos = (idx * float(to_src[s_axis, axis]) + float(to_src[s_axis, 3])).clamp(0.0, n_src - 1)
        i0 = pos.floor().long().clamp(max=max(n_src - 2, 0))
        i1 = (i0 + 1).clamp(max=n_src - 1)
        view = [1, 1, 1, 1]
        view[1 + s_axis] = -1
        w = (pos - i0).to(t.dtype).view(view)
        t = torch.lerp(t.index_select(1 + s_axis, i0), t.index_select(1 + s_axis, i1), w)
    # source axes now hold the destination sizes: put them in destination order
    return t.permute(0, *(1 + int(a) for a in axes)).contiguous()


def resample(array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: tuple[int, int, int],
             antialias: np.ndarray | None = None, mode: str = "bilinear") -> np.ndarray:
    """Trilinear (or ``mode="nearest"``, for labels) resampling of ``array`` (src grid) onto a destination grid;
    optional box pre-filter per axis (images only)."""
    src = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if antialias is not None:
        k = [max(1, int(np.floor(a))) for a in np.asarray(antialias)]
        if max(k) > 1:
            pad = [p for kk in reversed(k) for p in ((kk - 1) // 2, kk // 2)]
            src = F.avg_pool3d(F.pad(src, pad, mode="replicate"), kernel_size=k, stride=1)
    to_src = np.linalg.inv(src_affine) @ dst_affine
    out = np.empty(tuple(dst_shape), dtype=np.float32)
    for k0 in range(0, dst_shape[2], 16):
        k1 = min(dst_shape[2], k0 + 16)
        out[:, :, k0:k1] = _sample(src[0], to_src, (dst_shape[0], dst_shape[1], k1 - k0), k0, mode).numpy()[0]
    return out
