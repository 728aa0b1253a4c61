"""Domain-randomised MR images from any real knee label map (in the spirit of SynthSeg, Billot et al. 2023).

A segmentation model trained on these images never sees the same contrast, resolution, noise, bias or pose twice, so
it has to learn shape rather than one scanner's grey values. Each call draws, from ``rng`` alone:

1. an output grid (in-plane and slice spacing, slice axis), a small rotation, an optional left/right mirror and a
   smooth, divergence-free (volume-preserving to first order) elastic displacement, all in millimetres;
2. a tissue image on the input grid: one random mean per labelled structure plus unlabelled tissues invented in the
   background (fluid film on cartilage, effusion pockets, muscle with fat septa and fat pads, subcutaneous fat, skin,
   air, dark cortical bone rim),
   each with a smooth multiplicative texture;
3. the output: labels sampled with nearest neighbour at each output voxel centre; the image box-averaged over the
   output voxel's extent on the input grid (slice profile, partial volume), sampled with trilinear interpolation,
   times a smooth bias field, then a Gaussian point-spread blur and Rician noise.

Geometry contract: arrays are indexed (i, j, k) like the columns of their 4x4 RAS affine (mm). The output grid keeps the
input's axis directions (same ``axcodes``) with the drawn spacing; a mirrored sample mirrors the *anatomy* in world
space (reflection across the world sagittal plane x = const through the input field-of-view centre), so the array is
mirrored while the affine stays an ordinary same-handed RAS affine, and ``meta.side`` flips RIGHT <-> LEFT.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass, fields

import numpy as np
from numba import njit, prange
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .._numba import CACHE, FASTMATH
from ..core import (
    CARTILAGE_ON_BONE,
    GeometryError,
    KneeSide,
    KoaimgError,
    LabelSchemaError,
    LabelVolume,
    Modality,
    Structure,
    Volume,
)
from ._imaging import blur
from ._tissues import CONTRASTS, STRUCTURE_TISSUE, Tissue, keep_apart

__all__ = ["RandomisationSpec", "SynthesisSpecError", "synthesize_from_labels"]


class SynthesisSpecError(KoaimgError, ValueError):
    """A randomisation setting is out of range (e.g. a (low, high) pair with low > high)."""

    code = "bad_synth_spec"


# intensity classes: 0-8 are Structure values, then tissues invented for the background, then context tissues
_CORTEX, _FLUID, _MUSCLE, _FAT_SEPTA, _FAT_SUBCUT, _SKIN, _AIR = 9, 10, 11, 12, 13, 14, 15
_CONTEXT0 = 16
_CARTILAGE_CLASSES = tuple(int(c) for c in CARTILAGE_ON_BONE)
_N_CLASSES = _CONTEXT0 + len(Tissue)
_CLASS_TISSUE: dict[int, Tissue] = {
    **{int(s): STRUCTURE_TISSUE[s] for s in Structure},
    _FLUID: Tissue.FLUID, _MUSCLE: Tissue.MUSCLE, _FAT_SEPTA: Tissue.FAT, _FAT_SUBCUT: Tissue.FAT,
    _SKIN: Tissue.MUSCLE, _AIR: Tissue.AIR, **{_CONTEXT0 + int(t): t for t in Tissue},
}
#: grid step (mm) of the coarse distance-to-anatomy map that places the background shells
_COARSE_MM = 2.0
#: widest box (input voxels) used to average the signal over one output voxel (slice profile)
_MAX_BOX = 9

Range = tuple[float, float]


@dataclass(frozen=True)
class RandomisationSpec:
    """What :func:`synthesize_from_labels` randomises, as ``(low, high)`` ranges drawn uniformly per sample.

    Lengths are mm. Intensities are arbitrary units with the brightest preset tissue near 1. Set both ends of a range
    equal to fix a value (e.g. ``slice_mm=(2.0, 2.0)``).
    """

    #: contrast per sample, chosen uniformly: preset names from ``CONTRASTS`` and/or ``"random"`` (every class mean
    #: uniform in ``random_mean_range``, SynthSeg-style); air and cortical bone stay dark in every mode (no signal)
    contrasts: tuple[str, ...] = ("dess", "pdfs", "t1", "random")
    #: SD of the log-scale factor drawn independently per structure/tissue around a preset's mean
    contrast_spread: float = 0.25
    random_mean_range: Range = (0.0, 1.0)
    #: least difference between each cartilage class mean and the fluid mean, as a fraction of the brightest class
    #: mean (0: independent). Real cartilage protocols always separate the two; equal means hide the articular
    #: surface (see ``keep_apart``). Training sets it; the evaluation renders keep 0, as they always were
    cartilage_fluid_gap: float = 0.0
    #: relative SD of the smooth multiplicative texture inside each class, and its correlation length
    texture_amplitude: Range = (0.0, 0.15)
    texture_scale_mm: Range = (1.0, 4.0)
    #: background: fluid film thickness on cartilage/menisci and the fraction of the surface it covers
    fluid_film_mm: Range = (0.0, 1.5)
    fluid_coverage: Range = (0.3, 1.0)
    #: background: fraction of the 10 mm shell around the anatomy filled by fluid pockets (effusion, recesses)
    effusion_fraction: Range = (0.0, 0.25)
    #: background shells by distance from the labelled anatomy: muscle, subcutaneous fat, skin, air; inside the
    #: muscle shell, thin fat septa (sheets) and fat pads (blobs: Hoffa's, popliteal fossa) by volume fraction
    muscle_mm: Range = (10.0, 45.0)
    septa_fraction: Range = (0.03, 0.15)
    fat_pad_fraction: Range = (0.0, 0.25)
    fat_mm: Range = (3.0, 15.0)
    skin_mm: Range = (1.0, 2.5)
    #: factor (>= 1) by which the soft tissue is thinner in front of the knee (femur -> patella = anterior)
    anterior_thinning: Range = (1.0, 4.0)
    #: dark cortical rim inside every bone label
    cortex_mm: Range = (0.3, 1.2)
    #: multiplicative coil bias exp(+-strength) and its smoothness
    bias_strength: Range = (0.0, 0.35)
    bias_scale_mm: Range = (40.0, 120.0)
    #: Rician noise SD relative to the brightest class mean of the sample
    noise_sigma: Range = (0.005, 0.05)
    #: Gaussian point-spread FWHM applied on the output grid (on top of the voxel-extent averaging)
    blur_fwhm_mm: Range = (0.0, 0.8)
    #: output resolution: square in-plane pixels, thicker slices along ``slice_axis`` (input i/j/k; None = random)
    in_plane_mm: Range = (0.3, 0.7)
    slice_mm: Range = (0.6, 3.0)
    slice_axis: int | None = None
    #: elastic deformation: largest displacement and correlation length
    elastic_mm: Range = (0.0, 3.0)
    elastic_scale_mm: Range = (20.0, 50.0)
    #: largest rotation about each world axis (degrees), applied about the field-of-view centre
    rotation_deg: float = 10.0
    mirror_probability: float = 0.5
    #: output voxels along i, j, k; None = the whole input field of view at the drawn spacing. A patch is centred on a
    #: random labelled point (kept inside the field of view when it fits) and only its neighbourhood is computed
    patch_size: tuple[int, int, int] | None = None
    #: where a patch is centred: "anatomy" (a random labelled point) or "uniform" (anywhere in the input field of
    #: view: far soft tissue, air and the field-of-view edge, which a segmentation model must also learn to leave alone)
    patch_centre: str = "anatomy"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "Range":
                if len(value) != 2:
                    raise SynthesisSpecError(f"RandomisationSpec.{f.name}={value!r} must be a (low, high) pair")
                lo, hi = float(value[0]), float(value[1])
                if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi or lo < 0:
                    raise SynthesisSpecError(f"RandomisationSpec.{f.name}={value!r} must be (low, high) with "
                                             "0 <= low <= high")
        unknown = [c for c in self.contrasts if c != "random" and c not in CONTRASTS]
        if not self.contrasts or unknown:
            raise SynthesisSpecError(f"RandomisationSpec.contrasts has unknown names {unknown}",
                                     hint=f"use {sorted(CONTRASTS)} or 'random'")
        if min(self.in_plane_mm[0], self.slice_mm[0], self.texture_scale_mm[0], self.bias_scale_mm[0],
               self.elastic_scale_mm[0]) <= 0:
            raise SynthesisSpecError("spacings and scales in RandomisationSpec must be > 0 mm")
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise SynthesisSpecError(f"RandomisationSpec.slice_axis must be 0, 1, 2 or None, got {self.slice_axis}")
        if not 0.0 <= self.cartilage_fluid_gap < 1.0:
            raise SynthesisSpecError(f"RandomisationSpec.cartilage_fluid_gap={self.cartilage_fluid_gap!r} must be in "
                                     "[0, 1)")
        if not 0.0 <= self.mirror_probability <= 1.0 or self.rotation_deg < 0 or self.contrast_spread < 0:
            raise SynthesisSpecError("mirror_probability must be in [0, 1]; rotation_deg and contrast_spread >= 0")
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 1):
            raise SynthesisSpecError(f"RandomisationSpec.patch_size must be 3 positive ints, got {self.patch_size}")
        if self.patch_centre not in ("anatomy", "uniform"):
            raise SynthesisSpecError(f"RandomisationSpec.patch_centre must be 'anatomy' or 'uniform', got "
                                     f"{self.patch_centre!r}")


def synthesize_from_labels(labels: LabelVolume, *, rng: np.random.Generator,
                           spec: RandomisationSpec = RandomisationSpec(),
                           context: np.ndarray | None = None) -> tuple[Volume, LabelVolume]:
    """One random MR-like image and its label map, on the same new grid, from a real label map.

    Parameters
    ----------
    labels : LabelVolume
        (I, J, K) label map in koaimg's schema on any RAS grid (anisotropic and oblique allowed).
    rng : numpy.random.Generator
        The only source of randomness: the same seed gives identical arrays and affines.
    spec : RandomisationSpec
        Ranges to draw from; ``spec.patch_size`` crops a patch around the anatomy *before* any work (fast path).
    context : (I, J, K) integer ndarray, optional
        ``Tissue`` codes for unlabelled voxels on the same grid as ``labels`` (e.g. fat/muscle from another
        segmentation); used where ``labels`` is background; values that are no ``Tissue`` (-1, 255) mean "invent it".

    Returns
    -------
    image : Volume
        (I', J', K') float32, modality MR, same axis directions as ``labels``, drawn spacing; ``meta.acquisition``
        records the drawn parameters under ``"synthesis"``.
    out_labels : LabelVolume
        uint8 labels on exactly the same grid (``image.same_grid(out_labels)``), resampled with nearest neighbour only.
        Both carry ``meta.side`` flipped (RIGHT <-> LEFT) when the sample is mirrored.

    Notes
    -----
    Output voxels whose centre maps outside the input field of view (rotated corners, oversized patches) hold label 0
    and signal 0, as if not acquired. Arrays keep the memory order of ``labels.array`` (Fortran-ordered in, Fortran-
    ordered out), which is what keeps the full-volume path fast.
    """
    if not isinstance(labels, LabelVolume):
        raise LabelSchemaError("synthesize_from_labels needs a LabelVolume",
                               hint="read the map with koaimg.io.read_labels(path, preset=...)")
    ctx = _check_context(context, labels.spatial_shape)
    # input side works in a memory-order frame (any layout, e.g. Fortran-ordered NRRD, without a full copy); the
    # output grid keeps the input's own axis order and directions
    perm = np.argsort([-abs(st) for st in labels.array.strides], kind="stable")
    lab = labels.array.transpose(perm)
    a_in = labels.affine[:, [*perm, 3]]
    shape_in, sp_in = np.array(lab.shape), np.linalg.norm(a_in[:3, :3], axis=0)
    b_inv = np.linalg.inv(a_in[:3, :3])
    anatomy = _Anatomy.from_labels(lab, a_in)

    # pose and output grid ------------------------------------------------------------------------------------------
    axis = int(rng.integers(3)) if spec.slice_axis is None else int(spec.slice_axis)
    sp_out = np.full(3, rng.uniform(*spec.in_plane_mm))
    sp_out[axis] = rng.uniform(*spec.slice_mm)
    a3_out = labels.direction * sp_out
    rot = Rotation.from_euler("xyz", rng.uniform(-spec.rotation_deg, spec.rotation_deg, 3), degrees=True).as_matrix()
    mirrored = bool(rng.random() < spec.mirror_probability)
    s0 = np.diag([-1.0 if mirrored else 1.0, 1.0, 1.0])
    m = s0 @ rot  # output world -> input world (about the FOV centre), before the elastic displacement
    fov_centre = _world(a_in, (shape_in - 1) / 2.0)
    if spec.patch_size is None:
        n_out = np.maximum(1, np.rint(np.array(labels.spatial_shape) * labels.spacing / sp_out)).astype(np.int64)
    else:
        n_out = np.array(spec.patch_size, dtype=np.int64)
    # the output is computed in the same memory-order frame (suffix _w) and transposed back at the end
    a3_w, n_w, sp_w = a3_out[:, perm], n_out[perm], sp_out[perm]
    q = b_inv @ m @ a3_w  # output index step -> input index step
    if spec.patch_size is None:
        out_centre = fov_centre
    else:
        half = np.abs(q) @ ((n_w - 1) / 2.0)
        src = anatomy.random_point(rng) if spec.patch_centre == "anatomy" else rng.random(3) * (shape_in - 1)
        room = shape_in - 1 - 2 * half
        src = np.where(room >= 0, np.clip(src, half, shape_in - 1 - half), (shape_in - 1) / 2.0)
        out_centre = fov_centre + m.T @ (_world(a_in, src) - fov_centre)
    o_out = out_centre - a3_out @ ((n_out - 1) / 2.0)
    p0 = b_inv @ (fov_centre + m @ (o_out - fov_centre) - a_in[:3, 3])  # input index of output voxel (0, 0, 0)

    # smooth fields on a coarse grid over the output: elastic displacement (input index units) and bias gain
    smooth, lerp_out, drawn = _output_fields(n_w, sp_w, b_inv @ s0 @ labels.direction[:, perm], spec, rng)
    max_disp = float(np.abs(smooth[..., :3]).max())

    # one output voxel spans this many input voxels along each input axis: the box that averages the signal
    box = np.clip(np.rint(np.abs(q).max(axis=1)), 1, _MAX_BOX).astype(np.int64)
    # the input region the output can see, with margins for displacement, averaging box and interpolation
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in n_w], indexing="ij")).reshape(3, -1).T
    reach = p0 + corners @ q.T
    margin = max_disp + box.max() / 2.0 + 2.0
    crop0 = np.clip(np.floor(reach.min(0) - margin), 0, shape_in - 1).astype(np.int64)
    crop1 = np.clip(np.ceil(reach.max(0) + margin), 0, shape_in - 1).astype(np.int64)
    window = tuple(slice(int(a), int(b) + 1) for a, b in zip(crop0, crop1, strict=True))
    lab_crop = np.ascontiguousarray(lab[window])
    ctx_crop = (np.ascontiguousarray(ctx.transpose(perm)[window]) if ctx is not None
                else np.full((1, 1, 1), -1, np.int16))

    # tissue image on the input grid, averaged over the output voxel extent -----------------------------------------
    contrast = spec.contrasts[int(rng.integers(len(spec.contrasts)))]
    means = _class_means(contrast, spec, rng)
    drawn.update({name: rng.uniform(*getattr(spec, name)) for name in (
        "fluid_film_mm", "cortex_mm", "muscle_mm", "fat_mm", "skin_mm", "anterior_thinning", "texture_scale_mm")})
    tissue = _tissue(lab_crop, ctx_crop, ctx is not None, crop0, crop1, sp_in, a_in, anatomy, means, drawn, spec,
                     rng)
    for a in range(3):
        if box[a] > 1:
            tissue = _box_axis(tissue, int(box[a]), a)

    # resample onto the output grid, then acquisition effects -------------------------------------------------------
    image, out_lab = _render(lab_crop, tissue, p0 - crop0, q, smooth, *lerp_out, n_w, -crop0 - 0.5,
                             shape_in - crop0 - 0.5)
    fwhm = rng.uniform(*spec.blur_fwhm_mm)
    image = np.ascontiguousarray(blur(image, sp_w, fwhm), dtype=np.float32)
    sigma = rng.uniform(*spec.noise_sigma) * float(means.max())
    _rician_inplace(image, sigma, np.uint64(rng.integers(2**63)))

    # geometry and metadata -------------------------------------------------------------------------------------------
    affine = np.eye(4)
    affine[:3, :3] = a3_out
    affine[:3, 3] = o_out
    side, side_source = labels.meta.side, labels.meta.side_source
    if mirrored:
        side = {KneeSide.RIGHT: KneeSide.LEFT, KneeSide.LEFT: KneeSide.RIGHT}.get(side, side)
        side_source = f"{side_source}; mirrored by synthesize_from_labels"
    drawn.update(contrast=contrast, class_means=means.round(4).tolist(), mirrored=mirrored,
                 rotation_deg=Rotation.from_matrix(rot).as_euler("xyz", degrees=True).round(3).tolist(),
                 blur_fwhm_mm=fwhm, noise_sigma=sigma)
    tags = CONTRASTS[contrast].tags if contrast in CONTRASTS else {}
    preset_tags = {k: v for k, v in tags.items() if k != "series_description"}
    meta = labels.meta.replace(
        modality=Modality.MR, side=side, side_source=side_source, source="synthesize_from_labels",
        series_description=f"synthetic {contrast} from labels",
        acquisition={**preset_tags, "slice_thickness_mm": float(sp_out[axis]), "pixel_spacing_mm": float(
            sp_out[(axis + 1) % 3]), "slice_axis": axis, "synthesis": drawn})
    label_meta = meta.replace(modality=Modality.SEG, acquisition={})
    back = np.argsort(perm)
    return Volume(image.transpose(back), affine, meta), LabelVolume(out_lab.transpose(back), affine, label_meta)


# helpers (numpy) ---------------------------------------------------------------------------------------------------
def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """RAS mm of (..., 3) fractional indices."""
    return np.asarray(ijk, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


@dataclass(frozen=True)
class _Anatomy:
    """Where the labelled anatomy is, from a ~2 mm subsample of block centres (cheap on any memory layout)."""

    #: coarse foreground mask, its step and offset in input voxels (node n <-> input index n * step + offset)
    foreground: np.ndarray
    step: np.ndarray
    offset: np.ndarray
    centre: np.ndarray
    #: unit RAS vector towards the front of the knee (femur -> patella, else RAS +y)
    anterior: np.ndarray
    spacing: np.ndarray

    @classmethod
    def from_labels(cls, lab: np.ndarray, affine: np.ndarray) -> _Anatomy:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        step = np.maximum(1, np.rint(_COARSE_MM / spacing)).astype(np.int64)
        offset = (step - 1) // 2
        coarse = lab[offset[0]::step[0], offset[1]::step[1], offset[2]::step[2]]
        if not coarse.any():
            if not lab.any():
                raise LabelSchemaError("label map has no labelled structure; there is no anatomy to synthesise from")
            step, offset, coarse = np.ones(3, np.int64), np.zeros(3, np.int64), lab  # tiny structures: full grid
        fg = coarse > 0
        nodes = np.argwhere(fg)
        values = coarse[fg]
        centroid = {int(v): _world(affine, nodes[values == v].mean(0) * step + offset) for v in np.unique(values)}
        anterior = np.array([0.0, 1.0, 0.0])
        if Structure.PATELLA in centroid and Structure.FEMUR in centroid:
            vec = centroid[Structure.PATELLA] - centroid[Structure.FEMUR]
            if np.linalg.norm(vec) > 5.0:
                anterior = vec / np.linalg.norm(vec)
        return cls(fg, step, offset, _world(affine, nodes.mean(0) * step + offset), anterior, spacing)

    def random_point(self, rng: np.random.Generator) -> np.ndarray:
        """Input index of a random point in a random labelled block (patch centres)."""
        cells = np.flatnonzero(self.foreground)
        cell = np.array(np.unravel_index(cells[rng.integers(cells.size)], self.foreground.shape))
        return cell * self.step + self.offset + (rng.random(3) - 0.5) * self.step


def _tissue(lab: np.ndarray, ctx: np.ndarray, use_ctx: bool, crop0: np.ndarray, crop1: np.ndarray,
            sp_in: np.ndarray, a_in: np.ndarray, anatomy: _Anatomy, means: np.ndarray, drawn: dict[str, float],
            spec: RandomisationSpec, rng: np.random.Generator) -> np.ndarray:
    """Signal of every voxel of the label crop: labelled classes, cortex rim and invented background tissues."""
    amps = rng.uniform(*spec.texture_amplitude, _N_CLASSES).astype(np.float32)
    film_r = np.rint(drawn["fluid_film_mm"] / sp_in).astype(np.int64)
    cortex_r = np.maximum(1, np.rint(drawn["cortex_mm"] / sp_in)).astype(np.int64)
    nonbone, soft = _base_masks(lab)
    near_soft = _dilate(soft, film_r)
    near_nonbone = _dilate(nonbone, cortex_r)
    shells, foff = _shell_fields(anatomy, a_in, crop0, crop1, drawn["anterior_thinning"], rng)
    muscle, fat, skin = drawn["muscle_mm"], drawn["fat_mm"], drawn["skin_mm"]
    thresholds = np.array([
        _normal_threshold(rng.uniform(*spec.fluid_coverage)),
        _normal_threshold(0.5 - 0.5 * rng.uniform(*spec.septa_fraction)),  # |field| < t: thin sheets
        _normal_threshold(rng.uniform(*spec.effusion_fraction)),
        10.0, muscle, muscle + fat, muscle + fat + skin,
        _normal_threshold(rng.uniform(*spec.fat_pad_fraction))])
    tstep = drawn["texture_scale_mm"] / sp_in
    crop_n = np.array(lab.shape, dtype=np.int64)
    texture = rng.standard_normal(_coarse_shape(crop_n, tstep), dtype=np.float32)
    field_lerp = [_lerp_table(int(n), 1.0 / c, o, shells.shape[a])
                  for a, (n, c, o) in enumerate(zip(crop_n, anatomy.step, foff, strict=True))]
    tex_lerp = [_lerp_table(int(n), 1.0 / t, 0.0, texture.shape[a])
                for a, (n, t) in enumerate(zip(crop_n, tstep, strict=True))]
    return _tissue_image(lab, ctx, use_ctx, near_soft, near_nonbone, shells, *[x for p in field_lerp for x in p],
                         texture, *[x for p in tex_lerp for x in p], means, amps, thresholds)


def _output_fields(n_w: np.ndarray, sp_w: np.ndarray, to_input: np.ndarray, spec: RandomisationSpec,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], dict[str, float]]:
    """Elastic displacement and bias gain on one coarse grid over the output, with its lerp tables.

    Returns (G0, G1, G2, 4) float32 (ux, uy, uz in input index units via ``to_input``, gain), the six lerp tables
    for the output axes, and the drawn amplitudes/scales.
    """
    amp, scale = rng.uniform(*spec.elastic_mm), rng.uniform(*spec.elastic_scale_mm)
    ustep = np.full(3, scale / 2.0) / sp_w
    disp = _divergence_free_field(_coarse_shape(n_w, ustep), scale / 2.0, amp, rng)
    disp = np.einsum("ab,b...->a...", to_input, disp)
    strength, bias_scale = rng.uniform(*spec.bias_strength), rng.uniform(*spec.bias_scale_mm)
    bstep = np.full(3, bias_scale / 2.0) / sp_w
    log_bias = _smooth_noise(_coarse_shape(n_w, bstep), 1.0, rng)
    log_bias *= strength / max(float(np.abs(log_bias).max()), 1e-12)
    nodes = np.meshgrid(*[np.arange(n) * u / b for n, u, b in zip(disp.shape[1:], ustep, bstep, strict=True)],
                        indexing="ij")
    gain = np.exp(ndimage.map_coordinates(log_bias, np.stack(nodes), order=1, mode="nearest"))
    smooth = np.ascontiguousarray(np.moveaxis(np.concatenate([disp, gain[None]]), 0, -1), dtype=np.float32)
    tables = [x for a in range(3) for x in _lerp_table(int(n_w[a]), 1.0 / ustep[a], 0.0, smooth.shape[a])]
    return smooth, tables, {"elastic_mm": amp, "elastic_scale_mm": scale, "bias_strength": strength,
                            "bias_scale_mm": bias_scale}


def _check_context(context: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate the optional tissue map and bring it to int16 with -1 for 'not given'."""
    if context is None:
        return None
    arr = np.asarray(context)
    if arr.shape != shape:
        raise GeometryError(f"context shape {arr.shape} differs from the label grid {shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise LabelSchemaError(f"context must hold integer Tissue codes, got dtype {arr.dtype}")
    return np.where((arr >= 0) & (arr < len(Tissue)), arr, -1).astype(np.int16)


def _coarse_shape(n: np.ndarray, step: np.ndarray) -> tuple[int, int, int]:
    """Nodes of a coarse grid with ``step`` (fine voxels) that covers indices 0..n-1, plus one spare node."""
    return tuple(int(np.ceil(max(int(a) - 1, 0) / s)) + 2 for a, s in zip(n, step, strict=True))  # type: ignore[return-value]


def _smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit SD (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect", truncate=3.0)
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


def _divergence_free_field(shape: tuple[int, int, int], step_mm: float, amplitude_mm: float,
                           rng: np.random.Generator) -> np.ndarray:
    """(3, *shape) displacement (mm, along the grid axes) = curl of a smooth random potential, max norm = amplitude.

    The curl has zero divergence, so the deformation preserves volume to first order and label volumes stay put.
    """
    psi = np.stack([_smooth_noise(shape, 1.0, rng) for _ in range(3)])
    if amplitude_mm <= 0:
        return np.zeros((3, *shape), np.float32)
    grad = [np.gradient(psi[c], step_mm) for c in range(3)]  # grad[c][a] = d psi_c / d x_a
    u = np.stack([grad[2][1] - grad[1][2], grad[0][2] - grad[2][0], grad[1][0] - grad[0][1]])
    return (u * (amplitude_mm / max(float(np.sqrt((u**2).sum(0)).max()), 1e-12))).astype(np.float32)


def _class_means(contrast: str, spec: RandomisationSpec, rng: np.random.Generator) -> np.ndarray:
    """Independent mean per class: around a preset (log-normal spread) or uniform; air and cortex stay dark."""
    if contrast == "random":
        means = rng.uniform(*spec.random_mean_range, _N_CLASSES)
    else:
        table = CONTRASTS[contrast].means
        base = np.array([table.get(_CLASS_TISSUE.get(c, Tissue.MUSCLE), table[Tissue.MUSCLE])
                         for c in range(_N_CLASSES)])
        means = base * np.exp(rng.normal(0.0, spec.contrast_spread, _N_CLASSES)).clip(0.4, 2.5)
    means = keep_apart(means, _FLUID, _CARTILAGE_CLASSES, spec.cartilage_fluid_gap)
    top = max(float(means.max()), 1e-3)
    means[_CORTEX] = rng.uniform(0.0, 0.06) * top  # cortical bone has no signal on any contrast
    means[_AIR] = means[_CONTEXT0 + Tissue.AIR] = rng.uniform(0.0, 0.02) * top
    return means.astype(np.float32)


def _normal_threshold(fraction: float) -> float:
    """Threshold on a unit-normal field above which ``fraction`` of it lies."""
    return statistics.NormalDist().inv_cdf(1.0 - float(np.clip(fraction, 1e-4, 1 - 1e-4)))


def _shell_fields(anatomy: _Anatomy, a_in: np.ndarray, crop0: np.ndarray, crop1: np.ndarray, thinning: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(G0, G1, G2, 4) coarse fields placing the background tissues: effective distance (mm), septa, coverage, effusion.

    Distance is from *all* the anatomy (not just the crop), scaled up in front of the knee so the anterior soft tissue
    is thinner, and perturbed by smooth noise so the shells are wavy. Also returns the coarse coordinate of crop
    voxel 0.
    """
    step, coarse_mm = anatomy.step, anatomy.step * anatomy.spacing
    g0 = crop0 // step
    g1 = np.minimum(crop1 // step + 2, np.array(anatomy.foreground.shape) - 1)
    dist = _distance_map(anatomy.foreground, coarse_mm)[tuple(slice(int(a), int(b) + 1) for a, b in zip(g0, g1,
                                                                                                         strict=True))]
    # direction cosine towards the front, from RAS positions of the nodes (separable: position is affine in index)
    axes = [(np.arange(a, b + 1) * st + off)[:, None] * a_in[:3, ax] for ax, (a, b, st, off) in
            enumerate(zip(g0, g1, step, anatomy.offset, strict=True))]
    rel = (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
           + (a_in[:3, 3] - anatomy.centre)).astype(np.float32)
    cos = (rel @ anatomy.anterior.astype(np.float32)) / np.maximum(np.linalg.norm(rel, axis=-1), 1e-3)
    scale = float(coarse_mm.mean())
    wobble = rng.uniform(2.0, 8.0) * _smooth_noise(dist.shape, 8.0 / scale, rng)
    out = np.empty((*dist.shape, 4), np.float32)
    out[..., 0] = dist * (1.0 + (thinning - 1.0) * np.maximum(cos, 0.0)) + wobble
    out[..., 1] = _smooth_noise(dist.shape, rng.uniform(4.0, 12.0) / scale, rng)
    out[..., 2] = _smooth_noise(dist.shape, 4.0 / scale, rng)
    out[..., 3] = _smooth_noise(dist.shape, 8.0 / scale, rng)
    return out, ((crop0 - anatomy.offset) / step - g0).astype(np.float64)


_DISTANCE_CACHE: dict[tuple[bytes, tuple[int, ...], bytes], np.ndarray] = {}


def _distance_map(coarse_fg: np.ndarray, coarse_mm: np.ndarray) -> np.ndarray:
    """Distance (mm) from the anatomy on the coarse grid, cached by content: training calls reuse one label map."""
    key = (hashlib.blake2b(np.packbits(coarse_fg).tobytes(), digest_size=16).digest(), coarse_fg.shape,
           np.asarray(coarse_mm, np.float64).tobytes())
    if key not in _DISTANCE_CACHE:
        if len(_DISTANCE_CACHE) >= 8:
            _DISTANCE_CACHE.pop(next(iter(_DISTANCE_CACHE)))
        dist = ndimage.distance_transform_edt(coarse_fg == 0, sampling=coarse_mm)
        dist = ndimage.gaussian_filter(dist, 1.0, mode="nearest").astype(np.float32)  # round off the block corners
        dist.flags.writeable = False
        _DISTANCE_CACHE[key] = dist
    return _DISTANCE_CACHE[key]


def _lerp_table(n: int, scale: float, offset: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower node and weight of linear interpolation for fine indices 0..n-1 at coarse coordinate i*scale+offset."""
    x = np.clip(np.arange(n) * scale + offset, 0.0, nodes - 1.0)
    lower = np.minimum(np.floor(x).astype(np.int64), max(nodes - 2, 0))
    return lower, (x - lower).astype(np.float32)


def _dilate(mask: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Box dilation by ``radius`` voxels per axis (separable running counts)."""
    out = mask
    for axis in range(3):
        if radius[axis] > 0:
            out = _dilate_axis(out, int(radius[axis]), axis)
    return out


# kernels (numba) ---------------------------------------------------------------------------------------------------
@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _tri(f, x, y, z):  # pragma: no cover - compiled
    """Trilinear interpolation of a 3D array at fractional index (x, y, z), clamped to the edges."""
    n0, n1, n2 = f.shape
    x = min(max(x, 0.0), n0 - 1.0)
    y = min(max(y, 0.0), n1 - 1.0)
    z = min(max(z, 0.0), n2 - 1.0)
    i0, j0, k0 = int(x), int(y), int(z)
    i1, j1, k1 = min(i0 + 1, n0 - 1), min(j0 + 1, n1 - 1), min(k0 + 1, n2 - 1)
    fx, fy, fz = x - i0, y - j0, z - k0
    c00 = f[i0, j0, k0] * (1.0 - fz) + f[i0, j0, k1] * fz
    c01 = f[i0, j1, k0] * (1.0 - fz) + f[i0, j1, k1] * fz
    c10 = f[i1, j0, k0] * (1.0 - fz) + f[i1, j0, k1] * fz
    c11 = f[i1, j1, k0] * (1.0 - fz) + f[i1, j1, k1] * fz
    return (c00 * (1.0 - fy) + c01 * fy) * (1.0 - fx) + (c10 * (1.0 - fy) + c11 * fy) * fx


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _base_masks(lab):  # pragma: no cover - compiled
    """(not bone, cartilage-or-meniscus) as uint8 masks."""
    n0, n1, n2 = lab.shape
    nonbone = np.empty(lab.shape, np.uint8)
    soft = np.empty(lab.shape, np.uint8)
    for i in prange(n0):
        for j in range(n1):
            for k in range(n2):
                v = lab[i, j, k]
                nonbone[i, j, k] = 0 if (v == 1 or v == 3 or v == 5 or v == 7) else 1
                soft[i, j, k] = 1 if (v == 2 or v == 4 or v == 6 or v == 8) else 0
    return nonbone, soft


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _dilate_axis(m, r, axis):  # pragma: no cover - compiled
    """1D box dilation of a uint8 mask along ``axis`` by ``r`` voxels (running window counts, cache-friendly)."""
    n0, n1, n2 = m.shape
    out = np.empty_like(m)
    if axis == 2:
        for i in prange(n0):
            for j in range(n1):
                run = 0
                for k in range(min(r, n2)):
                    run += m[i, j, k]
                for k in range(n2):
                    if k + r < n2:
                        run += m[i, j, k + r]
                    if k - r - 1 >= 0:
                        run -= m[i, j, k - r - 1]
                    out[i, j, k] = 1 if run > 0 else 0
    elif axis == 1:
        for i in prange(n0):
            cnt = np.zeros(n2, np.int32)
            for j in range(min(r, n1)):
                for k in range(n2):
                    cnt[k] += m[i, j, k]
            for j in range(n1):
                for k in range(n2):
                    if j + r < n1:
                        cnt[k] += m[i, j + r, k]
                    if j - r - 1 >= 0:
                        cnt[k] -= m[i, j - r - 1, k]
                    out[i, j, k] = 1 if cnt[k] > 0 else 0
    else:
        for j in prange(n1):
            cnt = np.zeros(n2, np.int32)
            for i in range(min(r, n0)):
                for k in range(n2):
                    cnt[k] += m[i, j, k]
            for i in range(n0):
                for k in range(n2):
                    if i + r < n0:
                        cnt[k] += m[i + r, j, k]
                    if i - r - 1 >= 0:
                        cnt[k] -= m[i - r - 1, j, k]
                    out[i, j, k] = 1 if cnt[k] > 0 else 0
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _tissue_image(lab, ctx, use_ctx, near_soft, near_nonbone, fields, fi, wi, fj, wj, fk, wk, texture, ti, vi, tj, vj,
                  tk, vk, means, amps, thr):  # pragma: no cover - compiled
    """Signal per input voxel: the class of each voxel (label, cortex rim or invented background) times texture.

    Coarse fields are interpolated separably (plane, then row, then voxel) from the lerp tables (fi, wi), ...
    """
    n0, n1, n2 = lab.shape
    g1, g2, nch = fields.shape[1], fields.shape[2], fields.shape[3]
    h1, h2 = texture.shape[1], texture.shape[2]
    out = np.empty(lab.shape, np.float32)
    for i in prange(n0):
        a0, a1, wa = fi[i], min(fi[i] + 1, fields.shape[0] - 1), wi[i]
        plane = np.empty((g1, g2, nch), np.float32)
        for b in range(g1):
            for c in range(g2):
                for ch in range(nch):
                    plane[b, c, ch] = fields[a0, b, c, ch] * (1.0 - wa) + fields[a1, b, c, ch] * wa
        t0, t1, wt = ti[i], min(ti[i] + 1, texture.shape[0] - 1), vi[i]
        tplane = np.empty((h1, h2), np.float32)
        for b in range(h1):
            for c in range(h2):
                tplane[b, c] = texture[t0, b, c] * (1.0 - wt) + texture[t1, b, c] * wt
        row = np.empty((g2, nch), np.float32)
        trow = np.empty(h2, np.float32)
        for j in range(n1):
            b0, b1, wb = fj[j], min(fj[j] + 1, g1 - 1), wj[j]
            for c in range(g2):
                for ch in range(nch):
                    row[c, ch] = plane[b0, c, ch] * (1.0 - wb) + plane[b1, c, ch] * wb
            s0, s1, ws = tj[j], min(tj[j] + 1, h1 - 1), vj[j]
            for c in range(h2):
                trow[c] = tplane[s0, c] * (1.0 - ws) + tplane[s1, c] * ws
            for k in range(n2):
                c0, c1, wc = fk[k], min(fk[k] + 1, g2 - 1), wk[k]
                v = lab[i, j, k]
                cls = -1
                if v == 0:
                    if use_ctx and ctx[i, j, k] >= 0:
                        cls = 16 + ctx[i, j, k]
                    elif near_soft[i, j, k] and row[c0, 2] * (1.0 - wc) + row[c1, 2] * wc > thr[0]:
                        cls = 10
                    else:
                        d = row[c0, 0] * (1.0 - wc) + row[c1, 0] * wc
                        if d < thr[4]:
                            if d < thr[3] and row[c0, 3] * (1.0 - wc) + row[c1, 3] * wc > thr[2]:
                                cls = 10
                            else:
                                f = row[c0, 1] * (1.0 - wc) + row[c1, 1] * wc
                                cls = 12 if (abs(f) < thr[1] or f > thr[7]) else 11
                        elif d < thr[5]:
                            cls = 13
                        elif d < thr[6]:
                            cls = 14
                        else:
                            cls = 15
                elif near_nonbone[i, j, k] and (v == 1 or v == 3 or v == 5 or v == 7):
                    cls = 9
                else:
                    cls = v
                e0, e1, we = tk[k], min(tk[k] + 1, h2 - 1), vk[k]
                t = trow[e0] * (1.0 - we) + trow[e1] * we
                out[i, j, k] = max(means[cls] * (1.0 + amps[cls] * t), 0.0)
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _box_axis(a, n, axis):  # pragma: no cover - compiled
    """Centred moving average of width ``n`` voxels along ``axis`` (half-weight end taps when n is even), edges
    replicated: the signal of a voxel ``n`` input voxels wide, so one trilinear sample models the slice profile."""
    n0, n1, n2 = a.shape
    h = n // 2
    taps = 2 * h + 1
    out = np.empty_like(a)
    w = np.ones(taps, np.float32) / n
    if n % 2 == 0:
        w[0] *= 0.5
        w[taps - 1] *= 0.5
    for i in prange(n0):
        idx = np.empty(taps, np.int64)
        if axis == 0:
            for o in range(taps):
                idx[o] = min(max(i + o - h, 0), n0 - 1)
        for j in range(n1):
            if axis == 1:
                for o in range(taps):
                    idx[o] = min(max(j + o - h, 0), n1 - 1)
            for k in range(n2):
                acc = 0.0
                if axis == 2:
                    for o in range(taps):
                        acc += w[o] * a[i, j, min(max(k + o - h, 0), n2 - 1)]
                elif axis == 1:
                    for o in range(taps):
                        acc += w[o] * a[i, idx[o], k]
                else:
                    for o in range(taps):
                        acc += w[o] * a[idx[o], j, k]
                out[i, j, k] = acc
    return out


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _render(lab, tissue, p0, q, smooth, fi, wi, fj, wj, fk, wk, n_out, lo, hi):  # pragma: no cover - compiled
    """Output image (trilinear sample of the box-averaged signal, times bias gain) and nearest-neighbour labels.

    ``smooth`` (G0, G1, G2, 4) holds displacement (input index units) and gain on a coarse output grid, interpolated
    separably with the lerp tables. Positions outside the input field of view [lo, hi) (crop index units) read as
    label 0 and signal 0.
    """
    image = np.empty((n_out[0], n_out[1], n_out[2]), np.float32)
    out_lab = np.empty((n_out[0], n_out[1], n_out[2]), np.uint8)
    m0, m1, m2 = lab.shape
    g1, g2 = smooth.shape[1], smooth.shape[2]
    for i in prange(n_out[0]):
        a0, a1, wa = fi[i], min(fi[i] + 1, smooth.shape[0] - 1), wi[i]
        plane = np.empty((g1, g2, 4), np.float32)
        for b in range(g1):
            for c in range(g2):
                for ch in range(4):
                    plane[b, c, ch] = smooth[a0, b, c, ch] * (1.0 - wa) + smooth[a1, b, c, ch] * wa
        row = np.empty((g2, 4), np.float32)
        for j in range(n_out[1]):
            b0, b1, wb = fj[j], min(fj[j] + 1, g1 - 1), wj[j]
            for c in range(g2):
                for ch in range(4):
                    row[c, ch] = plane[b0, c, ch] * (1.0 - wb) + plane[b1, c, ch] * wb
            for k in range(n_out[2]):
                c0, c1, wc = fk[k], min(fk[k] + 1, g2 - 1), wk[k]
                x = p0[0] + q[0, 0] * i + q[0, 1] * j + q[0, 2] * k + row[c0, 0] * (1.0 - wc) + row[c1, 0] * wc
                y = p0[1] + q[1, 0] * i + q[1, 1] * j + q[1, 2] * k + row[c0, 1] * (1.0 - wc) + row[c1, 1] * wc
                z = p0[2] + q[2, 0] * i + q[2, 1] * j + q[2, 2] * k + row[c0, 2] * (1.0 - wc) + row[c1, 2] * wc
                if lo[0] <= x < hi[0] and lo[1] <= y < hi[1] and lo[2] <= z < hi[2]:
                    li = min(max(int(np.floor(x + 0.5)), 0), m0 - 1)
                    lj = min(max(int(np.floor(y + 0.5)), 0), m1 - 1)
                    lk = min(max(int(np.floor(z + 0.5)), 0), m2 - 1)
                    out_lab[i, j, k] = lab[li, lj, lk]
                    image[i, j, k] = _tri(tissue, x, y, z) * (row[c0, 3] * (1.0 - wc) + row[c1, 3] * wc)
                else:
                    out_lab[i, j, k] = 0
                    image[i, j, k] = 0.0
    return image, out_lab


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH)
def _rician_inplace(image, sigma, seed):  # pragma: no cover - compiled
    """|signal + complex Gaussian noise| with a counter-based generator (splitmix64 + Box-Muller): parallel and
    reproducible for a given seed, unlike a shared stateful generator."""
    if sigma <= 0:
        return
    flat = image.reshape(-1)
    n = flat.size
    golden = np.uint64(0x9E3779B97F4A7C15)
    for t in prange(n):
        z = seed + np.uint64(t) * golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        u1 = (np.float64(z >> np.uint64(40)) + 0.5) / 16777216.0
        u2 = np.float64((z >> np.uint64(16)) & np.uint64(0xFFFFFF)) / 16777216.0
        rad = sigma * np.sqrt(-2.0 * np.log(u1))
        re = flat[t] + rad * np.cos(2.0 * np.pi * u2)
        im = rad * np.sin(2.0 * np.pi * u2)
        flat[t] = np.sqrt(re * re + im * im)
