"""Femur-based rigid registration of a follow-up knee onto its baseline.

Why this method: the subchondral bone does not change over 6 months while the cartilage on it does, so the femoral
bone surface is the anatomy to align, and only the part around the cartilage (the shaft is cut by the field of view
at a different height each visit). Both visits' femoral bone surfaces are sampled sub-voxel (marching cubes on a
lightly smoothed bone mask, or the measured bone-interface points when no label map is at hand) and aligned by
trimmed point-to-plane ICP from a centroid start. Point-to-plane on a dense target converges in a few iterations,
is exact for a rigid shape up to the sampling error (which averages over ~10^4 points), needs no image intensity and
costs well under a second; intensity registration (SimpleITK) would add cost and scanner dependence for no accuracy
on label maps. Knee repositioning of up to 10 deg / 10 mm is inside the capture range; a residual that stays high
triggers a small multi-start over rotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..core import LabelVolume, Structure

#: smoothing of the binary bone mask before meshing (voxels): removes most of the staircase, keeps the shape
SURFACE_SIGMA_VOX = 0.7
#: bone surface kept around the cartilage (mm): the moving set tighter than the target, so every moving point has
#: its counterpart in the target even after repositioning
MOVING_MARGIN_MM = 6.0
TARGET_MARGIN_MM = 16.0
MAX_POINTS = 40_000


@dataclass
class RigidTransform:
    """4x4 map from follow-up RAS mm to baseline RAS mm, with fit diagnostics."""

    matrix: np.ndarray
    rms_mm: float = float("nan")
    n_points: int = 0
    iterations: int = 0
    method: str = "identity"
    notes: list[str] = field(default_factory=list)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) follow-up points -> baseline space."""
        return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """(N, 3) follow-up directions -> baseline space."""
        return vectors @ self.matrix[:3, :3].T

    @property
    def rotation_deg(self) -> float:
        """Rotation angle (deg)."""
        return float(np.degrees(Rotation.from_matrix(self.matrix[:3, :3]).magnitude()))

    @property
    def translation_mm(self) -> float:
        """Length of the translation (mm)."""
        return float(np.linalg.norm(self.matrix[:3, 3]))

    def describe(self) -> dict:
        """Plain description for provenance files."""
        return {"method": self.method, "matrix_followup_to_baseline_ras": self.matrix.round(6).tolist(),
                "rotation_deg": round(self.rotation_deg, 4), "translation_mm": round(self.translation_mm, 4),
                "rms_residual_mm": round(self.rms_mm, 4), "n_points": self.n_points, "iterations": self.iterations,
                "notes": list(self.notes)}


def bone_surface(labels: LabelVolume, *, near: np.ndarray, structure: Structure = Structure.FEMUR,
                 margin_mm: float = TARGET_MARGIN_MM, max_points: int = MAX_POINTS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel bone surface points (RAS mm) and outward unit normals within ``margin_mm`` of ``near`` points.

    Surface voxels on the grid border are left out: the field of view cuts the bone there, which is not anatomy.
    """
    from skimage.measure import marching_cubes

    spacing = labels.spacing
    if len(near) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    ijk_near = labels.world_to_index(near)
    pad = np.ceil(margin_mm / spacing).astype(int) + 2
    lo = np.maximum(np.floor(ijk_near.min(axis=0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(ijk_near.max(axis=0)).astype(int) + pad + 1, np.array(labels.spatial_shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    bone = labels.array[box] == int(structure)
    if not bone.any():
        return np.zeros((0, 3)), np.zeros((0, 3))
    field_ = ndimage.gaussian_filter(bone.astype(np.float32), SURFACE_SIGMA_VOX, mode="nearest")
    verts, _, _, _ = marching_cubes(field_, 0.5, allow_degenerate=False)
    # gradient of the field -> outward normal in world space (the field decreases outwards)
    grads = np.stack(np.gradient(field_), axis=-1)
    cells = np.clip(np.rint(verts).astype(int), 0, np.array(field_.shape) - 1)
    g = grads[tuple(cells.T)]
    jinv = np.linalg.inv(labels.affine[:3, :3])
    normals = -(g @ jinv)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    ijk = verts + lo
    shape = np.array(labels.spatial_shape)
    inside = np.all((ijk > 1.5) & (ijk < shape - 2.5), axis=1)
    world = labels.index_to_world(ijk[inside])
    normals = normals[inside]
    dist, _ = cKDTree(near).query(world, distance_upper_bound=margin_mm)
    keep = np.isfinite(dist)
    world, normals = world[keep], normals[keep]
    if len(world) > max_points:
        pick = np.random.default_rng(0).choice(len(world), max_points, replace=False)
        pick.sort()
        world, normals = world[pick], normals[pick]
    return world, normals


def estimate_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """Unit normals of a surface point cloud from the smallest principal axis of each point's neighbourhood
    (the sign is arbitrary: point-to-plane residuals do not need it)."""
    k = min(k, len(points))
    _, idx = cKDTree(points).query(points, k=k)
    nb = points[idx] - points[idx].mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, :, 0]


def _point_to_plane(source: np.ndarray, target: np.ndarray, target_normals: np.ndarray, start: np.ndarray, *,
                    iterations: int = 60, tol: float = 1e-6) -> tuple[np.ndarray, float, int, int]:
    """Trimmed point-to-plane ICP; returns (matrix, rms residual mm, points used, iterations)."""
    tree = cKDTree(target)
    matrix = start.copy()
    cut = 8.0
    rms, used, done = float("nan"), 0, 0
    for it in range(1, iterations + 1):
        done = it
        moved = source @ matrix[:3, :3].T + matrix[:3, 3]
        dist, idx = tree.query(moved, distance_upper_bound=cut)
        ok = np.isfinite(dist)
        if ok.sum() < 50:
            break
        p, q, n = moved[ok], target[idx[ok]], target_normals[idx[ok]]
        r = np.einsum("ij,ij->i", p - q, n)
        # trimming: residuals far beyond the bulk are other surfaces (or the other side of a thin bone)
        scale = 1.4826 * float(np.median(np.abs(r))) + 1e-3
        good = np.abs(r) < max(3.0 * scale, 0.05)
        p, n, r = p[good], n[good], r[good]
        centre = p.mean(axis=0)
        a = np.hstack([np.cross(p - centre, n), n])
        x, *_ = np.linalg.lstsq(a, -r, rcond=None)
        step = np.eye(4)
        step[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
        step[:3, 3] = centre + x[3:] - step[:3, :3] @ centre
        matrix = step @ matrix
        rms, used = float(np.sqrt(np.mean(r**2))), int(good.sum())
        cut = max(1.5, min(cut, 6.0 * scale + 0.5))
        if np.linalg.norm(x[:3]) < tol and np.linalg.norm(x[3:]) < tol * 100:
            break
    return matrix, rms, used, done


def register_femur(baseline, followup, *, multi_start_rms_mm: float = 0.5) -> RigidTransform:
    """Rigid transform taking the follow-up knee (``KneeVisit``) onto the baseline, from the femoral bone surface.

    The target is the baseline femoral bone surface (from the label map when available, else the measured femoral
    interface points); the moving set is the follow-up surface within a few mm of its femoral cartilage.
    """
    notes = []
    b_pts, f_pts = baseline.femoral.points, followup.femoral.points
    if baseline.femur_surface is not None and len(baseline.femur_surface) > 100:
        target, normals = baseline.femur_surface, baseline.femur_normals
        method = "point-to-plane ICP on the femoral bone surface (label maps)"
    else:
        target = b_pts[np.isfinite(b_pts).all(axis=1)]
        normals = baseline.femoral.normals if baseline.femoral.normals is not None else estimate_normals(target)
        method = "point-to-plane ICP on the femoral bone-interface points"
        notes.append("baseline label map not available: registered on the femoral bone-interface points only")
    if followup.femur_surface is not None and len(followup.femur_surface) > 100:
        dist, _ = cKDTree(f_pts).query(followup.femur_surface, distance_upper_bound=MOVING_MARGIN_MM)
        source = followup.femur_surface[np.isfinite(dist)]
    else:
        source = f_pts[np.isfinite(f_pts).all(axis=1)]
        if "interface" not in method:
            notes.append("follow-up label map not available: moving set is its femoral bone-interface points")
    if len(source) > MAX_POINTS // 2:
        source = source[np.random.default_rng(1).choice(len(source), MAX_POINTS // 2, replace=False)]
    start = np.eye(4)
    start[:3, 3] = b_pts.mean(axis=0) - f_pts.mean(axis=0)
    best = _point_to_plane(source, target, normals, start)
    if not best[1] <= multi_start_rms_mm:
        notes.append(f"residual {best[1]:.2f} mm after the centroid start: multi-start over rotations")
        centre = f_pts.mean(axis=0)
        for axis in np.eye(3):
            for angle in (-15.0, 15.0):
                rot = np.eye(4)
                rot[:3, :3] = Rotation.from_rotvec(np.deg2rad(angle) * axis).as_matrix()
                rot[:3, 3] = centre - rot[:3, :3] @ centre
                trial = _point_to_plane(source, target, normals, start @ rot)
                if trial[1] < best[1]:
                    best = trial
    matrix, rms, used, iterations = best
    if not rms <= 1.0:
        notes.append(f"registration residual {rms:.2f} mm is high: check that both visits show the same knee")
    return RigidTransform(matrix, rms, used, iterations, method, notes)
