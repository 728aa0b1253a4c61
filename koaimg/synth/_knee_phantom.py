"""Procedural knee MR phantom: rasterise the analytic knee into a scanner grid, form the image, keep the truth.

The pipeline per scan: bone signed-distance grids (block-skipped) -> foot points of voxels near each bone -> analytic
plate, thickness and subregion at each foot point -> partial-volume fractions by sub-sampling -> labels (voxel-centre
rule, i.e. an ideal binary segmentation), cartilage probability maps (the fractions) and the MR image (fractions x
contrast, bias field, blur, Rician noise). Truth: thickness at every bone-interface voxel and regional values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

from ..core import KneeSide, LabelVolume, Modality, Structure, Volume, VolumeMeta
from ._imaging import bias_field, blur, rician_noise
from ._knee_anatomy import PLATES, KneeAnatomy, ThicknessChange
from ._knee_raster import shell_fractions, soft_tissue, subsample_offsets, voxel_centres
from ._knee_sdf import foot_points, sdf_on_grid
from ._knee_truth import PlateTruth, knee_truth
from ._tissues import CONTRASTS, Tissue

BONE_LABEL = {"femur": Structure.FEMUR, "tibia": Structure.TIBIA, "patella": Structure.PATELLA,
              "fibula": Structure.FIBULA}
CARTILAGE_LABEL = {"femur": Structure.FEMORAL_CARTILAGE, "tibia": Structure.TIBIAL_CARTILAGE,
                   "patella": Structure.PATELLAR_CARTILAGE}
#: largest cartilage thickness any phantom produces (mm): bounds the band of voxels examined around each bone
MAX_THICKNESS_MM = 4.5
FILM_MM = 0.6
CORTEX_MM = 0.8


@dataclass(frozen=True)
class Acquisition:
    """A scanner grid and contrast. ``orientation`` names the voxel axes as RAS letters (OAI DESS is 'PIR')."""

    name: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str = "PIR"
    contrast: str = "dess"
    noise: float = 0.025
    bias: float = 0.2
    blur_fwhm_mm: float = 0.0

    def affine(self, centre_ras: np.ndarray | None = None) -> np.ndarray:
        """Voxel -> RAS affine with the grid centred on ``centre_ras`` (default origin)."""
        unit = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
        affine = np.eye(4)
        for axis, letter in enumerate(self.orientation):
            affine[:3, axis] = np.array(unit[letter], dtype=float) * self.spacing[axis]
        centre = np.zeros(3) if centre_ras is None else np.asarray(centre_ras, dtype=float)
        half = (np.array(self.shape) - 1) / 2.0
        affine[:3, 3] = centre - affine[:3, :3] @ half
        return affine

    def scaled(self, factor: float) -> Acquisition:
        """The same field of view with ``factor`` x fewer voxels per axis (for small samples and tests)."""
        shape = tuple(max(8, round(n / factor)) for n in self.shape)
        spacing = tuple(s * n / m for s, n, m in zip(self.spacing, self.shape, shape, strict=True))
        return replace(self, name=f"{self.name}_x{factor:g}", shape=shape, spacing=spacing)


ACQUISITIONS: dict[str, Acquisition] = {
    "dess": Acquisition("dess", (384, 384, 160), (0.3646, 0.3646, 0.7), "PIR", "dess"),
    "flash": Acquisition("flash", (512, 512, 80), (0.3125, 0.3125, 1.5), "RIP", "t1"),
    "tse": Acquisition("tse", (448, 313, 37), (0.357, 0.511, 3.0), "PIR", "pdfs"),
    #: reduced DESS-like grid for sample_data/ and quick demos: 94 x 83 x 75 mm around the joint
    "sample": Acquisition("sample", (144, 128, 50), (0.65, 0.65, 1.5), "PIR", "dess"),
}


@dataclass(frozen=True)
class Pose:
    """Placement of the knee frame in the scanner (RAS): rotation (deg, xyz Euler) and translation (mm)."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """4x4 rigid transform."""
        out = np.eye(4)
        out[:3, :3] = Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()
        out[:3, 3] = self.translation_mm
        return out

    @classmethod
    def random(cls, rng: np.random.Generator, *, max_deg: float = 10.0, max_mm: float = 10.0) -> Pose:
        """A rigid repositioning within the given bounds (rotation magnitude and translation length)."""
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0, max_deg)
        rot = Rotation.from_rotvec(np.deg2rad(angle) * axis).as_euler("xyz", degrees=True)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        shift = direction * rng.uniform(0, max_mm)
        return cls(tuple(float(a) for a in rot), tuple(float(t) for t in shift))


#: knee-frame point placed at the scanner grid centre (the joint line, slightly anterior)
KNEE_CENTRE = np.array([0.0, 4.0, -10.0])


def world_from_knee(side: KneeSide, pose: Pose) -> np.ndarray:
    """Knee frame (right-knee convention) -> RAS. A left knee is the mirror image across the sagittal plane."""
    mirror = np.diag([1.0 if side == KneeSide.RIGHT else -1.0, 1.0, 1.0, 1.0])
    centre = np.eye(4)
    centre[:3, 3] = -KNEE_CENTRE
    return pose.matrix() @ mirror @ centre


@dataclass
class KneePhantom:
    """A rasterised knee scan with exact ground truth."""

    image: Volume
    labels: LabelVolume
    #: partial-volume cartilage fraction per plate ('femur', 'tibia', 'patella'), float32 on the scan grid
    cartilage_fraction: dict[str, Volume]
    #: per bone: arrays ijk (N,3), xyz foot point in RAS (N,3), normal RAS (N,3), thickness (N,), region (N,)
    interface: dict[str, dict[str, np.ndarray]]
    regions: dict[str, PlateTruth]
    anatomy: KneeAnatomy
    acquisition: Acquisition
    side: KneeSide
    pose: Pose
    seed: int
    change: ThicknessChange | None = None
    #: partial-volume bone fraction per plate bone (only when asked for: validation of the rasteriser)
    bone_fraction: dict[str, Volume] = field(default_factory=dict)

    def thickness_truth_volume(self, bone: str = "femur") -> Volume:
        """Truth thickness (mm) on the bone-interface voxels of ``bone``; NaN elsewhere."""
        arr = np.full(self.labels.spatial_shape, np.nan, dtype=np.float32)
        pts = self.interface[bone]
        arr[tuple(pts["ijk"].T)] = pts["thickness"]
        return Volume(arr, self.labels.affine, self.labels.meta.replace(modality=Modality.OTHER))


def _plate_eval(anatomy: KneeAnatomy, bone: str, feet: np.ndarray, change: ThicknessChange | None, chunk: int = 200_000
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Plate membership, thickness, region and tangential thickness gradient at foot points (chunked)."""
    n = len(feet)
    plate = np.zeros(n, bool)
    h = np.zeros(n)
    region = np.zeros(n, np.int16)
    grad = np.zeros((n, 3))
    eps = 0.05
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        p, nrm = feet[sl, :3], feet[sl, 3:6]
        pl, hh, rg = anatomy.plate_and_thickness(bone, p, nrm, change=change)
        plate[sl], h[sl], region[sl] = pl, hh, rg
        idx = np.flatnonzero(pl)
        if idx.size == 0:
            continue
        # tangent basis per point, then central differences of h along it
        nn = nrm[idx]
        helper = np.where(np.abs(nn[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
        t1 = np.cross(nn, helper)
        t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
        t2 = np.cross(nn, t1)
        g = np.zeros((idx.size, 3))
        for tangent in (t1, t2):
            _, hp, _ = anatomy.plate_and_thickness(bone, p[idx] + eps * tangent, nn, change=change)
            _, hm, _ = anatomy.plate_and_thickness(bone, p[idx] - eps * tangent, nn, change=change)
            slope = (hp - hm) / (2 * eps)
            # a step (plate edge, defect wall) is left to the voxel-centre rule rather than linearised
            slope = np.where(np.abs(hp - hm) > 0.2, 0.0, slope)
            g += slope[:, None] * tangent
        grad[sl][idx] = g
    return plate, h, region, grad


def make_knee_phantom(anatomy: KneeAnatomy, acquisition: Acquisition | str = "dess", *, seed: int = 0,
                      side: KneeSide | str = KneeSide.RIGHT, pose: Pose | None = None,
                      change: ThicknessChange | None = None, contrast_table: np.ndarray | None = None,
                      with_image: bool = True, keep_bone_fraction: bool = False) -> KneePhantom:
    """Rasterise ``anatomy`` into ``acquisition``'s grid (the follow-up when ``change`` is given).

    Parameters
    ----------
    anatomy : KneeAnatomy
        Shapes, thickness field, defects.
    acquisition : Acquisition or str
        Grid and contrast; a name from ``ACQUISITIONS``.
    seed : int
        Noise and bias seed (the anatomy has its own).
    side : KneeSide
        Right or left knee (left = mirror image).
    pose : Pose, optional
        Rigid placement in the scanner (repositioning between visits).
    change : ThicknessChange, optional
        Thickness change applied to the plates (follow-up scans).
    contrast_table : (n_tissues,) array, optional
        Signal per ``Tissue``; default the acquisition's contrast preset.
    """
    acq = ACQUISITIONS[acquisition] if isinstance(acquisition, str) else acquisition
    side = KneeSide(side)
    pose = pose or Pose()
    rng = np.random.default_rng(seed)
    shape = acq.shape
    grid = acq.affine()
    knee_from_world = np.linalg.inv(world_from_knee(side, pose))
    voxel_to_knee = knee_from_world @ grid
    half_diag = 0.5 * float(np.linalg.norm(acq.spacing))
    offsets = subsample_offsets(np.asarray(acq.spacing))
    labels = np.zeros(shape, dtype=np.uint8)
    tissue = soft_tissue(shape, voxel_to_knee, anatomy.tibia_from_knee @ voxel_to_knee, *_soft_tissue_shapes(anatomy))
    labels[tissue == Tissue.MENISCUS] = Structure.MENISCUS
    # fractions of voxels near bone: marrow, cortex, cartilage, film (sparse, per bone)
    mixed_index: list[np.ndarray] = []
    mixed_frac: list[np.ndarray] = []
    interface: dict[str, dict[str, np.ndarray]] = {}
    cartilage_fraction: dict[str, Volume] = {}
    bone_fraction: dict[str, Volume] = {}
    for bone, prims in anatomy.bone_prims().items():
        to_local = anatomy.frame_from_knee(bone) @ voxel_to_knee
        has_plate = bone in PLATES
        band = (MAX_THICKNESS_MM + FILM_MM if has_plate else 0.0) + half_diag + 0.1
        sdf = sdf_on_grid(prims, to_local, shape, 4, band)
        inside = sdf < 0
        labels[inside] = BONE_LABEL[bone]
        tissue[inside] = Tissue.MARROW
        near = half_diag + 0.1
        cand = np.argwhere((sdf > -(CORTEX_MM + 2 * half_diag)) & (sdf < band)).astype(np.int64)
        cand_sdf = sdf[tuple(cand.T)]
        del sdf
        centres = voxel_centres(cand, to_local)
        if has_plate:  # outside the plate's box only the bone surface itself needs sub-sampling
            lo, hi = anatomy.plate_box(bone)
            in_box = np.all((centres > lo - band) & (centres < hi + band), axis=1)
            keep = in_box | (cand_sdf < near)
        else:
            keep = cand_sdf < near
        cand, centres = cand[keep], centres[keep]
        feet = foot_points(prims, centres)
        ok = feet[:, 7] > 0
        cand, feet = cand[ok], feet[ok]
        if has_plate:
            plate, h, region, grad = _plate_eval(anatomy, bone, feet, change)
        else:
            plate = np.zeros(len(cand), bool)
            h = np.zeros(len(cand))
            region = np.zeros(len(cand), np.int16)
            grad = np.zeros((len(cand), 3))
        frac = shell_fractions(cand, to_local, feet, h, grad, plate, offsets, FILM_MM, CORTEX_MM)
        idx = tuple(cand.T)
        t = feet[:, 6]
        if has_plate:
            is_cart = plate & (t >= 0) & (t <= h)
            cart_idx = tuple(cand[is_cart].T)
            free = labels[cart_idx] != BONE_LABEL[bone]
            labels[tuple(cand[is_cart][free].T)] = CARTILAGE_LABEL[bone]
            pv = np.zeros(shape, dtype=np.float32)
            pv[idx] = frac[:, 2]
            cartilage_fraction[bone] = Volume(pv, grid, VolumeMeta(modality=Modality.OTHER, side=side))
            if keep_bone_fraction:
                bone_pv = inside.astype(np.float32)
                bone_pv[idx] = frac[:, 0] + frac[:, 1]
                bone_fraction[bone] = Volume(bone_pv, grid, VolumeMeta(modality=Modality.OTHER, side=side))
            surface = plate & (t < 0) & (t >= -float(max(acq.spacing)))
            world_from_local = np.linalg.inv(to_local) @ np.eye(4)
            ras_from_local = grid @ world_from_local
            foot_ras = feet[surface, :3] @ ras_from_local[:3, :3].T + ras_from_local[:3, 3]
            rot = ras_from_local[:3, :3] / np.linalg.norm(ras_from_local[:3, :3], axis=0)
            normals = feet[surface, 3:6] @ rot.T
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            interface[bone] = {"ijk": cand[surface].astype(np.int32), "xyz": foot_ras, "normal": normals,
                               "local": feet[surface, :6], "thickness": h[surface], "region": region[surface],
                               "distance": -t[surface]}
        mixed_index.append(cand)
        mixed_frac.append(frac)
    image = None
    if with_image:
        image = _form_image(acq, grid, tissue, mixed_index, mixed_frac, rng, contrast_table, side)
    meta = VolumeMeta(modality=Modality.SEG, side=side, side_source="phantom truth",
                      series_description=f"phantom labels ({acq.name})")
    label_volume = LabelVolume(labels, grid, meta)
    if image is None:
        image = Volume(np.zeros((1, 1, 1), np.float32), np.eye(4))
    return KneePhantom(image=image, labels=label_volume, cartilage_fraction=cartilage_fraction, interface=interface,
                       regions=knee_truth(anatomy, change=change), anatomy=anatomy, acquisition=acq, side=side,
                       pose=pose, seed=seed, change=change, bone_fraction=bone_fraction)


def _combined_fractions(shape: tuple[int, int, int], mixed_index: list[np.ndarray], mixed_frac: list[np.ndarray]
                        ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Each listed voxel once, with the (marrow, cortex, cartilage, film) fractions of every bone that listed it
    added up (scaled down where they exceed 1).

    Bones' bands overlap where joints are close (the trochlea under the patella, the condyles over the tibial
    plateau): taking the last bone's fractions alone would image the first bone's cartilage as soft tissue while
    its labels still say cartilage."""
    flat = np.concatenate([np.ravel_multi_index(tuple(c.T), shape) for c in mixed_index])
    frac = np.concatenate(mixed_frac).astype(np.float32)
    unique, inverse = np.unique(flat, return_inverse=True)
    total = np.zeros((unique.size, frac.shape[1]), np.float32)
    np.add.at(total, inverse, frac)
    total /= np.maximum(total.sum(axis=1, keepdims=True), 1.0)
    return np.unravel_index(unique, shape), total


def _form_image(acq: Acquisition, grid: np.ndarray, tissue: np.ndarray, mixed_index: list[np.ndarray],
                mixed_frac: list[np.ndarray], rng: np.random.Generator, table: np.ndarray | None,
                side: KneeSide) -> Volume:
    contrast = CONTRASTS[acq.contrast]
    table = contrast.table() if table is None else np.asarray(table, dtype=np.float32)
    signal = table[tissue]
    idx, frac = _combined_fractions(tissue.shape, mixed_index, mixed_frac)
    tissue_here = tissue[idx]
    in_bone = tissue_here == Tissue.MARROW
    # a voxel deep inside one bone (so not in that bone's list) but near another bone keeps its marrow
    mixed = ~(in_bone & (frac[:, 0] + frac[:, 1] == 0))
    idx, frac, tissue_here, in_bone = tuple(i[mixed] for i in idx), frac[mixed], tissue_here[mixed], in_bone[mixed]
    rest = np.clip(1.0 - frac.sum(axis=1), 0.0, 1.0)
    # a voxel whose centre is in bone keeps its neighbour soft tissue for the non-bone remainder
    base = np.where(in_bone, table[Tissue.MUSCLE], table[tissue_here])
    signal[idx] = (frac[:, 0] * table[Tissue.MARROW] + frac[:, 1] * table[Tissue.CORTEX]
                   + frac[:, 2] * table[Tissue.CARTILAGE] + frac[:, 3] * table[Tissue.FLUID] + rest * base)
    spacing = np.asarray(acq.spacing)
    signal = blur(signal, spacing, acq.blur_fwhm_mm)
    if acq.bias > 0:
        signal = signal * bias_field(acq.shape, spacing, rng, strength=acq.bias)
    signal = rician_noise(signal, acq.noise * float(table.max()), rng)
    scaled = np.clip(signal / max(float(table.max()), 1e-6) * 1000.0, 0, 4095).astype(np.float32)
    tags = dict(contrast.tags)
    meta = VolumeMeta(modality=Modality.MR, side=side, side_source="phantom truth",
                      series_description=str(tags.get("series_description", acq.name)),
                      acquisition={k: v for k, v in tags.items() if k != "series_description"},
                      source=f"koaimg procedural knee phantom ({acq.name})")
    return Volume(scaled, grid, meta)


def _soft_tissue_shapes(anatomy: KneeAnatomy) -> tuple[np.ndarray, ...]:
    s = anatomy.scale
    patella = anatomy.knee_from_patella[:3, 3]
    body = np.array([0.0, 8.0 * s, 62.0 * s, 6.0 * s])
    fat_pads = np.array([[0.0, 24.0 * s, -16.0 * s, 0.0, 18.0 * s, -30.0 * s, 9.0 * s]])
    tendons = np.array([
        [0.0, patella[1] + 3.0 * s, patella[2] + 14.0 * s, 0.0, patella[1] - 6.0 * s, patella[2] + 90.0 * s, 5.0 * s],
        [0.0, patella[1] + 2.0 * s, patella[2] - 14.0 * s, 0.0, 26.0 * s, -55.0 * s, 3.5 * s],
    ])
    fluid = np.array([[0.0, patella[1] - 10.0 * s, patella[2] + 22.0 * s, 0.0, patella[1] - 12.0 * s,
                       patella[2] + 40.0 * s, 4.5 * s]])
    menisci = np.array([[-19.0 * s, 0.0, 12.0 * s, 19.0 * s, 0.95, 1.35, 6.0 * s],
                        [19.0 * s, 0.0, 11.0 * s, 17.0 * s, 0.95, 1.35, 6.0 * s]])
    return body, fat_pads, tendons, fluid, menisci
