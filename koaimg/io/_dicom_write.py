"""Write a Volume as a single-frame DICOM MR series with correct IPP/IOP, spacing and knee-side tags.

Used by the phantom generator and the tests. Output is deterministic (UIDs derived from the given seeds) and carries
only pseudonyms and a fixed fake date; the whole folder appears at once (written beside, then renamed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from ..core import LPS_TO_RAS, GeometryError, KneeSide, Volume

_COMPRESSION = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless}
_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1471.1")  # koaimg implementation class (fixed for determinism)


@dataclass(frozen=True)
class MRSeriesTags:
    """Acquisition and identity tags written into every slice (pseudonymous by construction)."""

    pseudonym: str = "ANON"
    study_seed: str = "study"
    series_number: int = 1
    series_description: str = "SAG 3D DESS"
    protocol_name: str = ""
    study_date: str = "20000101"
    side: KneeSide = KneeSide.UNKNOWN
    echo_time_ms: float | None = 4.7
    echo_number: int | None = None
    repetition_time_ms: float | None = 16.3
    flip_angle_deg: float | None = 25.0
    field_strength_t: float | None = 3.0
    mr_acquisition_type: str = "3D"
    scanning_sequence: str = "GR"
    sequence_variant: str = "SS"
    scan_options: str = "WE"
    acquisition_number: int = 1
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _pixel_encoding(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 pixels plus RescaleSlope/Intercept that reproduce the input to within 1/65535 of its range."""
    integral = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if integral and array.min(initial=0) >= 0 and array.max(initial=0) <= 65535:
        return array.astype(np.uint16), 1.0, 0.0
    lo, hi = float(np.min(array)), float(np.max(array))
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.clip(np.rint((array - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo


def _slice_dataset(tags: MRSeriesTags, *, pixels: np.ndarray, ipp: np.ndarray, iop: np.ndarray,
                   spacing: tuple[float, float, float], index: int, slope: float, intercept: float,
                   transfer_syntax: UID) -> FileDataset:
    study_uid = _uid(tags.pseudonym, tags.study_seed, "study")
    series_uid = _uid(tags.pseudonym, tags.study_seed, tags.series_number, tags.echo_time_ms, "series")
    sop_uid = _uid(series_uid, index, "instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(tags.image_type)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = tags.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.Modality = "MR"
    ds.Manufacturer = "koaimg"
    ds.ManufacturerModelName = "digital phantom"
    ds.PatientName = f"{tags.pseudonym}^"  # family-name component only: a pseudonym, never a person
    ds.PatientID = tags.pseudonym
    ds.BodyPartExamined = "KNEE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(tags.pseudonym, tags.study_seed, tags.series_number, "for")
    ds.StudyID = "1"
    ds.SeriesNumber = tags.series_number
    ds.AcquisitionNumber = tags.acquisition_number
    ds.InstanceNumber = index + 1
    ds.SeriesDescription = tags.series_description
    ds.ProtocolName = tags.protocol_name or tags.series_description
    if tags.side in (KneeSide.RIGHT, KneeSide.LEFT):
        ds.Laterality = "R" if tags.side == KneeSide.RIGHT else "L"
    ds.MRAcquisitionType = tags.mr_acquisition_type
    ds.ScanningSequence = tags.scanning_sequence
    ds.SequenceVariant = tags.sequence_variant
    ds.ScanOptions = tags.scan_options
    for keyword, value in (("EchoTime", tags.echo_time_ms), ("RepetitionTime", tags.repetition_time_ms),
                           ("FlipAngle", tags.flip_angle_deg), ("MagneticFieldStrength", tags.field_strength_t)):
        if value is not None:
            setattr(ds, keyword, f"{value:.6g}")
    if tags.echo_number is not None:
        ds.EchoNumbers = tags.echo_number
    ds.SliceThickness = f"{spacing[2]:.6g}"
    ds.SpacingBetweenSlices = f"{spacing[2]:.6g}"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    ds.PixelSpacing = [f"{spacing[0]:.8g}", f"{spacing[1]:.8g}"]
    ds.SliceLocation = f"{float(np.dot(ipp, np.cross(iop[:3], iop[3:]))):.6f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "US"
    big_endian = transfer_syntax == ExplicitVRBigEndian
    data = pixels.astype(">u2" if big_endian else "<u2")
    ds.PixelData = data.tobytes()
    if transfer_syntax.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
    return ds


def write_dicom_series(volume: Volume, folder: str | Path, tags: MRSeriesTags | None = None, *,
                       compression: str | None = None, big_endian: bool = False) -> list[Path]:
    """Write ``volume`` as one DICOM file per k-slice into ``folder`` (created; must not already hold files).

    Slice pixel (row r, column c) is voxel (i=c, j=r, k); so IOP's row cosines are the i-axis, its column cosines
    the j-axis, and PixelSpacing is (spacing_j, spacing_i), as DICOM orders them.
    """
    tags = tags or MRSeriesTags()
    if volume.array.ndim != 3:
        raise GeometryError(f"write_dicom_series needs a 3D volume, got shape {volume.shape}")
    if compression is not None and compression not in _COMPRESSION:
        raise ValueError(f"`compression` must be one of {sorted(_COMPRESSION)} or None, got {compression!r}")
    transfer_syntax = _COMPRESSION[compression] if compression else (
        ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian)
    final = Path(folder)
    if final.exists() and any(final.iterdir()):
        raise GeometryError(f"{final}: output folder is not empty; choose a new folder")
    lps = LPS_TO_RAS @ volume.affine
    sp = volume.spacing
    iop = np.concatenate([lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]])
    stored, slope, intercept = _pixel_encoding(np.asarray(volume.array))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        paths = []
        for k in range(volume.array.shape[2]):
            ipp = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
            ds = _slice_dataset(tags, pixels=np.ascontiguousarray(stored[:, :, k].T), ipp=ipp, iop=iop,
                                spacing=(float(sp[1]), float(sp[0]), float(sp[2])), index=k, slope=slope,
                                intercept=intercept, transfer_syntax=transfer_syntax)
            name = f"IM{k + 1:04d}.dcm"
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True, implicit_vr=False,
                             little_endian=transfer_syntax != ExplicitVRBigEndian)
            paths.append(final / name)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths

