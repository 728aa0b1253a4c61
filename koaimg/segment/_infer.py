"""``segment_volume``: a knee MR Volume in, a LabelVolume on the same native grid out.

Steps: exact reorientation to RAS -> resampling to the bundle's isotropic working grid -> intensity normalisation ->
sliding-window softmax -> probabilities sampled back at every native voxel centre -> argmax -> clean-up -> (when the
bundle asks for it) an image-driven move of each cartilage plate's articular surface. Labels are never interpolated;
the only interpolations are of the image (forward) and of smooth probabilities (back).
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core import CARTILAGE_ON_BONE, LabelVolume, Modality, ModelError, Structure, Volume
from ._bone_growth import grow_bones
from ._bundle import Bundle, load_bundle
from ._geometry import WorkingGrid
from ._intensity import normalise_intensity
from ._postprocess import clean_labels, field_of_view_warnings
from ._refine import refine_articular_surfaces

__all__ = ["SegmentationResult", "resolve_device", "segment_volume"]

STRUCTURES = (Structure.FEMUR, Structure.FEMORAL_CARTILAGE, Structure.TIBIA, Structure.TIBIAL_CARTILAGE,
              Structure.PATELLA, Structure.PATELLAR_CARTILAGE)


@dataclass
class SegmentationResult:
    """Labels on the input's native grid, optional per-structure probabilities, and warnings to show the user."""

    labels: LabelVolume
    probabilities: dict[Structure, np.ndarray] | None = None
    warnings: list[str] = field(default_factory=list)
    #: what ran: bundle path/version/sha256, device, working grid, timings (for provenance.json)
    info: dict = field(default_factory=dict)


def _channel_argmax(channels: torch.Tensor) -> torch.Tensor:
    """``channels.argmax(0)`` as uint8 (the first channel wins a tie, as argmax's), by a running comparison over the
    few channels: a reduction across the outermost axis of a (7, 384, 384, 16) slab is several times slower."""
    best = channels[0].clone()
    labels = torch.zeros(channels.shape[1:], dtype=torch.uint8)
    for c in range(1, channels.shape[0]):
        higher = channels[c] > best
        labels.masked_fill_(higher, c)
        best = torch.maximum(best, channels[c])
    return labels


def _softmax_pass(inferer, net: torch.nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """One sliding-window pass over ``x`` (1, 1, R, A, S): class probabilities (C, R, A, S), float32 on the CPU;
    float16 autocast on CUDA."""
    if dev.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            logits = inferer(x, net)
    else:
        logits = inferer(x, net)
    return torch.softmax(logits.float(), dim=1)[0]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error, not a silent fallback."""
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("--device cuda was requested but torch sees no CUDA device",
                             hint="use --device cpu or --device auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {device!r}", hint="use auto, cpu or cuda")


def segment_volume(volume: Volume, *, bundle: str | Path | Bundle | None = None, device: str = "auto",
                   probabilities: bool = False) -> SegmentationResult:
    """Segment femur, tibia, patella and their cartilage in a knee MR ``volume``.

    Parameters
    ----------
    volume : Volume
        (I, J, K) MR magnitude image on any RAS grid (any orientation, anisotropic voxels).
    bundle : path or Bundle, optional
        MONAI bundle folder (default ``models/knee_mr_seg``) or an already loaded :class:`Bundle`.
    device : {"auto", "cpu", "cuda"}
        Where the network runs; CUDA uses float16 autocast and stitches the output on the CPU.
    probabilities : bool
        Also return per-structure softmax probabilities (float32, native grid) for uncertainty downstream.

    Returns
    -------
    SegmentationResult
        ``labels`` carries the input's affine and metadata (modality SEG); ``warnings`` is never empty when the
        labels are (empty field of view), and flags bilateral fields of view.
    """
    import time

    if not isinstance(volume, Volume) or isinstance(volume, LabelVolume):
        raise ModelError("segment_volume needs an image Volume, not a label map or array",
                         hint="read the image with koaimg.io.read_image or load_series")
    if volume.array.ndim != 3:
        raise ModelError(f"segment_volume needs a 3D image, got shape {volume.shape}",
                         hint="split multi-echo or multi-channel series into single 3D volumes first")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    grid = WorkingGrid(volume.affine, volume.spatial_shape, b.working_spacing_mm)
    raw = np.asarray(volume.array, dtype=np.float32)
    work = normalise_intensity(grid.to_working(raw))
    t1 = time.perf_counter()
    x = torch.from_numpy(np.ascontiguousarray(work))[None, None]
    net = b.network.to(dev)
    inferer = b.inferer(sw_device=dev, device=torch.device("cpu"))
    with torch.inference_mode(), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", category=UserWarning)  # MONAI/torch advisories inside the inferer
        prob = _softmax_pass(inferer, net, x, dev)
        for axes in b.test_time_mirrors:
            dims = [2 + a for a in axes]
            prob += _softmax_pass(inferer, net, x.flip(dims), dev).flip([d - 1 for d in dims])
        if b.test_time_mirrors:
            prob /= 1 + len(b.test_time_mirrors)
    b.network.to("cpu")
    t2 = time.perf_counter()
    shape = volume.spatial_shape
    labels = np.empty(shape, dtype=np.uint8)
    probs = {s: np.empty(shape, dtype=np.float32) for s in STRUCTURES} if probabilities else None
    refinement, bone_growth = b.articular_refinement, b.bone_growth
    # the post-processing needs these probabilities even when the caller does not ask for them
    wanted = ([int(c) for c in CARTILAGE_ON_BONE] if refinement is not None else []) + (
        list(bone_growth.bones) if bone_growth is not None else [])
    kept = {c: np.empty(shape, dtype=np.float32) for c in wanted} if probs is None else None
    for k0, k1, slab in grid.native_slabs(prob):
        labels[:, :, k0:k1] = _channel_argmax(slab).numpy()
        if probs is not None:
            for s in STRUCTURES:
                probs[s][:, :, k0:k1] = slab[int(s)].numpy()
        if kept is not None:
            for c in kept:
                kept[c][:, :, k0:k1] = slab[c].numpy()
    if kept is None:
        kept = {c: probs[Structure(c)] for c in wanted}
    t3 = time.perf_counter()
    found = field_of_view_warnings(labels, volume.affine, raw)
    status = str(b.metadata.get("koaimg_status", ""))
    if status and status != "validated":
        # a model below its accuracy targets must never pass for a finished one: every result says so
        found = [f"segmentation model {b.version}: {status}", *found]
    if b.postprocessing.get("keep_largest_component", True):
        labels = clean_labels(labels, volume.voxel_volume_mm3 / 1000.0)
    t4 = time.perf_counter()
    if refinement is not None and labels.any():
        labels = refine_articular_surfaces(raw, labels, kept, volume.spacing, refinement)
    t5 = time.perf_counter()
    if bone_growth is not None and labels.any():
        labels = grow_bones(raw, labels, kept, volume.spacing, bone_growth)
    del kept
    if not labels.any() and not any("empty" in w or "no knee" in w for w in found):
        found.append("the segmentation is empty after clean-up: no structure was found; check the input")
    meta = volume.meta.replace(modality=Modality.SEG)
    info = {"bundle": str(b.path), "bundle_version": b.version, "model_sha256": b.sha256, "device": str(dev),
            "working_spacing_mm": [round(float(s), 4) for s in grid.spacing], "working_shape": list(grid.shape),
            "test_time_mirrors": [list(m) for m in b.test_time_mirrors],
            "articular_refinement": None if refinement is None else asdict(refinement),
            "bone_growth": None if bone_growth is None else asdict(bone_growth),
            "seconds": {"preprocess": round(t1 - t0, 3), "network": round(t2 - t1, 3),
                        "to_native": round(t3 - t2, 3), "refinement": round(t5 - t4, 3),
                        "bone_growth": round(time.perf_counter() - t5, 3),
                        "total": round(time.perf_counter() - t0, 3)}}
    return SegmentationResult(LabelVolume(labels, volume.affine, meta), probs, found, info)
