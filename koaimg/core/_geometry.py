"""Small helpers on 4x4 affines shared by Volume and the readers (numpy only)."""

from __future__ import annotations

import numpy as np

from ._enums import Plane
from ._errors import GeometryError

#: how far (cosine) a slice normal may lean from an axis and still be called that plane
PLANE_COSINE = 0.8

#: LPS <-> RAS: negate the first two world axes. The only place this matrix is defined.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def validate_affine(affine: np.ndarray, *, name: str = "affine", atol: float = 1e-4) -> np.ndarray:
    """Return ``affine`` as a float64 4x4 copy, or raise if it cannot describe a voxel grid.

    The 3x3 block must have orthogonal columns of positive length (voxel axes may be scaled, not sheared).
    """
    a = np.array(affine, dtype=np.float64, copy=True)
    if a.shape != (4, 4):
        raise GeometryError(f"'{name}' must be a 4x4 matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"'{name}' contains NaN or infinite values")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise GeometryError(f"'{name}' last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"'{name}' has a zero-length voxel axis (spacing {spacing.tolist()})")
    direction = a[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=atol):
        raise GeometryError(f"'{name}' voxel axes are not orthogonal (sheared grid); resample to an orthogonal grid")
    return a


def axis_codes(affine: np.ndarray) -> str:
    """Three-letter RAS orientation code of the voxel axes, e.g. ``'LPS'`` or ``'PIR'`` (nibabel's aff2axcodes)."""
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    codes = []
    used: set[int] = set()
    for col in range(3):
        order = np.argsort(-np.abs(direction[:, col]))
        world = next(int(w) for w in order if int(w) not in used)
        used.add(world)
        codes.append(letters[world][1] if direction[world, col] > 0 else letters[world][0])
    return "".join(codes)


def plane_of_normal(normal_ras: np.ndarray) -> Plane:
    """Sagittal/coronal/axial from a slice normal (any sign, RAS or LPS alike), oblique if none dominates."""
    n = np.abs(np.asarray(normal_ras, dtype=float))
    n = n / np.linalg.norm(n)
    axis = int(np.argmax(n))
    if n[axis] < PLANE_COSINE:
        return Plane.OBLIQUE
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[axis]
