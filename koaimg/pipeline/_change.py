"""``koaimg change``: compare two measured visits of one knee and write the pair outputs (DESIGN.md layout).

Inputs are per-scan output folders as ``write_measurement`` / ``measure_ultrasound_file`` write them. MR folders need
``measures.csv`` and ``points.csv`` (one row per bone-interface point); ``labels.nii.gz`` (or a label map passed
explicitly) lets registration use the whole femoral bone surface, otherwise the femoral interface points are used
and the outputs say so. Outputs: ``change.csv``, ``delta_thickness.nii.gz`` (Δ mm on the baseline interface voxels,
0 elsewhere), ``femoral_delta_map.png`` (unrolled, diverging colours), ``transitions.json`` and ``change.json``
(provenance keyed by modality). MR and ultrasound comparisons of the same visits share the pair folder: each run
replaces only its own modality's rows of ``change.csv``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

import numpy as np

from .. import __version__
from ..change import (
    CHANGE_COLUMNS,
    KneeVisit,
    PlatePoints,
    Precision,
    compare_knees,
)
from ..change._guards import VisitIdentity, check_pair
from ..change._ultrasound import compare_ultrasound
from ..core import KneeSide, LabelSchemaError, Modality, UnreadableFileError, Volume, VolumeMeta
from ..export import thickness_map_png, unrolled_femoral_map, write_json, write_rows_csv

#: colour range of the Δ map (mm): symmetric, so white is no change
DELTA_MAP_RANGE_MM = 0.5


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise UnreadableFileError("missing", path=path, hint="pass the output folder of `koaimg measure` (or of the "
                                  "ultrasound measurement) for each visit")
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        raise UnreadableFileError("not valid JSON", path=path) from None


def _measure_rows(folder: Path) -> list[dict]:
    rows = _read_csv(folder / "measures.csv")
    out = []
    for r in rows:
        try:
            value = float(r["value"])
        except (KeyError, TypeError, ValueError):
            continue
        out.append({**r, "value": value})
    if not out:
        raise LabelSchemaError("no measurements in measures.csv", path=folder / "measures.csv")
    return out


def _sequence(folder: Path) -> str | None:
    prov = _json(folder / "provenance.json")
    for source in (prov, prov.get("config", {}) or {}):
        for key in ("sequence", "series_description", "protocol"):
            if source.get(key):
                return str(source[key])
    return None


def _plates_from_points(folder: Path) -> dict[str, PlatePoints]:
    rows = _read_csv(folder / "points.csv")
    if not rows:
        raise LabelSchemaError("points.csv has no bone-interface points", path=folder / "points.csv")
    we_codes = _we_codes(folder, rows)
    by_structure: dict[str, list[int]] = {}
    for n, r in enumerate(rows):
        by_structure.setdefault(r["structure"], []).append(n)
    plates = {}
    for structure, idx in by_structure.items():
        sub = [rows[n] for n in idx]
        regions = {"moaks": np.array([r.get("region", "") for r in sub], dtype=str)}
        if we_codes is not None:
            regions["wirth-eckstein"] = we_codes[idx]
        plates[structure] = PlatePoints(
            structure=structure,
            points=np.array([[float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])] for r in sub]),
            thickness=np.array([float(r["thickness_mm"]) for r in sub]),
            area=np.array([float(r["area_mm2"]) for r in sub]),
            denuded=np.array([r["denuded"].strip().lower() == "true" for r in sub]),
            regions=regions, ijk=np.array([[int(r["i"]), int(r["j"]), int(r["k"])] for r in sub]),
            # older outputs lack normals and flags: the transfer then mixes without the normal check
            normals=_optional_columns(sub, ("nx", "ny", "nz"), float),
            flags=_optional_columns(sub, ("flags",), int))
    return plates


def _optional_columns(rows: list[dict], names: tuple[str, ...], kind: type) -> np.ndarray | None:
    if not all(rows[0].get(n) not in (None, "") for n in names):
        return None
    values = np.array([[kind(float(r[n])) for n in names] for r in rows])
    return values if len(names) > 1 else values[:, 0]


def _we_codes(folder: Path, rows: list[dict]) -> np.ndarray | None:
    """Per-point Wirth-Eckstein codes read from regions_wirth_eckstein.nii.gz at each point's voxel."""
    path = folder / "regions_wirth_eckstein.nii.gz"
    if not path.is_file():
        return None
    from ..io import read_image
    from ..measure import WE_REGIONS

    vol = read_image(path).array
    ijk = np.array([[int(r["i"]), int(r["j"]), int(r["k"])] for r in rows])
    codes = vol[tuple(ijk.T)].astype(int)
    names = np.array(["", *WE_REGIONS], dtype=str)
    return names[np.clip(codes, 0, len(WE_REGIONS))]


def load_visit(folder: Path, *, labels_path: Path | None = None) -> KneeVisit:
    """An MR ``KneeVisit`` from a scan output folder (and its label map when present)."""
    from ..change import bone_surface
    from ..io import read_image

    rows = _measure_rows(folder)
    plates = _plates_from_points(folder)
    moaks = _json(folder / "moaks.json")
    side = KneeSide(rows[0].get("side") or moaks.get("side") or "unknown")
    visit = KneeVisit(side=side, plates=plates, rows=rows, subject=rows[0].get("subject", ""),
                      visit=rows[0].get("visit", ""), sequence=_sequence(folder),
                      notes=[str(n) for n in moaks.get("notes", []) or []])
    centre = (moaks.get("frame") or {}).get("condyle_centre_mm")
    visit.condyle_centre = tuple(float(v) for v in centre) if centre else None
    grid = folder / "thickness.nii.gz"
    labels_path = labels_path or (folder / "labels.nii.gz")
    if labels_path.is_file():
        from ..io import read_labels

        labels = read_labels(labels_path)
        visit.affine, visit.shape, visit.spacing = labels.affine, labels.spatial_shape, labels.spacing
        visit.femur_surface, visit.femur_normals = bone_surface(labels, near=visit.femoral.points)
    elif grid.is_file():
        vol = read_image(grid)
        visit.affine, visit.shape, visit.spacing = vol.affine, vol.spatial_shape, vol.spacing
        visit.notes.append("no labels.nii.gz in the scan folder: registered on the femoral interface points")
    return visit


def _modality(folder: Path) -> str:
    rows = _read_csv(folder / "measures.csv")
    kinds = {r.get("modality", "") for r in rows}
    return "US" if kinds == {"US"} else "MR"


def _identity(visit_rows: list[dict], *, sequence: str | None, spacing) -> VisitIdentity:
    first = visit_rows[0]
    return VisitIdentity(subject=first.get("subject") or None, side=first.get("side") or None,
                         modality=first.get("modality") or None, sequence=sequence,
                         spacing=None if spacing is None else tuple(float(s) for s in spacing))


def _delta_map(visit: KneeVisit, delta: np.ndarray, out: Path) -> None:
    from ..measure import KneeFrame

    if visit.condyle_centre is None:
        return
    mirror = np.eye(4)
    mirror[0, 0] = -1.0 if visit.side == KneeSide.LEFT else 1.0
    frame = KneeFrame(visit.side, mirror, condyle_centre=visit.condyle_centre)
    fp = frame.apply(visit.femoral.points)
    grid, axes = unrolled_femoral_map(fp, frame.sagittal_angle(fp), delta)
    np.save(out / "femoral_delta_map.npy", grid)
    write_json(axes | {"values": "thickness change follow-up - baseline (mm), positive = thickening"},
               out / "femoral_delta_map.json")
    thickness_map_png(grid, out / "femoral_delta_map.png", lo=-DELTA_MAP_RANGE_MM, hi=DELTA_MAP_RANGE_MM,
                      diverging=True, title="femoral cartilage thickness change (mm), blue = thickening")


def run_change(baseline: Path, followup: Path, out_dir: Path, *, subject: str = "", baseline_visit: str = "baseline",
               followup_visit: str = "month6", on_mismatch: str = "refuse", voxel_tolerance: float = 0.05,
               rms_cv_pct: float | None = None, sem_mm: float | None = None, baseline_labels: Path | None = None,
               followup_labels: Path | None = None) -> Path:
    """Compare two per-scan output folders (MR or US) and write ``change.csv`` and the pair outputs into ``out_dir``.

    ``on_mismatch="flag"`` computes the change of a pair that fails the identity checks (different subject, side,
    modality, sequence or voxel size beyond ``voxel_tolerance``) and records why; the default refuses it.
    """
    baseline, followup, out_dir = Path(baseline), Path(followup), Path(out_dir)
    precision = Precision.from_options(rms_cv_pct=rms_cv_pct, sem_mm=sem_mm)
    modality = _modality(baseline)
    if _modality(followup) != modality:
        check_pair(VisitIdentity(modality=modality), VisitIdentity(modality=_modality(followup)),
                   on_mismatch="refuse", where=followup)
    provenance = {"koaimg": __version__, "python": platform.python_version(), "modality": modality,
                  # relative to the pair folder: absolute paths can carry user or patient names, and would make
                  # the file differ between two copies of the same results
                  "baseline": os.path.relpath(baseline, out_dir), "followup": os.path.relpath(followup, out_dir),
                  "baseline_visit": baseline_visit,
                  "followup_visit": followup_visit, "precision": precision.describe(),
                  "sign": "delta = follow-up - baseline; positive thickness delta = thickening; names ending in "
                          "_pos_worse: positive = worse"}
    if modality == "US":
        b_rows, f_rows = _measure_rows(baseline), _measure_rows(followup)
        check = check_pair(_identity(b_rows, sequence=_sequence(baseline), spacing=None),
                           _identity(f_rows, sequence=_sequence(followup), spacing=None),
                           voxel_tolerance=voxel_tolerance, on_mismatch=on_mismatch, where=f"{baseline} vs {followup}")
        table, notes = compare_ultrasound(b_rows, f_rows, precision=precision)
        side = b_rows[0].get("side", "")
        subject = subject or b_rows[0].get("subject", "")
        rows = [{"subject": subject, "baseline_visit": baseline_visit, "followup_visit": followup_visit,
                 "modality": "US", "side": side, **r} for r in table]
    else:
        b, f = load_visit(baseline, labels_path=baseline_labels), load_visit(followup, labels_path=followup_labels)
        check = check_pair(_identity(b.rows, sequence=b.sequence, spacing=b.spacing),
                           _identity(f.rows, sequence=f.sequence, spacing=f.spacing),
                           voxel_tolerance=voxel_tolerance, on_mismatch=on_mismatch, where=f"{baseline} vs {followup}")
        change = compare_knees(b, f, precision=precision)
        notes = b.notes + [n for n in f.notes if n not in b.notes] + change.notes
        subject = subject or b.subject
        rows = change.rows(subject=subject, baseline_visit=baseline_visit, followup_visit=followup_visit)
        out_dir.mkdir(parents=True, exist_ok=True)
        if b.affine is not None and b.shape is not None:
            from ..io import write_volume

            delta_vol = np.zeros(b.shape, np.float32)
            for structure, plate in b.plates.items():
                if structure in change.delta_points and plate.ijk is not None:
                    d = change.delta_points[structure]
                    ok = np.isfinite(d)
                    delta_vol[tuple(plate.ijk[ok].T)] = d[ok]
            meta = VolumeMeta(modality=Modality.OTHER, side=b.side, subject=subject,
                              visit=f"{baseline_visit}->{followup_visit}")
            write_volume(Volume(delta_vol, b.affine, meta), out_dir / "delta_thickness.nii.gz")
        if "femoral_cartilage" in change.delta_points:
            _delta_map(b, change.delta_points["femoral_cartilage"], out_dir)
        write_json({"subject": subject, "baseline_visit": baseline_visit, "followup_visit": followup_visit,
                    "side": change.side, **change.transitions, "summary": change.summary}, out_dir / "transitions.json")
        provenance["registration"] = change.transform.describe()
    provenance.update({"subject": subject, "pair_check": {"mismatches": check.mismatches,
                                                          "unchecked": check.unchecked,
                                                          "policy": on_mismatch}, "notes": notes})
    out_dir.mkdir(parents=True, exist_ok=True)
    # one folder per pair: an MR and an ultrasound comparison of the same visits share change.csv and change.json
    kept = [r for r in _read_csv(out_dir / "change.csv") if r.get("modality") != modality] \
        if (out_dir / "change.csv").is_file() else []
    write_rows_csv(kept + rows, out_dir / "change.csv", columns=CHANGE_COLUMNS)
    previous = _json(out_dir / "change.json")
    write_json({k: v for k, v in previous.items() if k in ("MR", "US") and k != modality} | {modality: provenance},
               out_dir / "change.json")
    return out_dir
