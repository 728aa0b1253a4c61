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
from pydicom.pixels import apply_modality_lut

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
from ._dicom_headers import InstanceHeader, pseudonym, read_dataset, read_header
from ._stack import StackGeometry, check_stack


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
    if len(files) == 1:
        header = read_header(files[0])
        if header.is_enhanced_mr:
            return _load_enhanced(files[0], header)
    pairs = [read_dataset(p) for p in files]
    headers = [h for _, h in pairs]
    for hdr in headers:
        ensure_decodable(hdr.transfer_syntax, path=hdr.path)
    geometry = check_stack(headers)
    h = headers[geometry.order[0]]
    rows, cols = h.rows, h.columns
    array = np.empty((cols, rows, len(files)), dtype=np.float32)
    for k, index in enumerate(geometry.order):
        ds, hdr = pairs[index]
        try:
            pixels = apply_modality_lut(ds.pixel_array, ds)
        except Exception as exc:
            raise _pixels_error(exc, hdr.path) from None
        if pixels.shape != (rows, cols):
            raise UnreadableFileError(f"pixel array has shape {pixels.shape}, header says {rows}x{cols}",
                                      path=hdr.path, hint="re-export the file")
        array[:, :, k] = pixels.T
    return Volume(array, LPS_TO_RAS @ stack_affine(h, geometry), _meta(h, "DICOM MR single-frame series",
                                                                        _split_key(h)))


def stack_affine(first: InstanceHeader, geometry: StackGeometry) -> np.ndarray:
    """LPS affine of a validated stack, voxel axes (column, row, slice) as koaimg orders them.

    i runs along a row (IOP's first vector, step = column spacing PixelSpacing[1]); j down a column (IOP's second
    vector, step = row spacing PixelSpacing[0]); k along the slice normal through the sorted slices; the origin is the
    first sorted slice's ImagePositionPatient. Cross-checked against highdicom in the tests.
    """
    orientation = np.asarray(first.orientation, dtype=float)
    row_spacing, col_spacing = geometry.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * col_spacing
    affine[:3, 1] = orientation[3:] * row_spacing
    affine[:3, 2] = geometry.normal_lps * geometry.slice_spacing
    affine[:3, 3] = first.position
    return affine


def _split_key(h: InstanceHeader) -> str:
    return f"{h.frame_of_reference_uid}|{plane_of_normal_or_unknown(h)}|{h.rows}x{h.columns}|{h.echo_time}|" \
           f"{h.acquisition_number}"


def _load_enhanced(path: Path, header: InstanceHeader) -> Volume:
    """Enhanced / legacy-converted multi-frame MR: functional groups are highdicom's job."""
    ensure_decodable(header.transfer_syntax, path=path)
    try:
        volume = hd.imread(str(path)).get_volume(dtype=np.float32)
    except KoaimgError:
        raise
    except Exception as exc:
        raise _pixels_error(exc, path) from None
    return _to_volume(volume, _meta(header, "DICOM MR enhanced multi-frame", _split_key(header)))


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
