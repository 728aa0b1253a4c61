"""Training samples by domain randomisation: random label maps (real MIT-licensed map + procedural knees) rendered
into random MR-like images by :func:`koaimg.synth.synthesize_from_labels`, cropped to patches on the working grid.

Everything is driven by an explicit ``numpy.random.Generator`` so that a (seed, step) pair always gives the same
sample: a training run that resumes from a checkpoint sees exactly the samples it would have seen uninterrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..core import CARTILAGE_ON_BONE, KneeSide, KoaimgError, LabelVolume, Volume
from ..synth import (
    ACQUISITIONS,
    CONTRASTS,
    Acquisition,
    KneeAnatomy,
    Pose,
    RandomisationSpec,
    Tissue,
    keep_apart,
    make_knee_phantom,
    synthesize_from_labels,
)
from ._geometry import WorkingGrid, ras_transform, to_ras_array
from ._intensity import normalise_intensity

__all__ = ["N_CLASSES", "CheckpointMismatchError", "LabelSource", "RenderedSource", "augment_patch", "average_weights",
           "cartilage_surface_band", "mean_weights", "network_arrays", "phantom_labels", "rendered_pair",
           "rendered_phantom", "surface_weighted_ce", "training_pair", "vary_cartilage_thickness"]

#: network outputs: background + the six structures of the internal schema (fibula and menisci are background)
N_CLASSES = 7
#: as plain ints (``torch.isin`` needs them), from the core's one cartilage -> bone table
CARTILAGE = tuple(int(c) for c in CARTILAGE_ON_BONE)
BONES = tuple(int(b) for b in CARTILAGE_ON_BONE.values())
#: procedural phantoms are rasterised finer than the working grid, so the renderer can average partial volume
PHANTOM_GRID = Acquisition("seg_pool", (280, 280, 224), (0.5, 0.5, 0.5), "PIR", "dess")


def phantom_labels(seed: int, grid: Acquisition = PHANTOM_GRID) -> LabelVolume:
    """A random procedural knee (anatomy, side) as a label map: a source of shapes the real map does not have."""
    rng = np.random.default_rng(seed)
    anatomy = KneeAnatomy.random(rng)
    side = KneeSide.RIGHT if rng.random() < 0.5 else KneeSide.LEFT
    return make_knee_phantom(anatomy, grid, seed=seed, side=side, with_image=False).labels


def _centre_candidates(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels a patch may be centred on: every cartilage voxel, and every 4th labelled voxel per axis."""
    cartilage = np.argwhere(np.isin(labels, CARTILAGE)).astype(np.int32)
    foreground = np.argwhere(labels[::4, ::4, ::4] > 0).astype(np.int32) * 4
    return cartilage, foreground


def _pick_centre(rng: np.random.Generator, cartilage: np.ndarray, foreground: np.ndarray,
                 cartilage_focus: float) -> np.ndarray:
    """A cartilage voxel with probability ``cartilage_focus`` (when there is any), else a labelled voxel."""
    pool = cartilage if (rng.random() < cartilage_focus and len(cartilage)) else foreground
    return pool[rng.integers(len(pool))].astype(np.int64)


@dataclass
class LabelSource:
    """A label map and cached voxel lists to centre patches on cartilage (most voxels are bone or background)."""

    labels: LabelVolume
    name: str = ""
    cartilage: np.ndarray = field(init=False)
    foreground: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cartilage, self.foreground = _centre_candidates(self.labels.array)

    def crop_around(self, rng: np.random.Generator, half_mm: float, cartilage_focus: float) -> LabelVolume:
        """A sub-map centred on a random cartilage voxel (probability ``cartilage_focus``) or labelled voxel."""
        shape = np.array(self.labels.spatial_shape)
        half = np.ceil(half_mm / self.labels.spacing).astype(np.int64)
        centre = _pick_centre(rng, self.cartilage, self.foreground, cartilage_focus)
        lo = np.clip(centre - half, 0, shape - 1)
        hi = np.clip(centre + half + 1, 1, shape)
        sub = self.labels.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        affine = self.labels.affine.copy()
        affine[:3, 3] = self.labels.index_to_world(lo.astype(float))
        return LabelVolume(np.ascontiguousarray(sub), affine, self.labels.meta)


@dataclass
class RenderedSource:
    """A procedural knee imaged by the phantom's own acquisition simulator, on the working grid (RAS, normalised like
    inference normalises a whole field of view): the second renderer, whose backgrounds (fat at the field-of-view
    edge, plain muscle) and sequence contrasts the label-driven renderer does not draw."""

    image: np.ndarray  # float16, normalise_intensity of the whole working-grid volume
    labels: np.ndarray  # uint8 targets 0..6
    name: str = ""
    cartilage: np.ndarray = field(init=False)
    foreground: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cartilage, self.foreground = _centre_candidates(self.labels)

    def crop(self, rng: np.random.Generator, patch: int, cartilage_focus: float,
             anywhere: float) -> tuple[np.ndarray, np.ndarray]:
        """A (patch,)*3 crop centred anywhere (probability ``anywhere``), on cartilage or on labelled anatomy, kept
        inside the field of view (as inference's sliding windows are)."""
        shape = np.array(self.labels.shape)
        if rng.random() < anywhere:
            centre = (rng.random(3) * shape).astype(np.int64)
        else:
            centre = _pick_centre(rng, self.cartilage, self.foreground, cartilage_focus)
        lo = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
        box = tuple(slice(int(a), int(a) + patch) for a in lo)
        img = np.zeros((patch,) * 3, dtype=np.float32)
        lab = np.zeros((patch,) * 3, dtype=np.uint8)
        sub = self.image[box]
        img[tuple(slice(0, n) for n in sub.shape)] = sub
        lab[tuple(slice(0, n) for n in sub.shape)] = self.labels[box]
        return img, lab


def rendered_phantom(seed: int, spacing_mm: float = 0.6, acquisitions: dict[str, Acquisition] | None = None, *,
                     acquisition: str | None = None, contrast: str | None = None,
                     cartilage_fluid_gap: float = 0.0) -> RenderedSource:
    """A random knee (anatomy, side, pose) imaged on a random protocol grid (default ``ACQUISITIONS``: DESS, FLASH,
    TSE, sample) with a random sequence contrast (a randomised preset, or every tissue uniform SynthSeg-style);
    ``acquisition`` / ``contrast`` fix the protocol and sequence (validation sets); ``cartilage_fluid_gap`` keeps
    cartilage and fluid apart (:func:`koaimg.synth.keep_apart`)."""
    protocols = ACQUISITIONS if acquisitions is None else acquisitions
    rng = np.random.default_rng(seed)
    anatomy = KneeAnatomy.random(rng)
    side = KneeSide.RIGHT if rng.random() < 0.5 else KneeSide.LEFT
    acq_name = str(rng.choice(sorted(protocols)))
    drawn = str(rng.choice(["dess", "pdfs", "t1", "random"]))
    acq_name, contrast = acquisition or acq_name, contrast or drawn
    if contrast == "random":
        table = rng.uniform(0.0, 1.0, len(Tissue)).astype(np.float32)
        table[Tissue.AIR] = 0.0
        acq = protocols[acq_name]
    else:
        table = CONTRASTS[contrast].randomised(rng)
        acq = replace(protocols[acq_name], contrast=contrast)
    table = keep_apart(table, Tissue.FLUID, (Tissue.CARTILAGE,), cartilage_fluid_gap)
    pose = Pose.random(rng, max_deg=10.0, max_mm=10.0)
    ph = make_knee_phantom(anatomy, acq, seed=int(rng.integers(2**31)), side=side, pose=pose, contrast_table=table)
    grid = WorkingGrid(ph.image.affine, ph.image.spatial_shape, spacing_mm)
    image = normalise_intensity(grid.to_working(ph.image.array)).astype(np.float16)
    labels = grid.labels_to_working(ph.labels.array)
    labels[labels >= N_CLASSES] = 0
    return RenderedSource(image, labels, f"{acq_name}_{contrast}")


def rendered_pair(source: RenderedSource, rng: np.random.Generator, *, patch: int = 80, spacing_mm: float = 0.6,
                  cartilage_focus: float = 0.75, anywhere: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One (image, target) patch from a :class:`RenderedSource`, augmented like :func:`training_pair`'s (thicker
    slices, gamma, a mild intensity jitter: the volume is already normalised as a whole)."""
    img, lab = source.crop(rng, patch, cartilage_focus, anywhere)
    if rng.random() < 0.5:  # mirror left/right: both knees in every protocol
        img, lab = np.ascontiguousarray(img[::-1]), np.ascontiguousarray(lab[::-1])
    img = augment_patch(img, rng, spacing_mm)
    img = img * np.float32(np.exp(rng.normal(0.0, 0.05))) + np.float32(rng.normal(0.0, 0.02))
    return np.clip(img, -0.5, 2.0).astype(np.float32, copy=False), lab


def training_spec(patch: int, spacing_mm: float, centre: str = "anatomy",
                  cartilage_fluid_gap: float = 0.0, scale_jitter: float = 0.1) -> RandomisationSpec:
    """Randomisation for patches rendered directly near the working grid (voxel size within ±``scale_jitter`` of it,
    per axis: the network sees the anatomy that much larger or smaller).

    Muscle may be plain (no fat septa): a model that only ever saw septa in muscle learns "plain = bone" and labels
    homogeneous soft tissue as femur (seen on the procedural test knees)."""
    if not 0.0 <= scale_jitter < 1.0:
        raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
    lo, hi = (1.0 - scale_jitter) * spacing_mm, (1.0 + scale_jitter) * spacing_mm
    return RandomisationSpec(in_plane_mm=(lo, hi), slice_mm=(lo, hi), patch_size=(patch, patch, patch),
                             blur_fwhm_mm=(0.0, 0.6), noise_sigma=(0.005, 0.08), rotation_deg=15.0,
                             septa_fraction=(0.0, 0.15), patch_centre=centre,
                             cartilage_fluid_gap=cartilage_fluid_gap)


def vary_cartilage_thickness(labels: LabelVolume, rng: np.random.Generator,
                             change_mm: tuple[float, float] = (0.3, 0.8)) -> LabelVolume:
    """The same map with every cartilage plate thinner or thicker by a random ``change_mm``: the articular surface
    (cartilage facing background) moves, the bone interface stays.

    The training maps hold one real knee and procedural knees of 1.4-3.1 mm; trained on them alone, the model read
    every test knee at much the same femoral thickness (0.3.0 candidate, step 11,550: slope 0.24 of predicted on true
    ThCcAB over the 22 evaluation images; 1.8 mm knees read at 2.2-2.5 mm, a bright fluid film taken for cartilage).
    Steps are whole label voxels along the finely sampled axes only, so thick slices do not move the surface by
    their own thickness."""
    arr = labels.array
    cartilage = np.isin(arr, CARTILAGE)
    if not cartilage.any():
        return labels
    sp = np.asarray(labels.spacing, dtype=float)
    fine = [a for a in range(3) if sp[a] <= 1.5 * sp.min()]
    structure = np.zeros((3, 3, 3), bool)
    structure[1, 1, 1] = True
    for a in fine:
        for end in (0, 2):
            idx = [1, 1, 1]
            idx[a] = end
            structure[tuple(idx)] = True
    steps = max(1, round(float(rng.uniform(*change_mm)) / float(sp[fine].min())))
    where = np.argwhere(cartilage)
    lo = np.maximum(where.min(0) - steps - 1, 0)
    hi = np.minimum(where.max(0) + steps + 2, arr.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    out = arr.copy()
    sub = out[box]
    if rng.random() < 0.5:  # thinner: peel the layers that face background
        peel = np.isin(sub, CARTILAGE) & ndimage.binary_dilation(sub == 0, structure, iterations=steps)
        sub[peel] = 0
    else:  # thicker: each plate grows into the background it faces
        for cls in CARTILAGE:
            grow = ndimage.binary_dilation(sub == cls, structure, iterations=steps) & (sub == 0)
            sub[grow] = cls
    return labels.with_array(out)


def training_pair(source: LabelSource, rng: np.random.Generator, *, patch: int = 80, spacing_mm: float = 0.6,
                  cartilage_focus: float = 0.75, anywhere: float = 0.0,
                  thickness_change: float = 0.0, cartilage_fluid_gap: float = 0.0,
                  scale_jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One (image, target) patch, both (P, P, P) with axes R, A, S; image normalised, target in 0..6.

    With probability ``anywhere`` the patch is centred anywhere in the whole map (far soft tissue, air, the field of
    view's edge: where an under-trained model invents bone), else on cartilage / labelled anatomy of a crop. With
    probability ``thickness_change`` the cartilage of the map is first made thinner or thicker
    (:func:`vary_cartilage_thickness`; no draw at 0, so validation samples stay as they were). ``cartilage_fluid_gap``
    keeps the two apart in contrast (:class:`koaimg.synth.RandomisationSpec`; validation keeps 0); ``scale_jitter``
    is :func:`training_spec`'s (validation keeps 0.1)."""
    if anywhere > 0 and rng.random() < anywhere:
        sub, centre = source.labels, "uniform"  # the whole map, so the soft-tissue shells follow all the anatomy
    else:
        sub, centre = source.crop_around(rng, 0.75 * patch * spacing_mm * 1.1 + 6.0, cartilage_focus), "anatomy"
    if thickness_change > 0 and rng.random() < thickness_change:
        sub = vary_cartilage_thickness(sub, rng)
    img, lab = network_arrays(*synthesize_from_labels(sub, rng=rng, spec=training_spec(patch, spacing_mm, centre,
                                                                                      cartilage_fluid_gap,
                                                                                      scale_jitter)))
    img = normalise_intensity(augment_patch(img, rng, spacing_mm))
    # a patch's percentiles are not the whole volume's (inference normalises the whole field of view): jitter them
    img = img * np.float32(np.exp(rng.normal(0.0, 0.15))) + np.float32(rng.normal(0.0, 0.05))
    return np.clip(img, -0.5, 2.0).astype(np.float32, copy=False), lab


def _touches(mask: torch.Tensor) -> torch.Tensor:
    """Voxels with a 6-neighbour in ``mask`` (B, 1, ...); the volume's own faces have no neighbours beyond them."""
    padded = F.pad(mask.float(), (1, 1, 1, 1, 1, 1), mode="constant", value=0.0)
    out = torch.zeros_like(mask, dtype=torch.bool)
    centre = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    for axis in (2, 3, 4):
        for shift in (0, 2):
            view = list(centre)
            view[axis] = slice(shift, padded.shape[axis] - 2 + shift)
            out |= padded[tuple(view)] > 0
    return out


def cartilage_surface_band(target: torch.Tensor, side: str = "both") -> torch.Tensor:
    """Voxels on either side of a cartilage boundary (a cartilage voxel with a non-cartilage 6-neighbour, or the
    reverse), as a float mask of ``target``'s shape (B, 1, ...): where a plate's thickness is decided.

    ``side="articular"`` keeps only the boundary with what is neither cartilage nor bone (fluid, soft tissue): the
    side the models get wrong (fluid over the plate read as cartilage), while the bone side is seldom in doubt."""
    if side not in ("both", "articular"):
        raise ValueError(f"side must be 'both' or 'articular', got {side!r}")
    cartilage = torch.isin(target, torch.tensor(CARTILAGE, device=target.device))
    other = ~cartilage
    if side == "articular":
        other &= ~torch.isin(target, torch.tensor(BONES, device=target.device))
    return ((cartilage & _touches(other)) | (other & _touches(cartilage))).float()


def surface_weighted_ce(logits: torch.Tensor, target: torch.Tensor, side: str = "both") -> torch.Tensor:
    """Cross-entropy averaged over the cartilage surface band only (0 when a patch has no cartilage).

    Dice over a whole plate barely changes when its articular surface is one voxel out, so a Dice + CE model settled
    on a typical thickness (0.4.0: slope 0.25 of predicted on true femoral ThCcAB over the 22 evaluation images).
    This term puts the loss where thickness is decided: the voxels each side of every cartilage boundary (or, with
    ``side="articular"``, of the articular boundary only)."""
    band = cartilage_surface_band(target, side)
    ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none")[:, None]
    return (ce * band).sum() / band.sum().clamp(min=1.0)


def network_arrays(image: Volume, labels: LabelVolume) -> tuple[np.ndarray, np.ndarray]:
    """A rendered image and its labels as the network sees them: RAS axis order, float32 image (not yet
    normalised), targets 0..6 (fibula and menisci are background)."""
    perm, flip = ras_transform(image.affine)
    img = np.ascontiguousarray(to_ras_array(image.array, perm, flip), dtype=np.float32)
    lab = to_ras_array(labels.array, perm, flip)
    return img, np.ascontiguousarray(np.where(lab < N_CLASSES, lab, 0).astype(np.uint8))


def augment_patch(image: np.ndarray, rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """Acquisition effects the renderer does not vary at a fixed output grid: thick slices and coarse pixels
    (average over the acquired voxel, then trilinear upsampling as inference does), and a random intensity gamma."""
    t = torch.from_numpy(image)[None, None]
    size = np.array(image.shape)
    if rng.random() < 0.7:
        factors = np.ones(3)
        axis = int(rng.integers(3))
        factors[axis] = rng.uniform(1.0, 4.0 / spacing_mm)  # slices up to 4 mm
        if rng.random() < 0.5:
            factors[[a for a in range(3) if a != axis]] = rng.uniform(1.0, 0.75 / spacing_mm)
        low = tuple(int(max(2, round(n / f))) for n, f in zip(size, factors, strict=True))
        t = F.interpolate(F.adaptive_avg_pool3d(t, low), size=tuple(int(n) for n in size), mode="trilinear",
                          align_corners=False)
    out = t[0, 0].numpy()
    lo = float(out.min())
    gamma = float(np.exp(rng.normal(0.0, 0.3)))
    span = float(out.max()) - lo
    if span > 0:
        out = lo + span * ((out - lo) / span) ** gamma
    return out.astype(np.float32)


class CheckpointMismatchError(KoaimgError, ValueError):
    """Checkpoints that cannot be averaged: different networks, or weights that do not make a mean."""

    code = "checkpoint_mismatch"


def mean_weights(n: int, weights: list[float] | None = None) -> np.ndarray:
    """The (n,) weights of a mean, normalised to sum 1 (default equal); what :func:`average_weights` uses and what a
    caller records next to the averaged checkpoint."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise CheckpointMismatchError(f"weights {list(w)} do not fit {n} checkpoints",
                                      hint="give one non-negative weight per checkpoint, not all zero")
    return w / w.sum()


def average_weights(states: list[dict[str, torch.Tensor]],
                    weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted mean of several state dicts of one network (weights normalised to sum 1; default equal).

    Why: checkpoints of one run sit in one basin, and with instance normalisation (no running statistics) their mean is
    a working network that often beats each of them (stochastic weight averaging) without any training. Floating
    tensors are averaged in float64 and cast back; integer tensors (counters) are taken from the last state."""
    if not states:
        raise CheckpointMismatchError("no checkpoints to average", hint="give at least one")
    w = mean_weights(len(states), weights)
    keys = list(states[-1])
    for i, state in enumerate(states):
        if list(state) != keys or any(state[k].shape != states[-1][k].shape for k in keys):
            raise CheckpointMismatchError(f"checkpoint {i} holds other tensors than the last one",
                                          hint="average checkpoints of one network only")
    return {k: (sum(float(wi) * st[k].double() for wi, st in zip(w, states, strict=True)).to(states[-1][k].dtype)
                if states[-1][k].is_floating_point() else states[-1][k].clone()) for k in keys}
