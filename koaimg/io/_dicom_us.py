"""DICOM ultrasound ingestion: calibration from the Sequence of Ultrasound Regions, frames as grey 2D+t.

Nothing else in the stack (SimpleITK, MONAI, highdicom) reads US regions, and PixelSpacing or on-screen rulers are not
a trustworthy substitute, so the physical pixel size comes from a calibrated B-mode region or the file is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.pixels.utils import as_pixel_options

from ..core._errors import (
    CalibrationError,
    GeometryError,
    UnreadableFileError,
    UnsupportedObjectError,
    UnsupportedTransferSyntaxError,
)
from ..core._ultrasound import DOPPLER_DATA_TYPES, UltrasoundImage, UltrasoundRegion, rgb_to_grey
from ._codecs import ensure_decodable

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
_US_SOP_CLASSES = {
    US_IMAGE_STORAGE,
    US_MULTIFRAME_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.6",  # retired US Image Storage
    "1.2.840.10008.5.1.4.1.1.3",  # retired US Multi-frame Image Storage
}
_ENHANCED_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"

#: largest relative difference between |ΔX| and |ΔY| accepted for a B-mode region (pixels are square on scanners)
MAX_ANISOTROPY = 0.02

_NO_REGIONS_HINT = ("export from the scanner with calibration (regions), or use a screenshot with --pixel-spacing; "
                    "koaimg does not guess from PixelSpacing or on-screen rulers")
# photometric interpretations whose first sample is BT.601 luma (YBR_ICT/RCT: approximately), i.e. already grey
_LUMA_FIRST = {"YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT"}


# regions --------------------------------------------------------------------------------------------------------------
def _num(item: Dataset, keyword: str, default: float = 0) -> Any:
    value = item.get(keyword)
    return default if value is None or value == "" else value


def parse_ultrasound_regions(ds: Dataset) -> list[UltrasoundRegion]:
    """All items of SequenceOfUltrasoundRegions (0018,6011), in file order; [] when the sequence is absent.

    Missing optional values read as 0, which no rule accepts as a calibration, so a sloppy item is listed (and named
    in error messages) rather than crashing the parse.
    """
    seq = ds.get("SequenceOfUltrasoundRegions")
    if not seq:
        return []
    regions = []
    for i, item in enumerate(seq):
        regions.append(UltrasoundRegion(
            index=i,
            spatial_format=_num(item, "RegionSpatialFormat"),
            data_type=_num(item, "RegionDataType"),
            flags=_num(item, "RegionFlags"),
            x0=_num(item, "RegionLocationMinX0"),
            y0=_num(item, "RegionLocationMinY0"),
            x1=_num(item, "RegionLocationMaxX1"),
            y1=_num(item, "RegionLocationMaxY1"),
            units_x=_num(item, "PhysicalUnitsXDirection"),
            units_y=_num(item, "PhysicalUnitsYDirection"),
            delta_x=_num(item, "PhysicalDeltaX", 0.0),
            delta_y=_num(item, "PhysicalDeltaY", 0.0),
        ))
    return regions


def _anisotropy(region: UltrasoundRegion) -> float:
    dx, dy = abs(region.delta_x), abs(region.delta_y)
    return abs(dx - dy) / max(dx, dy)


def choose_bmode_region(regions: list[UltrasoundRegion], *, path: str | Path | None = None) -> UltrasoundRegion:
    """The calibrated B-mode region to measure in: spatial format 1, data type 1, cm on both axes, largest area.

    Raises
    ------
    CalibrationError
        When there are no regions, none qualifies (the message lists what was found), or the chosen region's pixels
        are not square within 2 %.
    """
    if not regions:
        raise CalibrationError("no Sequence of Ultrasound Regions (0018,6011): the pixel size is unknown",
                               path=path, hint=_NO_REGIONS_HINT)
    usable = [r for r in regions if r.is_bmode_tissue and r.is_cm and r.has_valid_delta and r.area > 0]
    if not usable:
        if all(r.data_type in DOPPLER_DATA_TYPES for r in regions):
            found = "Doppler/colour-flow only"
        else:
            found = "; ".join(_why_not(r) for r in regions)
        raise CalibrationError(f"regions present but none is a calibrated 2D tissue (B-mode) region in cm: found "
                               f"{found}", path=path, hint=_NO_REGIONS_HINT)
    best = max(usable, key=lambda r: (r.area, -r.index))
    if _anisotropy(best) > MAX_ANISOTROPY:
        raise CalibrationError(
            f"B-mode region {best.index} has non-square pixels: |ΔX|={abs(best.delta_x):.6g} cm and "
            f"|ΔY|={abs(best.delta_y):.6g} cm differ by {100 * _anisotropy(best):.1f} % (more than "
            f"{100 * MAX_ANISOTROPY:.0f} %)", path=path, hint="check the export settings; the calibration is suspect")
    return best


def _why_not(region: UltrasoundRegion) -> str:
    text = region.describe()
    if region.is_bmode_tissue and region.is_cm:
        text += " with zero/invalid Physical Delta" if not region.has_valid_delta else " with empty bounds"
    return text


def _fit_region(region: UltrasoundRegion, rows: int, cols: int, *, path: str | Path | None,
                allow_overflow: bool) -> tuple[tuple[int, int, int, int], bool, str | None]:
    """Crop bounds (y0, y1, x0, x1) inclusive inside a rows×cols image, and whether they had to be clipped.

    A region reaching one pixel past the edge (x1 == Columns) is a common exclusive-bound habit and is clipped
    silently. Anything further means the pixels were cropped or resized after calibration; a resize makes the
    spacing wrong (pydicom's examples_ybr_color.dcm is a 2× downsample carrying its 640×480 regions), so it is
    refused unless the caller says the image was only cropped.
    """
    bounds = f"x {region.x0}..{region.x1}, y {region.y0}..{region.y1}"
    if region.x0 >= cols or region.y0 >= rows or region.x0 < 0 or region.y0 < 0:
        raise CalibrationError(f"B-mode region {region.index} ({bounds}) starts outside the {cols}×{rows} image",
                               path=path, hint="the calibration does not belong to these pixels")
    warning = None
    if region.x1 > cols or region.y1 > rows:
        warning = (f"B-mode region {region.index} ({bounds}) extends beyond the {cols}×{rows} image: the pixels were "
                   "cropped or resized after calibration, so its spacing may not describe them")
        if not allow_overflow:
            raise CalibrationError(warning, path=path, hint="measure it only if the image is known to be cropped, "
                                                            "not resized")
    y1, x1 = min(region.y1, rows - 1), min(region.x1, cols - 1)
    clipped = (y1, x1) != (region.y1, region.x1)
    return (region.y0, y1, region.x0, x1), clipped, warning


# reading ------------------------------------------------------------------------------------------------------------
def _read_dataset(path: Path, *, header_only: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise UnreadableFileError("not a DICOM file (no 'DICM' file meta header)", path=path) from None
    except FileNotFoundError:
        raise UnreadableFileError("file not found", path=path) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableFileError(f"cannot be read as DICOM: {type(exc).__name__}: {exc}", path=path) from None


def _sop_class(ds: Dataset) -> str:
    return str(ds.get("SOPClassUID", "") or ds.get("MediaStorageSOPClassUID", "") or "")


def _check_ultrasound(ds: Dataset, path: str | Path | None) -> None:
    sop = _sop_class(ds)
    if sop == _ENHANCED_US_VOLUME:
        raise UnsupportedObjectError("Enhanced US Volume (3D ultrasound) is not supported yet", path=path,
                                     hint="export 2D B-mode images or cine loops")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop not in _US_SOP_CLASSES and modality != "US":
        name = pydicom.uid.UID(sop).name if sop else "unknown SOP class"
        raise UnsupportedObjectError(f"not an ultrasound image (SOP class {name}, modality {modality or 'none'})",
                                     path=path, hint="read MR series with the MR reader")


def _n_frames(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _frame_times(ds: Dataset) -> tuple[float | None, list[float] | None]:
    """(frame interval in ms, the Frame Time Vector when given) from Frame Time (0018,1063) or (0018,1065)."""
    try:
        ft = ds.get("FrameTime")
        if ft not in (None, "") and math.isfinite(float(ft)) and float(ft) > 0:
            return float(ft), None
        vec = ds.get("FrameTimeVector")
        if vec not in (None, ""):
            values = [float(v) for v in vec] if isinstance(vec, MultiValue | list | tuple) else [float(vec)]
            steps = [v for v in values[1:] if math.isfinite(v) and v > 0]  # the first entry is 0 (time of frame 1)
            return (float(np.mean(steps)) if steps else None), values
    except (TypeError, ValueError):  # malformed timing is not worth refusing a calibrated image over
        pass
    return None, None


def _decode(ds: Dataset, index: int | None, path: Path) -> tuple[np.ndarray, str]:
    """Decoded frames as (T, rows, cols[, samples]) plus the photometric interpretation of what came out."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsyntax:
        raise UnreadableFileError("no Transfer Syntax UID in the file meta: pixel encoding unknown", path=path)
    ensure_decodable(tsyntax, path=path)  # one-line MissingCodecError / UnsupportedTransferSyntaxError
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(f"transfer syntax {tsyntax.name} cannot be decoded", path=path) from None
    try:
        arr, meta = decoder.as_array(ds, index=index, validate=True, raw=True, **as_pixel_options(ds))
    except (ValueError, RuntimeError, AttributeError, TypeError, KeyError, EOFError) as exc:
        raise UnreadableFileError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})", path=path) from None
    samples = int(meta.get("samples_per_pixel", ds.get("SamplesPerPixel", 1)) or 1)
    if arr.ndim == (2 if samples == 1 else 3):
        arr = arr[np.newaxis]
    return arr, str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))


def _to_grey(arr: np.ndarray, photometric: str, ds: Dataset, path: Path) -> tuple[np.ndarray, float]:
    """(T, rows, cols) float32 grey and its nominal full-scale value."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    full = float(2 ** bits - 1)
    pi = photometric.strip().upper()
    if pi == "MONOCHROME2":
        return arr.astype(np.float32), full
    if pi == "MONOCHROME1":  # 0 is white: invert so that echoes are bright like every other source
        return (full - arr.astype(np.float64)).astype(np.float32), full
    if pi == "RGB":
        return rgb_to_grey(arr), full
    if pi in _LUMA_FIRST:  # YCbCr: Y is exactly the BT.601 grey, no need to round-trip through RGB
        return arr[..., 0].astype(np.float32), full
    if pi == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except (ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
            raise UnreadableFileError(f"PALETTE COLOR image with an unusable colour table ({exc})", path=path) \
                from None
        lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds \
            else 8
        scale = 255.0 / float(2 ** lut_bits - 1)  # 8- or 16-bit table entries -> the usual 0..255 echo scale
        return (rgb_to_grey(rgb) * np.float32(scale)).astype(np.float32), 255.0
    raise UnsupportedObjectError(f"photometric interpretation {photometric or 'missing'} is not supported for "
                                 "ultrasound", path=path)


def _technical_meta(ds: Dataset, region: UltrasoundRegion | None) -> dict[str, Any]:
    """Pseudonymous, technical facts only: never names, IDs or dates."""
    meta: dict[str, Any] = {
        "sop_class": pydicom.uid.UID(_sop_class(ds)).name if _sop_class(ds) else "",
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "") or ""),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "manufacturer_model": str(ds.get("ManufacturerModelName", "") or ""),
        "frames_in_file": _n_frames(ds),
    }
    if hasattr(ds, "file_meta") and ds.file_meta.get("TransferSyntaxUID"):
        meta["transfer_syntax"] = ds.file_meta.TransferSyntaxUID.name
    if ds.get("BurnedInAnnotation"):
        meta["burned_in_annotation"] = str(ds.BurnedInAnnotation)
    if region is not None:
        item = ds.SequenceOfUltrasoundRegions[region.index]
        if item.get("TransducerFrequency"):
            meta["transducer_frequency_khz"] = int(item.TransducerFrequency)
    return meta


def _calibration(ds: Dataset, path: str | Path | None, *, allow_region_overflow: bool
                 ) -> tuple[UltrasoundRegion, tuple[int, int, int, int], bool, str | None]:
    region = choose_bmode_region(parse_ultrasound_regions(ds), path=path)
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or cols <= 0:
        raise UnreadableFileError("Rows/Columns missing or zero", path=path)
    crop, clipped, warning = _fit_region(region, rows, cols, path=path, allow_overflow=allow_region_overflow)
    return region, crop, clipped, warning


def read_ultrasound_dicom(path: str | Path, *, frame: int | None = None, crop_to_region: bool = True,
                          allow_region_overflow: bool = True) -> UltrasoundImage:
    """Read a DICOM US image or cine as grey frames with mm spacing from its calibrated B-mode region.

    Parameters
    ----------
    path : str or Path
        A US Image or US Multi-frame Image file.
    frame : int, optional
        Keep only this cine frame (0-based; negative counts from the end) and record it in ``selected_frame``.
    crop_to_region : bool
        Crop frames to the B-mode region bounds (drops burned-in text and bars outside the image area).
    allow_region_overflow : bool
        Load an image whose region extends past the image (clipped; ``meta['calibration_warning']`` says why the
        spacing is suspect, and measurement refuses such images unless told the image was only cropped). False
        refuses at read time.

    Raises
    ------
    UnreadableFileError, UnsupportedObjectError, CalibrationError, MissingCodecError, UnsupportedTransferSyntaxError
    """
    path = Path(path)
    ds = _read_dataset(path, header_only=False)
    _check_ultrasound(ds, path)
    if "PixelData" not in ds:
        raise UnsupportedObjectError("ultrasound object without pixel data", path=path)
    region, (y0, y1, x0, x1), clipped, warning = _calibration(ds, path,
                                                             allow_region_overflow=allow_region_overflow)

    n = _n_frames(ds)
    index = None
    if frame is not None:
        if not -n <= frame < n:
            raise GeometryError(f"frame {frame} does not exist: the file has {n} frame(s), 0..{n - 1}", path=path)
        index = frame % n
    raw, photometric = _decode(ds, index, path)
    grey, full_scale = _to_grey(raw, photometric, ds, path)
    if crop_to_region:
        grey = grey[:, y0:y1 + 1, x0:x1 + 1]

    frame_time, vector = _frame_times(ds)
    meta = _technical_meta(ds, region)
    meta.update({
        "region_index": region.index,
        "region_crop": (y0, y1, x0, x1) if crop_to_region else None,
        "region_clipped": clipped,
        "calibration_warning": warning,
        "grey_max": full_scale,
        # no echo at all (≤1 % of full scale): kept readable here, refused by measurement with a clear reason
        "all_black": bool(np.all(grey <= 0.01 * full_scale)),
    })
    if vector is not None:
        meta["frame_time_vector_ms"] = vector
    multi = n > 1 or _sop_class(ds) == US_MULTIFRAME_IMAGE_STORAGE
    return UltrasoundImage(
        frames=grey,
        spacing_mm=region.mm_per_pixel,
        region=region,
        frame_time_ms=frame_time,
        selected_frame=index,
        source="DICOM US multi-frame" if multi else "DICOM US single-frame",
        meta=meta,
    )


def describe_ultrasound(ds: Dataset) -> dict[str, Any]:
    """Header facts for the discovery listing: frames, size, mm/pixel or why there is none. Never raises for US data.

    Works on ``dcmread(..., stop_before_pixels=True)`` datasets: nothing here touches pixel data.
    """
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frame_time, _ = _frame_times(ds)
    info: dict[str, Any] = {
        "frames": _n_frames(ds),
        "rows": rows,
        "cols": cols,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "") or ""),
        "frame_time_ms": frame_time,
        "n_regions": len(parse_ultrasound_regions(ds)),
        "region_index": None,
        "mm_per_pixel": None,
        "calibration_problem": None,
        "calibration_warning": None,
    }
    try:
        _check_ultrasound(ds, None)
        region, _, _, warning = _calibration(ds, None, allow_region_overflow=True)
    except (CalibrationError, UnsupportedObjectError, UnreadableFileError) as exc:
        info["calibration_problem"] = exc.one_line()
        return info
    info.update(region_index=region.index, mm_per_pixel=region.mm_per_pixel, calibration_warning=warning)
    return info
