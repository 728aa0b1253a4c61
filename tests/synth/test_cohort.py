"""The simulated trial is exported like a real one: subjects/visits/modalities in DICOM, allocation, separate truth."""

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from koaimg.io import discover
from koaimg.synth import DEFAULT_ARMS, plan_cohort, write_cohort


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_default_design_is_the_published_trial():
    plans = plan_cohort()
    counts = {a.name: sum(p.arm == a.name for p in plans) for a in DEFAULT_ARMS}
    assert counts == {"two_dose_admsc": 24, "single_dose_admsc": 24, "hyaluronic_acid": 25}
    assert len({p.subject for p in plans}) == 73
    arms = {a.name: a for a in DEFAULT_ARMS}
    assert arms["two_dose_admsc"].us_delta_mean == 0.25 and arms["two_dose_admsc"].us_delta_sd == 0.18
    assert arms["hyaluronic_acid"].us_delta_mean == -0.06 and arms["hyaluronic_acid"].us_delta_sd == 0.14
    single = arms["single_dose_admsc"]
    assert arms["hyaluronic_acid"].us_delta_mean < single.us_delta_mean < arms["two_dose_admsc"].us_delta_mean
    assert plan_cohort(seed=1) != plans and plan_cohort() == plans  # seeded


@pytest.mark.slow
def test_small_cohort_export(tmp_path):
    arms = tuple(replace(a, n=1) for a in DEFAULT_ARMS)
    out = write_cohort(tmp_path / "trial", arms, mr_scale=6)
    allocation = _rows(out / "allocation.csv")
    assert sorted(r["arm"] for r in allocation) == sorted(a.name for a in arms)
    scans = discover(out)
    # 3 subjects x 2 visits x (MR + US), nothing broken; truth is outside the subject folders
    assert len([s for s in scans.series if s.ok and s.modality in ("MR", "US")]) == 12
    assert not any("ground_truth" in f for s in scans.series if s.modality in ("MR", "US") for f in s.files)
    truth = _rows(out / "ground_truth" / "truth.csv")
    us = [r for r in truth if r["modality"] == "US"]
    subjects = {r["subject"]: r for r in _rows(out / "ground_truth" / "subjects.csv")}
    for row in us:
        assert float(row["delta"]) == pytest.approx(float(subjects[row["subject"]]["us_delta_mm"]), abs=1e-5)


def test_synth_cohort_cli_writes_true_label_maps_on_request(tmp_path):
    """``--with-labels``: the trial runs end to end from label maps (``koaimg batch --labels-dir``)."""
    from typer.testing import CliRunner

    from koaimg.cli import app
    from koaimg.cli._app import _register
    from koaimg.io import read_labels

    _register()
    out = tmp_path / "trial"
    result = CliRunner().invoke(app, ["synth", "cohort", str(out), "--n-per-arm", "1", "--scale", "8", "--no-us",
                                      "--with-labels"])
    assert result.exit_code == 0, result.output
    subjects = [r["subject"] for r in _rows(out / "allocation.csv")]
    for subject in subjects:
        for visit in ("baseline", "month6"):
            labels = read_labels(out / "ground_truth" / subject / visit / "MR" / "labels.nii.gz")
            assert {1, 2, 3, 4, 5, 6} <= set(np.unique(labels.array).tolist())
    assert not any((out / "ground_truth").rglob("*.dcm"))
