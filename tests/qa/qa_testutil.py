"""Constants and helpers shared by the QA tests (a uniquely named module: test folders have no __init__)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

SUBJECT = "KOA-001"
BASELINE = f"{SUBJECT}~baseline~MR"
FOLLOWUP = f"{SUBJECT}~month6~MR"
PAIR = f"{SUBJECT}~change_baseline_month6"
US_CASE = "KOA-002~baseline~US"


def labels_of(out: Path, case: str = BASELINE) -> nib.Nifti1Image:
    """The automated label map of a scan case."""
    subject, visit, modality = case.split("~")
    return nib.load(str(out / subject / visit / modality / "labels.nii.gz"))


def nifti_bytes(array: np.ndarray, affine: np.ndarray, *, gz: bool = True) -> bytes:
    """NIfTI-1 file bytes (gzipped by default) for uploads."""
    img = nib.Nifti1Image(array, affine)
    raw = img.to_bytes()
    if gz:
        return gzip.compress(raw)
    return raw


def build_output(root: Path, *, scale: float = 4) -> Path:
    """Write the QA test output folder under ``root`` and return it (about 6 s on two cores)."""
    from koaimg.pipeline import run_change
    from koaimg.pipeline._measure import measure_file
    from koaimg.pipeline._synth import synth_knee

    phantom = synth_knee(root / "knee_src", acquisition="dess", scale=scale, formats=("nifti",))
    out = root / "OUT"
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
    run_change(out / SUBJECT / "baseline" / "MR", out / SUBJECT / "month6" / "MR",
               out / SUBJECT / "change_baseline_month6", subject=SUBJECT)
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
