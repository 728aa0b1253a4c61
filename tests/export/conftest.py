"""Fixtures for the export tests: a tiny DICOM series with a label map on its grid, the measured sample scan, and
crafted scan / pair / cohort folders (fast: no segmentation, one measurement of the sample per session)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from koaimg.core import KneeSide, LabelVolume, Structure, Volume, VolumeMeta
from koaimg.io import MRSeriesTags, write_dicom_series

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
MOAKS = ("PM", "PL", "FMT", "FLT", "FMC", "FLC", "FMP", "FLP", "TMA", "TMC", "TMP", "TLA", "TLC", "TLP")
PLATE_OF = {c: "patellar_cartilage" if c[0] == "P" else "femoral_cartilage" if c[0] == "F" else "tibial_cartilage"
            for c in MOAKS}


def tiny_knee_labels() -> np.ndarray:
    """18 x 16 x 8 blocks: femur over tibia, cartilage between, patella in front, fibula beside the tibia."""
    lab = np.zeros((18, 16, 8), np.uint8)
    lab[2:16, 9:15, 1:7] = Structure.FEMUR
    lab[2:16, 8, 1:7] = Structure.FEMORAL_CARTILAGE
    lab[2:16, 7, 1:7] = Structure.TIBIAL_CARTILAGE
    lab[2:16, 2:7, 1:7] = Structure.TIBIA
    lab[16, 9:13, 2:6] = Structure.PATELLAR_CARTILAGE
    lab[17, 9:13, 2:6] = Structure.PATELLA
    lab[0:2, 2:5, 2:4] = Structure.FIBULA
    return lab


@pytest.fixture
def tiny_series(tmp_path) -> tuple[Path, LabelVolume]:
    """A small DICOM MR series (8 slices) and a label map on exactly its grid."""
    affine = np.array([[0.0, 0.0, 1.5, -5.0], [-0.6, 0.0, 0.0, 12.0], [0.0, -0.6, 0.0, 9.0], [0, 0, 0, 1]])
    image = Volume((np.arange(18 * 16 * 8).reshape(18, 16, 8) % 251).astype(np.uint16), affine,
                   VolumeMeta(side=KneeSide.RIGHT))
    folder = tmp_path / "MR"
    write_dicom_series(image, folder, MRSeriesTags(pseudonym="SUBJ-001", side=KneeSide.RIGHT, study_seed="tiny"))
    return folder, LabelVolume(tiny_knee_labels(), affine, VolumeMeta(side=KneeSide.RIGHT))


def measure_rows(subject: str = "SUBJ-001", visit: str = "baseline", side: str = "right", *, scale: float = 1.0,
                 drop: tuple[str, ...] = ()) -> list[dict]:
    """A plausible measures.csv table: three plates, 14 MOAKS subregions, a defect in FMC."""
    rows = []

    def add(structure, region, metric, value, unit):
        rows.append({"subject": subject, "visit": visit, "modality": "MR", "side": side, "structure": structure,
                     "scheme": "moaks", "region": region, "metric": metric, "value": value, "unit": unit})

    for plate, vc in (("femoral_cartilage", 9000.0), ("tibial_cartilage", 3200.0), ("patellar_cartilage", 1500.0)):
        for region in ["all"] + [c for c in MOAKS if PLATE_OF[c] == plate and c not in drop]:
            th = 2.2 * scale * (0.8 if region == "FMC" else 1.0)
            add(plate, region, "ThCtAB.Me", th, "mm")
            add(plate, region, "ThCtAB.SD", 0.5, "mm")
            add(plate, region, "ThCtAB.Max", 3.4 * scale, "mm")
            add(plate, region, "ThCcAB.Me", th + 0.05, "mm")
            add(plate, region, "VC", vc * scale if region == "all" else vc * scale / 4, "mm3")
            add(plate, region, "tAB", 1000.0 if region == "all" else 250.0, "mm2")
            add(plate, region, "cAB", 990.0 if region == "all" else 245.0, "mm2")
            add(plate, region, "dAB%", 1.0, "%")
            add(plate, region, "any_loss_area%", 20.0 if region == "FMC" else 0.0, "%")
            add(plate, region, "full_thickness_area%", 5.0 if region == "FMC" else 0.0, "%")
            add(plate, region, "moaks_any_loss_grade", "" if region == "all" else 2 if region == "FMC" else 0, "")
            add(plate, region, "moaks_full_thickness_grade", "" if region == "all" else 1 if region == "FMC" else 0,
                "")
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def change_rows(baseline: list[dict], followup: list[dict], *, sdd: float = 0.17) -> list[dict]:
    """change.csv rows (DESIGN.md columns) joining two measures tables."""
    fu = {(r["structure"], r["region"], r["metric"]): r for r in followup}
    out = []
    for r in baseline:
        f = fu.get((r["structure"], r["region"], r["metric"]))
        if f is None:
            continue
        b, v = r["value"], f["value"]
        d = "" if b == "" or v == "" else float(v) - float(b)
        pct = "" if d == "" or not float(b) else 100 * d / float(b)
        out.append({"subject": r["subject"], "baseline_visit": r["visit"], "followup_visit": f["visit"],
                    "modality": r["modality"], "side": r["side"], "structure": r["structure"], "scheme": r["scheme"],
                    "region": r["region"], "metric": r["metric"], "baseline": b, "followup": v, "delta": d,
                    "pct_delta": pct, "beyond_sdd": "" if d == "" else abs(d) > sdd, "unit": r["unit"]})
    return out


@pytest.fixture
def scan_dir(tmp_path) -> Path:
    """A crafted MR scan output folder: measures.csv, moaks.json, labels.nii.gz and an unrolled map."""
    from koaimg.io import write_volume

    d = tmp_path / "OUT" / "SUBJ-001" / "baseline" / "MR"
    write_csv(measure_rows(), d / "measures.csv")
    write_volume(LabelVolume(tiny_knee_labels(), np.diag([0.6, 0.6, 1.5, 1.0])), d / "labels.nii.gz")
    (d / "moaks.json").write_text(json.dumps({"summary": {"moaks_summed_score_pos_worse": 3.0,
                                                          "moaks_summed_score_formula": "sum of grades",
                                                          "n_subregions_graded": 14.0},
                                              "notes": ["a crafted note"]}))
    grid = np.full((40, 30), 2.2)
    grid[:5] = np.nan
    np.save(d / "femoral_thickness_map.npy", grid)
    (d / "femoral_thickness_map.json").write_text(json.dumps({"x0_mm": -15.0, "mm_per_px": 1.0,
                                                             "alpha_top_deg": 150.0, "deg_per_px": 2.0}))
    (d / "provenance.json").write_text(json.dumps({"koaimg": "0.1.0", "inputs": {"labels.nii.gz": "ab" * 32},
                                                   "config": {"method": "normal"}}))
    return d


@pytest.fixture(scope="session")
def measured_sample(tmp_path_factory) -> Path:
    """The sample's baseline MR measured from its ground-truth labels (one measurement per test session)."""
    from koaimg.pipeline._measure import measure_file

    out = tmp_path_factory.mktemp("sample") / "SAMPLE-01" / "baseline" / "MR"
    labels = SAMPLE / "ground_truth" / "SAMPLE-01" / "baseline" / "MR" / "labels.nii.gz"
    measure_file(labels, out, side="right", subject="SAMPLE-01", visit="baseline")
    shutil.copy(labels, out / "labels.nii.gz")
    return out
