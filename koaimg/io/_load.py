"""Load whatever a discovered series is: MR stack, ultrasound object, screenshot, image or label file."""

from __future__ import annotations

from pathlib import Path

from ..core import Volume
from ._discover import SeriesInfo
from ._files import FileKind


def load_series(info: SeriesInfo, *, pixel_spacing_mm: float | None = None):  # -> Volume | UltrasoundImage
    """Load a series found by ``discover``. Ultrasound screenshots need ``pixel_spacing_mm``."""
    kind = FileKind(info.kind)
    first = Path(info.files[0])
    if kind in (FileKind.PNG, FileKind.JPEG):
        from ._us_screenshot import read_ultrasound_screenshot

        return read_ultrasound_screenshot(first, pixel_spacing_mm=pixel_spacing_mm)
    if kind in (FileKind.NIFTI, FileKind.NRRD, FileKind.METAIMAGE):
        from ._images import read_image

        return read_image(first)
    if info.modality == "US":
        from ._dicom_us import read_ultrasound_dicom

        return read_ultrasound_dicom(first)
    from ._dicom_mr import load_mr_stack

    vol: Volume = load_mr_stack(info.files)
    return vol


def load_dicom_file(path: str | Path):  # -> Volume | UltrasoundImage
    """Load one DICOM file on its own: an ultrasound object, an enhanced MR, or a single slice as a 1-slice stack."""
    from ..core import UnsupportedObjectError
    from ._dicom_headers import read_header
    from ._dicom_mr import load_mr_stack

    header = read_header(path)
    if header.is_ultrasound:
        from ._dicom_us import read_ultrasound_dicom

        return read_ultrasound_dicom(path)
    if header.number_of_frames > 1 and not header.is_enhanced_mr:
        from pydicom.uid import UID

        raise UnsupportedObjectError(f"multi-frame {UID(header.sop_class_uid).name} is neither a knee MR volume nor "
                                     "an ultrasound object", path=path, hint="it is skipped")
    return load_mr_stack([path])
