"""Closed vocabularies: coerce strings on entry (``KneeSide("R")``), return enums everywhere."""

from __future__ import annotations

from enum import StrEnum


class KneeSide(StrEnum):
    """Which knee a scan shows. ``UNKNOWN`` is a state to resolve, never something to measure regions on."""

    RIGHT = "right"
    LEFT = "left"
    BILATERAL = "bilateral"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> KneeSide | None:
        # DICOM's enumerated Laterality values (R, L, B, U) and common spellings
        aliases = {"r": cls.RIGHT, "rt": cls.RIGHT, "l": cls.LEFT, "lt": cls.LEFT, "b": cls.BILATERAL,
                   "both": cls.BILATERAL, "u": cls.UNKNOWN, "": cls.UNKNOWN, "none": cls.UNKNOWN}
        if isinstance(value, str):
            return aliases.get(value.strip().lower())
        return None


class Modality(StrEnum):
    """Imaging modality of a volume or frame set."""

    MR = "MR"
    US = "US"
    SEG = "SEG"
    OTHER = "OT"

    @classmethod
    def _missing_(cls, value: object) -> Modality | None:
        if isinstance(value, str) and value.strip().upper() in {"MR", "US", "SEG"}:
            return cls(value.strip().upper())
        return cls.OTHER if isinstance(value, str) else None


class Plane(StrEnum):
    """Anatomical plane of a 2D stack, from its slice normal."""

    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"
    OBLIQUE = "oblique"
