"""Ultrasound frames with their pixel calibration: the 2D+t counterpart of ``Volume``.

An ultrasound cine has no patient-space affine (no ImagePositionPatient), only a physical size per pixel taken from
the DICOM Sequence of Ultrasound Regions or given by the user for a screenshot. Frames are time, never depth slices,
so this is its own type rather than a ``Volume`` with a made-up third spacing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import CalibrationError, GeometryError

#: DICOM (0018,6024/6026) Physical Units code for centimetres, the only spatial unit a B-mode region can use
UNITS_CM = 3

#: (0018,6012) Region Spatial Format names (DICOM PS3.3 C.8.5.5.1.1)
SPATIAL_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral", 4: "waveform", 5: "graphics"}

#: (0018,6014) Region Data Type names (DICOM PS3.3 C.8.5.5.1.2)
DATA_TYPES = {
    0x00: "none", 0x01: "tissue", 0x02: "colour flow", 0x03: "PW Doppler", 0x04: "CW Doppler",
    0x05: "Doppler mean trace", 0x06: "Doppler mode trace", 0x07: "Doppler max trace", 0x08: "volume trace",
    0x0A: "ECG trace", 0x0B: "pulse trace", 0x0C: "phonocardiogram trace", 0x0D: "grey bar", 0x0E: "colour bar",
    0x0F: "integrated backscatter", 0x10: "area trace", 0x11: "d(area)/dt", 0x12: "other physiological input",
}

#: data types that carry flow/Doppler information rather than tissue echoes
DOPPLER_DATA_TYPES = frozenset({0x02, 0x03, 0x04, 0x05, 0x06, 0x07})

#: (0018,6024/6026) Physical Units names (DICOM PS3.3 C.8.5.5.1.15)
UNIT_NAMES = {
    0: "none", 1: "%", 2: "dB", 3: "cm", 4: "s", 5: "Hz", 6: "dB/s", 7: "cm/s", 8: "cm²", 9: "cm²/s",
    0x0A: "cm³", 0x0B: "cm³/s", 0x0C: "degrees",
}

# ITU-R BT.601 luma weights: the same Y that YBR_FULL stores, so RGB and YBR sources give the same grey
_LUMA = np.array([0.299, 0.587, 0.114])


def cm_to_mm(value_cm: float) -> float:
    """Convert centimetres to millimetres in decimal, so 0.00852 cm reads back as exactly 0.0852 mm.

    Binary ``x * 10`` can land one ulp off the value a writer intended (0.0852 -> 0.08520000000000001); scaling the
    shortest decimal representation keeps round trips exact without any rounding tolerance.
    """
    from decimal import Decimal

    return float(Decimal(repr(float(value_cm))) * 10)


def mm_to_cm(value_mm: float) -> float:
    """Inverse of :func:`cm_to_mm`, also in decimal."""
    from decimal import Decimal

    return float(Decimal(repr(float(value_mm))) / 10)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colour -> (...) float32 grey with BT.601 luma weights (a grey RGB pixel keeps its exact value)."""
    arr = np.asarray(rgb)
    if arr.shape[-1] != 3:
        raise GeometryError(f"expected a trailing colour axis of 3 samples, got shape {arr.shape}")
    grey = arr[..., 0] * _LUMA[0] + arr[..., 1] * _LUMA[1] + arr[..., 2] * _LUMA[2]  # float64 keeps R=G=B exact
    return grey.astype(np.float32)


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the DICOM Sequence of Ultrasound Regions (0018,6011), with the values as stored.

    Bounds are pixel coordinates, inclusive (x = column, y = row). ``delta_x``/``delta_y`` are the physical size of
    one pixel in ``units_x``/``units_y`` (code 3 = cm for B-mode); ``delta_y`` runs down the image, i.e. depth.
    """

    index: int
    spatial_format: int
    data_type: int
    flags: int
    x0: int
    y0: int
    x1: int
    y1: int
    units_x: int
    units_y: int
    delta_x: float
    delta_y: float

    def __post_init__(self) -> None:
        for name in ("index", "spatial_format", "data_type", "flags", "x0", "y0", "x1", "y1", "units_x", "units_y"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "delta_x", float(self.delta_x))
        object.__setattr__(self, "delta_y", float(self.delta_y))

    @property
    def is_bmode_tissue(self) -> bool:
        """bool: a 2D tissue (B-mode) region, the only kind whose pixels show cartilage."""
        return self.spatial_format == 1 and self.data_type == 1

    @property
    def is_cm(self) -> bool:
        """bool: both axes are in centimetres (units code 3)."""
        return self.units_x == UNITS_CM and self.units_y == UNITS_CM

    @property
    def has_valid_delta(self) -> bool:
        """bool: both physical deltas are finite and non-zero."""
        return all(math.isfinite(d) and d != 0.0 for d in (self.delta_x, self.delta_y))

    @property
    def mm_per_pixel(self) -> tuple[float, float]:
        """tuple of 2 float: (row_mm, col_mm) = (10·|ΔY|, 10·|ΔX|); raises CalibrationError unless cm on both axes."""
        if not self.is_cm:
            raise CalibrationError(f"ultrasound region {self.index} is in {self.units_label}, not cm on both axes: "
                                   "its pixels have no physical size")
        if not self.has_valid_delta:
            raise CalibrationError(f"ultrasound region {self.index} has an unusable Physical Delta "
                                   f"(ΔX={self.delta_x}, ΔY={self.delta_y})")
        return cm_to_mm(abs(self.delta_y)), cm_to_mm(abs(self.delta_x))

    @property
    def width(self) -> int:
        """int: number of pixel columns covered (inclusive bounds)."""
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        """int: number of pixel rows covered (inclusive bounds)."""
        return self.y1 - self.y0 + 1

    @property
    def area(self) -> int:
        """int: pixels covered, 0 for inverted bounds."""
        return max(self.width, 0) * max(self.height, 0)

    @property
    def units_label(self) -> str:
        """str: e.g. ``'cm/cm'`` or ``'s/none'`` (X units / Y units)."""
        return f"{UNIT_NAMES.get(self.units_x, str(self.units_x))}/{UNIT_NAMES.get(self.units_y, str(self.units_y))}"

    def describe(self) -> str:
        """One phrase for error messages and listings, e.g. ``'region 1: waveform ECG trace in s/none'``."""
        fmt = SPATIAL_FORMATS.get(self.spatial_format, f"format {self.spatial_format}")
        kind = DATA_TYPES.get(self.data_type, f"data type {self.data_type:#04x}")
        return f"region {self.index}: {fmt} {kind} in {self.units_label}"

    def contains(self, row: float, col: float) -> bool:
        """True when pixel (row, col) lies inside the region bounds."""
        return self.y0 <= row <= self.y1 and self.x0 <= col <= self.x1


@dataclass(frozen=True, eq=False)
class UltrasoundImage:
    """Grey ultrasound frames with a trusted physical pixel size.

    Parameters
    ----------
    frames : (T, rows, cols) array_like
        Grey echo intensities (stored as read-only float32); T = 1 for a single frame. Frames are time.
    spacing_mm : (row_mm, col_mm)
        Physical size of one pixel, depth (rows) first.
    region : UltrasoundRegion, optional
        The calibrated B-mode region the spacing came from (None for screenshots).
    frame_time_ms : float, optional
        Interval between cine frames.
    selected_frame : int, optional
        Index in the source cine of the single frame kept here, when one was chosen.
    source : str
        Where the pixels came from, e.g. ``"DICOM US multi-frame"``, ``"PNG screenshot"``.
    meta : dict
        Technical facts only (model, transducer frequency, photometric interpretation, flags). Never patient data.
    """

    frames: np.ndarray
    spacing_mm: tuple[float, float]
    region: UltrasoundRegion | None = None
    frame_time_ms: float | None = None
    selected_frame: int | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.frames)
        if arr.ndim != 3 or 0 in arr.shape:
            raise GeometryError(f"ultrasound frames must be a non-empty (T, rows, cols) array, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool):
            raise GeometryError(f"ultrasound frames must be numeric, got dtype {arr.dtype}")
        arr = np.array(arr, dtype=np.float32, order="C", copy=True)  # own the buffer: freezing never hits the caller's
        arr.flags.writeable = False
        object.__setattr__(self, "frames", arr)

        try:
            spacing = tuple(float(s) for s in np.asarray(self.spacing_mm, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            raise CalibrationError(f"ultrasound pixel spacing must be two numbers in mm, got {self.spacing_mm!r}") \
                from None
        if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise CalibrationError(f"ultrasound pixel spacing must be two positive finite mm values (row, col), "
                                   f"got {self.spacing_mm!r}")
        object.__setattr__(self, "spacing_mm", spacing)

        if self.frame_time_ms is not None:
            ft = float(self.frame_time_ms)
            if not (math.isfinite(ft) and ft > 0):
                raise GeometryError(f"frame time must be a positive finite number of ms, got {self.frame_time_ms!r}")
            object.__setattr__(self, "frame_time_ms", ft)
        if self.selected_frame is not None:
            if int(self.selected_frame) < 0 or arr.shape[0] != 1:
                raise GeometryError(f"selected_frame={self.selected_frame} needs exactly one kept frame and an index "
                                    f">= 0 (frames have shape {arr.shape})")
            object.__setattr__(self, "selected_frame", int(self.selected_frame))
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n_frames(self) -> int:
        """int: number of frames T."""
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """tuple of 2 int: (rows, cols) of one frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def extent_mm(self) -> tuple[float, float]:
        """tuple of 2 float: physical (depth, width) of a frame in mm."""
        return self.shape[0] * self.spacing_mm[0], self.shape[1] * self.spacing_mm[1]

    def select_frame(self, index: int) -> UltrasoundImage:
        """A single-frame image holding frame ``index``, with the choice recorded in ``selected_frame``."""
        if not -self.n_frames <= index < self.n_frames:
            raise GeometryError(f"frame {index} does not exist: the image has {self.n_frames} frame(s), "
                                f"0..{self.n_frames - 1}")
        index = index % self.n_frames
        base = self.selected_frame if self.selected_frame is not None else 0
        return dataclasses.replace(self, frames=self.frames[index:index + 1], selected_frame=base + index)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing_mm)
        return (f"{type(self).__name__}(frames={self.n_frames}, shape={self.shape}, spacing=({sp}) mm, "
                f"selected_frame={self.selected_frame}, source={self.source!r})")
