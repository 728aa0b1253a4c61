"""Image-driven refinement of each cartilage plate's articular surface after the network.

Why: the network reads cartilage thickness partly from a prior (predicted on true femoral ThCcAB, slope 0.37 on the
synthetic test set) and under-segments the real CLAIR template's plates (4.5 of 12.7 mL of femoral cartilage missed,
at cartilage intensity, mostly at FC probability 0.1-0.5), while on synthetic DESS it carries fluid films as
cartilage. The image often shows the articular edge the network misses, so each plate's articular boundary is moved,
voxel layer by voxel layer, by comparing the image with two local references: the plate's own deep layer (0.4-1.2 mm
from its bone, the side the network seldom gets wrong) and the background just outside the plate. The bone side is
never touched, and a bright articular layer is peeled as fluid only where the outside is brighter than the bone's
fatty marrow (so not on T1, where the deep layer can be cortex).
Measured effect and limits: the bundle docs (*Inference*, *Evaluation*).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..core import CARTILAGE_ON_BONE, ModelError
from ._settings import step_settings

__all__ = ["ArticularRefinement", "local_mean_sd", "refine_articular_surfaces"]


@dataclass(frozen=True)
class ArticularRefinement:
    """Settings of :func:`refine_articular_surfaces` (``postprocessing.articular_refinement`` in inference.json)."""

    #: side of the local box (mm) over which the two reference levels are averaged
    window_mm: float = 4.0
    #: depth from the plate's bone (mm) of the voxels that set the plate's reference level
    reference_depth_mm: tuple[float, float] = (0.4, 1.2)
    #: background voxels this far outside the plate (mm), with cartilage probability below ``outside_max_p``, set
    #: the outside reference level
    outside_mm: float = 2.0
    outside_max_p: float = 0.05
    #: a voxel is judged only where the two levels differ by more than this many SDs of the plate's level, and is
    #: peeled only when it lies further than that from the plate's level (grown only when within it)
    contrast_sd: float = 2.0
    #: background voxels are added only where the network gave the cartilage at least this probability
    grow_min_p: float = 0.1
    #: at most this many voxel layers moved (each way)
    layers: int = 4
    #: also grow a voxel within this many robust SDs (1.4826 x MAD) of the median level of the whole plate (``None``:
    #: off). Why: on CLAIR the missed cartilage is the superficial layer, brighter than the deep layer (so not "within
    #: 2 SDs" of it) yet typical of the plate; the median of the whole plate ignores a minority film (bundle docs)
    grow_plate_mad: float | None = None
    #: which moves are made (both in the shipped bundle; one alone is for studies)
    peel: bool = True
    grow: bool = True
    #: peel brighter voxels only where the outside level is brighter than the plate's bone marrow at this depth
    #: (mm) below the bone surface (its median over the plate's region); ``None``: no such check. Why: yellow marrow
    #: is the image's own fat reference, and a bright articular layer is fluid only where fluid outshines fat. On T1
    #: it does not, and there the plate's "deep layer" can be dark cortex (coronal T1, where the network's plate sits
    #: inside the femur), so brighter true cartilage was peeled (bundle docs)
    marrow_depth_mm: tuple[float, float] | None = (1.5, 5.0)
    #: also peel voxels darker than the plate's level; off, only brighter ones are (the bright fluid film the network
    #: carries as cartilage in DESS and fat-suppressed PD); darker articular voxels are mostly the plate's own partial
    #: volume on thick-slice T1, and peeling them thinned those cases (bundle docs)
    peel_darker: bool = False

    @classmethod
    def from_config(cls, value: Any, path: Path | None = None) -> ArticularRefinement | None:
        """``false``/absent -> None (off); ``true`` -> defaults; a dict -> those settings, checked."""
        kw = step_settings(cls, value, "articular_refinement", path)
        if kw is None:
            return None
        try:
            for key in ("reference_depth_mm", "marrow_depth_mm"):
                if kw.get(key) is not None:
                    kw[key] = tuple(float(v) for v in kw[key])
            s = cls(**kw)
            marrow = s.marrow_depth_mm
            ok = (s.window_mm > 0 and 0 <= s.reference_depth_mm[0] < s.reference_depth_mm[1] and s.outside_mm > 0
                  and 0 <= s.outside_max_p <= 1 and s.contrast_sd > 0 and 0 <= s.grow_min_p <= 1
                  and int(s.layers) == s.layers and s.layers >= 0 and len(s.reference_depth_mm) == 2
                  and (marrow is None or (len(marrow) == 2 and 0 <= marrow[0] < marrow[1]))
                  and (s.grow_plate_mad is None or (not isinstance(s.grow_plate_mad, bool) and s.grow_plate_mad > 0))
                  and all(isinstance(v, bool) for v in (s.peel, s.grow, s.peel_darker)))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"configs/inference.json postprocessing.articular_refinement has out-of-range "
                             f"settings: {value!r}", path=path,
                             hint="distances > 0 mm, probabilities in [0, 1], layers a whole number >= 0")
        return s


def local_mean_sd(image: np.ndarray, mask: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean and SD of ``image`` over ``mask`` in a ``size`` box around every voxel, and the mask's share of the box
    (NaN mean where the box holds none of the mask)."""
    m = mask.astype(np.float32)
    share = ndimage.uniform_filter(m, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = ndimage.uniform_filter(image * m, size) / share
        var = ndimage.uniform_filter(image * image * m, size) / share - mean ** 2
    return mean, np.sqrt(np.clip(var, 0, None)), share


def refine_articular_surfaces(image: np.ndarray, labels: np.ndarray, cartilage_probability: dict[int, np.ndarray],
                              spacing: np.ndarray, settings: ArticularRefinement | None = None) -> np.ndarray:
    """Move each cartilage plate's articular boundary by the image (bone side untouched); returns new labels.

    Parameters
    ----------
    image : (I, J, K) float array
        The MR image on the labels' grid (any intensity scale: only local comparisons are made).
    labels : (I, J, K) uint8
        koaimg labels after clean-up (1-6).
    cartilage_probability : dict
        Network probability (0-1) of each cartilage label (2, 4, 6) on the same grid.
    spacing : (3,) voxel size in mm.

    Per layer, a plate voxel facing background is peeled where it is more than ``contrast_sd`` SDs from the plate's
    deep-layer level, nearer the outside level and (unless ``peel_darker``) brighter than the plate; a background
    voxel touching the plate, with network probability at least ``grow_min_p``, is added where it is within
    ``contrast_sd`` SDs of the plate's level and nearer it than the outside level. Nothing is judged where the two
    levels are closer than ``contrast_sd`` SDs (no usable contrast).
    """
    s = settings or ArticularRefinement()
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(3, np.round(s.window_mm / spacing).astype(int) | 1)
    out = labels.copy()
    for cartilage, bone in CARTILAGE_ON_BONE.items():
        c, b = int(cartilage), int(bone)
        box = ndimage.find_objects((out == c).astype(np.uint8))
        if not box or box[0] is None or c not in cartilage_probability:
            continue
        sub = tuple(slice(max(0, sl.start - 8), sl.stop + 8) for sl in box[0])
        _refine_plate(out[sub], image[sub].astype(np.float32), cartilage_probability[c][sub], c, b, spacing, size, s)
    return out


def _refine_plate(o: np.ndarray, x: np.ndarray, p: np.ndarray, c: int, b: int, spacing: np.ndarray,
                  size: np.ndarray, s: ArticularRefinement) -> None:
    """Refine one plate in place on its bounding box ``o`` (labels), ``x`` (image), ``p`` (its probability)."""
    depth = ndimage.distance_transform_edt(o != b, sampling=spacing)  # bone labels never change
    deep = (depth > s.reference_depth_mm[0]) & (depth <= s.reference_depth_mm[1])
    marrow_level = _marrow_level(o == b, x, spacing, s.marrow_depth_mm)
    for _ in range(int(s.layers)):
        plate, background = o == c, o == 0
        outside = ndimage.distance_transform_edt(~plate, sampling=spacing)
        ref_mean, ref_sd, ref_share = local_mean_sd(x, plate & deep, size)
        shell = background & (p < s.outside_max_p) & (outside <= s.outside_mm)
        out_mean, _, out_share = local_mean_sd(x, shell, size)
        sd = np.maximum(ref_sd, 1e-3 * np.abs(ref_mean) + 1e-6)  # below 0.1 % of the level is rounding
        with np.errstate(invalid="ignore"):
            judged = (ref_share > 0.02) & (out_share > 0.02) & (np.abs(out_mean - ref_mean) > s.contrast_sd * sd)
            nearer_outside = np.abs(x - out_mean) < np.abs(x - ref_mean)
            like_plate = np.abs(x - ref_mean) <= s.contrast_sd * sd
        moved = False
        if s.peel:
            peel = plate & ndimage.binary_dilation(background) & judged & nearer_outside & ~like_plate
            with np.errstate(invalid="ignore"):
                brighter = x > ref_mean
                if s.marrow_depth_mm is not None:  # NaN (no marrow in view): no bright voxel peeled
                    brighter &= out_mean > marrow_level
            peel &= (brighter | (x < ref_mean)) if s.peel_darker else brighter
            o[peel] = 0
            moved = bool(peel.any())
        if s.grow:  # next to the plate as it is after this layer's peel
            if s.grow_plate_mad is not None:
                like_plate = like_plate | _near_plate_median(x, o == c, s.grow_plate_mad)
            grow = background & ndimage.binary_dilation(o == c) & judged & (p >= s.grow_min_p) & ~nearer_outside \
                & like_plate
            o[grow] = c
            moved = moved or bool(grow.any())
        if not moved:
            break


def _marrow_level(bone: np.ndarray, x: np.ndarray, spacing: np.ndarray,
                  depth_mm: tuple[float, float] | None) -> float:
    """Median image level of the bone between ``depth_mm`` below its surface (NaN where there is none)."""
    if depth_mm is None:
        return float("nan")
    into = ndimage.distance_transform_edt(bone, sampling=spacing)
    marrow = bone & (into > depth_mm[0]) & (into <= depth_mm[1])
    return float(np.median(x[marrow])) if marrow.any() else float("nan")


def _near_plate_median(x: np.ndarray, plate: np.ndarray, k: float) -> np.ndarray:
    """Where the image lies within ``k`` robust SDs (1.4826 x MAD) of the plate's median level."""
    if not plate.any():
        return np.zeros(x.shape, bool)
    values = x[plate]
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    return np.abs(x - median) <= k * spread
