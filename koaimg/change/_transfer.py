"""Follow-up thickness carried onto the baseline bone-interface points after registration.

Each baseline point receives the Gaussian-weighted mean thickness of the registered follow-up points of the same
plate within ``radius`` (weights exp(-d^2 / 2 sigma^2), sigma = half the coarsest voxel size, radius = the coarsest
voxel size: about one follow-up point per voxel, so every point has neighbours and the values are not blurred
beyond the measurement's own smoothing). Points whose normals disagree (the other side of a thin bone or a notch
wall) are not mixed. A baseline point with no follow-up point in reach gets NaN and is counted, never filled.

Values the measurement imputed (a ray that left through a plate's side wall, filled from its neighbours) are neither
given nor taken: such baseline points get NaN and such follow-up points are not used. At a plate rim the fill is
biased towards the thicker interior, by a different amount on each visit's grid, so it enters Δ when the visits are
imaged at different angles (``pipelines/validate_change.py``: tibial bias -0.0102 mm with the fills compared,
-0.0089 mm without).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from ._data import PlatePoints
from ._register import RigidTransform


def transfer_thickness(baseline: PlatePoints, followup: PlatePoints, transform: RigidTransform, *,
                       radius_mm: float, sigma_mm: float | None = None, min_normal_cos: float = 0.3) -> np.ndarray:
    """(N_baseline,) follow-up thickness at each baseline point (NaN where none is in reach)."""
    sigma = 0.5 * radius_mm if sigma_mm is None else sigma_mm
    ok = np.isfinite(followup.thickness) & np.isfinite(followup.points).all(axis=1) & ~followup.imputed
    moved = transform.apply(followup.points[ok])
    values = followup.thickness[ok]
    out = np.full(len(baseline.points), np.nan)
    if len(moved) == 0 or len(baseline.points) == 0:
        return out
    pairs = cKDTree(baseline.points).sparse_distance_matrix(cKDTree(moved), radius_mm, output_type="coo_matrix")
    row, col, dist = pairs.row, pairs.col, pairs.data
    # sparse_distance_matrix drops exact zeros (coincident points): add them back with distance 0
    nearest_d, nearest_i = cKDTree(moved).query(baseline.points)
    exact = nearest_d == 0
    row = np.concatenate([row, np.flatnonzero(exact)])
    col = np.concatenate([col, nearest_i[exact]])
    dist = np.concatenate([dist, np.zeros(int(exact.sum()))])
    if baseline.normals is not None and followup.normals is not None:
        fn = transform.rotate(followup.normals[ok])
        agree = np.einsum("ij,ij->i", baseline.normals[row], fn[col]) >= min_normal_cos
        row, col, dist = row[agree], col[agree], dist[agree]
    weights = np.exp(-(dist**2) / (2.0 * sigma**2))
    shape = (len(baseline.points), len(moved))
    w = coo_matrix((weights, (row, col)), shape=shape).tocsr()
    total = np.asarray(w.sum(axis=1)).ravel()
    weighted = w @ values
    has = total > 0
    out[has] = weighted[has] / total[has]
    out[baseline.imputed] = np.nan
    return out
