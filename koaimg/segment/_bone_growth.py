"""Image-driven growth of each bone into the marrow the network left unlabelled.

Why: the network labels a bone only where it is sure, and it is least sure of plain marrow far from the joint: the
femoral shaft of an OAI-sized field of view (femur Dice down to 0.85 on the synthetic renders of the ``woo_oai`` knees,
whose fields of view reach far up the shaft) and a band under the plates of the real CLAIR template (femur Dice 0.88).
Those voxels usually keep a small bone probability and look like the bone's own marrow. A background voxel joins a bone
when it has bone probability at least ``min_p``, looks like the bone's deep marrow (within ``marrow_mad`` robust SDs of
its median), lies within ``reach_mm`` of the network's bone and is connected through such voxels to labelled bone that
looks like marrow. The marrow test stops growth into fat or muscle of another level (and across dark cortex); starting
from marrow, not from the bone's outer surface, keeps it out of periosteal fat as bright as marrow; the reach stops it
running along look-alike tissue.
Cartilage and other labels never change. Measured effect and limits: the bundle docs (*Inference*, *Evaluation*).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..core import ModelError, Structure
from ._postprocess import fill_bone_holes
from ._settings import step_settings

__all__ = ["BoneGrowth", "grow_bones"]

BONE_LABELS = (int(Structure.FEMUR), int(Structure.TIBIA), int(Structure.PATELLA))


@dataclass(frozen=True)
class BoneGrowth:
    """Settings of :func:`grow_bones` (``postprocessing.bone_growth`` in inference.json)."""

    #: a voxel joins a bone only where the network gave that bone at least this probability
    min_p: float = 0.1
    #: ... and where the image is within this many robust SDs (1.4826 x MAD) of the bone's deep marrow median
    marrow_mad: float = 2.0
    #: voxels deeper than this (mm) inside the network's bone set the marrow median and spread
    marrow_depth_mm: float = 2.0
    #: ... and no further than this (mm) from the network's bone
    reach_mm: float = 8.0
    #: labels of the bones grown (1 femur, 3 tibia, 5 patella)
    bones: tuple[int, ...] = BONE_LABELS

    @classmethod
    def from_config(cls, value: Any, path: Path | None = None) -> BoneGrowth | None:
        """``false``/absent -> None (off); ``true`` -> defaults; a dict -> those settings, checked."""
        kw = step_settings(cls, value, "bone_growth", path)
        if kw is None:
            return None
        try:
            if "bones" in kw:
                if any(isinstance(b, bool) or int(b) != b for b in kw["bones"]):
                    raise ValueError("bone labels are whole numbers")
                kw["bones"] = tuple(int(b) for b in kw["bones"])
            s = cls(**kw)
            numbers = (s.min_p, s.marrow_mad, s.marrow_depth_mm, s.reach_mm)
            ok = (not any(isinstance(v, bool) for v in numbers) and 0 <= s.min_p <= 1 and s.marrow_mad > 0
                  and s.marrow_depth_mm >= 0 and s.reach_mm > 0 and set(s.bones) <= set(BONE_LABELS))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"configs/inference.json postprocessing.bone_growth has out-of-range settings: "
                             f"{value!r}", path=path,
                             hint=f"min_p in [0, 1], marrow_mad > 0, distances >= 0 mm, bones among {BONE_LABELS}")
        return s


def grow_bones(image: np.ndarray, labels: np.ndarray, bone_probability: dict[int, np.ndarray], spacing: np.ndarray,
               settings: BoneGrowth | None = None) -> np.ndarray:
    """Add to each bone the connected background voxels that look like its marrow; returns new labels.

    Parameters
    ----------
    image : (I, J, K) float array
        The MR image on the labels' grid (any intensity scale: each bone is compared with its own marrow).
    labels : (I, J, K) uint8
        koaimg labels after clean-up (1-6).
    bone_probability : dict
        Network probability (0-1) of each grown bone label on the same grid.
    spacing : (3,) voxel size in mm.
    """
    s = settings or BoneGrowth()
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    spacing = np.asarray(spacing, dtype=float)
    margin = np.ceil(s.reach_mm / spacing).astype(int) + 1
    out = labels.copy()
    for b in s.bones:
        box = ndimage.find_objects((out == b).astype(np.uint8))
        if not box or box[0] is None or b not in bone_probability:
            continue
        sub = tuple(slice(max(0, sl.start - m), sl.stop + m) for sl, m in zip(box[0], margin, strict=True))
        o = out[sub]  # a view: edits land in ``out``
        added = _grow_one(o, image[sub].astype(np.float32), bone_probability[b][sub], b, spacing, s)
        if added:
            fill_bone_holes(out, Structure(b))
    return out


def _grow_one(o: np.ndarray, x: np.ndarray, p: np.ndarray, b: int, spacing: np.ndarray, s: BoneGrowth) -> bool:
    """Grow bone ``b`` in place on its box ``o``; whether any voxel was added."""
    bone = o == b
    marrow = x[ndimage.distance_transform_edt(bone, sampling=spacing) > s.marrow_depth_mm]
    if marrow.size < 27:  # no deep marrow to compare with (a sliver of bone): nothing is guessed
        return False
    median = float(np.median(marrow))
    spread = 1.4826 * float(np.median(np.abs(marrow - median)))
    like_marrow = np.abs(x - median) <= s.marrow_mad * spread
    near = ndimage.distance_transform_edt(~bone, sampling=spacing) <= s.reach_mm
    candidate = (o == 0) & (p >= s.min_p) & like_marrow & near
    # growth continues the bone's marrow: it starts only next to labelled voxels that look like marrow, so a bone
    # whose cortex is labelled does not grow from its outer surface into fat as bright as its marrow
    seed = ndimage.binary_dilation(bone & like_marrow) & candidate
    if not seed.any():
        return False
    o[ndimage.binary_propagation(seed, mask=candidate)] = b
    return True
