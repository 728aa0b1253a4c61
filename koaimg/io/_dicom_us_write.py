"""Write grey ultrasound frames as a calibrated DICOM US Image / US Multi-frame Image file.

Used by the tests and the phantom generator: the output carries one B-mode region in cm (the calibration koaimg's
reader requires), only a pseudonym and a fixed fake date, and UIDs derived from the inputs so that the same call
writes the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ..core._errors import CalibrationError, GeometryError
from ..core._ultrasound import UNITS_CM, mm_to_cm
from ._atomic import atomic_path
from ._dicom_us import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE

_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1471.1")  # koaimg implementation class (fixed for determinism)
_FAKE_DATE = "20000101"
_FAKE_TIME = "120000"

#: keywords an ``extra_regions`` dict may set, with their defaults (a region covering nothing in particular)
_REGION_DEFAULTS: dict[str, Any] = {
    "RegionSpatialFormat": 1, "RegionDataType": 2, "RegionFlags": 0,
    "RegionLocationMinX0": 0, "RegionLocationMinY0": 0, "RegionLocationMaxX1": 0, "RegionLocationMaxY1": 0,
    "PhysicalUnitsXDirection": UNITS_CM, "PhysicalUnitsYDirection": UNITS_CM,
    "PhysicalDeltaX": 0.0, "PhysicalDeltaY": 0.0,
}


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, rows, cols) uint8; integral values 0..255 of any numeric dtype are accepted, anything else refused."""
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or 0 in arr.shape:
        raise GeometryError(f"ultrasound frames must be (rows, cols) or (T, rows, cols), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise GeometryError(f"ultrasound frames must be numeric, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.rint(arr)):
        raise GeometryError("ultrasound frames must hold whole numbers 0..255 (8-bit echo values); "
                            "quantise them before writing")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _region_item(values: dict[str, Any]) -> Dataset:
    item = Dataset()
    unknown = sorted(set(values) - set(_REGION_DEFAULTS))
    if unknown:
        raise ValueError(f"unsupported ultrasound region keywords {unknown}; use {sorted(_REGION_DEFAULTS)}")
    for keyword, default in _REGION_DEFAULTS.items():
        value = values.get(keyword, default)
        setattr(item, keyword, float(value) if isinstance(default, float) else int(value))
    return item


def _build(pixels: np.ndarray, *, mm_per_pixel: float, frame_time_ms: float | None, pseudonym: str, seed: str,
           extra_regions: list[dict[str, Any]], rgb: bool, side: str | None = None,
           study_date: str | None = None) -> FileDataset:
    n, rows, cols = pixels.shape
    multi = n > 1
    sop_class = UID(US_MULTIFRAME_IMAGE_STORAGE if multi else US_IMAGE_STORAGE)
    stored = np.repeat(pixels[..., np.newaxis], 3, axis=-1) if rgb else pixels
    data = stored if multi else stored[0]
    delta_cm = mm_to_cm(mm_per_pixel)

    content = hashlib.sha256()
    content.update(data.tobytes())
    content.update(repr((data.shape, mm_per_pixel, frame_time_ms, rgb, extra_regions)).encode())
    study_uid = _uid(pseudonym, seed, "study")
    series_uid = _uid(pseudonym, seed, "us-series")
    sop_uid = _uid(series_uid, content.hexdigest(), "instance")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date or _FAKE_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _FAKE_TIME
    ds.AccessionNumber = ""
    ds.Modality = "US"
    ds.Manufacturer = "koaimg"
    ds.ManufacturerModelName = "digital phantom"
    ds.ReferringPhysicianName = ""
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "KNEE"
    if side:
        letter = str(side).strip().upper()[:1]
        if letter in ("R", "L"):
            ds.Laterality = letter
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"

    bmode = {"RegionSpatialFormat": 1, "RegionDataType": 1, "RegionFlags": 0,
             "RegionLocationMinX0": 0, "RegionLocationMinY0": 0,
             "RegionLocationMaxX1": cols - 1, "RegionLocationMaxY1": rows - 1,
             "PhysicalUnitsXDirection": UNITS_CM, "PhysicalUnitsYDirection": UNITS_CM,
             "PhysicalDeltaX": delta_cm, "PhysicalDeltaY": delta_cm}
    ds.SequenceOfUltrasoundRegions = Sequence([_region_item(bmode), *(_region_item(r) for r in extra_regions)])

    if multi:
        ds.NumberOfFrames = n
        ds.FrameIncrementPointer = 0x00181063  # (0018,1063) Frame Time
        ds.FrameTime = f"{frame_time_ms:.10g}"
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    raw = data.tobytes()
    ds.PixelData = raw + b"\0" if len(raw) % 2 else raw  # OB values have even length
    return ds


def write_ultrasound_dicom(frames: np.ndarray, path: str | Path, *, mm_per_pixel: float,
                           frame_time_ms: float | None = None, pseudonym: str = "ANON",
                           extra_regions: list[dict[str, Any]] | None = None, rgb: bool = False,
                           seed: str = "study", side: str | None = None, study_date: str | None = None) -> Path:
    """Write 8-bit grey frames as a calibrated US Image (one frame) or US Multi-frame Image (cine) file.

    Parameters
    ----------
    frames : (rows, cols) or (T, rows, cols) array_like
        Whole-number echo values 0..255. T > 1 writes US Multi-frame Image Storage, else US Image Storage.
    path : str or Path
        Output file; written to a temporary name beside it and renamed, so it is never half-written.
    mm_per_pixel : float
        Square pixel size in mm, written as one B-mode region (cm, PhysicalDelta = mm / 10) covering the image.
    frame_time_ms : float, optional
        Required for a cine (Frame Time, 0018,1063); not allowed for a single frame (no Cine module there).
    pseudonym : str
        Written as PatientName and PatientID; nothing else identifies anyone.
    extra_regions : list of dict, optional
        More region items by DICOM keyword (e.g. a Doppler region ``{"RegionDataType": 3, ...}``), for tests.
    rgb : bool
        Store as RGB (R = G = B) instead of MONOCHROME2, like many scanner exports.
    seed : str
        Mixed with the pseudonym into the study/series UIDs (vary it per visit); instance UIDs also hash the content.
    side : str, optional
        Knee side ("right"/"left" or "R"/"L"), written as Laterality.
    study_date : str, optional
        DICOM date (YYYYMMDD) for Study/Series/Content Date; a fixed fake date by default.

    Returns
    -------
    Path
        ``path``.
    """
    pixels = _as_uint8(frames)
    mm = float(mm_per_pixel)
    if not (math.isfinite(mm) and mm > 0):
        raise CalibrationError(f"mm_per_pixel must be a positive finite number, got {mm_per_pixel!r}")
    if pixels.shape[0] > 1:
        if frame_time_ms is None or not (math.isfinite(float(frame_time_ms)) and float(frame_time_ms) > 0):
            raise GeometryError(f"a {pixels.shape[0]}-frame cine needs a positive frame_time_ms, got {frame_time_ms!r}")
    elif frame_time_ms is not None:
        raise GeometryError("frame_time_ms applies to a cine only; a single-frame US image has no Cine module")
    ds = _build(pixels, mm_per_pixel=mm, frame_time_ms=frame_time_ms, pseudonym=str(pseudonym), seed=str(seed),
                extra_regions=list(extra_regions or []), rgb=rgb, side=side, study_date=study_date)
    final = Path(path)
    with atomic_path(final) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return final
