"""DICOM header scan: read each file once without pixels, keep only what grouping, geometry and roles need.

Patient identifiers never leave this module: the patient ID is reduced to a salted pseudonym on read.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..core import KoaimgError, UnreadableFileError, UnsupportedObjectError

#: SOP classes that never hold an image koaimg can measure (SR, presentation states, key objects, raw data...)
_NON_IMAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.5.1.4.1.1.9.",
                       "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.481.")
US_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6.2"}
ENHANCED_MR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def pseudonym(value: str, *, prefix: str = "sub") -> str:
    """Stable pseudonym for an identifier, salted with ``KOAIMG_PSEUDONYM_SALT`` so it cannot be looked up."""
    salt = os.environ.get("KOAIMG_PSEUDONYM_SALT", "koaimg")
    digest = hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:10]
    return f"{prefix}-{digest}"


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    try:
        out = tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return out if out is not None and len(out) == n and all(np.isfinite(out)) else None


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


@dataclass(frozen=True)
class InstanceHeader:
    """The header fields of one DICOM file that discovery and loading need (no identifiers, no dates)."""

    path: Path
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    subject: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    series_description: str
    protocol_name: str
    image_type: str
    rows: int
    columns: int
    number_of_frames: int
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    echo_time: float | None
    echo_number: int | None
    repetition_time: float | None
    flip_angle: float | None
    field_strength: float | None
    mr_acquisition_type: str
    scanning_sequence: str
    sequence_variant: str
    scan_options: str
    laterality: str
    image_laterality: str
    body_part: str
    photometric: str
    has_us_regions: bool
    #: study date stays in memory only, to order visits; it is never printed or written
    study_date: str = field(default="", repr=False)

    @property
    def is_ultrasound(self) -> bool:
        """bool: an ultrasound image object (single frame or cine)."""
        return self.sop_class_uid in US_SOP_CLASSES or self.modality == "US"

    @property
    def is_enhanced_mr(self) -> bool:
        """bool: an enhanced / legacy-converted multi-frame MR object."""
        return self.sop_class_uid in ENHANCED_MR_SOP_CLASSES


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = _float(ds, keyword)
    return None if value is None else int(value)


def read_header(path: str | Path) -> InstanceHeader:
    """Read one DICOM file's header; raise ``UnreadableFileError`` / ``UnsupportedObjectError`` with one line.

    One read: large values (the pixel data) are deferred, not loaded, but their declared length is checked against
    the file size so a cut-off copy fails here rather than at decode time. pydicom's warnings about non-conformant
    encodings are silenced: the file either reads or gets one error.
    """
    p = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _open(p, defer_size=1024)
        header = _checked_header(ds, p)
        _check_pixel_length(ds, p)
    return header


def read_dataset(path: str | Path) -> tuple[pydicom.Dataset, InstanceHeader]:
    """The full dataset (pixels included) and its header, from one read. Warnings silenced as in ``read_header``."""
    p = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _open(p)
        return ds, _checked_header(ds, p)


def _open(p: Path, *, defer_size: int | None = None) -> pydicom.Dataset:
    if p.is_dir():
        raise UnreadableFileError("is a folder, not a DICOM file", path=p, hint="pass the folder to discovery instead")
    try:
        if p.stat().st_size == 0:
            raise UnreadableFileError("file is empty (0 bytes)", path=p, hint="re-export or remove it")
        return pydicom.dcmread(p, defer_size=defer_size)
    except InvalidDicomError:
        try:  # DICOM without the 128-byte preamble (older exports) is still DICOM
            ds = pydicom.dcmread(p, defer_size=defer_size, force=True)
        except Exception:
            ds = None
        if ds is None or ("SOPClassUID" not in ds and "Modality" not in ds):
            raise UnreadableFileError("not a DICOM file (no DICM marker and no DICOM header)", path=p,
                                      hint="remove it from the scan folder or convert it") from None
        return ds
    except (EOFError, struct.error, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableFileError(f"DICOM file is truncated or corrupted ({type(exc).__name__})", path=p,
                                  hint="re-export the file from the scanner or PACS") from None


def _checked_header(ds: pydicom.Dataset, p: Path) -> InstanceHeader:
    try:
        return _header_from_dataset(ds, p)
    except KoaimgError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise UnreadableFileError(f"DICOM header has malformed values ({type(exc).__name__}: {str(exc)[:80]})",
                                  path=p, hint="re-export the file") from None


def _check_pixel_length(ds: pydicom.Dataset, p: Path) -> None:
    """Declared pixel-data length must fit in the file: catches cut-off copies before any pixel is decoded."""
    raw = ds._dict.get(0x7FE00010)
    if raw is None:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            return
        raise UnreadableFileError("DICOM file has no pixel data (truncated?)", path=p, hint="re-export the file")
    length, tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return
    size = p.stat().st_size
    if tell + length > size:
        raise UnreadableFileError(f"DICOM file is truncated: pixel data needs {length} bytes, only "
                                  f"{max(size - tell, 0)} present", path=p, hint="re-copy or re-export the file")


def _header_from_dataset(ds: pydicom.Dataset, p: Path) -> InstanceHeader:
    sop_class = _text(ds, "SOPClassUID") or _text(ds.get("file_meta", pydicom.Dataset()), "MediaStorageSOPClassUID")
    if sop_class == "1.2.840.10008.1.3.10":
        raise UnsupportedObjectError("is a DICOMDIR index, not an image", path=p)
    name = pydicom.uid.UID(sop_class).name if sop_class else "unknown SOP class"
    if ("Rows" not in ds or "Columns" not in ds) and "Image Storage" in name:
        raise UnreadableFileError(f"DICOM header of this {name} object ends before its image attributes "
                                  "(truncated file)", path=p, hint="re-copy or re-export the file")
    if sop_class.startswith(_NON_IMAGE_PREFIXES) or "Rows" not in ds or "Columns" not in ds:
        raise UnsupportedObjectError(f"holds no image koaimg can use ({name})", path=p,
                                     hint="it is skipped; nothing to do unless you expected an image here")
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    return InstanceHeader(
        path=p,
        sop_class_uid=sop_class,
        transfer_syntax=transfer_syntax,
        modality=_text(ds, "Modality").upper(),
        subject=pseudonym(_text(ds, "PatientID") or _text(ds, "StudyInstanceUID") or "unknown"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        series_number=_int(ds, "SeriesNumber"),
        acquisition_number=_int(ds, "AcquisitionNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        series_description=_text(ds, "SeriesDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        image_type=_text(ds, "ImageType"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        position=_floats(ds, "ImagePositionPatient", 3),
        pixel_spacing=_floats(ds, "PixelSpacing", 2),
        slice_thickness=_float(ds, "SliceThickness"),
        spacing_between_slices=_float(ds, "SpacingBetweenSlices"),
        echo_time=_float(ds, "EchoTime"),
        echo_number=_int(ds, "EchoNumbers"),
        repetition_time=_float(ds, "RepetitionTime"),
        flip_angle=_float(ds, "FlipAngle"),
        field_strength=_float(ds, "MagneticFieldStrength"),
        mr_acquisition_type=_text(ds, "MRAcquisitionType"),
        scanning_sequence=_text(ds, "ScanningSequence"),
        sequence_variant=_text(ds, "SequenceVariant"),
        scan_options=_text(ds, "ScanOptions"),
        laterality=_text(ds, "Laterality"),
        image_laterality=_text(ds, "ImageLaterality"),
        body_part=_text(ds, "BodyPartExamined"),
        photometric=_text(ds, "PhotometricInterpretation"),
        has_us_regions="SequenceOfUltrasoundRegions" in ds,
        study_date=_text(ds, "StudyDate"),
    )
