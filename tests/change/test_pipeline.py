"""``run_change`` / ``run_cohort`` on scan folders and the ``koaimg change`` / ``koaimg cohort`` commands."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from koaimg.change import CHANGE_COLUMNS
from koaimg.cli import app
from koaimg.cli._app import _register
from koaimg.core import PairMismatchError
from koaimg.io import read_image, write_volume
from koaimg.pipeline import run_change
from koaimg.pipeline._measure import measure_file

_register()
runner = CliRunner()


def _read(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def scan_folders(thickening_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("trial")
    for visit, phantom in (("baseline", thickening_pair.pair.baseline), ("month6", thickening_pair.pair.followup)):
        folder = root / "S1" / visit / "MR"
        folder.mkdir(parents=True)
        write_volume(phantom.labels, folder / "labels.nii.gz")
        measure_file(folder / "labels.nii.gz", folder, subject="S1", visit=visit)
    return root


def test_run_change_writes_the_pair_outputs(scan_folders, thickening_pair):
    out = run_change(scan_folders / "S1/baseline/MR", scan_folders / "S1/month6/MR",
                     scan_folders / "S1/change_baseline_month6", subject="S1")
    for name in ("change.csv", "change.json", "transitions.json", "delta_thickness.nii.gz", "femoral_delta_map.png"):
        assert (out / name).is_file(), name
    rows = _read(out / "change.csv")
    assert tuple(rows[0]) == CHANGE_COLUMNS
    femur = next(r for r in rows if r["structure"] == "femoral_cartilage" and r["scheme"] == "moaks"
                 and r["region"] == "all" and r["metric"] == "ThCtAB.Me")
    truth = thickening_pair.truth()[("femoral_cartilage", "all")]
    assert float(femur["delta"]) == pytest.approx(truth, abs=0.03)
    info = json.loads((out / "change.json").read_text())["MR"]
    assert info["registration"]["rms_residual_mm"] < 0.3 and "label maps" in info["registration"]["method"]
    assert info["pair_check"]["mismatches"] == []
    delta = read_image(out / "delta_thickness.nii.gz")
    values = delta.array[delta.array != 0]
    assert 0.05 < np.median(values) < 0.3
    transitions = json.loads((out / "transitions.json").read_text())
    assert "FMC" in transitions["regions"] and "formulas" in transitions


def test_without_label_maps_registration_uses_interface_points(scan_folders, tmp_path):
    for visit in ("baseline", "month6"):
        shutil.copytree(scan_folders / "S1" / visit, tmp_path / visit)
        (tmp_path / visit / "MR" / "labels.nii.gz").unlink()
    out = run_change(tmp_path / "baseline/MR", tmp_path / "month6/MR", tmp_path / "change")
    info = json.loads((out / "change.json").read_text())["MR"]
    assert "interface" in info["registration"]["method"]
    assert any("labels.nii.gz" in n for n in info["notes"])


def test_cli_change_and_mismatch(scan_folders, tmp_path):
    result = runner.invoke(app, ["change", str(scan_folders / "S1/baseline/MR"), str(scan_folders / "S1/month6/MR"),
                                 "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "femoral_cartilage" in result.output and (tmp_path / "c" / "change.csv").is_file()
    other = tmp_path / "other"
    shutil.copytree(scan_folders / "S1/month6/MR", other)
    rows = _read(other / "measures.csv")
    for r in rows:
        r["subject"] = "S2"
    with (other / "measures.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(app, ["change", str(scan_folders / "S1/baseline/MR"), str(other), "--out",
                                 str(tmp_path / "d")])
    assert isinstance(result.exception, PairMismatchError) and "different subject" in str(result.exception)
    result = runner.invoke(app, ["change", str(scan_folders / "S1/baseline/MR"), str(other), "--out",
                                 str(tmp_path / "e"), "--on-mismatch", "flag"])
    assert result.exit_code == 1 and "FLAGGED" in result.output


def _us_folder(path, subject, visit, values):
    path.mkdir(parents=True)
    with (path / "measures.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "visit", "modality", "side", "structure", "scheme", "region",
                                                "metric", "value", "unit"])
        writer.writeheader()
        for site, value in values.items():
            writer.writerow({"subject": subject, "visit": visit, "modality": "US", "side": "left",
                             "structure": "ultrasound_femoral_cartilage", "scheme": "", "region": site,
                             "metric": "thickness", "value": value, "unit": "mm"})


def test_ultrasound_pairs_and_cohort(tmp_path):
    rng = np.random.default_rng(4)
    allocation = ["subject,arm"]
    for n in range(12):
        subject, arm = f"K{n:02d}", ("a" if n % 2 else "b")
        allocation.append(f"{subject},{arm}")
        base = {s: 2.0 + rng.normal(0, 0.2) for s in ("LC", "IN", "MC")}
        follow = {s: v + (0.3 if arm == "a" else 0.0) + rng.normal(0, 0.05) for s, v in base.items()}
        _us_folder(tmp_path / subject / "baseline" / "US", subject, "baseline", base)
        _us_folder(tmp_path / subject / "month6" / "US", subject, "month6", follow)
        run_change(tmp_path / subject / "baseline/US", tmp_path / subject / "month6/US",
                   tmp_path / subject / "change_baseline_month6")
    rows = _read(tmp_path / "K00" / "change_baseline_month6" / "change.csv")
    assert {r["region"] for r in rows} == {"LC", "IN", "MC", "mean"} and all(r["modality"] == "US" for r in rows)
    (tmp_path / "allocation.csv").write_text("\n".join([*allocation, "K99,a"]) + "\n")
    result = runner.invoke(app, ["cohort", str(tmp_path / "allocation.csv"), str(tmp_path), "--out",
                                 str(tmp_path / "cohort")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "cohort"
    arm_rows = _read(out / "cohort.csv")
    mean_a = next(r for r in arm_rows if r["region"] == "mean" and r["arm"] == "a")
    assert float(mean_a["delta_mean"]) == pytest.approx(0.3, abs=0.05) and mean_a["n_randomised"] == "7"
    contrast = next(r for r in _read(out / "contrasts.csv") if r["region"] == "mean")
    assert float(contrast["p_ancova"]) < 1e-4
    page = (out / "cohort.html").read_text()
    assert "<table>" in page and "http" not in page and "K99" in page  # the missing subject is reported


def test_mr_and_ultrasound_share_the_pair_folder(scan_folders, tmp_path):
    out = tmp_path / "S1" / "change_baseline_month6"
    run_change(scan_folders / "S1/baseline/MR", scan_folders / "S1/month6/MR", out)
    _us_folder(tmp_path / "S1/baseline/US", "S1", "baseline", {"LC": 2.0, "IN": 2.5, "MC": 1.9})
    _us_folder(tmp_path / "S1/month6/US", "S1", "month6", {"LC": 2.2, "IN": 2.5, "MC": 1.9})
    run_change(tmp_path / "S1/baseline/US", tmp_path / "S1/month6/US", out)
    run_change(tmp_path / "S1/baseline/US", tmp_path / "S1/month6/US", out)  # re-running replaces, not appends
    rows = _read(out / "change.csv")
    assert {r["modality"] for r in rows} == {"MR", "US"}
    assert sum(r["modality"] == "US" for r in rows) == 4
    assert set(json.loads((out / "change.json").read_text())) == {"MR", "US"}


def test_points_csv_round_trips_normals_and_flags(scan_folders, thickening_pair):
    """The file path gives the change analysis what the in-memory path has: normals (no mixing across a notch wall)
    and the imputed-value flags (rim fills are not compared)."""
    from koaimg.pipeline._change import _plates_from_points

    plates = _plates_from_points(scan_folders / "S1" / "baseline" / "MR")
    memory = thickening_pair.baseline.plates
    for structure, plate in plates.items():
        assert plate.normals is not None and plate.flags is not None
        np.testing.assert_allclose(plate.normals, memory[structure].normals, atol=1e-4)
        np.testing.assert_array_equal(plate.imputed, memory[structure].imputed)


def test_field_of_view_notes_reach_change_json(scan_folders):
    from koaimg.pipeline._change import load_visit

    visit = load_visit(scan_folders / "S1" / "baseline" / "MR")
    assert "patellar_cartilage" in visit.cut_by_fov
    out = run_change(scan_folders / "S1/baseline/MR", scan_folders / "S1/month6/MR", scan_folders / "S1/fov_pair",
                     subject="S1")
    notes = json.loads((out / "change.json").read_text())["MR"]["notes"]
    assert any("patellar cartilage is cut by the field of view" in n for n in notes)
    from koaimg.export import write_pair_report

    html = write_pair_report(out).read_text()
    assert "patellar cartilage is cut by the field of view at the baseline" in html, "the reader sees it too"
