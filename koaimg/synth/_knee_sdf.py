"""Implicit bone surfaces of the procedural knee (numba): signed-distance-like functions, gradients, foot points.

Each bone is a smooth union of exact signed-distance primitives (tori, capsules, rounded boxes, spheres) described by
a small parameter array, so one compiled function serves every random anatomy. The polynomial smooth-minimum keeps the
function 1-Lipschitz, which makes block skipping safe, and gives smooth concave blends whose radius is larger than any
cartilage thickness, so the normal-offset cartilage shell is well defined (every cartilage point has one foot point).

Primitive rows in a bone's parameter array (float64, shape (n, 12)):
``[kind, blend_k, a0..a9]`` with kind 1 torus (axis x): cx cy cz R r; 2 capsule: ax ay az bx by bz r; 3 rounded box:
cx cy cz hx hy hz r; 4 sphere: cx cy cz r. ``blend_k`` is the smooth-union radius with everything before it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._numba import CACHE, FASTMATH

TORUS_X, CAPSULE, ROUND_BOX, SPHERE = 1, 2, 3, 4


@njit(cache=CACHE, fastmath=FASTMATH)
def _smin(a: float, b: float, k: float) -> float:
    if k <= 0.0:
        return min(a, b)
    h = max(k - abs(a - b), 0.0) / k
    return min(a, b) - h * h * k * 0.25


@njit(cache=CACHE, fastmath=FASTMATH)
def _primitive(row: np.ndarray, x: float, y: float, z: float) -> float:
    kind = int(row[0])
    if kind == TORUS_X:
        qy = math.sqrt((y - row[3]) ** 2 + (z - row[4]) ** 2) - row[5]
        qx = x - row[2]
        return math.sqrt(qy * qy + qx * qx) - row[6]
    if kind == CAPSULE:
        ax, ay, az, bx, by, bz = row[2], row[3], row[4], row[5], row[6], row[7]
        px, py, pz = x - ax, y - ay, z - az
        dx, dy, dz = bx - ax, by - ay, bz - az
        t = (px * dx + py * dy + pz * dz) / (dx * dx + dy * dy + dz * dz)
        t = min(max(t, 0.0), 1.0)
        ex, ey, ez = px - t * dx, py - t * dy, pz - t * dz
        return math.sqrt(ex * ex + ey * ey + ez * ez) - row[8]
    if kind == ROUND_BOX:
        qx = abs(x - row[2]) - row[5]
        qy = abs(y - row[3]) - row[6]
        qz = abs(z - row[4]) - row[7]
        ox, oy, oz = max(qx, 0.0), max(qy, 0.0), max(qz, 0.0)
        return math.sqrt(ox * ox + oy * oy + oz * oz) + min(max(qx, max(qy, qz)), 0.0) - row[8]
    # sphere
    return math.sqrt((x - row[2]) ** 2 + (y - row[3]) ** 2 + (z - row[4]) ** 2) - row[5]


@njit(cache=CACHE, fastmath=FASTMATH)
def bone_sdf(prims: np.ndarray, x: float, y: float, z: float) -> float:
    """Signed-distance-like value of one bone at a point (negative inside, mm)."""
    d = _primitive(prims[0], x, y, z)
    for i in range(1, prims.shape[0]):
        d = _smin(d, _primitive(prims[i], x, y, z), prims[i, 1])
    return d


@njit(cache=CACHE, fastmath=FASTMATH)
def _primitive_eval(row: np.ndarray, x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """Value and analytic gradient of one primitive."""
    kind = int(row[0])
    if kind == TORUS_X:
        dy, dz = y - row[3], z - row[4]
        rho = math.sqrt(dy * dy + dz * dz) + 1e-300
        qy = rho - row[5]
        qx = x - row[2]
        q = math.sqrt(qy * qy + qx * qx) + 1e-300
        return q - row[6], qx / q, qy / q * dy / rho, qy / q * dz / rho
    if kind == CAPSULE:
        ax, ay, az, bx, by, bz = row[2], row[3], row[4], row[5], row[6], row[7]
        px, py, pz = x - ax, y - ay, z - az
        dx, dy, dz = bx - ax, by - ay, bz - az
        t = (px * dx + py * dy + pz * dz) / (dx * dx + dy * dy + dz * dz)
        t = min(max(t, 0.0), 1.0)
        ex, ey, ez = px - t * dx, py - t * dy, pz - t * dz
        e = math.sqrt(ex * ex + ey * ey + ez * ez) + 1e-300
        return e - row[8], ex / e, ey / e, ez / e
    if kind == ROUND_BOX:
        sx, sy, sz = x - row[2], y - row[3], z - row[4]
        qx, qy, qz = abs(sx) - row[5], abs(sy) - row[6], abs(sz) - row[7]
        ox, oy, oz = max(qx, 0.0), max(qy, 0.0), max(qz, 0.0)
        outside = math.sqrt(ox * ox + oy * oy + oz * oz)
        inner = min(max(qx, max(qy, qz)), 0.0)
        if outside > 0.0:
            gx = ox / outside * (1.0 if sx >= 0 else -1.0)
            gy = oy / outside * (1.0 if sy >= 0 else -1.0)
            gz = oz / outside * (1.0 if sz >= 0 else -1.0)
        elif qx >= qy and qx >= qz:
            gx, gy, gz = (1.0 if sx >= 0 else -1.0), 0.0, 0.0
        elif qy >= qz:
            gx, gy, gz = 0.0, (1.0 if sy >= 0 else -1.0), 0.0
        else:
            gx, gy, gz = 0.0, 0.0, (1.0 if sz >= 0 else -1.0)
        return outside + inner - row[8], gx, gy, gz
    dx, dy, dz = x - row[2], y - row[3], z - row[4]
    r = math.sqrt(dx * dx + dy * dy + dz * dz) + 1e-300
    return r - row[5], dx / r, dy / r, dz / r


@njit(cache=CACHE, fastmath=FASTMATH)
def bone_eval(prims: np.ndarray, x: float, y: float, z: float) -> tuple[float, float, float, float]:
    """``bone_sdf`` and its analytic gradient (smooth-union weights applied to the primitive gradients)."""
    d, gx, gy, gz = _primitive_eval(prims[0], x, y, z)
    for i in range(1, prims.shape[0]):
        b, bx, by, bz = _primitive_eval(prims[i], x, y, z)
        k = prims[i, 1]
        if k <= 0.0 or abs(d - b) >= k:
            if b < d:
                d, gx, gy, gz = b, bx, by, bz
            continue
        h = (k - abs(d - b)) / k
        sign = 1.0 if d > b else -1.0
        wa = (1.0 if d < b else 0.0) + 0.5 * h * sign
        wb = 1.0 - wa
        d = min(d, b) - h * h * k * 0.25
        gx, gy, gz = wa * gx + wb * bx, wa * gy + wb * by, wa * gz + wb * bz
    return d, gx, gy, gz


@njit(cache=CACHE, fastmath=FASTMATH)
def foot_point(prims: np.ndarray, x: float, y: float, z: float, out: np.ndarray) -> None:
    """Orthogonal foot point of (x, y, z) on the bone's zero level set.

    Writes ``out[:] = (px, py, pz, nx, ny, nz, t, converged)``: the foot point, the outward unit normal there and the
    signed distance along it (x = p + t n). Alternates Newton steps onto the surface with projection of x onto the
    current tangent plane (Hartmann's method); converges for points within the surface's reach.
    """
    px, py, pz = x, y, z
    converged = 0.0
    nx = ny = nz = 0.0
    for _ in range(80):
        for _ in range(3):  # Newton onto the surface along the gradient
            f, gx, gy, gz = bone_eval(prims, px, py, pz)
            g2 = gx * gx + gy * gy + gz * gz
            if g2 < 1e-12:
                break
            px -= f * gx / g2
            py -= f * gy / g2
            pz -= f * gz / g2
            if abs(f) < 1e-10:
                break
        f, gx, gy, gz = bone_eval(prims, px, py, pz)
        norm = math.sqrt(gx * gx + gy * gy + gz * gz)
        if norm < 1e-12:
            break
        nx, ny, nz = gx / norm, gy / norm, gz / norm
        dx, dy, dz = x - px, y - py, z - pz
        t = dx * nx + dy * ny + dz * nz
        # tangential residual of x - p: zero at the orthogonal foot point
        rx, ry, rz = dx - t * nx, dy - t * ny, dz - t * nz
        if rx * rx + ry * ry + rz * rz < 1e-14 and abs(f) < 1e-9:
            converged = 1.0
            break
        px, py, pz = px + rx, py + ry, pz + rz
    dx, dy, dz = x - px, y - py, z - pz
    out[0], out[1], out[2] = px, py, pz
    out[3], out[4], out[5] = nx, ny, nz
    out[6] = dx * nx + dy * ny + dz * nz
    out[7] = converged


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def foot_points(prims: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Foot points of many points: (N, 3) -> (N, 8) rows as in ``foot_point``."""
    out = np.empty((points.shape[0], 8))
    for i in prange(points.shape[0]):
        foot_point(prims, points[i, 0], points[i, 1], points[i, 2], out[i])
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def sdf_on_points(prims: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``bone_sdf`` at (N, 3) points."""
    out = np.empty(points.shape[0])
    for i in prange(points.shape[0]):
        out[i] = bone_sdf(prims, points[i, 0], points[i, 1], points[i, 2])
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def sdf_on_grid(prims: np.ndarray, to_local: np.ndarray, shape: tuple[int, int, int], block: int,
                skip_beyond: float) -> np.ndarray:
    """``bone_sdf`` at every voxel centre of a grid, skipping blocks far from the surface.

    ``to_local`` (4x4) maps voxel indices to the bone's local frame (mm). Blocks of ``block``^3 voxels whose centre is
    further than ``skip_beyond`` + the block's half diagonal from the surface get the centre value everywhere (the
    function is 1-Lipschitz, so their sign and "far" status are certain).
    """
    ni, nj, nk = shape
    out = np.empty((ni, nj, nk), dtype=np.float32)
    nbi = (ni + block - 1) // block
    nbj = (nj + block - 1) // block
    nbk = (nk + block - 1) // block
    col_len = np.sqrt((to_local[:3, :3] ** 2).sum(axis=0))
    half_diag = 0.5 * block * math.sqrt(col_len[0] ** 2 + col_len[1] ** 2 + col_len[2] ** 2)
    for b in prange(nbi * nbj * nbk):
        bi = b // (nbj * nbk)
        bj = (b // nbk) % nbj
        bk = b % nbk
        i0, j0, k0 = bi * block, bj * block, bk * block
        i1, j1, k1 = min(i0 + block, ni), min(j0 + block, nj), min(k0 + block, nk)
        ci, cj, ck = 0.5 * (i0 + i1 - 1), 0.5 * (j0 + j1 - 1), 0.5 * (k0 + k1 - 1)
        x = to_local[0, 0] * ci + to_local[0, 1] * cj + to_local[0, 2] * ck + to_local[0, 3]
        y = to_local[1, 0] * ci + to_local[1, 1] * cj + to_local[1, 2] * ck + to_local[1, 3]
        z = to_local[2, 0] * ci + to_local[2, 1] * cj + to_local[2, 2] * ck + to_local[2, 3]
        d = bone_sdf(prims, x, y, z)
        if abs(d) > skip_beyond + half_diag:
            for i in range(i0, i1):
                for j in range(j0, j1):
                    for k in range(k0, k1):
                        out[i, j, k] = d
            continue
        for i in range(i0, i1):
            for j in range(j0, j1):
                for k in range(k0, k1):
                    x = to_local[0, 0] * i + to_local[0, 1] * j + to_local[0, 2] * k + to_local[0, 3]
                    y = to_local[1, 0] * i + to_local[1, 1] * j + to_local[1, 2] * k + to_local[1, 3]
                    z = to_local[2, 0] * i + to_local[2, 1] * j + to_local[2, 2] * k + to_local[2, 3]
                    out[i, j, k] = bone_sdf(prims, x, y, z)
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def gaussian_bumps(points: np.ndarray, centres: np.ndarray, amplitudes: np.ndarray, width: float) -> np.ndarray:
    """Sum of isotropic Gaussian bumps at (N, 3) points: a smooth random thickness variation (mm)."""
    out = np.zeros(points.shape[0])
    inv = 1.0 / (2.0 * width * width)
    for i in prange(points.shape[0]):
        acc = 0.0
        for c in range(centres.shape[0]):
            d2 = ((points[i, 0] - centres[c, 0]) ** 2 + (points[i, 1] - centres[c, 1]) ** 2
                  + (points[i, 2] - centres[c, 2]) ** 2)
            acc += amplitudes[c] * math.exp(-d2 * inv)
        out[i] = acc
    return out
