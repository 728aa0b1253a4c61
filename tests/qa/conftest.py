"""A small but real batch output folder for the QA app, built once per session and copied per test.

OUT/KOA-001/{baseline,month6}/MR: scan folders written by ``measure_file`` from a coarse procedural knee (the
follow-up with part of the femoral cartilage removed), with ``image.nii.gz`` and ``labels.nii.gz`` beside them;
OUT/KOA-001/change_baseline_month6: a pair (change.csv + Δ NIfTI); OUT/KOA-002/baseline/US: an ultrasound scan.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from qa_testutil import SUBJECT


def _write_change(bl: Path, fu: Path, out: Path) -> None:
    """A change.csv in the DESIGN.md schema from two measures.csv (what run_change writes, minus registration)."""
    def values(folder: Path) -> dict:
        with (folder / "measures.csv").open() as fh:
            return {(r["structure"], r["region"], r["metric"]): r for r in csv.DictReader(fh)}

    a, b = values(bl), values(fu)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["subject", "modality", "side", "structure", "scheme", "region", "metric", "unit", "baseline", "followup",
            "delta", "pct_delta", "beyond_sdd"]
    with (out / "change.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for key, row in a.items():
            if key not in b or not row["value"] or not b[key]["value"]:
                continue
            x, y = float(row["value"]), float(b[key]["value"])
            writer.writerow({"subject": SUBJECT, "modality": "MR", "side": row["side"], "structure": key[0],
                             "scheme": row["scheme"], "region": key[1], "metric": key[2], "unit": row["unit"],
                             "baseline": x, "followup": y, "delta": y - x,
                             "pct_delta": 100 * (y - x) / x if x else "", "beyond_sdd": abs(y - x) > 0.1})
    t0, t1 = nib.load(str(bl / "thickness.nii.gz")), nib.load(str(fu / "thickness.nii.gz"))
    delta = np.asarray(t1.dataobj, dtype=np.float32) - np.asarray(t0.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(delta, t0.affine), str(out / "delta_thickness.nii.gz"))


@pytest.fixture(scope="session")
def qa_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the output folder once (about 6 s on two cores)."""
    from koaimg.pipeline._measure import measure_file
    from koaimg.pipeline._synth import synth_knee

    work = tmp_path_factory.mktemp("qa_src")
    phantom = synth_knee(work / "knee", acquisition="dess", scale=4, formats=("nifti",))
    out = tmp_path_factory.mktemp("qa") / "OUT"
    labels_img = nib.load(str(phantom / "labels.nii.gz"))
    labels = np.asarray(labels_img.dataobj).astype(np.uint8)
    eroded = labels.copy()
    fem = np.argwhere(labels == 2)
    cut = fem[:, 2] < np.percentile(fem[:, 2], 30)  # drop a third of the femoral cartilage along one axis
    eroded[tuple(fem[cut].T)] = 0
    for visit, array in (("baseline", labels), ("month6", eroded)):
        scan = out / SUBJECT / visit / "MR"
        scan.mkdir(parents=True)
        nib.save(nib.Nifti1Image(array, labels_img.affine), str(scan / "labels.nii.gz"))
        shutil.copy(phantom / "image.nii.gz", scan / "image.nii.gz")
        measure_file(scan / "labels.nii.gz", scan, subject=SUBJECT, visit=visit)
    (out / SUBJECT / "baseline" / "MR" / "qa_flags.json").write_text(
        json.dumps({"flags": [{"code": "low_contrast", "message": "cartilage/fluid contrast below threshold"}]}))
    _write_change(out / SUBJECT / "baseline" / "MR", out / SUBJECT / "month6" / "MR",
                  out / SUBJECT / "change_baseline_month6")
    us = out / "KOA-002" / "baseline" / "US"
    us.mkdir(parents=True)
    with (us / "measures.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "visit", "modality", "side", "structure", "scheme", "region", "metric", "value",
                         "unit"])
        for region, value in (("LC", 2.1), ("IN", 2.6), ("MC", 2.0), ("mean", 2.23)):
            writer.writerow(["KOA-002", "baseline", "US", "right", "ultrasound_femoral_cartilage", "ultrasound",
                             region, "thickness", value, "mm"])
    Image.fromarray((np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)).save(us / "overlay.png")
    (out / "cohort").mkdir()  # not a subject
    (out / "cohort" / "cohort.csv").write_text("arm,n\n")
    return out


@pytest.fixture
def qa_out(qa_template: Path, tmp_path: Path) -> Path:
    """A private copy of the output folder for one test."""
    dest = tmp_path / "OUT"
    shutil.copytree(qa_template, dest)
    return dest


@pytest.fixture
def client(qa_out: Path):
    """FastAPI test client on loopback, no token, default reviewer 'dr.a'."""
    from fastapi.testclient import TestClient

    from koaimg.qa import create_app

    app = create_app(qa_out, reviewer="dr.a", max_upload_bytes=8 * 1024 * 1024)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c
