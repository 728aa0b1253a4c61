"""DICOM MR stacks (single-frame series and enhanced multi-frame objects) into RAS Volumes.

Geometry is validated from the headers first (``check_stack``) so each failure gets its own error class; voxel
assembly and functional-group parsing are highdicom's (docs/libraries.md section 2.1).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from ..core import (
    LPS_TO_RAS,
    DicomSeriesError,
    KneeSide,
    KoaimgError,
    MissingGeometryError,
    Modality,
    UnreadableFileError,
    Volume,
    VolumeMeta,
    decide_side,
    plane_of_normal,
    side_from_text,
)
from ._codecs import ensure_decodable
from ._dicom_headers import InstanceHeader, pseudonym, read_header
from ._stack import check_stack


def _acquisition(h: InstanceHeader) -> dict[str, object]:
    acq = {
        "echo_time_ms": h.echo_time,
        "repetition_time_ms": h.repetition_time,
        "flip_angle_deg": h.flip_angle,
        "field_strength_t": h.field_strength,
        "mr_acquisition_type": h.mr_acquisition_type,
        "scanning_sequence": h.scanning_sequence,
        "sequence_variant": h.sequence_variant,
        "scan_options": h.scan_options,
        "slice_thickness_mm": h.slice_thickness,
        "image_type": h.image_type,
        "transfer_syntax": pydicom.uid.UID(h.transfer_syntax).name if h.transfer_syntax else "",
    }
    return {k: v for k, v in acq.items() if v not in (None, "")}


def _meta(h: InstanceHeader, source: str, split: str) -> VolumeMeta:
    decision = decide_side([
        ("Laterality tag", KneeSide(h.laterality or "")),
        ("ImageLaterality tag", KneeSide(h.image_laterality or "")),
        ("SeriesDescription", side_from_text(h.series_description)),
        ("ProtocolName", side_from_text(h.protocol_name)),
    ])
    side_source = decision.source
    if decision.conflicting:
        side_source = f"{decision.source} (CONFLICT: {'; '.join(decision.conflicts)})"
    return VolumeMeta(modality=Modality.MR if h.modality == "MR" else Modality(h.modality or "OT"),
                      side=decision.side, side_source=side_source, series_description=h.series_description,
                      acquisition=_acquisition(h), subject=h.subject,
                      series_key=pseudonym(h.series_uid + split, prefix="series"), source=source)


def _read_full(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    datasets = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p)
        except Exception as exc:  # a file that passed the header scan but whose pixel data is cut short
            raise UnreadableFileError(f"cannot read DICOM file ({type(exc).__name__})", path=p,
                                      hint="re-export the file") from None
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise UnreadableFileError("DICOM file has no pixel data (truncated?)", path=p, hint="re-export the file")
        datasets.append(ds)
    return datasets


def _to_volume(hd_volume: hd.Volume, meta: VolumeMeta) -> Volume:
    """highdicom volumes are (slice, row, column) in LPS. koaimg orders voxels (column, row, slice), as NIfTI
    converters do, so the k-axis is the acquisition stack; and flips LPS to RAS once, here."""
    array = np.asarray(hd_volume.array)
    if array.ndim > 3:
        array = array.reshape(array.shape[:3])
    affine = hd_volume.affine[:, [2, 1, 0, 3]]
    return Volume(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(np.float32, copy=False),
                  LPS_TO_RAS @ affine, meta)


def _pixels_error(exc: Exception, path: Path) -> KoaimgError:
    text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    if "coordinate" in text.lower():
        return MissingGeometryError(f"image is not placed in the patient coordinate system ({text})", path=path,
                                    hint="a secondary capture or derived image cannot be measured; use the original "
                                         "series")
    if "regularly-spaced" in text or "spacing" in text.lower():
        return DicomSeriesError(f"slices do not form a regular volume ({text})", path=path,
                                hint="re-export the complete series")
    return UnreadableFileError(f"pixel data cannot be decoded ({type(exc).__name__}: {text})", path=path,
                               hint="check the file is complete; install koaimg[dicom-codecs] for compressed data")


def load_mr_stack(paths: Sequence[str | Path]) -> Volume:
    """Load one stack of single-frame MR slices (any order) or one enhanced multi-frame file as a RAS Volume.

    pydicom/highdicom warnings about tolerable encoding quirks are silenced: the stack loads or raises one error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _load_mr_stack(paths)


def _load_mr_stack(paths: Sequence[str | Path]) -> Volume:
    files = [Path(p) for p in paths]
    headers = [read_header(p) for p in files]
    h = headers[0]
    split = f"{h.frame_of_reference_uid}|{plane_of_normal_or_unknown(h)}|{h.rows}x{h.columns}|{h.echo_time}|" \
            f"{h.acquisition_number}"
    for hdr in headers:
        ensure_decodable(hdr.transfer_syntax, path=hdr.path)
    if len(files) == 1 and h.is_enhanced_mr:
        try:
            image = hd.imread(str(files[0]))
            vol = image.get_volume(dtype=np.float32)
        except KoaimgError:
            raise
        except Exception as exc:
            raise _pixels_error(exc, files[0]) from None
        return _to_volume(vol, _meta(h, "DICOM MR enhanced multi-frame", split))
    check_stack(headers)
    datasets = _read_full(files)
    try:
        vol = hd.get_volume_from_series(datasets, dtype=np.float32)
    except KoaimgError:
        raise
    except Exception as exc:
        raise _pixels_error(exc, files[0] if len(files) == 1 else files[0].parent) from None
    return _to_volume(vol, _meta(h, "DICOM MR single-frame series", split))


def plane_of_normal_or_unknown(h: InstanceHeader) -> str:
    """Plane name of a header's slice normal (for the stack key), 'unknown' without orientation."""
    from ._stack import slice_normal

    return "unknown" if h.orientation is None else plane_of_normal(slice_normal(h.orientation)).value


def enhanced_geometry(path: Path) -> tuple[tuple[float, float] | None, float | None, str]:
    """Pixel spacing, slice spacing and plane of an enhanced MR object from its shared functional groups."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        shared = ds.SharedFunctionalGroupsSequence[0]
        measures = shared.PixelMeasuresSequence[0]
        pixel = tuple(float(v) for v in measures.PixelSpacing)
        between = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
        orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None, None, "unknown"
    from ._stack import slice_normal

    return (pixel[0], pixel[1]), None if between is None else float(between), \
        plane_of_normal(slice_normal(orientation)).value
