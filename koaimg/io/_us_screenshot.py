"""Ultrasound screenshots (PNG/JPEG): grey pixels plus a pixel size the user must state.

A screenshot has no calibration at all; guessing one from on-screen rulers or depth labels would make every thickness
a guess, so the spacing is a required argument and its absence is refused.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core._errors import CalibrationError, UnreadableFileError
from ..core._ultrasound import UltrasoundImage, rgb_to_grey

_NO_SPACING = "PNG/JPEG screenshots carry no calibration; pass --pixel-spacing MM (e.g. 0.0852)"


def _spacing(pixel_spacing_mm: float | tuple[float, float] | None, path: Path) -> tuple[float, float]:
    if pixel_spacing_mm is None:
        raise CalibrationError(_NO_SPACING, path=path)
    values = (pixel_spacing_mm, pixel_spacing_mm) if np.isscalar(pixel_spacing_mm) else tuple(pixel_spacing_mm)
    try:
        row_mm, col_mm = (float(v) for v in values)
    except (TypeError, ValueError):
        raise CalibrationError(f"pixel spacing must be one number or (row_mm, col_mm), got {pixel_spacing_mm!r}",
                               path=path) from None
    if not all(math.isfinite(v) and v > 0 for v in (row_mm, col_mm)):
        raise CalibrationError(f"pixel spacing must be positive mm, got {pixel_spacing_mm!r}", path=path)
    return row_mm, col_mm


def read_ultrasound_screenshot(path: str | Path, *,
                               pixel_spacing_mm: float | tuple[float, float] | None) -> UltrasoundImage:
    """Read a PNG/JPEG ultrasound screenshot as one grey frame with the given pixel size.

    Parameters
    ----------
    path : str or Path
        PNG or JPEG file (any format Pillow opens is accepted).
    pixel_spacing_mm : float or (row_mm, col_mm)
        Physical pixel size, e.g. from the scanner's export settings. Required: None is refused.

    Raises
    ------
    CalibrationError
        No (or a non-positive) pixel spacing.
    UnreadableFileError
        Not an image Pillow can decode.
    """
    path = Path(path)
    spacing = _spacing(pixel_spacing_mm, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a "screenshot" that size is not one
            with Image.open(path) as img:
                img.load()
                fmt = img.format or path.suffix.lstrip(".").upper()
                mode = img.mode
                arr = _grey(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise UnreadableFileError(f"not a readable PNG/JPEG image ({type(exc).__name__}: {exc})", path=path,
                                  hint="DICOM files are read with the DICOM ultrasound reader") from None
    full_scale = 65535.0 if mode.startswith("I;16") else 255.0
    meta = {"format": fmt, "mode": mode, "grey_max": full_scale,
            "all_black": bool(np.all(arr <= 0.01 * full_scale))}
    return UltrasoundImage(frames=arr[np.newaxis], spacing_mm=spacing, region=None, frame_time_ms=None,
                           selected_frame=None, source=f"{fmt} screenshot", meta=meta)


def _grey(img: Image.Image) -> np.ndarray:
    """(rows, cols) float32 grey from any Pillow mode, with the same luma weights as DICOM colour."""
    mode = img.mode
    if mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(img, dtype=np.float32)
    if mode == "LA":
        return np.asarray(img.getchannel("L"), dtype=np.float32)
    if mode not in ("RGB", "RGBA"):  # palette, CMYK, YCbCr, 1-bit...: let Pillow make RGB first
        img = img.convert("RGB")
    return rgb_to_grey(np.asarray(img)[..., :3])
