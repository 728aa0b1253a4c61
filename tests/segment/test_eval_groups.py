"""The evaluation's per-contrast and per-slice-thickness breakdown groups and averages the cases it is given.

Why a test: the issue's targets come from 3D DESS figures, and this table is where the evaluation says how the DESS
cases compare with them; a case put in the wrong group would misstate that."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ev():
    sys.path.insert(0, str(REPO / "pipelines"))
    try:
        spec = importlib.util.spec_from_file_location("eval_knee_mr_seg", REPO / "pipelines" / "eval_knee_mr_seg.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "pipelines"))
    return module


def _record(ev, case: str, spacing: list[float], fc: float, true_mm: float, pred_mm: float) -> dict:
    dice = {n: 0.9 for n in ev.NAMES} | {"femoral_cartilage": fc}
    return {"case": case, "spacing_mm": spacing, "dice": dice, "thccab_true_mm": true_mm, "thccab_pred_mm": pred_mm}


def test_case_groups_read_contrast_and_slice_class(ev):
    assert ev.case_groups(_record(ev, "woo0_dess_sag_0.37x0.7", [0.7, 0.365, 0.365], 0, 0, 0)) == (
        "dess", "slices <= 0.8 mm")
    assert ev.case_groups(_record(ev, "phantom5_tse_t1_left", [0.357, 0.511, 3.0], 0, 0, 0)) == (
        "t1", "slices > 1.5 mm")
    assert ev.case_groups(_record(ev, "woo1_pdfs_sag_0.45x2.0_left_set1", [2.0, 0.45, 0.45], 0, 0, 0)) == (
        "pdfs", "slices > 1.5 mm")
    assert ev.case_groups(_record(ev, "phantom9_sample_dess_left", [0.65, 0.65, 1.5], 0, 0, 0)) == (
        "dess", "slices 0.8-1.5 mm")
    # a phantom names its acquisition before its contrast: PD-FS contrast on a DESS grid is PD-FS
    assert ev.case_groups(_record(ev, "phantom4_dess_pdfs_right", [0.365, 0.365, 0.7], 0, 0, 0)) == (
        "pdfs", "slices <= 0.8 mm")


def test_by_group_means_and_thickness_counts(ev):
    records = [_record(ev, "phantom0_dess_dess_right", [0.365, 0.365, 0.7], 0.92, 2.40, 2.45),
               _record(ev, "woo0_dess_sag_0.37x0.7", [0.7, 0.365, 0.365], 0.66, 1.80, 2.27),
               _record(ev, "phantom1_flash_t1_left", [0.312, 0.312, 1.5], 0.75, 2.09, 2.50)]
    groups = ev.by_group(records)
    assert list(groups) == ["dess", "t1", "slices <= 0.8 mm", "slices 0.8-1.5 mm"]
    assert groups["dess"]["n"] == 2
    assert groups["dess"]["dice"]["femoral_cartilage"] == pytest.approx(np.mean([0.92, 0.66]), abs=1e-4)
    assert groups["dess"]["thccab_abs_error_mm"]["within_0.1mm"] == 1
    assert groups["t1"]["thccab_abs_error_mm"]["within_0.1mm"] == 0
    assert "by_group" in ev.summarise([r | {"msd_mm": {n: 1.0 for n in ev.NAMES}} for r in records])
