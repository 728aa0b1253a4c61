"""Constants and helpers shared by the QA tests (a uniquely named module: test folders have no __init__)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

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
