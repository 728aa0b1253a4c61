"""One error hierarchy for everything a user can get wrong.

Every error renders as a single line: which file (when there is one), what is wrong, and what to do next. Each class
also inherits the builtin that matches its meaning, so generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

from pathlib import Path


class KoaimgError(Exception):
    """Base of every error koaimg raises on purpose; the CLI prints it as one line and exits non-zero."""

    #: short machine-readable reason recorded in manifests and ``koaimg inspect --json``
    code = "error"

    def __init__(self, problem: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as the user sees it: ``path: problem; hint``."""
        text = self.problem.rstrip(". ")
        if self.path:
            text = f"{self.path}: {text}"
        if self.hint:
            text = f"{text}; {self.hint.rstrip('.')}"
        return " ".join(text.split())


class UnreadableFileError(KoaimgError, ValueError):
    """The file cannot be parsed at all (zero bytes, truncated, not the format it claims)."""

    code = "unreadable_file"


class UnsupportedObjectError(KoaimgError, ValueError):
    """A well-formed file that holds no image koaimg can use (SR, presentation state, waveform...)."""

    code = "unsupported_object"


class MissingCodecError(KoaimgError, RuntimeError):
    """Pixel data is compressed with a transfer syntax whose decoder is not installed."""

    code = "missing_codec"


class UnsupportedTransferSyntaxError(KoaimgError, ValueError):
    """The transfer syntax is not one any installed or installable decoder handles."""

    code = "unsupported_transfer_syntax"


class DicomSeriesError(KoaimgError, ValueError):
    """A series cannot be assembled into a regular volume."""

    code = "bad_series"


class MissingSliceError(DicomSeriesError):
    """A gap in slice positions: one or more slices are missing."""

    code = "missing_slice"


class IrregularSpacingError(DicomSeriesError):
    """Slice positions are not evenly spaced (and not explained by a missing slice)."""

    code = "irregular_spacing"


class MixedOrientationError(DicomSeriesError):
    """The slices of one stack do not share an orientation."""

    code = "mixed_orientation"


class MissingGeometryError(DicomSeriesError):
    """Position, orientation or spacing tags needed to place the image in space are absent."""

    code = "missing_geometry"


class GeometryError(KoaimgError, ValueError):
    """An affine or grid is invalid or two grids that must match do not."""

    code = "bad_geometry"


class CalibrationError(KoaimgError, ValueError):
    """Ultrasound pixels have no physical size that can be trusted: measuring would be a guess."""

    code = "no_calibration"


class LabelSchemaError(KoaimgError, ValueError):
    """A label map does not fit the schema or preset it was read with."""

    code = "bad_labels"


class LateralityError(KoaimgError, ValueError):
    """Knee side evidence conflicts or is missing where it is required."""

    code = "laterality"


class ModelError(KoaimgError, RuntimeError):
    """A model bundle is missing, corrupted or incompatible."""

    code = "model"


class OptionError(KoaimgError, ValueError):
    """A command option has a value koaimg does not understand (an unknown scheme, method or preset)."""

    code = "bad_option"


class PairMismatchError(KoaimgError, ValueError):
    """Baseline and follow-up cannot be compared: different subject, knee side, modality, sequence or voxel size."""

    code = "pair_mismatch"


class UltrasoundContentError(KoaimgError, ValueError):
    """A calibrated ultrasound frame does not show a measurable femoral cartilage view (no bone line, no groove)."""

    code = "no_bone_line"


class NoEchoError(UltrasoundContentError):
    """An ultrasound frame holds no echo signal at all (all black): there is nothing to measure."""

    code = "no_echo"
