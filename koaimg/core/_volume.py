"""``Volume``: the one geometry-carrying type. An array, the RAS affine that places it in millimetres, and metadata.

Spacing, origin, direction and orientation are derived from the affine, so there is a single source of truth.
``LabelVolume`` is its own type so that nothing can smooth or interpolate a label map by mistake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._enums import KneeSide, Modality, Plane
from ._errors import GeometryError, LabelSchemaError
from ._geometry import axis_codes, plane_of_normal, validate_affine
from ._labels import Structure


@dataclass(frozen=True)
class VolumeMeta:
    """What is known about a volume besides its voxels. Identifiers are pseudonyms, never patient data."""

    modality: Modality = Modality.MR
    side: KneeSide = KneeSide.UNKNOWN
    #: how ``side`` was determined, e.g. "Laterality tag", "SeriesDescription", "anatomy (fibula)", "not determined"
    side_source: str = "not determined"
    series_description: str = ""
    #: acquisition parameters in fixed units: echo_time_ms, repetition_time_ms, flip_angle_deg, field_strength_t,
    #: scanning_sequence, mr_acquisition_type, slice_thickness_mm, ...
    acquisition: Mapping[str, Any] = field(default_factory=dict)
    subject: str = ""
    visit: str = ""
    #: pseudonymous, stable key of the source series (hash of its UID), safe for file names and logs
    series_key: str = ""
    #: where the voxels came from, e.g. "DICOM MR single-frame", "NIfTI"
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality(self.modality))
        object.__setattr__(self, "side", KneeSide(self.side))
        object.__setattr__(self, "acquisition", dict(self.acquisition))

    def replace(self, **changes: Any) -> VolumeMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


class Volume:
    """A 3D image (optionally with trailing channel axes) on a voxel grid placed in RAS millimetres.

    Parameters
    ----------
    array : (I, J, K, ...) ndarray
        Voxel data; axes i, j, k match the columns of ``affine`` (nibabel convention).
    affine : (4, 4) array_like
        Voxel index (i, j, k, 1) -> RAS world position in mm. Columns may have any orthogonal orientation.
    meta : VolumeMeta, optional
        Modality, knee side, acquisition parameters and pseudonymous ids.
    """

    __slots__ = ("_affine", "_array", "meta")

    def __init__(self, array: np.ndarray, affine: np.ndarray, meta: VolumeMeta | None = None) -> None:
        arr = np.asarray(array)
        if arr.ndim < 3:
            raise GeometryError(f"Volume array must be at least 3D, got {arr.ndim}D with shape {arr.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise GeometryError(f"Volume array must have an integer, float or bool dtype, got {arr.dtype}")
        self._array = arr
        self._affine = validate_affine(affine)
        self._affine.flags.writeable = False
        self.meta = meta if meta is not None else VolumeMeta()

    # geometry, all derived from the affine ---------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """ndarray: the voxels, axes (i, j, k, ...)."""
        return self._array

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64 ndarray: voxel index -> RAS mm (read-only)."""
        return self._affine

    @property
    def shape(self) -> tuple[int, ...]:
        """tuple of int: array shape."""
        return tuple(self._array.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """tuple of 3 int: grid size along i, j, k."""
        return tuple(self._array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """(3,) float ndarray: voxel size in mm along i, j, k."""
        return np.linalg.norm(self._affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) float ndarray: unit RAS vectors of the i, j, k axes, as columns."""
        return self._affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """(3,) float ndarray: RAS position in mm of voxel (0, 0, 0)'s centre."""
        return self._affine[:3, 3].copy()

    @property
    def axcodes(self) -> str:
        """str: orientation code of the voxel axes in RAS letters, e.g. ``'PIL'``."""
        return axis_codes(self._affine)

    @property
    def slice_axis(self) -> int:
        """int: the through-plane voxel axis: the one with clearly the largest spacing, else k (axis 2).

        DICOM-derived volumes always stack slices along k; NIfTI files from other tools may stack along i.
        """
        sp = self.spacing
        widest = int(np.argmax(sp))
        others = np.delete(sp, widest)
        return widest if sp[widest] > 1.1 * others.max() else 2

    @property
    def plane(self) -> Plane:
        """Plane: anatomical plane of the slices (perpendicular to ``slice_axis``)."""
        return plane_of_normal(self.direction[:, self.slice_axis])

    @property
    def voxel_volume_mm3(self) -> float:
        """float: volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self._affine[:3, :3])))

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map (N, 3) voxel indices (fractional allowed) to (N, 3) RAS mm."""
        pts = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return pts @ self._affine[:3, :3].T + self._affine[:3, 3]

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) RAS mm to (N, 3) fractional voxel indices."""
        pts = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        return (pts - self._affine[:3, 3]) @ np.linalg.inv(self._affine[:3, :3]).T

    def same_grid(self, other: Volume, *, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same spatial shape and affine (within ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and bool(np.allclose(self._affine, other._affine, atol=atol))

    # new volumes on the same geometry -----------------------------------------------------------------------------
    def with_array(self, array: np.ndarray, *, meta: VolumeMeta | None = None) -> Volume:
        """A new Volume on the same grid. The spatial shape must not change."""
        arr = np.asarray(array)
        if tuple(arr.shape[:3]) != self.spatial_shape:
            raise GeometryError(f"with_array: spatial shape {arr.shape[:3]} differs from the grid {self.spatial_shape}")
        return Volume(arr, self._affine, self.meta if meta is None else meta)

    def with_meta(self, **changes: Any) -> Volume:
        """The same voxels and grid with some metadata fields changed."""
        return type(self)(self._array, self._affine, self.meta.replace(**changes))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        return (f"{type(self).__name__}(shape={self.shape}, dtype={self._array.dtype}, spacing=({sp}) mm, "
                f"axcodes={self.axcodes!r}, modality={self.meta.modality.value}, side={self.meta.side.value})")


class LabelVolume(Volume):
    """A label map in koaimg's internal schema (``Structure`` values). Resampled only with nearest neighbour."""

    __slots__ = ()

    def __init__(self, array: np.ndarray, affine: np.ndarray, meta: VolumeMeta | None = None) -> None:
        arr = np.asarray(array)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            raise LabelSchemaError(f"a label map must have an integer dtype, got {arr.dtype}",
                                   hint="threshold or round probability maps before treating them as labels")
        if arr.ndim != 3:
            raise LabelSchemaError(f"a label map must be 3D, got shape {arr.shape}")
        present = np.unique(arr)
        allowed = {int(s) for s in Structure}
        unknown = sorted(int(v) for v in present if int(v) not in allowed)
        if unknown:
            raise LabelSchemaError(f"label values {unknown} are not in koaimg's schema {sorted(allowed)}",
                                   hint="read the file with a --preset (pymskt, oai-zib, woo-oai, clair, spl) "
                                        "or a JSON mapping")
        super().__init__(arr.astype(np.uint8, copy=False), affine, meta)

    def with_array(self, array: np.ndarray, *, meta: VolumeMeta | None = None) -> Volume:
        """A label map stays a label map when its values are labels; anything else becomes a plain Volume."""
        arr = np.asarray(array)
        if arr.ndim == 3 and np.issubdtype(arr.dtype, np.integer):
            if tuple(arr.shape) != self.spatial_shape:
                raise GeometryError(f"with_array: shape {arr.shape} differs from the grid {self.spatial_shape}")
            return LabelVolume(arr, self.affine, self.meta if meta is None else meta)
        return super().with_array(arr, meta=meta)

    def mask(self, *structures: Structure | int) -> np.ndarray:
        """Boolean mask of the union of the given structures."""
        return np.isin(self.array, [int(s) for s in structures])

    @property
    def structures(self) -> tuple[Structure, ...]:
        """tuple of Structure: non-background structures present."""
        return tuple(Structure(int(v)) for v in np.unique(self.array) if v != 0)
