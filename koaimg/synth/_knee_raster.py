"""Partial-volume rasterisation of bones and cartilage shells into a voxel grid (numba kernels).

Only voxels near a bone surface are sub-sampled. For each, the foot point, normal and signed distance of the voxel
centre are exact; inside the voxel the distance is extended linearly along the normal and the thickness linearly along
the plate (curvature error < 0.005 mm for voxels under 1 mm), so one foot point per voxel gives accurate fractions.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._numba import CACHE, FASTMATH


def subsample_offsets(spacing: np.ndarray, *, target_mm: float = 0.09, max_per_axis: int = 8) -> np.ndarray:
    """Regular sub-voxel sample offsets (voxel units, centred on 0): about ``target_mm`` apart per axis."""
    counts = [int(min(max_per_axis, max(2, np.ceil(s / target_mm)))) for s in spacing]
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in counts]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return np.ascontiguousarray(grid)


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def shell_fractions(ijk: np.ndarray, to_local: np.ndarray, feet: np.ndarray, thickness: np.ndarray,
                    grad_h: np.ndarray, in_plate: np.ndarray, offsets: np.ndarray, film_mm: float,
                    cortex_mm: float) -> np.ndarray:
    """Fractions of (marrow, cortex, cartilage, fluid film) in each listed voxel; cortex + marrow = bone.

    ijk (N, 3) voxel indices; to_local (4, 4) voxel -> bone frame; feet (N, 8) foot-point rows of the voxel centres;
    thickness (N,) h at the foot point; grad_h (N, 3) its gradient along the plate (bone frame, mm/mm); in_plate (N,)
    bool; offsets (S, 3) sub-voxel offsets in voxel units. Returns (N, 4) float32.
    """
    n = ijk.shape[0]
    out = np.zeros((n, 4), dtype=np.float32)
    m = to_local[:3, :3]
    inv_s = 1.0 / offsets.shape[0]
    for v in prange(n):
        nx, ny, nz, t = feet[v, 3], feet[v, 4], feet[v, 5], feet[v, 6]
        h = thickness[v]
        gx, gy, gz = grad_h[v, 0], grad_h[v, 1], grad_h[v, 2]
        plate = in_plate[v]
        bone = 0
        cortex = 0
        cart = 0
        fluid = 0
        for s in range(offsets.shape[0]):
            ox, oy, oz = offsets[s, 0], offsets[s, 1], offsets[s, 2]
            dx = m[0, 0] * ox + m[0, 1] * oy + m[0, 2] * oz
            dy = m[1, 0] * ox + m[1, 1] * oy + m[1, 2] * oz
            dz = m[2, 0] * ox + m[2, 1] * oy + m[2, 2] * oz
            ts = t + nx * dx + ny * dy + nz * dz
            if ts < 0.0:
                if ts > -cortex_mm:
                    cortex += 1
                else:
                    bone += 1
            elif plate:
                hs = h + gx * dx + gy * dy + gz * dz
                if ts <= hs:
                    cart += 1
                elif ts <= hs + film_mm:
                    fluid += 1
        out[v, 0] = bone * inv_s
        out[v, 1] = cortex * inv_s
        out[v, 2] = cart * inv_s
        out[v, 3] = fluid * inv_s
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def voxel_centres(ijk: np.ndarray, to_local: np.ndarray) -> np.ndarray:
    """(N, 3) voxel indices -> (N, 3) positions in a local frame."""
    out = np.empty((ijk.shape[0], 3))
    for v in prange(ijk.shape[0]):
        for a in range(3):
            out[v, a] = (to_local[a, 0] * ijk[v, 0] + to_local[a, 1] * ijk[v, 1] + to_local[a, 2] * ijk[v, 2]
                         + to_local[a, 3])
    return out


@njit(cache=CACHE, fastmath=FASTMATH)
def _capsule_dist(x: float, y: float, z: float, seg: np.ndarray) -> float:
    ax, ay, az, bx, by, bz, r = seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6]
    px, py, pz = x - ax, y - ay, z - az
    dx, dy, dz = bx - ax, by - ay, bz - az
    t = (px * dx + py * dy + pz * dz) / (dx * dx + dy * dy + dz * dz)
    t = min(max(t, 0.0), 1.0)
    ex, ey, ez = px - t * dx, py - t * dy, pz - t * dz
    return np.sqrt(ex * ex + ey * ey + ez * ez) - r


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def soft_tissue(shape: tuple[int, int, int], to_knee: np.ndarray, to_tibia: np.ndarray, body: np.ndarray,
                fat_pads: np.ndarray, tendons: np.ndarray, fluid: np.ndarray, menisci: np.ndarray) -> np.ndarray:
    """Tissue class at each voxel centre for everything that is not bone or cartilage (uint8 ``Tissue`` values).

    body: (cx, cy, radius, fat_mm) of the leg cylinder along the knee z axis; fat_pads, tendons, fluid: capsule rows
    (ax ay az bx by bz r) in the knee frame; menisci: rows (cx, cy, ax, ay, inner, outer, height) of the meniscal
    wedges in the tibial frame (normalised elliptic radius between inner and outer, wedge height above the plateau).
    Tissue codes follow ``koaimg.synth.Tissue``: 0 air, 1 fat, 2 muscle, 3 fluid, 6 meniscus, 7 tendon.
    """
    ni, nj, nk = shape
    out = np.empty((ni, nj, nk), dtype=np.uint8)
    for i in prange(ni):
        for j in range(nj):
            for k in range(nk):
                x = to_knee[0, 0] * i + to_knee[0, 1] * j + to_knee[0, 2] * k + to_knee[0, 3]
                y = to_knee[1, 0] * i + to_knee[1, 1] * j + to_knee[1, 2] * k + to_knee[1, 3]
                z = to_knee[2, 0] * i + to_knee[2, 1] * j + to_knee[2, 2] * k + to_knee[2, 3]
                radial = np.sqrt((x - body[0]) ** 2 + (y - body[1]) ** 2)
                if radial > body[2]:
                    out[i, j, k] = 0
                    continue
                cls = 2 if radial < body[2] - body[3] else 1
                for r in range(fat_pads.shape[0]):
                    if _capsule_dist(x, y, z, fat_pads[r]) < 0.0:
                        cls = 1
                for r in range(fluid.shape[0]):
                    if _capsule_dist(x, y, z, fluid[r]) < 0.0:
                        cls = 3
                for r in range(tendons.shape[0]):
                    if _capsule_dist(x, y, z, tendons[r]) < 0.0:
                        cls = 7
                tx = to_tibia[0, 0] * i + to_tibia[0, 1] * j + to_tibia[0, 2] * k + to_tibia[0, 3]
                ty = to_tibia[1, 0] * i + to_tibia[1, 1] * j + to_tibia[1, 2] * k + to_tibia[1, 3]
                tz = to_tibia[2, 0] * i + to_tibia[2, 1] * j + to_tibia[2, 2] * k + to_tibia[2, 3]
                for r in range(menisci.shape[0]):
                    ex = (tx - menisci[r, 0]) / menisci[r, 2]
                    ey = (ty - menisci[r, 1]) / menisci[r, 3]
                    rr = np.sqrt(ex * ex + ey * ey)
                    if menisci[r, 4] < rr < menisci[r, 5]:
                        top = menisci[r, 6] * (rr - menisci[r, 4]) / (menisci[r, 5] - menisci[r, 4])
                        if 0.0 < tz < top:
                            cls = 6
                out[i, j, k] = cls
    return out
