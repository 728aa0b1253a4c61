"""NIfTI, NRRD and MetaImage volumes and label maps, read into Volume / LabelVolume and written atomically."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..core import (
    GeometryError,
    KneeSide,
    LabelPreset,
    LabelSchemaError,
    LabelVolume,
    Modality,
    Structure,
    UnreadableFileError,
    Volume,
    VolumeMeta,
    apply_preset,
    decide_side,
    side_from_anatomy,
    side_from_text,
)
from ._atomic import atomic_path
from ._convert import from_nibabel, from_simpleitk, to_nibabel, to_simpleitk
from ._files import FileKind, sniff


def _meta_for(path: Path, modality: Modality) -> VolumeMeta:
    side = side_from_text(path.name)
    source = {FileKind.NIFTI: "NIfTI", FileKind.NRRD: "NRRD", FileKind.METAIMAGE: "MetaImage"}.get(sniff(path), "file")
    return VolumeMeta(modality=modality, side=side,
                      side_source="file name" if side.value in ("right", "left") else "not determined",
                      source=source)


def _read_any(path: Path, *, as_labels: bool, modality: Modality) -> Volume:
    kind = sniff(path)
    meta = _meta_for(path, modality)
    try:
        if kind == FileKind.NIFTI:
            img = nib.load(str(path))
            if len(img.shape) < 3:
                raise UnreadableFileError(f"NIfTI image is {len(img.shape)}D; a 3D volume is needed", path=path)
            return from_nibabel(img, meta)
        if kind in (FileKind.NRRD, FileKind.METAIMAGE):
            return from_simpleitk(sitk.ReadImage(str(path)), meta)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, ValueError) as exc:
        if isinstance(exc, UnreadableFileError | GeometryError):
            raise
        raise UnreadableFileError(f"cannot read {kind.value} file ({type(exc).__name__}: {str(exc)[:120]})",
                                  path=path, hint="check the file is complete and not corrupted") from None
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for unreadable files
        first = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        raise UnreadableFileError(f"cannot read {kind.value} file ({first})", path=path,
                                  hint="check the file is complete and not corrupted") from None
    raise UnreadableFileError(f"not a NIfTI, NRRD or MetaImage file (detected {kind.value})", path=path)


def read_image(path: str | Path, *, modality: Modality | str = Modality.MR) -> Volume:
    """Read a NIfTI / NRRD / MHA image into a RAS Volume (float32 unless the file stores integers)."""
    p = Path(path)
    return _read_any(p, as_labels=False, modality=Modality(modality))


def read_labels(path: str | Path, *, preset: LabelPreset | str = "koaimg",
                label_names: Mapping[int, str] | None = None) -> LabelVolume:
    """Read a label map and translate it into koaimg's schema with ``preset``.

    Values the preset does not cover raise ``LabelSchemaError`` listing them; nothing is dropped silently.
    """
    p = Path(path)
    raw = _read_any(p, as_labels=False, modality=Modality.SEG)
    if raw.array.ndim != 3:
        raise LabelSchemaError(f"a label map must be 3D, got shape {raw.shape}", path=p)
    try:
        labels = apply_preset(raw.array, preset, names=label_names)
    except LabelSchemaError as exc:
        raise LabelSchemaError(exc.problem, path=p, hint=exc.hint) from None
    result = LabelVolume(labels, raw.affine, raw.meta)
    return result.with_meta(**_side_with_anatomy(result))


def _side_with_anatomy(labels: LabelVolume) -> dict[str, object]:
    """Add the anatomical side (fibula is lateral) to the file-name evidence; a disagreement is reported."""
    fibula, tibia = labels.mask(Structure.FIBULA), labels.mask(Structure.TIBIA)
    if not fibula.any() or not tibia.any():
        return {}
    centroids = [labels.index_to_world(np.argwhere(m).mean(axis=0, keepdims=True))[0] for m in (fibula, tibia)]
    anatomy = side_from_anatomy(centroids[0], centroids[1])
    decision = decide_side([(labels.meta.side_source, labels.meta.side), ("anatomy (fibula)", anatomy)])
    source = decision.source
    if decision.conflicting:
        source = f"{source} (CONFLICT: {'; '.join(decision.conflicts)})"
    elif decision.side != KneeSide.UNKNOWN and anatomy == decision.side and decision.source != "anatomy (fibula)":
        source = f"{source}, confirmed by anatomy (fibula)"
    return {"side": decision.side, "side_source": source}


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI (``.nii``/``.nii.gz``) or NRRD/MHA, atomically."""
    p = Path(path)
    kind = sniff(p)
    with atomic_path(p) as tmp:
        if kind == FileKind.NIFTI:
            nib.save(to_nibabel(volume), str(tmp))
        elif kind in (FileKind.NRRD, FileKind.METAIMAGE):
            sitk.WriteImage(to_simpleitk(volume), str(tmp), useCompression=True)
        else:
            raise GeometryError(f"cannot write {p.name}: use a .nii.gz, .nii, .nrrd or .mha name")
    return p


def looks_like_labels(array: np.ndarray, *, max_labels: int = 32) -> bool:
    """Heuristic for discovery only: an integer array with few distinct values is probably a label map."""
    if not np.issubdtype(array.dtype, np.integer):
        return False
    return np.unique(array).size <= max_labels
