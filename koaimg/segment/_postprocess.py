"""Clean-up of predicted labels: one connected bone per structure, cartilage plates that sit on their bone, and
warnings for fields of view the model cannot have been meant for (both knees, no knee)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core import CARTILAGE_ON_BONE, Structure

__all__ = ["clean_labels", "field_of_view_warnings", "fill_bone_holes"]

BONES = tuple(CARTILAGE_ON_BONE.values())
CARTILAGES = tuple(CARTILAGE_ON_BONE)
#: a second femur at least this fraction of the first, this far away (mm), means both knees are in the image
BILATERAL_FRACTION, BILATERAL_DISTANCE_MM = 0.3, 60.0
#: below this the structure counts as absent (mL)
MIN_FEMUR_ML, MIN_CARTILAGE_ML = 5.0, 0.2


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab, n = ndimage.label(mask)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, sizes


def _bone_of(cartilage: Structure) -> Structure:
    return Structure(int(CARTILAGE_ON_BONE[cartilage]))


def _cartilage_of(bone: Structure) -> Structure:
    return next(c for c in CARTILAGES if _bone_of(c) == bone)


def _cartilage_contact(comp: np.ndarray, n: int, cartilage: np.ndarray) -> np.ndarray:
    """(n,) count of bone-component voxels face to face with ``cartilage`` (0 for the background entry).

    Only the cartilage's bounding box (plus one voxel) is dilated, not the whole native grid."""
    contact = np.zeros(n, np.int64)
    box = ndimage.find_objects(cartilage.astype(np.uint8))
    if not box or box[0] is None:
        return contact
    grown = tuple(slice(max(0, s.start - 1), min(dim, s.stop + 1)) for s, dim in zip(box[0], cartilage.shape,
                                                                                     strict=True))
    sub = comp[grown]
    contact += np.bincount(sub[ndimage.binary_dilation(cartilage[grown]) & (sub > 0)], minlength=n)[:n]
    contact[0] = 0
    return contact


def _bone_component(comp: np.ndarray, sizes: np.ndarray, cartilage: np.ndarray) -> int:
    """The bone component that carries the most of its cartilage (voxels face to face), else the largest.

    A bone is the one its cartilage sits on: a false "bone" in air or far soft tissue can be larger than the real
    one (a model unsure of dark, plain regions), but it carries no cartilage plate."""
    contact = _cartilage_contact(comp, sizes.size, cartilage)
    if contact.max() == 0:
        return int(np.argmax(sizes))
    return int(np.lexsort((sizes, contact))[-1])  # most contact, then size


#: 3x3x3 structures connecting voxels within one plane only: a hole is filled when a slice encloses it
_IN_PLANE = tuple(np.stack([np.zeros((3, 3), bool) if k != 1 else ndimage.generate_binary_structure(2, 1)
                            for k in range(3)], axis=axis) for axis in range(3))


def fill_bone_holes(out: np.ndarray, bone: Structure) -> None:
    """Give a bone's enclosed unlabelled pockets back to the bone, in place (background voxels only).

    A bone label is solid (cortex and marrow); the network leaves pockets of textured or dark marrow unlabelled
    (seen on the CLAIR template and the MESE knee). The pockets are filled per slice in each of the three planes,
    not in 3D: a marrow cavity cut by the field-of-view edge is open in 3D yet enclosed in most slices."""
    mask = out == bone
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box or box[0] is None:
        return
    sub_out, sub = out[box[0]], mask[box[0]]
    filled = sub
    for structure in _IN_PLANE:  # in turn: a pocket closed in one plane may close another plane's pocket
        filled = ndimage.binary_fill_holes(filled, structure=structure)
    sub_out[filled & (sub_out == 0)] = bone


def clean_labels(labels: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Keep one component of each bone (the one bearing most of its cartilage, else the largest) and fill the
    pockets it encloses; keep the cartilage components that touch their bone.

    Keeping only the largest cartilage component would delete a whole tibial plate (medial and lateral tibial
    cartilage are separate components) or a femoral fragment isolated by a defect, so cartilage is kept per component
    when it touches its own bone (or is the largest one when the bone is absent); stray specks elsewhere go.
    """
    out = labels.copy()
    for bone in BONES:
        comp, sizes = _components(out == bone)
        if sizes.size > 2:
            keep = _bone_component(comp, sizes, labels == _cartilage_of(bone))
            out[(comp > 0) & (comp != keep)] = 0
        fill_bone_holes(out, bone)
    min_vox = max(1, round(0.01 / voxel_ml))  # 10 mm^3
    for cart in CARTILAGES:
        comp, sizes = _components(out == cart)
        if sizes.size <= 1:
            continue
        bone_mask = out == _bone_of(cart)
        touching = set(np.unique(comp[ndimage.binary_dilation(bone_mask, iterations=1) & (comp > 0)]).tolist())
        keep = {c for c in touching if sizes[c] >= min_vox} or {int(np.argmax(sizes))}
        drop = np.isin(comp, [c for c in range(1, sizes.size) if c not in keep])
        out[drop] = 0
    return out


def field_of_view_warnings(labels: np.ndarray, affine: np.ndarray, image: np.ndarray) -> list[str]:
    """Plain-language warnings on the raw prediction: constant image, no knee, both knees, missing structures."""
    warnings: list[str] = []
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    finite = image[np.isfinite(image)]
    if finite.size == 0 or float(finite.max()) == float(finite.min()):
        return ["image is empty or constant: no segmentation possible; the labels are all background"]
    femur = labels == Structure.FEMUR
    femur_ml = float(femur.sum()) * voxel_ml
    fc_ml = float((labels == Structure.FEMORAL_CARTILAGE).sum()) * voxel_ml
    if femur_ml < MIN_FEMUR_ML or fc_ml < MIN_CARTILAGE_ML:
        warnings.append(f"no knee found in the field of view (femur {femur_ml:.1f} mL, femoral cartilage "
                        f"{fc_ml:.2f} mL): the labels are (nearly) empty; check that the series is a knee MRI")
        return warnings
    comp, sizes = _components(femur)
    if sizes.size > 2:
        # a knee is a femur bearing cartilage: false "bone" blobs in air or soft tissue carry none
        contact = _cartilage_contact(comp, sizes.size, labels == Structure.FEMORAL_CARTILAGE)
        order = np.lexsort((sizes, contact))[::-1]
        first, second = int(order[0]), int(order[1])
        if sizes[second] >= BILATERAL_FRACTION * sizes[first] and contact[second] >= BILATERAL_FRACTION * max(
                contact[first], 1):
            c1, c2 = (np.argwhere(comp == c).mean(0) for c in (first, second))
            dist = float(np.linalg.norm(affine[:3, :3] @ (c1 - c2)))
            if dist >= BILATERAL_DISTANCE_MM:
                warnings.append(f"field of view appears to contain both knees (two femurs {dist:.0f} mm apart): only "
                                "the larger knee is kept; crop the image to one knee and segment each separately")
    absent = [s.name.lower() for s in (*BONES, *CARTILAGES) if s not in (Structure.FEMUR, Structure.FEMORAL_CARTILAGE)
              and float((labels == s).sum()) * voxel_ml < (MIN_CARTILAGE_ML if s in CARTILAGES else 0.5)]
    if absent:
        warnings.append(f"not found in the field of view: {', '.join(absent)}")
    return warnings
