"""Measure a label map file and write the per-scan outputs (DESIGN.md layout) atomically."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import (
    KneeSide,
    LabelVolume,
    Modality,
    OptionError,
    Volume,
    VolumeMeta,
    load_preset_json,
    parse_label_table,
)
from ..export import (
    MEASURE_COLUMNS,
    thickness_map_png,
    unrolled_femoral_map,
    write_json,
    write_label_table,
    write_rows_csv,
)
from ..io import read_labels, write_volume
from ..measure import MOAKS_REGIONS, REGION_CODE, SCHEMES, KneeMeasurement, measure_knee

REGION_COLOURS = {name: tuple(int(c) for c in np.random.default_rng(i).integers(40, 255, 3))
                  for i, name in enumerate(MOAKS_REGIONS)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_labels(path: Path, *, preset: str = "koaimg", mapping_json: Path | None = None,
                label_table: Path | None = None) -> LabelVolume:
    """Read a label map with a preset name, a user JSON mapping or an atlas colour table."""
    names = parse_label_table(label_table.read_text()) if label_table is not None else None
    chosen = load_preset_json(mapping_json.read_text(), name=mapping_json.stem) if mapping_json else preset
    return read_labels(path, preset=chosen, label_names=names)


def write_measurement(measurement: KneeMeasurement, labels: LabelVolume, out: Path, *, subject: str = "",
                      visit: str = "", inputs: dict[str, str] | None = None, config: dict | None = None) -> list[dict]:
    """Write thickness/regions NIfTI, measures.csv, points.csv, moaks.json, the unrolled map and provenance."""
    out.mkdir(parents=True, exist_ok=True)
    meta = VolumeMeta(modality=Modality.OTHER, side=measurement.side, subject=subject, visit=visit)
    write_volume(Volume(measurement.thickness_volume(), labels.affine, meta), out / "thickness.nii.gz")
    write_volume(Volume(measurement.region_volume(), labels.affine, meta), out / "regions.nii.gz")
    if any(p.we_regions is not None for p in measurement.plates.values()):
        write_volume(Volume(measurement.region_volume("wirth-eckstein"), labels.affine, meta),
                     out / "regions_wirth_eckstein.nii.gz")
    write_label_table(out / "regions_labels.txt")  # structure labels for labels.nii.gz viewers
    region_table = "\n".join(["# MOAKS subregion codes in regions.nii.gz: IDX R G B A VIS MSH LABEL"]
                             + [f'{REGION_CODE[n]} {c[0]} {c[1]} {c[2]} 1 1 1 "{n}"'
                                for n, c in REGION_COLOURS.items()]) + "\n"
    from ..io import atomic_write_text

    atomic_write_text(out / "regions_table.txt", region_table)
    rows = measurement.rows(subject=subject, visit=visit)
    write_rows_csv(rows, out / "measures.csv", columns=MEASURE_COLUMNS)
    point_rows = []
    for plate in measurement.plates.values():
        r = plate.result
        for n in range(len(r.thickness)):
            point_rows.append({"structure": r.structure.key, "i": int(r.ijk[n, 0]), "j": int(r.ijk[n, 1]),
                               "k": int(r.ijk[n, 2]), "x_mm": float(r.points[n, 0]), "y_mm": float(r.points[n, 1]),
                               "z_mm": float(r.points[n, 2]), "thickness_mm": float(r.thickness[n]),
                               "area_mm2": float(r.area[n]), "region": str(plate.regions[n]),
                               "denuded": bool(r.denuded[n]), "any_loss": bool(plate.any_loss[n]),
                               "flags": int(r.flags[n]), "nx": round(float(r.normals[n, 0]), 5),
                               "ny": round(float(r.normals[n, 1]), 5), "nz": round(float(r.normals[n, 2]), 5)})
    write_rows_csv(point_rows, out / "points.csv")
    moaks = {"side": measurement.side.value, "summary": measurement.summary, "notes": measurement.notes,
             "regions": {row["region"]: {k: row[k] for k in ("tAB", "any_loss_area%", "full_thickness_area%",
                                                            "moaks_any_loss_grade", "moaks_full_thickness_grade")}
                         for row in measurement.scheme_rows("moaks") if row["region"] != "all"},
             "frame": {"notch_x_mm": measurement.frame.notch_x, "groove_x_mm": measurement.frame.groove_x,
                       "condyle_centre_mm": measurement.frame.condyle_centre,
                       "condyle_radius_mm": measurement.frame.condyle_radius,
                       "tibial_margins_deg": measurement.frame.margins,
                       "wirth_eckstein_landmarks_mm": measurement.frame.landmarks}}
    write_json(moaks, out / "moaks.json")
    femur = measurement.plates.get("femur")
    if femur is not None:
        fp = measurement.frame.apply(femur.result.points)
        grid, axes = unrolled_femoral_map(fp, measurement.frame.sagittal_angle(fp), femur.result.thickness)
        np.save(out / "femoral_thickness_map.npy", grid)
        write_json(axes, out / "femoral_thickness_map.json")
        thickness_map_png(grid, out / "femoral_thickness_map.png", title="femoral cartilage thickness (mm)")
    write_json({"koaimg": __version__, "python": platform.python_version(), "inputs": inputs or {},
                "config": config or {}, "subject": subject, "visit": visit}, out / "provenance.json")
    return rows


def measure_file(labels_path: Path, out: Path, *, preset: str = "koaimg", mapping_json: Path | None = None,
                 label_table: Path | None = None, side: str | None = None, method: str = "normal",
                 subject: str = "", visit: str = "", scheme: str = "all") -> KneeMeasurement:
    """``koaimg measure``: read labels, measure every plate, write the outputs."""
    labels = load_labels(labels_path, preset=preset, mapping_json=mapping_json, label_table=label_table)
    chosen_side = KneeSide(side) if side else labels.meta.side
    schemes = SCHEMES if scheme == "all" else (scheme,)
    if not set(schemes) <= set(SCHEMES):
        raise OptionError(f"unknown subregion scheme {scheme!r}", hint="use moaks, wirth-eckstein or all")
    measurement = measure_knee(labels, side=chosen_side, method=method, schemes=schemes)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "labels.nii.gz"
    if not (target.exists() and target.resolve() == labels_path.resolve()):
        # the scan folder is self-contained (DESIGN.md): the label map measured, in koaimg's schema
        write_volume(labels, target)
    write_measurement(measurement, labels, out, subject=subject, visit=visit,
                      inputs={str(labels_path.name): _sha256(labels_path)},
                      config={"preset": preset, "method": method, "scheme": scheme, "side": measurement.side.value,
                              "side_source": "option" if side else labels.meta.side_source})
    return measurement
