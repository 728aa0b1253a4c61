"""Discovery of subjects, visits and modalities: folder layout, study-date order, header pseudonyms, overrides."""

from __future__ import annotations

import csv
import os

import pytest

from koaimg.pipeline import discover_batch, discover_study
from koaimg.pipeline._subjects import ManifestCsvError, safe_name


def test_trial_export_layout(trial):
    plan = discover_batch(trial, labels_dir=trial / "ground_truth")
    assert plan.subjects == ["KOA-001", "KOA-002"]
    assert sorted(s.unit for s in plan.scans) == sorted(
        f"{sub}/{v}/{m}" for sub in ("KOA-001", "KOA-002") for v in ("baseline", "month6") for m in ("MR", "US"))
    assert [p.unit for p in plan.pairs] == ["KOA-001/change_baseline_month6", "KOA-002/change_baseline_month6"]
    assert all(p.modalities == ["MR", "US"] for p in plan.pairs)
    mr = [s for s in plan.scans if s.modality == "MR"]
    assert all(s.labels and s.labels.endswith(f"{s.subject}/{s.visit}/MR/labels.nii.gz") for s in mr)
    assert all(s.side in ("right", "left") for s in plan.scans)
    assert plan.allocation is not None and plan.allocation.endswith("allocation.csv")
    assert not plan.problems


def test_visits_ordered_by_study_date_not_name(trial):
    subject = trial / "KOA-001"
    # name the follow-up so it sorts first alphabetically: the study dates must still make it the follow-up
    os.rename(subject / "month6", subject / "a_visit")
    os.rename(subject / "baseline", subject / "z_visit")
    plan = discover_study(subject)
    visits = {s.visit: s.visit_index for s in plan.scans}
    assert visits == {"z_visit": 0, "a_visit": 1}
    assert [p.unit for p in plan.pairs] == ["KOA-001/change_z_visit_a_visit"]


def test_date_like_folder_names_are_not_used(trial):
    subject = trial / "KOA-001"
    os.rename(subject / "baseline", subject / "20240115")
    os.rename(subject / "month6", subject / "20240715")
    plan = discover_study(subject)
    assert {s.visit for s in plan.scans} == {"baseline", "followup1"}
    assert all("2024" not in s.unit for s in plan.scans)


def test_subjects_from_header_pseudonyms(trial):
    plan = discover_batch(trial, subject_from="header")
    assert all(s.subject.startswith("sub-") for s in plan.scans)
    assert all("KOA" not in s.unit for s in plan.scans)


def test_override_csv(trial, tmp_path):
    table = tmp_path / "overrides.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "subject", "visit", "modality", "side", "labels", "exclude"])
        writer.writerow(["KOA-002", "P-17", "", "", "", "", ""])
        writer.writerow(["KOA-002/baseline/US", "", "", "", "", "", "yes"])
        writer.writerow(["KOA-001/month6/MR", "", "", "", "left", str(tmp_path / "lab.nii.gz"), ""])
    plan = discover_batch(trial, overrides_csv=table)
    units = {s.unit: s for s in plan.scans}
    assert "P-17/baseline/MR" in units and "P-17/baseline/US" not in units and "P-17/month6/US" in units
    assert units["KOA-001/month6/MR"].side == "left"
    assert units["KOA-001/month6/MR"].labels == str(tmp_path / "lab.nii.gz")
    assert any("override" in why for _, why in plan.ignored)
    pairs = {p.unit: p.modalities for p in plan.pairs}
    assert pairs["P-17/change_baseline_month6"] == ["MR"]


def test_override_csv_errors(trial, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("subject,visit\nA,B\n")
    with pytest.raises(ManifestCsvError, match="'path' column"):
        discover_batch(trial, overrides_csv=bad)
    bad.write_text("path,modality\nKOA-001,CT\n")
    with pytest.raises(ManifestCsvError, match="not MR or US"):
        discover_batch(trial, overrides_csv=bad)


def test_safe_names():
    assert safe_name("Smith^John / 01") == "Smith-John-01"
    assert safe_name("..") == "unnamed"
