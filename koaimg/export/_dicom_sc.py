"""Secondary Capture images of the key figures (overlay, thickness map): the picture every PACS viewer shows."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from .. import __version__
from ._dicom_source import (
    MANUFACTURER,
    content_hash,
    derived_uid,
    finalise,
    quiet_person_names,
    read_source_series,
    save,
)


def _rgb(png_or_rgb: str | Path | bytes | np.ndarray) -> np.ndarray:
    from PIL import Image

    if isinstance(png_or_rgb, np.ndarray):
        arr = np.asarray(png_or_rgb)
    else:
        data = png_or_rgb if isinstance(png_or_rgb, bytes) else Path(png_or_rgb).read_bytes()
        arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"`png_or_rgb` must be a PNG or an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def build_secondary_capture(png_or_rgb: str | Path | bytes | np.ndarray, source: str | Path | Sequence[Dataset], *,
                            series_number: int = 302, instance_number: int = 1,
                            description: str = "koaimg key figure") -> Dataset:
    """The SC dataset (not written); see ``write_secondary_capture``."""
    import highdicom as hd

    pixels = _rgb(png_or_rgb)
    src = read_source_series(source)[0]
    laterality = str(src.get("Laterality", "") or src.get("ImageLaterality", "")).upper()
    key = content_hash(pixels, description)
    with quiet_person_names():
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=src, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=derived_uid("sc-series", src.SeriesInstanceUID, series_number),
            series_number=series_number, sop_instance_uid=derived_uid("sc", src.SeriesInstanceUID, key),
            instance_number=instance_number, manufacturer=MANUFACTURER, patient_orientation=("A", "F"),
            laterality=laterality if laterality in ("R", "L") else None, transfer_syntax_uid="1.2.840.10008.1.2.1")
    sc.PatientOrientation = ""  # type 2: a composite figure has no single patient orientation
    sc.SeriesDescription = "koaimg key figures"
    sc.ImageComments = description[:10240]
    sc.DerivationDescription = f"rendered by koaimg {__version__}; not for primary diagnosis"
    sc.BurnedInAnnotation = "YES"
    return finalise(sc, src)


def write_secondary_capture(png_or_rgb: str | Path | bytes | np.ndarray, source: str | Path | Sequence[Dataset],
                            path: str | Path, *, series_number: int = 302, instance_number: int = 1,
                            description: str = "koaimg key figure") -> Path:
    """Write a figure (PNG file/bytes or RGB array) as a DICOM Secondary Capture in the source's study.

    Figures of one scan share a series (same ``series_number`` gives the same series UID); give each its own
    ``instance_number``.
    """
    return save(build_secondary_capture(png_or_rgb, source, series_number=series_number,
                                        instance_number=instance_number, description=description), path)
