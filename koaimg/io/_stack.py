"""Geometry checks for a stack of single-frame DICOM slices, from headers only.

This is where a missing slice becomes an error instead of a silently re-spaced volume (SimpleITK averages the
spacing and only warns on stderr; see docs/libraries.md section 2.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core import (
    DicomSeriesError,
    IrregularSpacingError,
    MissingGeometryError,
    MissingSliceError,
    MixedOrientationError,
)
from ._dicom_headers import InstanceHeader

#: direction cosines of slices in one stack may differ by at most this much
ORIENTATION_TOL = 1e-3


@dataclass(frozen=True)
class StackGeometry:
    """Validated geometry of a stack: slice order, normal (LPS) and slice step in mm."""

    order: tuple[int, ...]
    normal_lps: np.ndarray
    slice_spacing: float
    pixel_spacing: tuple[float, float]


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (LPS) of a slice from its ImageOrientationPatient (row cosines x column cosines)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def check_stack(headers: Sequence[InstanceHeader]) -> StackGeometry:
    """Validate that ``headers`` form one regular stack; raise the precise ``DicomSeriesError`` otherwise."""
    first = headers[0].path
    place = first if len(headers) == 1 else first.parent
    where = f"series of {len(headers)} files starting {first.name}"
    missing = [h.path.name for h in headers if h.orientation is None or h.position is None or h.pixel_spacing is None]
    if missing:
        raise MissingGeometryError(f"{len(missing)} slice(s) lack ImagePositionPatient/ImageOrientationPatient/"
                                   f"PixelSpacing (e.g. {missing[0]})", path=place,
                                   hint="the series cannot be placed in space; re-export it with geometry tags")
    orients = np.array([h.orientation for h in headers], dtype=float)
    ref = orients[0]
    row, col = ref[:3], ref[3:]
    unit = abs(np.linalg.norm(row) - 1) <= 1e-3 and abs(np.linalg.norm(col) - 1) <= 1e-3
    if abs(float(np.dot(row, col))) > 1e-3 or not unit:
        raise MissingGeometryError(f"ImageOrientationPatient {ref.tolist()} is not two orthonormal vectors",
                                   path=place, hint="the header is corrupted; re-export the series")
    deviating = np.flatnonzero(np.max(np.abs(orients - ref), axis=1) > ORIENTATION_TOL)
    if deviating.size:
        raise MixedOrientationError(f"{deviating.size} of {len(headers)} slices have a different orientation "
                                    f"(e.g. {headers[int(deviating[0])].path.name})", path=place,
                                    hint="the stack cannot form one volume; remove the odd slices or re-export")
    spacings = np.array([h.pixel_spacing for h in headers], dtype=float)
    if np.max(np.abs(spacings - spacings[0])) > 1e-4:
        raise DicomSeriesError(f"{where}: PixelSpacing differs between slices", path=place,
                               hint="mixed reconstructions in one series; re-export them separately")
    normal = slice_normal(ref)
    distances = np.array([np.dot(h.position, normal) for h in headers], dtype=float)
    order = np.argsort(distances, kind="stable")
    sorted_d = distances[order]
    pixel_spacing = (float(spacings[0][0]), float(spacings[0][1]))
    if len(headers) == 1:
        thickness = headers[0].spacing_between_slices or headers[0].slice_thickness or 1.0
        return StackGeometry((0,), normal, float(thickness), pixel_spacing)
    steps = np.diff(sorted_d)
    if np.any(steps < 1e-3):
        dup = int(np.sum(steps < 1e-3))
        raise DicomSeriesError(f"{dup} slice position(s) occur twice in one stack", path=place,
                               hint="the series mixes several stacks (echoes, repeats); they could not be split "
                                    "by echo time or acquisition number")
    step = float(np.median(steps))
    tol = max(0.01, 0.01 * step)
    off = np.abs(steps - step) > tol
    if off.any():
        ratios = steps[off] / step
        gaps = np.abs(ratios - np.round(ratios)) <= tol / step
        if np.all(gaps) and np.all(np.round(ratios) >= 2):
            n_missing = int(np.sum(np.round(ratios) - 1))
            at = float(sorted_d[int(np.flatnonzero(off)[0])])
            raise MissingSliceError(f"{n_missing} slice(s) missing from a stack of {len(headers)} "
                                    f"(gap after position {at:.2f} mm along the slice normal, step {step:.3f} mm)",
                                    path=place, hint="re-export the complete series; koaimg never re-spaces")
        raise IrregularSpacingError(f"slice steps vary from {steps.min():.3f} to {steps.max():.3f} mm "
                                    f"(median {step:.3f})", path=place,
                                    hint="the series is not a regular volume; re-export or resample it explicitly")
    return StackGeometry(tuple(int(i) for i in order), normal, step, pixel_spacing)
