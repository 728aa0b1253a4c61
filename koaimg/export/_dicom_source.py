"""The source series a DICOM output derives from, and what every derived object shares (UIDs, privacy, equipment).

Derived objects (SEG, SR, SC) copy the patient and study modules from the source, as DICOM requires, but nothing
else that could identify a person: birth date, referring physician, accession number, addresses and other ids are
blanked. UIDs and content dates are derived deterministically from the source and the content, so re-running an
export (for example after a crash and ``--resume``) writes byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from .. import __version__
from ..core import DicomSeriesError, UnreadableFileError

MANUFACTURER = "koaimg"
MODEL_NAME = "koaimg knee cartilage pipeline"
DEVICE_SERIAL = "0"

#: blanked (type 2: kept empty) or removed (type 3) in every derived object; PatientName/ID hold the pseudonym
_BLANK = ("PatientBirthDate", "ReferringPhysicianName", "AccessionNumber")
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
_REMOVE = ("OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress", "PatientBirthTime",
           "PatientTelephoneNumbers", "PatientMotherBirthName", "MilitaryRank", "EthnicGroup", "PatientComments",
           "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "OperatorsName",
           "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "StationName",
           "IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight", "ContentCreatorName")


def read_source_series(source: str | Path | Sequence[Dataset], *, pixels: bool = False) -> list[Dataset]:
    """The datasets of one source image series, sorted along the slice normal (MR) or as given.

    ``source`` is a folder (searched recursively; the image series with the most instances is taken), one file, or
    datasets already read. Headers only unless ``pixels``: derived objects need geometry and UIDs, not voxels.
    """
    if not isinstance(source, (str, Path)):
        datasets = list(source)
        origin = "datasets"
    else:
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        datasets = []
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=not pixels)
            except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError):
                continue
            if "SeriesInstanceUID" in ds and "Rows" in ds:
                datasets.append(ds)
        origin = str(path)
    if not datasets:
        raise UnreadableFileError("no DICOM image found to derive from", path=origin,
                                  hint="pass the folder of the source image series")
    for ds in datasets:  # type-2 patient/study attributes that some sources omit but derived objects must carry
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    by_series: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    chosen = max(by_series.values(), key=len)
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds in chosen) and len(chosen) > 1:
        iop = np.asarray(chosen[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        chosen.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    return chosen


def source_geometry(datasets: Sequence[Dataset]):  # -> highdicom.VolumeGeometry
    """The voxel grid of a sorted single-frame series (or one enhanced multi-frame image) in LPS."""
    import highdicom as hd

    first = datasets[0]
    if int(first.get("NumberOfFrames", 1)) > 1 and len(datasets) == 1:
        return hd.imread(first.filename).get_volume_geometry() if hasattr(first, "filename") else None
    try:
        iop = [float(v) for v in first.ImageOrientationPatient]
        ipp0 = np.asarray(first.ImagePositionPatient, dtype=float)
        spacing = [float(v) for v in first.PixelSpacing]
    except AttributeError as exc:
        raise DicomSeriesError("the source series has no image geometry (position/orientation/spacing)",
                               hint="SEG needs a cross-sectional source such as an MR series") from exc
    row_dir, col_dir = np.asarray(iop[:3]), np.asarray(iop[3:])  # along a row (columns index), down a column
    if len(datasets) > 1:
        step = np.asarray(datasets[1].ImagePositionPatient, dtype=float) - ipp0
        between = float(np.linalg.norm(step))
        slice_dir = step / max(between, 1e-9)
    else:
        between = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)))
        slice_dir = np.cross(row_dir, col_dir)
    direction = np.stack([slice_dir, col_dir, row_dir], axis=1)  # highdicom axes: (frames, rows, columns)
    return hd.VolumeGeometry.from_components(
        (len(datasets), int(first.Rows), int(first.Columns)), spacing=[between, spacing[0], spacing[1]],
        coordinate_system="PATIENT", position=ipp0.tolist(), direction=direction,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None)


@contextlib.contextmanager
def quiet_person_names() -> Iterator[None]:
    """Pseudonyms are single-component person names ("SUBJ-001"); pydicom warns about each one it copies."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        yield


def derived_uid(*parts: object) -> UID:
    """A UID that depends only on its inputs (source UIDs, content hash, kind), so re-runs are reproducible."""
    return generate_uid(entropy_srcs=[MANUFACTURER, __version__, *(str(p) for p in parts)])


def content_hash(*arrays_or_text: object) -> str:
    """Short sha256 over arrays and strings, used to make derived UIDs change with the content."""
    h = hashlib.sha256()
    for item in arrays_or_text:
        if isinstance(item, np.ndarray):
            h.update(str(item.shape).encode() + str(item.dtype).encode())
            h.update(np.ascontiguousarray(item).tobytes())
        else:
            h.update(str(item).encode())
    return h.hexdigest()[:32]


def finalise(ds: Dataset, source: Dataset) -> Dataset:
    """Privacy scrub and deterministic dates: content dates follow the source series, never the wall clock."""
    for keyword in _BLANK:
        if keyword in ds:
            setattr(ds, keyword, "")
    for keyword in _REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    date = str(source.get("SeriesDate", "") or source.get("StudyDate", "") or "")
    time = str(source.get("SeriesTime", "") or source.get("StudyTime", "") or "")
    for prefix in ("Content", "Series", "InstanceCreation"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", date)
        if f"{prefix}Time" in ds:
            setattr(ds, f"{prefix}Time", time)
    if "DateOfSecondaryCapture" in ds or "TimeOfSecondaryCapture" in ds:
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = date, time
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{date}{time}"
    # highdicom draws the dimension organisation UID at random: derive it from the instance instead
    organisation = derived_uid("dimension-organisation", ds.SOPInstanceUID)
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in ds.get(keyword, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = organisation
    return ds


def save(ds: Dataset, path: str | Path) -> Path:
    """Write a derived object atomically (temp name + rename)."""
    from ..io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
