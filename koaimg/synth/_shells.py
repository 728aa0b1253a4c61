"""Analytic shell phantoms for validating thickness measurement (domain-specs §3.3).

A "bone" solid whose exact distance function and foot point are known in closed form carries a cartilage shell of
constant thickness h measured along the bone normal: a point x belongs to the cartilage when its foot point f on the
bone surface lies on the cartilage plate (and outside the optional full-thickness defect) and 0 <= (x - f) . n(f) <=
h. The truth at any point is therefore exact (no mesh, no tolerance), which the procedural knee cannot offer at its
blend regions; the shells isolate what the voxel grid does to a measurement: slice anisotropy (the object is tilted
relative to the 0.7 mm slice axis), curvature, thin cartilage and thickness steps (plate edges, defect walls).

Shapes, in a local frame whose z axis is the object axis (at ``tilt_deg`` 0 it is the slice axis):

``sphere``     ball of radius R, fully covered (every surface orientation at once; only the defect has a wall);
``cylinder``   infinite cylinder of radius R along z, covered on a band |z| < 12 mm (circular plate edges);
``slab``       half-space z < 0, covered on a disc of radius R (a flat plate with a circular edge);
``condyle``    torus about the local y axis (sagittal radius R, coronal radius 0.55 R, like a femoral condyle),
               covered on a patch of +-60 deg sagittally and +-45 deg coronally around its top.

The defect, when asked for, is the set of plate points within ``defect_radius_mm`` (straight-line distance) of the
plate's top point, exactly as the procedural knee defines its lesions, so the removed volume is a normal prism.
Rasterisation is by sub-voxel sampling (128 lattice samples per DESS voxel) of the exact classification, only in
voxels that can be mixed (near the bone surface, the articular surface or a thickness step); labels follow the
voxel-centre rule (an ideal binary segmentation).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy import integrate

from .._numba import CACHE, FASTMATH
from ..core import LabelVolume, Modality, Structure, Volume, VolumeMeta

KINDS = ("sphere", "cylinder", "slab", "condyle")
_CODE = {name: i for i, name in enumerate(KINDS)}
#: field of view per axis (mm) when no ``shape`` is given: holds a 25 mm shell with 4 mm cartilage at any tilt
FOV_MM = 64.0
#: half-length (mm) of the cylinder's covered band along its axis
CYLINDER_HALF_LENGTH_MM = 12.0
#: condyle coronal (tube) radius as a fraction of its sagittal radius (human femoral condyles: about 0.5-0.6)
CONDYLE_CORONAL_FRACTION = 0.55
CONDYLE_SAGITTAL_HALF_ANGLE_DEG = 60.0
CONDYLE_CORONAL_HALF_ANGLE_DEG = 45.0
#: the torus centre sits this fraction of R below the grid centre, so the covered patch is central and the bone
#: runs out of the field of view like a real femur (bare bone that leaves the crop is "beyond the plate")
CONDYLE_DROP_FRACTION = 0.8
#: sub-voxel sample spacing target (mm): 4 x 4 x 8 samples in a 0.3646 x 0.3646 x 0.7 mm voxel
SAMPLE_MM = 0.095
#: "no edge" distance (a fully covered sphere has no plate boundary)
_FAR = 1.0e9


@njit(cache=CACHE, fastmath=FASTMATH)
def _foot(kind: int, prm: np.ndarray, x: float, y: float, z: float, out: np.ndarray) -> None:
    """Exact foot point on the bone surface: ``out[:7]`` = (fx, fy, fz, nx, ny, nz, signed distance) (local mm)."""
    if kind == 0:  # sphere of radius R about the origin
        r = math.sqrt(x * x + y * y + z * z)
        if r < 1e-12:
            nx, ny, nz = 0.0, 0.0, 1.0
        else:
            nx, ny, nz = x / r, y / r, z / r
        out[0], out[1], out[2] = prm[0] * nx, prm[0] * ny, prm[0] * nz
        out[6] = r - prm[0]
    elif kind == 1:  # cylinder of radius R along z
        rho = math.sqrt(x * x + y * y)
        if rho < 1e-12:
            nx, ny, nz = 0.0, 1.0, 0.0
        else:
            nx, ny, nz = x / rho, y / rho, 0.0
        out[0], out[1], out[2] = prm[0] * nx, prm[0] * ny, z
        out[6] = rho - prm[0]
    elif kind == 2:  # half-space z < 0
        nx, ny, nz = 0.0, 0.0, 1.0
        out[0], out[1], out[2] = x, y, 0.0
        out[6] = z
    else:  # torus about y: balls of radius b swept along the circle of radius A in the x-z plane
        a, b = prm[3], prm[4]
        rho = math.sqrt(x * x + z * z)
        if rho < 1e-12:
            ux, uz = 0.0, 1.0
        else:
            ux, uz = x / rho, z / rho
        qx, qy, qz = x - a * ux, y, z - a * uz
        q = math.sqrt(qx * qx + qy * qy + qz * qz)
        if q < 1e-12:
            nx, ny, nz = ux, 0.0, uz
        else:
            nx, ny, nz = qx / q, qy / q, qz / q
        out[0], out[1], out[2] = a * ux + b * nx, b * ny, a * uz + b * nz
        out[6] = q - b
    out[3], out[4], out[5] = nx, ny, nz


@njit(cache=CACHE, fastmath=FASTMATH)
def _plate(kind: int, prm: np.ndarray, fx: float, fy: float, fz: float) -> tuple[float, float]:
    """(thickness at the foot point, surface distance to the nearest thickness step: plate edge or defect rim)."""
    if kind == 0:
        edge = -_FAR
    elif kind == 1:
        edge = abs(fz) - prm[2]
    elif kind == 2:
        edge = math.sqrt(fx * fx + fy * fy) - prm[2]
    else:
        a, b = prm[3], prm[4]
        rho = math.sqrt(fx * fx + fz * fz)
        theta = math.atan2(fx, fz)
        phi = math.atan2(fy, rho - a)
        s_theta = (a + b * math.cos(phi)) * (abs(theta) - prm[5])
        s_phi = b * (abs(phi) - prm[6])
        if s_theta <= 0.0 and s_phi <= 0.0:
            edge = max(s_theta, s_phi)
        else:
            edge = math.sqrt(max(s_theta, 0.0) ** 2 + max(s_phi, 0.0) ** 2)
    covered = edge < 0.0
    distance = abs(edge)
    if prm[7] > 0.0:
        chord = math.sqrt((fx - prm[8]) ** 2 + (fy - prm[9]) ** 2 + (fz - prm[10]) ** 2)
        distance = min(distance, abs(chord - prm[7]))
        if chord < prm[7]:
            covered = False
    return (prm[1] if covered else 0.0), distance


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _evaluate(kind: int, prm: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per local point: foot (3), normal (3), signed distance, thickness at the foot, distance to a step."""
    out = np.empty((points.shape[0], 9))
    for p in prange(points.shape[0]):
        row = np.empty(7)
        _foot(kind, prm, points[p, 0], points[p, 1], points[p, 2], row)
        h, edge = _plate(kind, prm, row[0], row[1], row[2])
        for c in range(7):
            out[p, c] = row[c]
        out[p, 7] = h
        out[p, 8] = edge
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _rasterise(kind: int, prm: np.ndarray, to_local: np.ndarray, shape: tuple[int, int, int], offsets: np.ndarray,
               half_diag: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (voxel-centre rule), cartilage and bone fractions on the grid (only band voxels are sub-sampled)."""
    ni, nj, nk = shape
    labels = np.zeros((ni, nj, nk), dtype=np.uint8)
    cart = np.zeros((ni, nj, nk), dtype=np.float32)
    bone = np.zeros((ni, nj, nk), dtype=np.float32)
    m = to_local
    inv_s = 1.0 / offsets.shape[0]
    for i in prange(ni):
        row = np.empty(7)
        for j in range(nj):
            for k in range(nk):
                x = m[0, 0] * i + m[0, 1] * j + m[0, 2] * k + m[0, 3]
                y = m[1, 0] * i + m[1, 1] * j + m[1, 2] * k + m[1, 3]
                z = m[2, 0] * i + m[2, 1] * j + m[2, 2] * k + m[2, 3]
                _foot(kind, prm, x, y, z, row)
                d = row[6]
                if d < 0.0:
                    labels[i, j, k] = 1
                else:
                    h, _ = _plate(kind, prm, row[0], row[1], row[2])
                    if h > 0.0 and d <= h:
                        labels[i, j, k] = 2
                if d <= -half_diag or d >= prm[1] + half_diag:
                    # the distance function is 1-Lipschitz: the whole voxel is on the centre's side
                    bone[i, j, k] = 1.0 if d < 0.0 else 0.0
                    continue
                if d >= half_diag and abs(d - prm[1]) >= half_diag:
                    # off both surfaces: pure cartilage or pure background unless a thickness step (plate edge,
                    # defect wall) is near; the foot point moves no faster than the point on these convex plates
                    h, edge = _plate(kind, prm, row[0], row[1], row[2])
                    if edge > 2.0 * half_diag + 0.05:
                        cart[i, j, k] = 1.0 if (h > 0.0 and d <= h) else 0.0
                        continue
                n_bone = 0
                n_cart = 0
                # per-voxel shift of the lattice (irrational in i, j, k): a surface parallel to a grid plane meets
                # every voxel at the same height, and the shift makes the lattice's quantisation error average out
                # over voxels instead of adding up
                cx = (0.7548776662 * i + 0.5698402910 * j + 0.2055694304 * k) % 1.0
                cy = (0.3247179572 * i + 0.8191725134 * j + 0.6180339887 * k) % 1.0
                cz = (0.4142135624 * i + 0.7320508076 * j + 0.2360679775 * k) % 1.0
                for s in range(offsets.shape[0]):
                    ox = (offsets[s, 0] + 0.5 + cx) % 1.0 - 0.5
                    oy = (offsets[s, 1] + 0.5 + cy) % 1.0 - 0.5
                    oz = (offsets[s, 2] + 0.5 + cz) % 1.0 - 0.5
                    sx = x + m[0, 0] * ox + m[0, 1] * oy + m[0, 2] * oz
                    sy = y + m[1, 0] * ox + m[1, 1] * oy + m[1, 2] * oz
                    sz = z + m[2, 0] * ox + m[2, 1] * oy + m[2, 2] * oz
                    _foot(kind, prm, sx, sy, sz, row)
                    ds = row[6]
                    if ds < 0.0:
                        n_bone += 1
                    else:
                        hs, _ = _plate(kind, prm, row[0], row[1], row[2])
                        if hs > 0.0 and ds <= hs:
                            n_cart += 1
                bone[i, j, k] = n_bone * inv_s
                cart[i, j, k] = n_cart * inv_s
    return labels, cart, bone


def _offsets(spacing: np.ndarray) -> np.ndarray:
    """Sub-voxel sample offsets (voxel units, in (-0.5, 0.5)): as many as a grid about ``SAMPLE_MM`` apart per axis
    would have (4 x 4 x 8 = 128 in a DESS voxel), placed on a rank-1 (Korobov) lattice instead of that grid.

    A regular grid puts its samples on 8 planes per voxel, so a surface parallel to the slices (the slab at tilt 0)
    is quantised to 0.09 mm in every voxel alike: a 1 % volume error that does not average out. On the lattice every
    sample has its own level along each axis (each projection is evenly stratified into n levels) while the points
    stay evenly spread in 3D (the generator with the largest smallest spacing in mm is chosen)."""
    n = int(np.prod([max(2, math.ceil(s / SAMPLE_MM)) for s in spacing]))
    return _korobov(n, tuple(float(s) for s in spacing))


@functools.lru_cache(maxsize=8)
def _korobov(n: int, spacing: tuple[float, float, float]) -> np.ndarray:
    idx = np.arange(n)
    best, best_gap = None, -1.0
    for a in range(2, n):
        if math.gcd(a, n) != 1:
            continue
        pts = (np.stack([idx, idx * a % n, idx * (a * a % n) % n], axis=1) + 0.5) / n
        diff = np.abs(pts[:, None, :] - pts[None, :, :])
        diff = np.minimum(diff, 1.0 - diff) * np.asarray(spacing)
        dist = np.sqrt((diff**2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        gap = float(dist.min())
        if gap > best_gap:
            best, best_gap = pts, gap
    if best is None:  # n < 3: a single generator only
        best = (np.stack([idx, idx, idx], axis=1) + 0.5) / n
    return np.ascontiguousarray(best - 0.5)


def _rotation(slice_axis: int, tilt_deg: float, azimuth_deg: float) -> np.ndarray:
    """Local -> world rotation: the local z axis tilted by ``tilt_deg`` from the slice axis, then turned about it."""
    axes = np.eye(3)
    base = np.stack([axes[(slice_axis + 1) % 3], axes[(slice_axis + 2) % 3], axes[slice_axis]], axis=1)
    t, a = np.deg2rad(tilt_deg), np.deg2rad(azimuth_deg)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return base @ rz @ rx


@dataclass
class ShellPhantom:
    """A rasterised analytic shell with exact truth.

    ``labels`` holds ``Structure.FEMUR`` (1) for the bone and ``Structure.FEMORAL_CARTILAGE`` (2) for the shell, so
    any femoral-plate measurement runs on it unchanged; ``cartilage_fraction`` and ``bone_fraction`` are the
    partial-volume maps (what an ideal soft segmentation would give); ``volume_mm3`` is the exact shell volume.
    """

    kind: str
    thickness_mm: float
    radius_mm: float
    tilt_deg: float
    defect_radius_mm: float
    seed: int
    labels: LabelVolume
    cartilage_fraction: Volume
    bone_fraction: Volume
    #: (4, 4) local object frame -> RAS mm
    world_from_local: np.ndarray
    #: exact cartilage volume (mm^3): the normal prism over the covered plate
    volume_mm3: float
    _params: np.ndarray

    @property
    def probabilities(self) -> dict[Structure, np.ndarray]:
        """The partial-volume maps keyed as ``cartilage_thickness(probabilities=...)`` expects."""
        return {Structure.FEMUR: self.bone_fraction.array, Structure.FEMORAL_CARTILAGE: self.cartilage_fraction.array}

    def _evaluate(self, points_ras: np.ndarray) -> np.ndarray:
        pts = np.atleast_2d(np.asarray(points_ras, dtype=np.float64))
        to_local = np.linalg.inv(self.world_from_local)
        local = np.ascontiguousarray(pts @ to_local[:3, :3].T + to_local[:3, 3])
        return _evaluate(_CODE[self.kind], self._params, local)

    def truth_thickness(self, points_ras: np.ndarray) -> np.ndarray:
        """Exact thickness (mm) at the bone foot point of each RAS point: the shell thickness on the plate, 0 in the
        defect and on bare bone. Any point works (on, inside or outside the bone): a measurement's surface points
        are off the true surface by its own error, and their foot point is where the truth is defined."""
        return self._evaluate(points_ras)[:, 7]

    def edge_distance(self, points_ras: np.ndarray) -> np.ndarray:
        """Distance (mm, along the bone surface, chord approximation at the defect) from each point's foot point to
        the nearest thickness step (plate edge or defect rim); very large on a fully covered sphere without defect.
        Points this close to a step cannot be measured to sub-voxel accuracy by any voxel method."""
        return self._evaluate(points_ras)[:, 8]

    def project(self, points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foot points (RAS mm), outward bone normals (RAS) and signed distances (mm, negative inside bone)."""
        ev = self._evaluate(points_ras)
        rot, shift = self.world_from_local[:3, :3], self.world_from_local[:3, 3]
        return ev[:, :3] @ rot.T + shift, ev[:, 3:6] @ rot.T, ev[:, 6]


def _volume(kind: str, r: float, h: float, prm: np.ndarray) -> float:
    """Exact volume of the covered normal-offset shell (closed forms; 1-D quadrature for curved defect discs)."""
    rd = float(prm[7])
    if kind == "sphere":
        full = 4.0 / 3.0 * np.pi * ((r + h) ** 3 - r**3)
        cos0 = 1.0 - rd**2 / (2.0 * r**2)  # chord rd from the pole <-> polar angle acos(cos0)
        return full * (1.0 - (1.0 - cos0) / 2.0)
    if kind == "slab":
        return float(np.pi * (prm[2] ** 2 - rd**2) * h)
    if kind == "cylinder":
        per_angle_length = ((r + h) ** 2 - r**2) / 2.0  # volume per radian per mm of axis
        full = per_angle_length * 2.0 * np.pi * 2.0 * prm[2]
        if rd <= 0.0:
            return float(full)
        # defect: 4 R^2 sin^2(alpha/2) + z^2 < rd^2 around the generatrix through (0, R, 0)
        alpha_max = 2.0 * np.arcsin(min(1.0, rd / (2.0 * r)))
        area, _ = integrate.quad(lambda al: 2.0 * np.sqrt(max(rd**2 - 4.0 * r**2 * np.sin(al / 2.0) ** 2, 0.0)),
                                 -alpha_max, alpha_max, limit=200)
        return float(full - per_angle_length * area)
    a, b, tmax, pmax = (float(v) for v in prm[3:7])
    c2, c3 = ((b + h) ** 2 - b**2) / 2.0, ((b + h) ** 3 - b**3) / 3.0

    def per_angle(phi: float) -> float:  # volume per radian of theta per radian of phi (torus coordinates)
        return a * c2 + np.cos(phi) * c3

    full = 2.0 * tmax * (a * c2 * 2.0 * pmax + c3 * 2.0 * np.sin(pmax))
    if rd <= 0.0:
        return float(full)
    top = a + b
    phi_max = np.arccos(max(-1.0, 1.0 - rd**2 / (2.0 * b**2)))

    def theta_extent(phi: float) -> float:
        rho = a + b * np.cos(phi)
        c = (rho**2 + (b * np.sin(phi)) ** 2 + top**2 - rd**2) / (2.0 * rho * top)
        return 2.0 * float(np.arccos(np.clip(c, -1.0, 1.0)))

    removed, _ = integrate.quad(lambda ph: theta_extent(ph) * per_angle(ph), -phi_max, phi_max, limit=200)
    return float(full - removed)


def shell_phantom(kind: str, *, thickness_mm: float, radius_mm: float = 25.0,
                  spacing: tuple[float, float, float] = (0.3646, 0.3646, 0.7), tilt_deg: float = 0.0,
                  shape: tuple[int, int, int] | None = None, seed: int = 0,
                  defect_radius_mm: float = 0.0) -> ShellPhantom:
    """Rasterise one analytic cartilage shell on a RAS grid with exact truth.

    Parameters
    ----------
    kind : {"sphere", "cylinder", "slab", "condyle"}
        Bone shape (see the module docstring); for ``slab`` ``radius_mm`` is the radius of the covered disc.
    thickness_mm : float
        Cartilage thickness along the bone normal, constant over the plate.
    radius_mm : float
        Bone radius (sphere, cylinder), sagittal radius (condyle) or plate radius (slab).
    spacing : tuple of 3 float
        Voxel size (mm) along i, j, k (axes R, A, S); the largest is the slice axis.
    tilt_deg : float
        Angle between the object axis (slab normal, cylinder axis, condyle top) and the slice axis: a plate
        parallel to the slices (0) and one steep to them (60) stress a measurement differently.
    shape : tuple of 3 int, optional
        Grid size; default ``FOV_MM`` (64 mm) per axis, which keeps a build well under a second.
    seed : int
        Picks a sub-voxel shift of the object and its turn about the slice axis, so repeated phantoms sample
        different partial-volume phases (a grid-locked object would give one systematic error).
    defect_radius_mm : float
        Radius of a circular full-thickness defect at the plate's top point (0: none).

    Returns
    -------
    ShellPhantom

    Raises
    ------
    ValueError
        Unknown kind, non-positive sizes, a defect that does not fit the plate, or a shell that leaves the grid.
    """
    if kind not in _CODE:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    if thickness_mm <= 0 or radius_mm <= 0:
        raise ValueError(f"thickness_mm and radius_mm must be positive, got {thickness_mm} and {radius_mm}")
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if spacing_arr.shape != (3,) or np.any(spacing_arr <= 0):
        raise ValueError(f"`spacing` must be 3 positive numbers, got {spacing}")
    grid_shape = (tuple(math.ceil(FOV_MM / s) for s in spacing_arr) if shape is None
                  else tuple(int(n) for n in shape))
    r, h, rd = float(radius_mm), float(thickness_mm), float(defect_radius_mm)
    prm = np.zeros(12)
    prm[0], prm[1], prm[7] = r, h, max(rd, 0.0)
    drop = 0.0
    if kind == "sphere":
        limit, prm[10] = r, r
    elif kind == "cylinder":
        prm[2] = CYLINDER_HALF_LENGTH_MM
        limit, prm[9] = CYLINDER_HALF_LENGTH_MM, r
    elif kind == "slab":
        prm[2] = r
        limit = r
    else:
        b = CONDYLE_CORONAL_FRACTION * r
        prm[3], prm[4] = r - b, b
        prm[5], prm[6] = np.deg2rad(CONDYLE_SAGITTAL_HALF_ANGLE_DEG), np.deg2rad(CONDYLE_CORONAL_HALF_ANGLE_DEG)
        prm[10] = r
        limit = 0.9 * min(b * prm[6], r * prm[5])
        drop = CONDYLE_DROP_FRACTION * r
    if rd >= limit:
        raise ValueError(f"defect_radius_mm {rd} does not fit the {kind} plate (must be < {limit:.1f} mm)")
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(-0.5, 0.5, 3) * spacing_arr
    azimuth = float(rng.uniform(0.0, 360.0))
    slice_axis = int(np.argmax(spacing_arr)) if np.ptp(spacing_arr) > 0 else 2
    rot = _rotation(slice_axis, tilt_deg, azimuth)
    affine = np.diag([*spacing_arr, 1.0])
    affine[:3, 3] = -(np.array(grid_shape) - 1) / 2.0 * spacing_arr
    world_from_local = np.eye(4)
    world_from_local[:3, :3] = rot
    world_from_local[:3, 3] = jitter - drop * rot[:, 2]
    to_local = np.ascontiguousarray(np.linalg.inv(world_from_local) @ affine)
    half_diag = 0.5 * float(np.linalg.norm(spacing_arr)) + 1e-6
    labels, cart, bone = _rasterise(_CODE[kind], prm, to_local, grid_shape, _offsets(spacing_arr), half_diag)
    faces = [cart[0], cart[-1], cart[:, 0], cart[:, -1], cart[:, :, 0], cart[:, :, -1]]
    if any(f.any() for f in faces):
        raise ValueError(f"the {kind} shell (radius {r} mm, thickness {h} mm, tilt {tilt_deg} deg) leaves the "
                         f"{grid_shape} grid: pass a larger `shape`")
    meta = VolumeMeta(modality=Modality.SEG, series_description=f"analytic {kind} shell phantom",
                      source="koaimg analytic shell phantom")
    pv_meta = meta.replace(modality=Modality.OTHER)
    return ShellPhantom(kind=kind, thickness_mm=h, radius_mm=r, tilt_deg=float(tilt_deg), defect_radius_mm=rd,
                        seed=seed, labels=LabelVolume(labels, affine, meta),
                        cartilage_fraction=Volume(cart, affine, pv_meta), bone_fraction=Volume(bone, affine, pv_meta),
                        world_from_local=world_from_local, volume_mm3=_volume(kind, r, h, prm), _params=prm)
