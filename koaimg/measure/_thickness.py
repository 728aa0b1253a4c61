"""Cartilage thickness anchored on the subchondral bone interface, along the bone normal, sub-voxel.

Method (``"normal"``, the default): the bone surface and the outer surface of bone + cartilage are the 0.5 levels of
smooth fields (blurred indicators for binary labels, lightly blurred probabilities for partial-volume maps). Every
bone voxel touching cartilage seeds one measurement: it is projected onto the bone surface (Newton steps), the outward
bone normal is taken from a smoother bone field, and the ray along it is marched until it leaves bone + cartilage.
The thickness is that distance in mm (anisotropic voxels handled through the affine). A ray that leaves through a
side wall of the plate (a plate edge or lesion wall, recognised by the outer surface's normal at the exit being more
than 45 deg from the ray) fell short of the articular surface: its value is taken from the neighbouring top-surface
exits at least as thick, and the point is flagged (a tapering margin is exited through its top and is left alone).
Bone surface voxels in holes of the cartilage plate (enclosed by covered bone) are denuded: thickness 0, counted in
tAB (the ThCtAB convention).

Method ``"nearest"`` (independent cross-check): distance from each sub-voxel bone-surface point to the nearest
point of the sub-voxel articular surface (a marching-cubes mesh of the outer cartilage boundary, bare bone excluded);
it agrees with the normal method away from walls and is shorter next to plate edges and lesion walls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..core import CARTILAGE_ON_BONE, LabelSchemaError, LabelVolume, Structure
from ._fields import (
    BINARY_SIGMA_MM,
    NORMAL_SIGMA_MM,
    THICKNESS_SIGMA_MM,
    UNION_SIGMA_MM,
    crop_around,
    dilate_cube,
    smooth_indicator,
    smooth_probability,
)
from ._kernels import normal_thickness_cpu

#: thickness above this is implausible for knee cartilage: capped and flagged, never kept silently
MAX_THICKNESS_MM = 6.0
STEP_MM = 0.02
#: context kept around the cartilage's bounding box: the widest blur (normal field, sigma 1 mm, truncated at
#: 3 sigma) plus a voxel; results are identical to a much larger crop (checked at 8 mm), the fields cost less
CROP_MARGIN_MM = 4.5
#: range kernel of the bilateral thickness smoothing: about the largest staircase error of binary labels
RANGE_SIGMA_MM = 0.3
FLAG_CAPPED = 1
FLAG_PROJECTION = 2
FLAG_NO_SURFACE = 4
#: the normal ray left the cartilage through a side wall (plate edge, lesion wall), not the articular surface: its
#: value was replaced from neighbouring top-surface exits
FLAG_WALL_EXIT = 8
#: the ray reached the edge of the image before leaving the cartilage: the articular surface is outside the field of
#: view, so there is no thickness to report (NaN)
FLAG_OUTSIDE_FOV = 16
_FOV_CUT = "reaches the edge of the field of view: the plate is cut, its values cover only the imaged part"


def fov_cut_note(structure_key: str) -> str:
    """The note a measurement carries when a plate touches the image border (read back by ``plates_cut_by_fov``)."""
    return f"{structure_key.replace('_', ' ')} {_FOV_CUT}"


def plates_cut_by_fov(notes: list[str]) -> set[str]:
    """Structure keys (``patellar_cartilage`` ...) whose plate a measurement's notes say is cut by the image border."""
    return {note[: -len(_FOV_CUT) - 1].replace(" ", "_") for note in notes if note.endswith(" " + _FOV_CUT)}


#: exits whose surface normal is more than this from the ray are side walls (cos 60 deg)
WALL_COS = 0.7

PLATE_STRUCTURES = {
    "femur": (Structure.FEMUR, Structure.FEMORAL_CARTILAGE),
    "tibia": (Structure.TIBIA, Structure.TIBIAL_CARTILAGE),
    "patella": (Structure.PATELLA, Structure.PATELLAR_CARTILAGE),
}


@dataclass
class ThicknessResult:
    """One thickness per bone-interface point of a cartilage plate.

    Arrays have one row per point: ``ijk`` (N, 3) the seed voxel in the label grid, ``points`` (N, 3) the sub-voxel
    bone-surface point in RAS mm, ``normals`` (N, 3) the outward bone normal, ``thickness`` (N,) mm (0 where denuded,
    NaN where no articular surface was found), ``denuded`` (N,) bool, ``area`` (N,) mm^2 of bone surface each point
    stands for, ``flags`` (N,) bit mask (1 capped, 2 projection failed, 4 no articular surface).
    """

    plate: str
    structure: Structure
    method: str
    ijk: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    thickness: np.ndarray
    denuded: np.ndarray
    area: np.ndarray
    flags: np.ndarray
    affine: np.ndarray
    shape: tuple[int, int, int]
    #: (N,) mm from each point to the nearest bare bone surface outside the plate (lesions are not edges)
    edge_distance: np.ndarray | None = None
    #: what a reader of the numbers must know (e.g. the plate is cut by the field of view)
    notes: list[str] = field(default_factory=list)

    @property
    def n_flagged(self) -> int:
        """int: points with any flag."""
        return int(np.count_nonzero(self.flags))

    def thickness_volume(self) -> np.ndarray:
        """(I, J, K) float32: thickness (mm) on interface voxels, 0 elsewhere (denuded voxels are 0 too)."""
        out = np.zeros(self.shape, dtype=np.float32)
        valid = np.isfinite(self.thickness)
        out[tuple(self.ijk[valid].T)] = self.thickness[valid]
        return out

    def interface_mask(self) -> np.ndarray:
        """(I, J, K) bool: the bone-interface voxels (covered and denuded)."""
        out = np.zeros(self.shape, dtype=bool)
        out[tuple(self.ijk.T)] = True
        return out


def _interface_voxels(bone: np.ndarray, cart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covered interface voxels (bone touching cartilage, 26-neighbourhood) and denuded ones (bone-surface voxels in
    holes of the plate: uncovered surface components that do not reach the edge of the crop)."""
    cube = np.ones((3, 3, 3), bool)
    covered = bone & dilate_cube(cart)
    surface = bone & dilate_cube(~bone)
    bare = surface & ~covered
    components, n = ndimage.label(bare, cube)
    if n == 0:
        return covered, np.zeros_like(bone), bare
    border = np.zeros_like(bone)
    border[[0, -1], :, :] = border[:, [0, -1], :] = border[:, :, [0, -1]] = True
    touching = np.unique(components[border & bare])
    holes = np.isin(components, touching, invert=True) & bare
    return covered, holes, bare & ~holes


def cartilage_thickness(labels: LabelVolume, *, plate: str = "femur", method: str = "normal",
                        probabilities: dict[Structure, np.ndarray] | None = None,
                        max_mm: float = MAX_THICKNESS_MM, device: str = "cpu") -> ThicknessResult:
    """Thickness of one cartilage plate at every bone-interface point.

    Parameters
    ----------
    labels : LabelVolume
        Label map in koaimg's schema (any source: model, other tool, manual) on a RAS grid.
    plate : {"femur", "tibia", "patella"}
        Which cartilage plate, named by its bone.
    method : {"normal", "nearest"}
        Along the bone normal (default), or nearest articular-surface point (cross-check).
    probabilities : dict, optional
        Partial-volume maps on the same grid for the bone and/or the cartilage of this plate (``Structure`` ->
        (I, J, K) array in [0, 1]); they replace the blurred binary indicators and give sub-voxel accuracy.
    max_mm : float
        Values above are capped and flagged.
    device : {"cpu", "cuda", "auto"}
        Where the ray kernel runs (the fields and tables stay on the CPU); ``auto`` uses a GPU when present.

    Returns
    -------
    ThicknessResult
    """
    if plate not in PLATE_STRUCTURES:
        raise ValueError(f"`plate` must be one of {sorted(PLATE_STRUCTURES)}, got {plate!r}")
    if method not in ("normal", "nearest"):
        raise ValueError(f"`method` must be 'normal' or 'nearest', got {method!r}")
    bone_label, cart_label = PLATE_STRUCTURES[plate]
    assert CARTILAGE_ON_BONE[cart_label] == bone_label
    bone_full, cart_full = labels.mask(bone_label), labels.mask(cart_label)
    if not cart_full.any():
        raise LabelSchemaError(f"the label map has no {cart_label.key} (label {int(cart_label)})",
                               hint="check the preset; thickness needs cartilage and its bone")
    if not bone_full.any():
        raise LabelSchemaError(f"the label map has no {bone_label.key} (label {int(bone_label)}): thickness is "
                               "anchored on the bone interface", hint="segment the bones too")
    spacing = labels.spacing
    crop = crop_around(cart_full, spacing, margin_mm=CROP_MARGIN_MM)
    sl = crop.slices
    bone, cart = bone_full[sl], cart_full[sl]
    covered, holes, outside = _interface_voxels(bone, cart)
    seeds = np.argwhere(covered | holes)
    edge_distance = _distance_to(outside, seeds, spacing)
    hole_distance = _distance_to(holes, seeds, spacing)
    probabilities = probabilities or {}
    p_bone = probabilities.get(bone_label)
    p_cart = probabilities.get(cart_label)
    bone_field = (smooth_probability(np.asarray(p_bone)[sl], spacing) if p_bone is not None
                  else smooth_indicator(bone, spacing, BINARY_SIGMA_MM))
    if p_cart is not None:
        union_field = np.clip(bone_field + smooth_probability(np.asarray(p_cart)[sl], spacing), 0.0, 1.0)
    elif p_bone is not None:
        union_field = np.clip(bone_field + smooth_indicator(cart, spacing, UNION_SIGMA_MM), 0.0, 1.0)
    else:
        union_field = smooth_indicator(bone | cart, spacing, UNION_SIGMA_MM)
    normal_field = smooth_indicator(bone, spacing, NORMAL_SIGMA_MM)
    jac = np.ascontiguousarray(labels.affine[:3, :3])
    jinv = np.ascontiguousarray(np.linalg.inv(jac))
    out = _run_kernel(device, bone_field, union_field, seeds.astype(np.float64), jac, jinv, normal_field,
                      max_mm + 1.0)
    # the outer surface's shape (side-wall test, nearest articular point) needs a field without a voxel staircase:
    # for binary labels the same one-voxel blur as the bone surface; probability maps are smooth already
    smooth_union = union_field if p_cart is not None else smooth_indicator(bone | cart, spacing, BINARY_SIGMA_MM)
    flags = np.zeros(len(seeds), np.uint8)
    flags[out[:, 7] == 0] |= FLAG_PROJECTION
    thickness = out[:, 6].copy()
    denuded = holes[tuple(seeds.T)]
    if method == "nearest":
        thickness = _nearest_thickness(bone_field, smooth_union, cart, out[:, :3], spacing, labels.affine)
    exit_full = out[:, :3] + np.array(crop.lo) + (np.maximum(thickness, 0.0)[:, None] * out[:, 3:6]) @ jinv.T
    grid_hi = np.array(labels.spatial_shape) - 1.0
    at_edge = (thickness > 0) & (np.any(exit_full < 0.5, axis=1) | np.any(exit_full > grid_hi - 0.5, axis=1))
    flags[at_edge] |= FLAG_OUTSIDE_FOV
    thickness[at_edge] = np.nan
    notes = []
    if _touches_border(cart_full):
        notes.append(fov_cut_note(cart_label.key))
    missing = (thickness < 0) & ~denuded
    flags[missing] |= FLAG_NO_SURFACE
    thickness[missing] = np.nan
    capped = thickness > max_mm
    flags[capped] |= FLAG_CAPPED
    thickness[capped] = max_mm
    thickness[denuded] = 0.0
    ijk_full = seeds + np.array(crop.lo)
    index_points = out[:, :3] + np.array(crop.lo)
    points = index_points @ labels.affine[:3, :3].T + labels.affine[:3, 3]
    # a covered seed whose normal ray meets no cartilage is bare bone: at a lesion's rim it is denuded, at the
    # plate's outer edge it is beyond the plate
    bare_ray = ~denuded & np.isfinite(thickness) & (thickness < 0.25 * float(np.min(spacing)))
    rim = bare_ray & (hole_distance < edge_distance)
    denuded = denuded | rim
    thickness[rim] = 0.0
    beyond = bare_ray & ~rim
    cover_field = (np.asarray(p_cart, dtype=np.float32)[sl] if p_cart is not None else cart.astype(np.float32))
    if method == "normal":
        wall = _wall_exits(smooth_union, out, thickness, jinv) & ~denuded & ~beyond
        flags[wall] |= FLAG_WALL_EXIT
        thickness = _fill_from_top_surface(points, thickness, wall, ~denuded & ~beyond & ~wall & np.isfinite(thickness))
    if p_cart is None and method == "normal":
        thickness = _smooth_along_plate(points, thickness, ~denuded & ~beyond & np.isfinite(thickness))
    keep = ~beyond
    area = _point_areas(bone_field, cover_field, out[keep, :3], out[keep, 3:6], denuded[keep], spacing,
                        labels.affine)
    return ThicknessResult(plate=plate, structure=cart_label, method=method, ijk=ijk_full[keep].astype(np.int32),
                           points=points[keep], normals=out[keep, 3:6].copy(), thickness=thickness[keep],
                           denuded=denuded[keep], area=area, flags=flags[keep], affine=labels.affine.copy(),
                           shape=labels.spatial_shape, edge_distance=edge_distance[keep], notes=notes)


def _touches_border(mask: np.ndarray) -> bool:
    """True when any voxel of ``mask`` lies on a face of the array."""
    return bool(mask[[0, -1]].any() or mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any())


def _wall_exits(field: np.ndarray, out: np.ndarray, thickness: np.ndarray, jinv: np.ndarray) -> np.ndarray:
    """True where the ray's exit point lies on a side wall: the outer surface's normal there (gradient of a
    one-voxel-blurred bone + cartilage field) is more than 60 deg from the ray. On a tapering plate margin the exit
    is on the sloping top surface and passes; on a step (a voxelised wall) it does not."""
    ok = np.isfinite(thickness) & (thickness > 0) & (out[:, 7] > 0)
    result = np.zeros(len(thickness), bool)
    if not ok.any():
        return result
    n_world = out[ok, 3:6]
    exit_idx = out[ok, :3] + (thickness[ok, None] * n_world) @ jinv.T
    grad_idx = np.empty_like(exit_idx)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = 0.5
        hi = ndimage.map_coordinates(field, (exit_idx + step).T, order=1, mode="nearest")
        lo = ndimage.map_coordinates(field, (exit_idx - step).T, order=1, mode="nearest")
        grad_idx[:, axis] = hi - lo
    grad_world = grad_idx @ jinv  # df/dx = J^-T df/di, row-vector form
    norm = np.linalg.norm(grad_world, axis=1)
    cos = np.where(norm > 1e-9, -(grad_world * n_world).sum(axis=1) / np.maximum(norm, 1e-9), 1.0)
    result[ok] = cos < WALL_COS
    return result


def _fill_from_top_surface(points: np.ndarray, thickness: np.ndarray, wall: np.ndarray, good: np.ndarray,
                           radius_mm: float = 1.5) -> np.ndarray:
    """Replace wall-exit values by the median of neighbouring top-surface exits (within ``radius_mm``) that are at
    least as thick: a ray leaving through a wall can only have fallen short of the articular surface above it.
    Points without such neighbours keep their (flagged) ray value."""
    from scipy.spatial import cKDTree

    targets = np.flatnonzero(wall)
    sources = np.flatnonzero(good)
    if targets.size == 0 or sources.size == 0:
        return thickness
    out = thickness.copy()
    tree = cKDTree(points[sources])
    for t, near in zip(targets, tree.query_ball_point(points[targets], radius_mm, workers=-1), strict=True):
        if not near:
            continue
        values = thickness[sources[near]]
        values = values[values >= thickness[t]]
        if values.size >= 3:
            out[t] = float(np.median(values))
    return out


def _smooth_along_plate(points: np.ndarray, thickness: np.ndarray, use: np.ndarray,
                        sigma_mm: float = THICKNESS_SIGMA_MM) -> np.ndarray:
    """Gaussian-weighted mean of neighbouring covered points' thickness (within 2 sigma, same plate).

    Binary labels put each ray's exit anywhere within half a voxel of the true surface; the error's phase varies
    from point to point, so averaging neighbours removes it without blurring the plate's edges or lesion walls.
    """
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    idx = np.flatnonzero(use)
    if idx.size < 2:
        return thickness
    tree = cKDTree(points[idx])
    pairs = tree.sparse_distance_matrix(tree, 2.0 * sigma_mm, output_type="coo_matrix")
    values = thickness[idx]
    # bilateral: neighbours whose value differs by much more than the staircase error (a plate edge, a lesion
    # wall) get little weight, so steps stay steps
    diff = values[pairs.row] - values[pairs.col]
    weights = np.exp(-(pairs.data**2) / (2 * sigma_mm**2) - diff**2 / (2 * RANGE_SIGMA_MM**2))
    # the diagonal (distance 0) is not stored by sparse_distance_matrix: add each point's own weight 1
    w = coo_matrix((weights, (pairs.row, pairs.col)), shape=(idx.size, idx.size)).tocsr()
    smoothed = (w @ values + values) / (np.asarray(w.sum(axis=1)).ravel() + 1.0)
    out = thickness.copy()
    out[idx] = smoothed
    return out


def _run_kernel(device: str, bone_field: np.ndarray, union_field: np.ndarray, seeds: np.ndarray, jac: np.ndarray,
                jinv: np.ndarray, normal_field: np.ndarray, max_mm: float) -> np.ndarray:
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device in ("cuda", "auto"):
        from ._cuda import cuda_usable, normal_thickness_cuda

        if cuda_usable():
            return normal_thickness_cuda(bone_field, union_field, seeds, jinv, normal_field, STEP_MM, max_mm)
        if device == "cuda":
            from ..core import ModelError

            raise ModelError("no CUDA device is usable for the thickness kernel",
                             hint="use --device cpu, or install koaimg[gpu] on a machine with an NVIDIA GPU")
    out = np.zeros((len(seeds), 8))
    normal_thickness_cpu(bone_field, union_field, seeds, jac, jinv, normal_field, STEP_MM, max_mm, out)
    return out


def _distance_to(mask: np.ndarray, seeds: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """mm from each seed voxel to the nearest voxel of ``mask`` (inf when empty): a k-d tree over the (sparse)
    mask is much cheaper than a distance transform of the whole crop."""
    from scipy.spatial import cKDTree

    target = np.argwhere(mask)
    if len(target) == 0:
        return np.full(len(seeds), np.inf)
    dist, _ = cKDTree(target * spacing).query(seeds * spacing, workers=-1)
    return dist


def _nearest_thickness(bone_field: np.ndarray, union_field: np.ndarray, cart: np.ndarray, index_points: np.ndarray,
                       spacing: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Distance (mm) from each sub-voxel bone-surface point to the nearest point of the sub-voxel articular surface.

    The articular surface is the part of the 0.5 level of the bone + cartilage field that has cartilage, not bone,
    beneath it (the blurred cartilage indicator exceeds the bone field there): the outer surface of the plate
    without the bare bone around it. Both surfaces are sub-voxel, so on a plate of even thickness this equals the
    normal distance; by construction it can only be shorter than the distance along any one direction, and it is
    markedly shorter next to lesion walls and plate edges, where the nearest articular point is on the wall.
    """
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    near = dilate_cube(cart, 2)
    verts, faces, _, _ = marching_cubes(union_field, 0.5, allow_degenerate=False, mask=near)
    if len(faces) == 0:
        return np.full(len(index_points), -1.0)
    centroids = verts[faces].mean(axis=1)
    cart_field = smooth_indicator(cart, spacing, BINARY_SIGMA_MM)
    probe = centroids.T
    c = ndimage.map_coordinates(cart_field, probe, order=1, mode="nearest")
    b = ndimage.map_coordinates(bone_field, probe, order=1, mode="nearest")
    articular = (c > 2.0 * b) & (b < 0.2)
    if not articular.any():
        return np.full(len(index_points), -1.0)
    # vertices and centroids of the articular triangles sample the surface finely (a fraction of a voxel)
    samples = np.concatenate([centroids[articular], verts[np.unique(faces[articular])]])
    tree = cKDTree(samples @ affine[:3, :3].T)
    dist, _ = tree.query(index_points @ affine[:3, :3].T, workers=-1)
    return dist


def _point_areas(bone_field: np.ndarray, cover_field: np.ndarray, index_points: np.ndarray, normals: np.ndarray,
                 denuded: np.ndarray, spacing: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Bone-surface area (mm^2) each point represents: marching-cubes triangles of the bone surface near the
    points, each given to its nearest point (triangles further than half the largest voxel size are off-plate).

    The plate's outline is placed to a fraction of a voxel rather than at the last interface voxel: a triangle of a
    covered point counts only where cartilage lies just above it (the cartilage indicator, trilinearly interpolated
    half a voxel out along the bone normal, is at least 0.5, i.e. past the midpoint between the last cartilage voxel
    centre and the first background one, or the partial-volume map says so). Without this the 26-neighbourhood
    interface runs about half a voxel past the true edge all round the plate and tAB comes out ~2 % large, pulling
    every regional mean down. Uncovered triangles next to a denuded point are that lesion's bare bone.
    """
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    lo = np.floor(index_points.min(axis=0)).astype(int) - 2
    hi = np.ceil(index_points.max(axis=0)).astype(int) + 3
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.array(bone_field.shape))
    sub = bone_field[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    # only the cubes around the plate's points: the rest of the bone surface would be meshed for nothing
    near = np.zeros(sub.shape, bool)
    cells = np.clip(np.floor(index_points - lo).astype(int), 0, np.array(sub.shape) - 1)
    near[tuple(cells.T)] = True
    near = dilate_cube(near, 2)
    verts, faces, _, _ = marching_cubes(sub, 0.5, allow_degenerate=False, mask=near)
    verts = verts + lo
    world = verts @ affine[:3, :3].T
    tri = world[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    centroids = tri.mean(axis=1)
    tree = cKDTree(index_points @ affine[:3, :3].T)
    dist, nearest = tree.query(centroids, workers=-1)
    keep = dist <= 0.5 * float(np.max(spacing))
    jinv = np.linalg.inv(affine[:3, :3])
    probe = verts[faces[keep]].mean(axis=1) + (0.5 * float(np.max(spacing)) * normals[nearest[keep]]) @ jinv.T
    covered = ndimage.map_coordinates(cover_field, probe.T, order=1, mode="nearest") >= 0.5
    owner = nearest[keep]
    counted = covered | denuded[owner]
    out = np.bincount(owner[counted], weights=areas[keep][counted], minlength=len(index_points))
    bare = ~counted
    if bare.any() and denuded.any():
        # lesion floor between a denuded point and the wall: give it to the nearest denuded point
        holes = np.flatnonzero(denuded)
        d_hole, k_hole = cKDTree(index_points[holes] @ affine[:3, :3].T).query(centroids[keep][bare])
        mine = d_hole <= float(np.max(spacing))
        out += np.bincount(holes[k_hole[mine]], weights=areas[keep][bare][mine], minlength=len(index_points))
    return out
