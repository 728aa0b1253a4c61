"""Core types: Volume (array + RAS affine in mm + metadata), label schema and presets, knee side, errors."""

from ._enums import KneeSide, Modality, Plane
from ._errors import (
    CalibrationError,
    DicomSeriesError,
    GeometryError,
    IrregularSpacingError,
    KoaimgError,
    LabelSchemaError,
    LateralityError,
    MissingCodecError,
    MissingGeometryError,
    MissingSliceError,
    MixedOrientationError,
    ModelError,
    UnreadableFileError,
    UnsupportedObjectError,
    UnsupportedTransferSyntaxError,
)
from ._geometry import LPS_TO_RAS, axis_codes, plane_of_normal, validate_affine
from ._grading import MOAKS_CUTPOINTS, moaks_grade
from ._labels import (
    CARTILAGE_ON_BONE,
    PRESETS,
    STRUCTURE_COLOURS,
    LabelPreset,
    Structure,
    apply_preset,
    load_preset_json,
    parse_label_table,
)
from ._side import SideDecision, decide_side, side_from_anatomy, side_from_text
from ._ultrasound import UltrasoundImage, UltrasoundRegion
from ._volume import LabelVolume, Volume, VolumeMeta

__all__ = [
    "CARTILAGE_ON_BONE",
    "LPS_TO_RAS",
    "MOAKS_CUTPOINTS",
    "PRESETS",
    "STRUCTURE_COLOURS",
    "CalibrationError",
    "DicomSeriesError",
    "GeometryError",
    "IrregularSpacingError",
    "KneeSide",
    "KoaimgError",
    "LabelPreset",
    "LabelSchemaError",
    "LabelVolume",
    "LateralityError",
    "MissingCodecError",
    "MissingGeometryError",
    "MissingSliceError",
    "MixedOrientationError",
    "Modality",
    "ModelError",
    "Plane",
    "SideDecision",
    "Structure",
    "UltrasoundImage",
    "UltrasoundRegion",
    "UnreadableFileError",
    "UnsupportedObjectError",
    "UnsupportedTransferSyntaxError",
    "Volume",
    "VolumeMeta",
    "apply_preset",
    "axis_codes",
    "decide_side",
    "load_preset_json",
    "moaks_grade",
    "parse_label_table",
    "plane_of_normal",
    "side_from_anatomy",
    "side_from_text",
    "validate_affine",
]
