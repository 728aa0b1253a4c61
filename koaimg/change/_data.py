"""What change analysis needs from one measured visit: per-point thickness, regional rows, grid and identity.

A ``KneeVisit`` is built from an in-memory ``KneeMeasurement`` (tests, validation) or by the pipeline from a scan's
output folder (points.csv, measures.csv, moaks.json). It holds no file paths: change analysis is pure computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import KneeSide, LabelVolume


@dataclass
class PlatePoints:
    """Bone-interface points of one cartilage plate (one row per point, arrays aligned)."""

    structure: str
    points: np.ndarray
    thickness: np.ndarray
    area: np.ndarray
    denuded: np.ndarray
    #: scheme name -> (N,) subregion code per point (e.g. {"moaks": array(["FMC", ...])})
    regions: dict[str, np.ndarray]
    ijk: np.ndarray | None = None
    normals: np.ndarray | None = None
    #: measurement flags per point (``koaimg.measure`` FLAG_*); imputed values are not compared between visits
    flags: np.ndarray | None = None

    @property
    def imputed(self) -> np.ndarray:
        """(N,) bool: thickness filled from neighbours (a side-wall exit at a plate rim), not measured on the ray."""
        if self.flags is None:
            return np.zeros(len(self.points), bool)
        from ..measure import FLAG_WALL_EXIT  # lazy: koaimg.measure loads the numba kernels (~0.3 s)

        return (np.asarray(self.flags, dtype=np.int64) & FLAG_WALL_EXIT) > 0

    def __post_init__(self) -> None:
        n = len(self.points)
        for name in ("thickness", "area", "denuded"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"`{name}` has {len(getattr(self, name))} rows, `points` has {n}")


@dataclass
class KneeVisit:
    """One measured MR visit of one knee.

    ``rows`` are the visit's tidy measures rows (``measures.csv`` schema); ``femur_surface`` (M, 3) and
    ``femur_normals`` sample the femoral bone surface around the cartilage (RAS mm) for registration, when the label
    map is at hand; otherwise the femoral interface points are used.
    """

    side: KneeSide
    plates: dict[str, PlatePoints]
    rows: list[dict]
    subject: str = ""
    visit: str = ""
    sequence: str | None = None
    spacing: np.ndarray | None = None
    affine: np.ndarray | None = None
    shape: tuple[int, int, int] | None = None
    femur_surface: np.ndarray | None = None
    femur_normals: np.ndarray | None = None
    #: sagittal centre (anterior, superior mm in the right-knee frame) of the condyles, for the unrolled map
    condyle_centre: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cut_by_fov(self) -> set[str]:
        """Plates the measurement found cut by the image border (from its notes)."""
        from ..measure import plates_cut_by_fov

        return plates_cut_by_fov(self.notes)

    @property
    def femoral(self) -> PlatePoints:
        """The femoral plate (registration is femur-based)."""
        if "femoral_cartilage" not in self.plates:
            from ..core import LabelSchemaError

            raise LabelSchemaError("no femoral cartilage points: the change analysis registers on the femur",
                                   hint="measure a label map with the femur and femoral cartilage")
        return self.plates["femoral_cartilage"]


def visit_from_measurement(measurement, labels: LabelVolume | None = None, *, subject: str = "", visit: str = "",
                           sequence: str | None = None) -> KneeVisit:
    """A ``KneeVisit`` from ``measure_knee``'s result (and the label map, for bone-surface registration)."""
    plates = {}
    for plate in measurement.plates.values():
        r = plate.result
        plates[r.structure.key] = PlatePoints(
            structure=r.structure.key, points=np.asarray(r.points, float), thickness=np.asarray(r.thickness, float),
            area=np.asarray(r.area, float), denuded=np.asarray(r.denuded, bool),
            regions={"moaks": np.asarray(plate.regions).astype(str)}, ijk=np.asarray(r.ijk),
            normals=np.asarray(r.normals, float), flags=np.asarray(r.flags))
        we = getattr(plate, "we_regions", None)
        if we is not None:
            plates[r.structure.key].regions["wirth-eckstein"] = np.asarray(we).astype(str)
    out = KneeVisit(side=measurement.side, plates=plates, rows=measurement.rows(subject=subject, visit=visit),
                    subject=subject, visit=visit, sequence=sequence, notes=list(measurement.notes),
                    condyle_centre=tuple(float(v) for v in measurement.frame.condyle_centre))
    if labels is not None:
        from ._register import bone_surface

        out.spacing = labels.spacing.copy()
        out.affine = labels.affine.copy()
        out.shape = labels.spatial_shape
        if labels.meta.series_description and sequence is None:
            out.sequence = labels.meta.series_description
        out.femur_surface, out.femur_normals = bone_surface(labels, near=out.femoral.points)
    else:
        femur = next(iter(measurement.plates.values())).result
        out.affine = femur.affine.copy()
        out.shape = tuple(femur.shape)
        out.spacing = np.sqrt((femur.affine[:3, :3] ** 2).sum(axis=0))
    return out
