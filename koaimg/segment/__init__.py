"""Knee MR segmentation with a MONAI bundle: loading (sha256-pinned), sliding-window inference on a RAS working grid
with exact return to the native grid, clean-up and field-of-view warnings, and the domain-randomised training data."""

from ._bundle import DEFAULT_BUNDLE, Bundle, load_bundle
from ._geometry import WorkingGrid
from ._infer import SegmentationResult, resolve_device, segment_volume
from ._intensity import normalise_intensity
from ._postprocess import clean_labels, field_of_view_warnings

__all__ = [
    "DEFAULT_BUNDLE",
    "Bundle",
    "SegmentationResult",
    "WorkingGrid",
    "clean_labels",
    "field_of_view_warnings",
    "load_bundle",
    "normalise_intensity",
    "resolve_device",
    "segment_volume",
]
