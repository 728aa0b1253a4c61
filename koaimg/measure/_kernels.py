"""Hot loops of the thickness measurement, written once as scalar maths and compiled for CPU (numba, parallel).

The scalar functions (trilinear sampling, projection onto an iso-surface, marching along a normal) are plain Python
so the same source is compiled by ``numba.njit`` here and by ``numba.cuda.jit(device=True)`` in ``_cuda.py``.
Kernels never validate or raise: the public wrappers in ``_thickness.py`` check shapes, dtypes and spacing.

Coordinates: voxel index space (i, j, k) of the field; ``jac`` is the 3x3 voxel->mm matrix (affine[:3, :3]) and
``jinv`` its inverse, so distances and normals are physical (anisotropic voxels are the normal case).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._numba import CACHE, FASTMATH


def trilinear_py(field, x, y, z):
    """Trilinear sample of a 3D field at a fractional index (clamped to the grid)."""
    ni, nj, nk = field.shape
    x = min(max(x, 0.0), ni - 1.000001)
    y = min(max(y, 0.0), nj - 1.000001)
    z = min(max(z, 0.0), nk - 1.000001)
    i0, j0, k0 = int(x), int(y), int(z)
    fx, fy, fz = x - i0, y - j0, z - k0
    c000 = field[i0, j0, k0]
    c100 = field[i0 + 1, j0, k0]
    c010 = field[i0, j0 + 1, k0]
    c110 = field[i0 + 1, j0 + 1, k0]
    c001 = field[i0, j0, k0 + 1]
    c101 = field[i0 + 1, j0, k0 + 1]
    c011 = field[i0, j0 + 1, k0 + 1]
    c111 = field[i0 + 1, j0 + 1, k0 + 1]
    c00 = c000 + (c100 - c000) * fx
    c10 = c010 + (c110 - c010) * fx
    c01 = c001 + (c101 - c001) * fx
    c11 = c011 + (c111 - c011) * fx
    c0 = c00 + (c10 - c00) * fy
    c1 = c01 + (c11 - c01) * fy
    return c0 + (c1 - c0) * fz


def world_gradient_py(field, x, y, z, jinv, out):
    """Gradient of the trilinear field in mm^-1 (central differences of 0.5 voxel), written to ``out``."""
    h = 0.5
    gi = (trilinear(field, x + h, y, z) - trilinear(field, x - h, y, z)) / (2 * h)
    gj = (trilinear(field, x, y + h, z) - trilinear(field, x, y - h, z)) / (2 * h)
    gk = (trilinear(field, x, y, z + h) - trilinear(field, x, y, z - h)) / (2 * h)
    # d f / d world = J^-T d f / d index
    for a in range(3):
        out[a] = jinv[0, a] * gi + jinv[1, a] * gj + jinv[2, a] * gk


def project_to_level_py(field, level, direction_field, x, y, z, jinv, grad, max_mm, step_mm, out):
    """Point where ``field`` crosses ``level`` on the line through (x, y, z) along the gradient of the smooth
    ``direction_field``; ``out`` = (i, j, k, ok). Searches outwards from the seed in both directions (nearest
    crossing wins) with linear interpolation between samples: robust on sharp partial-volume ramps where Newton
    steps overshoot.
    """
    world_gradient(direction_field, x, y, z, jinv, grad)
    norm = math.sqrt(grad[0] * grad[0] + grad[1] * grad[1] + grad[2] * grad[2])
    out[0], out[1], out[2], out[3] = x, y, z, 0.0
    if norm < 1e-12:
        return
    nx, ny, nz = grad[0] / norm, grad[1] / norm, grad[2] / norm
    di = jinv[0, 0] * nx + jinv[0, 1] * ny + jinv[0, 2] * nz
    dj = jinv[1, 0] * nx + jinv[1, 1] * ny + jinv[1, 2] * nz
    dk = jinv[2, 0] * nx + jinv[2, 1] * ny + jinv[2, 2] * nz
    f0 = trilinear(field, x, y, z) - level
    if f0 == 0.0:
        out[3] = 1.0
        return
    t = 0.0
    prev_p = f0
    prev_m = f0
    while t < max_mm:
        t_next = t + step_mm
        for sign in (1.0, -1.0):
            cur = trilinear(field, x + sign * di * t_next, y + sign * dj * t_next, z + sign * dk * t_next) - level
            prev = prev_p if sign > 0 else prev_m
            if (cur < 0.0) != (prev < 0.0):
                s = sign * (t + step_mm * prev / (prev - cur))
                out[0], out[1], out[2], out[3] = x + di * s, y + dj * s, z + dk * s, 1.0
                return
            if sign > 0:
                prev_p = cur
            else:
                prev_m = cur
        t = t_next


def march_py(field, level, x, y, z, nx, ny, nz, jinv, step_mm, max_mm):
    """Distance (mm) from (x, y, z) along the world direction n until ``field`` drops below ``level``.

    Linear interpolation between the last two samples locates the crossing; returns -1 when none is found
    within ``max_mm``.
    """
    di = jinv[0, 0] * nx + jinv[0, 1] * ny + jinv[0, 2] * nz
    dj = jinv[1, 0] * nx + jinv[1, 1] * ny + jinv[1, 2] * nz
    dk = jinv[2, 0] * nx + jinv[2, 1] * ny + jinv[2, 2] * nz
    prev = trilinear(field, x, y, z) - level
    if prev < 0.0:
        return 0.0
    t = 0.0
    while t < max_mm:
        t_next = t + step_mm
        cur = trilinear(field, x + di * t_next, y + dj * t_next, z + dk * t_next) - level
        if cur < 0.0:
            return t + step_mm * prev / (prev - cur)
        prev = cur
        t = t_next
    return -1.0


trilinear = njit(cache=CACHE, fastmath=FASTMATH)(trilinear_py)
world_gradient = njit(cache=CACHE, fastmath=FASTMATH)(world_gradient_py)
project_to_level = njit(cache=CACHE, fastmath=FASTMATH)(project_to_level_py)
march = njit(cache=CACHE, fastmath=FASTMATH)(march_py)


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def normal_thickness_cpu(bone: np.ndarray, union: np.ndarray, seeds: np.ndarray, jac: np.ndarray,
                         jinv: np.ndarray, normal_field: np.ndarray, step_mm: float, max_mm: float,
                         out: np.ndarray) -> None:
    """Thickness along the bone normal from each seed voxel (CPU, one seed per iteration).

    bone, union : (I, J, K) float32 fields whose 0.5 level is the bone surface and the outer surface of
    bone + cartilage; normal_field : field whose gradient gives the (smoother) bone normal; seeds (N, 3) float64
    voxel indices near the bone surface. ``out`` (N, 8) receives: surface point (i, j, k), unit outward normal
    (x, y, z) in mm space, thickness mm (-1 when the ray finds no articular surface), projection ok (1/0).
    """
    for s in prange(seeds.shape[0]):
        grad = np.empty(3)
        proj = np.empty(4)
        project_to_level(bone, 0.5, normal_field, seeds[s, 0], seeds[s, 1], seeds[s, 2], jinv, grad, 2.0,
                         step_mm, proj)
        world_gradient(normal_field, proj[0], proj[1], proj[2], jinv, grad)
        norm = math.sqrt(grad[0] * grad[0] + grad[1] * grad[1] + grad[2] * grad[2])
        if norm < 1e-12 or proj[3] == 0.0:
            out[s, 0], out[s, 1], out[s, 2] = proj[0], proj[1], proj[2]
            out[s, 3] = out[s, 4] = out[s, 5] = 0.0
            out[s, 6] = -1.0
            out[s, 7] = 0.0
            continue
        # the bone field decreases outwards: the outward normal is minus its gradient
        nx, ny, nz = -grad[0] / norm, -grad[1] / norm, -grad[2] / norm
        out[s, 0], out[s, 1], out[s, 2] = proj[0], proj[1], proj[2]
        out[s, 3], out[s, 4], out[s, 5] = nx, ny, nz
        out[s, 6] = march(union, 0.5, proj[0], proj[1], proj[2], nx, ny, nz, jinv, step_mm, max_mm)
        out[s, 7] = 1.0
