"""Corrected segmentations: validate an uploaded or drawn label map, store it as a new version, re-measure it.

A correction is accepted only on the exact grid of the automated labels (same shape, same affine within a micrometre)
with every value in koaimg's label schema; it is written under ``<case>/corrected/v<N>/`` next to the original,
which is never touched, and measured there with the same ``measure_file`` the batch used, so exports carry both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from ..core import GeometryError, LabelSchemaError, Structure, UnreadableFileError, Volume, VolumeMeta
from ..io import write_volume
from ..io._locks import unit_lock
from ._cases import CORRECTED_DIR, Case, latest_version
from ._nifti import bounded_gunzip

#: label values a correction may contain (koaimg's internal schema)
SCHEMA_VALUES = frozenset(int(s) for s in Structure)
#: largest affine difference (mm) still counted as the same grid (float32 headers round at ~1e-5 mm)
AFFINE_TOLERANCE_MM = 1e-3


def _reference(labels_path: Path) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    ref = nib.load(str(labels_path))
    return tuple(int(n) for n in ref.shape[:3]), np.asarray(ref.affine, dtype=float), np.asarray(ref.dataobj)


def validate_correction(data: bytes, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse NIfTI bytes (plain or gzipped) and check them against the case's label map.

    Returns the corrected labels as uint8 and the reference affine. Raises ``UnreadableFileError`` (not NIfTI),
    ``GeometryError`` (other grid or affine) or ``LabelSchemaError`` (values outside the schema).
    """
    if not data:
        raise UnreadableFileError("the upload is empty", hint="send a NIfTI label map")
    shape, affine, _ = _reference(labels_path)
    limit = 540 + 4 + (1 << 20) + int(np.prod(shape)) * 8  # header, extensions, largest voxel type
    raw = bounded_gunzip(data, limit=limit)
    try:
        img = nib.Nifti1Image.from_bytes(raw) if raw[:4] in (b"\x5c\x01\0\0", b"\0\0\x01\x5c") else \
            nib.Nifti2Image.from_bytes(raw)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for garbage: all mean "not a NIfTI label map"
        raise UnreadableFileError(f"not a readable NIfTI file ({type(exc).__name__})",
                                  hint="upload a .nii or .nii.gz label map") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.shape != shape:
        raise GeometryError(f"correction has grid {array.shape}, the case's label map has {shape}",
                            hint="draw or export the correction on the case's own grid")
    diff = float(np.abs(np.asarray(img.affine, dtype=float) - affine).max())
    if not np.isfinite(diff) or diff > AFFINE_TOLERANCE_MM:
        raise GeometryError(f"correction affine differs from the case's by {diff:.4g} mm",
                            hint="the correction must be on the same grid and in the same position as the labels")
    if not np.issubdtype(array.dtype, np.integer) and (
            not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array))):
        raise LabelSchemaError("correction holds non-integer values", hint="a label map stores whole numbers")
    values = {int(v) for v in np.unique(array)}
    bad = sorted(values - SCHEMA_VALUES)
    if bad:
        raise LabelSchemaError(f"correction holds label values {bad[:10]} outside koaimg's schema",
                               hint=f"use {sorted(SCHEMA_VALUES)} (0 background, 1 femur, 2 femoral cartilage, ...)")
    return array.astype(np.uint8), affine


def label_changes(before: np.ndarray, after: np.ndarray) -> dict[str, int]:
    """Voxels per structure gained or lost, for the audit trail (``{"femoral_cartilage": -120, ...}``)."""
    out = {}
    for s in Structure:
        if s == Structure.BACKGROUND:
            continue
        d = int(np.count_nonzero(after == s)) - int(np.count_nonzero(before == s))
        if d:
            out[s.key] = d
    out["changed_voxels"] = int(np.count_nonzero(before != after))
    return out


def version_folder(case: Case, label_version: int) -> Path:
    """Folder of corrected version ``label_version`` (0 = the original batch output)."""
    return case.folder if label_version <= 0 else case.folder / CORRECTED_DIR / f"v{int(label_version)}"


def _side(case: Case) -> str | None:
    moaks = case.files.get("moaks")
    if moaks is not None:
        try:
            side = json.loads(moaks.read_text()).get("side")
        except (OSError, ValueError):
            side = None
        if side in ("right", "left"):
            return side
    return None


def store_correction(case: Case, labels: np.ndarray, affine: np.ndarray, *, base_version: int, last_version: int,
                     reviewer: str, source: str, upload_sha256: str, comment: str = "",
                     report: bool = True) -> tuple[int, dict]:
    """Write ``labels`` as the next version of ``case``, measure it there, return (version, details).

    The folder is built under a temporary name and renamed into place, so it is either complete or absent.
    """
    with unit_lock(case.folder):  # a batch re-run of this unit swaps its folder only after carrying this version over
        return _store_correction(case, labels, affine, base_version=base_version, last_version=last_version,
                                 reviewer=reviewer, source=source, upload_sha256=upload_sha256, comment=comment,
                                 report=report)


def _store_correction(case: Case, labels: np.ndarray, affine: np.ndarray, *, base_version: int, last_version: int,
                      reviewer: str, source: str, upload_sha256: str, comment: str, report: bool
                      ) -> tuple[int, dict]:
    from ..pipeline._measure import measure_file

    root = case.folder / CORRECTED_DIR
    root.mkdir(parents=True, exist_ok=True)
    version = max(latest_version(case.folder), last_version) + 1  # never reuse a number
    base_labels = version_folder(case, base_version) / "labels.nii.gz"
    before = np.asarray(nib.load(str(base_labels)).dataobj) if base_labels.is_file() else np.zeros_like(labels)
    tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.", dir=root))
    try:
        meta = VolumeMeta(subject=case.subject, visit=case.visit)
        labels_path = write_volume(Volume(labels, affine, meta), tmp / "labels.nii.gz")
        measurement = measure_file(labels_path, tmp, side=_side(case), subject=case.subject, visit=case.visit)
        details = {"version": version, "based_on": base_version, "source": source, "reviewer": reviewer,
                   "upload_sha256": upload_sha256, "comment": comment, "side": measurement.side.value,
                   "labels": label_changes(before, labels),
                   "femoral_ThCtAB.Me": _plate_mean(measurement, "femur")}
        if report:
            details["report"] = _scan_report(case, tmp)
        (tmp / "correction.json").write_text(json.dumps(details, indent=2))
        os.replace(tmp, root / f"v{version}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, details


def _scan_report(case: Case, folder: Path) -> str:
    """The HTML report of a corrected version, best effort: a report failure never loses a correction."""
    try:
        from ..export import write_scan_report
        from ..io import read_image

        image = read_image(case.files["image"]) if "image" in case.files else None
        write_scan_report(folder, image=image)
    except Exception as exc:  # recorded in correction.json and the audit trail
        return f"not written: {type(exc).__name__}: {str(exc)[:160]}"
    return "report.html"


def _plate_mean(measurement, plate: str) -> float | None:
    p = measurement.plates.get(plate)
    if p is None:
        return None
    row = next((r for r in p.rows if r["region"] == "all"), None)
    return None if row is None else round(float(row["ThCtAB.Me"]), 4)


def discard_version(case: Case, version: int) -> None:
    """Remove a version folder that never became part of the record (its write lost a version race)."""
    folder = version_folder(case, version)
    if version > 0 and folder.parent.name == CORRECTED_DIR:
        with unit_lock(case.folder):
            shutil.rmtree(folder, ignore_errors=True)


def sha256_hex(data: bytes) -> str:
    """Content hash of an upload, recorded in the audit trail."""
    return hashlib.sha256(data).hexdigest()
