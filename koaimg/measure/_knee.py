"""Measure a whole knee from its labels: thickness per plate, MOAKS subregions, Eckstein metrics, MOAKS grades.

Pure computation on arrays (no file I/O, no torch): returns tidy rows in the shared ``measures.csv`` schema plus the
arrays exporters need (thickness volume, region volume, unrolled femoral map).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import KneeSide, LabelVolume, LateralityError, Structure, moaks_grade
from ._moaks import knee_summary, loss_masks
from ._regions import MOAKS_REGIONS, KneeFrame, femoral_frame, femur_regions, patella_regions, tibia_regions
from ._regions_we import FEMUR_SUBREGIONS, PLATES, TIBIA_SUBREGIONS, WE_REGIONS, femur_regions_we, tibia_regions_we
from ._thickness import PLATE_STRUCTURES, ThicknessResult, cartilage_thickness

REGION_CODE = {name: i + 1 for i, name in enumerate(MOAKS_REGIONS)}
WE_REGION_CODE = {name: i + 1 for i, name in enumerate(WE_REGIONS)}
SCHEMES = ("moaks", "wirth-eckstein")
METRIC_UNITS = {"ThCtAB.Me": "mm", "ThCtAB.SD": "mm", "ThCtAB.Max": "mm", "ThCcAB.Me": "mm", "VC": "mm3",
                "tAB": "mm2", "cAB": "mm2", "dAB%": "%", "any_loss_area%": "%", "full_thickness_area%": "%",
                "moaks_any_loss_grade": "grade", "moaks_full_thickness_grade": "grade"}


@dataclass
class PlateMeasurement:
    """One plate: per-point thickness, region and loss flags, and per-region values."""

    result: ThicknessResult
    regions: np.ndarray
    any_loss: np.ndarray
    full_loss: np.ndarray
    expected: np.ndarray
    rows: list[dict]
    #: Wirth–Eckstein subregion per point ("" where the scheme has none, e.g. the patella), when computed
    we_regions: np.ndarray | None = None


@dataclass
class KneeMeasurement:
    """Everything measured on one knee."""

    side: KneeSide
    frame: KneeFrame
    plates: dict[str, PlateMeasurement]
    summary: dict[str, float | str]
    notes: list[str] = field(default_factory=list)

    def rows(self, *, subject: str = "", visit: str = "", modality: str = "MR") -> list[dict]:
        """Tidy rows: subject, visit, modality, side, structure, scheme, region, metric, value, unit."""
        out = []
        for plate in self.plates.values():
            for r in plate.rows:
                for metric, unit in METRIC_UNITS.items():
                    if metric not in r or r[metric] is None:
                        continue
                    out.append({"subject": subject, "visit": visit, "modality": modality, "side": self.side.value,
                                "structure": plate.result.structure.key, "scheme": r["scheme"], "region": r["region"],
                                "metric": metric, "value": float(r[metric]), "unit": unit})
        return out

    def region_volume(self, scheme: str = "moaks") -> np.ndarray:
        """(I, J, K) uint8 subregion code on each interface voxel: MOAKS (1..14, ``MOAKS_REGIONS`` order) or
        Wirth–Eckstein (1..20, ``WE_REGIONS`` order)."""
        shape = next(iter(self.plates.values())).result.shape
        out = np.zeros(shape, dtype=np.uint8)
        for plate in self.plates.values():
            names, table = (plate.regions, REGION_CODE) if scheme == "moaks" else (plate.we_regions, WE_REGION_CODE)
            if names is None:
                continue
            codes = np.array([table.get(r, 0) for r in names], dtype=np.uint8)
            out[tuple(plate.result.ijk.T)] = codes
        return out

    def scheme_rows(self, scheme: str) -> list[dict]:
        """Per-region result dicts of one scheme, over all plates."""
        return [r for plate in self.plates.values() for r in plate.rows if r["scheme"] == scheme]

    def thickness_volume(self) -> np.ndarray:
        """(I, J, K) float32: thickness (mm) on every plate's interface voxels, 0 elsewhere."""
        plates = list(self.plates.values())
        out = plates[0].result.thickness_volume()
        for plate in plates[1:]:
            vol = plate.result.thickness_volume()
            mask = plate.result.interface_mask()
            out[mask] = vol[mask]
        return out


def _region_rows(result: ThicknessResult, groups: dict[str, np.ndarray], any_loss: np.ndarray, full: np.ndarray,
                 point_volume: np.ndarray, scheme: str) -> list[dict]:
    """Eckstein metrics (and, for MOAKS, grades) of each group of points: ``groups`` maps a region name to a mask."""
    rows = []
    finite = np.isfinite(result.thickness)
    for name, mask in groups.items():
        sel = mask & finite
        area = result.area[sel]
        t_ab = float(area.sum())
        if t_ab <= 0:
            continue
        h = result.thickness[sel]
        covered = ~result.denuded[sel]
        c_ab = float(area[covered].sum())
        mean = float((h * area).sum() / t_ab)
        any_pct = 100.0 * float(area[any_loss[sel]].sum()) / t_ab
        full_pct = 100.0 * float(area[full[sel]].sum()) / t_ab
        graded = scheme == "moaks" and name != "all"
        rows.append({
            "scheme": scheme, "region": name, "tAB": t_ab, "cAB": c_ab, "dAB%": 100.0 * (t_ab - c_ab) / t_ab,
            "ThCtAB.Me": mean, "ThCtAB.SD": float(np.sqrt((((h - mean) ** 2) * area).sum() / t_ab)),
            "ThCtAB.Max": float(h.max()),
            "ThCcAB.Me": float((h[covered] * area[covered]).sum() / c_ab) if c_ab else 0.0,
            "VC": float(point_volume[mask].sum()), "any_loss_area%": any_pct, "full_thickness_area%": full_pct,
            "moaks_any_loss_grade": moaks_grade(any_pct) if graded else None,
            "moaks_full_thickness_grade": moaks_grade(full_pct) if graded else None,
        })
    return rows


def _moaks_groups(regions: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"all": np.ones(len(regions), bool)} | {name: regions == name for name in names}


def _we_groups(regions: np.ndarray, plate: str) -> dict[str, np.ndarray]:
    groups = {"all": np.ones(len(regions), bool)}
    if plate == "femur":
        names, plates = FEMUR_SUBREGIONS, ("cMF", "cLF")
    elif plate == "tibia":
        names, plates = TIBIA_SUBREGIONS, ("MT", "LT")
    else:
        return groups
    for agg in plates:
        groups[agg] = np.char.startswith(regions, PLATES[agg])
    groups.update({name: regions == name for name in names})
    return groups


def _cartilage_volume_per_point(labels: LabelVolume, structure: Structure, result: ThicknessResult,
                                probabilities: dict | None) -> np.ndarray:
    """Cartilage volume (mm^3) owned by each interface point: every cartilage voxel belongs to its nearest point,
    so any region's VC is the sum over its points."""
    from scipy.spatial import cKDTree

    # cartilage lies within a few mm of its interface points: search only their bounding box
    margin = np.ceil(8.0 / labels.spacing).astype(int)
    lo = np.maximum(result.ijk.min(axis=0) - margin, 0)
    hi = np.minimum(result.ijk.max(axis=0) + margin + 1, np.array(labels.spatial_shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    if probabilities and structure in probabilities:
        prob = np.asarray(probabilities[structure])[box]
        idx = np.argwhere(prob > 0)
        weights = prob[tuple(idx.T)]
    else:
        idx = np.argwhere(labels.array[box] == int(structure))
        weights = np.ones(len(idx))
    idx = idx + lo
    world = labels.index_to_world(idx)
    _, nearest = cKDTree(result.points).query(world, workers=-1)
    return np.bincount(nearest, weights=weights, minlength=len(result.points)) * labels.voxel_volume_mm3


def measure_knee(labels: LabelVolume, *, side: KneeSide | str | None = None,
                 probabilities: dict[Structure, np.ndarray] | None = None, method: str = "normal",
                 plates: tuple[str, ...] | None = None, schemes: tuple[str, ...] = SCHEMES) -> KneeMeasurement:
    """Thickness, subregions, Eckstein metrics and MOAKS-style grades for every labelled cartilage plate.

    ``side`` defaults to ``labels.meta.side``; a knee of unknown side is refused (medial/lateral would be a guess).
    ``schemes``: "moaks" (14 subregions, graded) and/or "wirth-eckstein" (Chondrometrics-comparable subregions).
    MOAKS subregions are always computed (the defect scoring needs them); only the rows follow ``schemes``.
    """
    unknown = set(schemes) - set(SCHEMES)
    if unknown or not schemes:
        raise ValueError(f"`schemes` must be a non-empty subset of {SCHEMES}, got {schemes!r}")
    side = KneeSide(side) if side is not None else labels.meta.side
    if side not in (KneeSide.RIGHT, KneeSide.LEFT):
        raise LateralityError("the knee side is not known, so medial and lateral cannot be named",
                              hint="pass --side right|left (or use a file whose tags or fibula label give it)")
    wanted = plates or tuple(p for p, (_, cart) in PLATE_STRUCTURES.items() if labels.mask(cart).any())
    if "femur" not in wanted:
        raise LateralityError("no femoral cartilage: the knee frame is built from the femur",
                              hint="label the femur and femoral cartilage")
    results = {p: cartilage_thickness(labels, plate=p, method=method, probabilities=probabilities) for p in wanted}
    femur = results["femur"]
    covered = ~femur.denuded
    tib = results.get("tibia")
    frame = femoral_frame(femur.points[covered], femur.normals[covered], side,
                          None if tib is None else tib.points[~tib.denuded])
    measured: dict[str, PlateMeasurement] = {}
    graded_rows: list[dict] = []
    notes: list[str] = [note for result in results.values() for note in result.notes]
    for plate, result in results.items():
        if plate == "femur":
            regions, names = femur_regions(frame, result.points), MOAKS_REGIONS[:6]
        elif plate == "tibia":
            regions, names = tibia_regions(frame, result.points, result.normals), MOAKS_REGIONS[6:12]
        else:
            regions, names = patella_regions(frame, result.points), MOAKS_REGIONS[12:]
        any_loss, full, expected = loss_masks(result.points, result.thickness, result.denuded,
                                              edge_distance=result.edge_distance)
        volume = _cartilage_volume_per_point(labels, result.structure, result, probabilities)
        moaks_rows = _region_rows(result, _moaks_groups(regions, names), any_loss, full, volume, "moaks")
        rows = moaks_rows if "moaks" in schemes else []
        we = None
        if "wirth-eckstein" in schemes:
            if plate == "femur":
                we, landmarks, we_notes = femur_regions_we(frame, result.points)
                frame.landmarks.update(landmarks)
                notes.extend(we_notes)
            elif plate == "tibia":
                we = tibia_regions_we(frame, result.points, result.normals, result.area)
            else:
                we = np.full(len(result.points), "", dtype="<U5")
            rows = rows + _region_rows(result, _we_groups(we, plate), any_loss, full, volume, "wirth-eckstein")
        measured[plate] = PlateMeasurement(result, regions, any_loss, full, expected, rows, we)
        graded_rows.extend(r for r in moaks_rows if r["region"] != "all")
    return KneeMeasurement(side, frame, measured, knee_summary(graded_rows), notes=list(frame.notes) + notes)
