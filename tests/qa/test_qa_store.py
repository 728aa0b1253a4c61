"""Review store, case discovery, NIfTI scrubbing and the ``koaimg qa`` commands, without a web server."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from qa_testutil import BASELINE, FOLLOWUP, PAIR, SUBJECT, US_CASE, labels_of, nifti_bytes
from typer.testing import CliRunner

from koaimg.core import GeometryError, LabelSchemaError, UnreadableFileError
from koaimg.qa import (
    ConflictError,
    Filters,
    NotFoundError,
    ReviewService,
    ReviewStore,
    discover_cases,
    export_audit_csv,
    validate_correction,
)
from koaimg.qa._nifti import bounded_gunzip, scrub_header


def test_store_versions_conflicts_and_append_only_audit(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    assert store.state("c1").version == 0 and store.state("c1").status == "unreviewed"
    s1 = store.decide("c1", expected_version=0, status="approved", reviewer="dr.a", comment="ok")
    assert (s1.version, s1.status, s1.reviewer) == (1, "approved", "dr.a")
    with pytest.raises(ConflictError, match="version 1"):
        store.decide("c1", expected_version=0, status="rejected", reviewer="dr.b")
    store.override_grade("c1", expected_version=1, region="FMC", grade="moaks_any_loss_grade", value=2,
                         reviewer="dr.a", automated=1)
    assert store.overrides("c1") == {"FMC": {"moaks_any_loss_grade": 2}}
    events = store.audit("c1")
    assert [(e["action"], e["before"], e["after"]) for e in events] == \
        [("decision", "unreviewed", "approved"), ("grade_override", "1", "2")]
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit SET reviewer = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit")
    con.close()
    path = export_audit_csv(store, tmp_path / "audit.csv")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["reviewer"] for r in rows] == ["dr.a", "dr.a"] and rows[0]["case_version"] == "1"
    assert ReviewStore(store.path).state("c1").version == 2  # reopening keeps everything


def test_discovery_uses_the_layout_and_skips_what_is_not_a_pseudonym(qa_out: Path) -> None:
    shutil.copytree(qa_out / SUBJECT, qa_out / "19700101")  # a date of birth as a folder name
    shutil.copytree(qa_out / SUBJECT, qa_out / "Doe John")
    (qa_out / ".hidden").mkdir()
    (qa_out / SUBJECT / "month6" / "MR" / "qa_flags.json").write_text(json.dumps(["motion", {"code": "fov"}]))
    cases, skipped = discover_cases(qa_out)
    assert list(cases) == [BASELINE, PAIR, FOLLOWUP, US_CASE]
    assert len(skipped) == 2 and all("pseudonym" in s for s in skipped)
    assert [f["code"] for f in cases[FOLLOWUP].flags] == ["motion", "fov"]
    pair = cases[PAIR]
    assert (pair.baseline, pair.followup) == ("baseline", "month6") and "delta" in pair.files
    assert "image" in cases[BASELINE].files and "overlay" in cases[US_CASE].files
    followup = qa_out / SUBJECT / "month6" / "MR"
    (followup / "image.nii").write_bytes(gzip.decompress((followup / "image.nii.gz").read_bytes()))
    (followup / "image.nii.gz").unlink()
    assert discover_cases(qa_out)[0][FOLLOWUP].files["image"].name == "image.nii"
    svc = ReviewService(qa_out, reviewer="dr.x")
    assert svc.file_for(FOLLOWUP, 0, "image").name == "image.nii"


def test_pair_folder_name_with_underscored_visits(tmp_path: Path) -> None:
    for visit in ("month_0", "month_6"):
        (tmp_path / "S1" / visit / "MR").mkdir(parents=True)
        (tmp_path / "S1" / visit / "MR" / "measures.csv").write_text("subject\n")
    (tmp_path / "S1" / "change_month_0_month_6").mkdir()
    (tmp_path / "S1" / "change_month_0_month_6" / "change.csv").write_text("x\n")
    cases, _ = discover_cases(tmp_path)
    assert cases["S1~change_month_0_month_6"].baseline == "month_0"
    assert cases["S1~change_month_0_month_6"].followup == "month_6"


def test_service_filters_and_unknown_ids(qa_out: Path) -> None:
    svc = ReviewService(qa_out, reviewer="dr.s")
    assert [c["id"] for c in svc.worklist(Filters(modality="US"))["cases"]] == [US_CASE]
    with pytest.raises(NotFoundError):
        svc.case("../../etc/passwd")
    with pytest.raises(NotFoundError):
        svc.file_for(BASELINE, 0, "../measures")
    with pytest.raises(NotFoundError):
        svc.file_for(BASELINE, 3, "labels")


def test_validate_correction_rules(qa_out: Path) -> None:
    ref = labels_of(qa_out)
    path = qa_out / SUBJECT / "baseline" / "MR" / "labels.nii.gz"
    labels = np.asarray(ref.dataobj)
    out, affine = validate_correction(nifti_bytes(labels.astype(np.int16), ref.affine, gz=False), path)
    assert out.dtype == np.uint8 and np.array_equal(out, labels) and np.allclose(affine, ref.affine)
    as_float = nifti_bytes(labels.astype(np.float32), ref.affine)  # NiiVue-style float with integer values is fine
    assert np.array_equal(validate_correction(as_float, path)[0], labels)
    with pytest.raises(GeometryError, match="grid"):
        validate_correction(nifti_bytes(labels[:, :, :-1], ref.affine), path)
    flipped = ref.affine @ np.diag([-1, 1, 1, 1])
    with pytest.raises(GeometryError, match="affine"):
        validate_correction(nifti_bytes(labels, flipped), path)
    with pytest.raises(LabelSchemaError, match="9"):
        validate_correction(nifti_bytes(np.where(labels == 1, 9, labels).astype(np.uint8), ref.affine), path)
    with pytest.raises(LabelSchemaError, match="non-integer"):
        validate_correction(nifti_bytes(np.full(labels.shape, np.nan, np.float32), ref.affine), path)
    with pytest.raises(UnreadableFileError):
        validate_correction(b"\x1f\x8b" + b"garbage", path)


def test_scrub_header_and_bounded_gunzip() -> None:
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header["descrip"] = b"Patient^Name"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"DOB 1970-01-01 and more text"))
    raw = img.to_bytes()
    clean = scrub_header(raw)
    assert b"Patient" not in clean and b"DOB" not in clean and len(clean) == len(raw)
    back = nib.Nifti1Image.from_bytes(clean)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj)) and not back.header.extensions
    with pytest.raises(UnreadableFileError):
        scrub_header(b"12")
    assert bounded_gunzip(gzip.compress(b"x" * 100), limit=100) == b"x" * 100
    with pytest.raises(UnreadableFileError, match="larger"):
        bounded_gunzip(gzip.compress(b"x" * 101), limit=100)
    with pytest.raises(UnreadableFileError, match="truncated"):
        bounded_gunzip(gzip.compress(b"x" * 5000)[:20], limit=10_000)


def test_cli_audit_and_serve(qa_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from koaimg.cli._app import _register, app

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["qa", "audit", str(qa_out), "--csv", str(tmp_path / "a.csv")])
    assert result.exit_code != 0  # no review store yet
    svc = ReviewService(qa_out, reviewer="dr.cli")
    svc.decide(BASELINE, expected_version=0, status="approved")
    result = runner.invoke(app, ["qa", "audit", str(qa_out), "--csv", str(tmp_path / "a.csv")])
    assert result.exit_code == 0 and "1 audit event" in result.output
    assert "approved" in (tmp_path / "a.csv").read_text()
    result = runner.invoke(app, ["qa", "audit", str(qa_out), "--csv", str(tmp_path / "a.csv"), "--states",
                                 str(tmp_path / "s.csv")])
    assert result.exit_code == 0 and "4 case state(s)" in result.output
    with (tmp_path / "s.csv").open(newline="") as fh:
        states = {r["case_id"]: r for r in csv.DictReader(fh)}
    assert states[BASELINE]["status"] == "approved" and states[PAIR]["status"] == "unreviewed"
    assert states[BASELINE]["grade_overrides"] == "{}"

    calls = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: calls.append((application, kw)))
    result = runner.invoke(app, ["qa", "serve", str(qa_out)])
    assert result.exit_code == 0 and "this machine only" in result.output and "token" not in result.output
    assert calls[-1][1]["host"] == "127.0.0.1"
    result = runner.invoke(app, ["qa", "serve", str(qa_out), "--host", "0.0.0.0", "--port", "9000"])
    assert result.exit_code == 0 and "?token=" in result.output and "warning" in result.output
    token = result.output.split("?token=")[1].split()[0]
    from fastapi.testclient import TestClient

    with TestClient(calls[-1][0], base_url="http://192.0.2.1:9000") as c:
        assert c.get("/api/cases").status_code == 401
        assert c.get("/api/cases", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_audit_csv_is_plain_csv(qa_out: Path) -> None:
    svc = ReviewService(qa_out, reviewer="dr, with comma")
    svc.decide(BASELINE, expected_version=0, status="flagged", comment='line1\nline2 "quoted"')
    rows = list(csv.DictReader(io.StringIO(svc.audit_csv())))
    assert rows[0]["reviewer"] == "dr, with comma" and rows[0]["comment"] == 'line1\nline2 "quoted"'


def test_batch_layout_pairs_per_modality_and_manifest_flags(qa_out: Path) -> None:
    """The batch engine writes ``change_bl_fu/<modality>/change.csv`` and a SQLite manifest beside the subjects."""
    pair_dir = qa_out / SUBJECT / "change_baseline_month6"
    (pair_dir / "MR").mkdir()
    for name in ("change.csv", "delta_thickness.nii.gz", "femoral_delta_map.png"):
        shutil.move(pair_dir / name, pair_dir / "MR" / name)
    (pair_dir / "change.csv").write_text((pair_dir / "MR" / "change.csv").read_text())  # the combined table
    con = sqlite3.connect(qa_out / "koaimg_manifest.sqlite")
    con.execute("CREATE TABLE stages (unit TEXT, stage TEXT, status TEXT, reason TEXT, info TEXT)")
    con.executemany("INSERT INTO stages VALUES (?, ?, ?, ?, ?)", [
        (f"{SUBJECT}/month6/MR", "segment", "done", "", json.dumps({"warnings": ["low model confidence"]})),
        (f"{SUBJECT}/month6/MR", "dicom", "failed", "no DICOM source", "{}"),
        (f"{SUBJECT}/change_baseline_month6", "change", "done", "", json.dumps({"notes": ["large repositioning"]})),
        ("KOA-002/baseline/US", "measure", "done", "", "not json")])
    con.commit()
    con.close()
    cases, _ = discover_cases(qa_out)
    pair_id = f"{PAIR}~MR"
    assert pair_id in cases and PAIR not in cases and cases[pair_id].modality == "MR"
    assert [f["code"] for f in cases[FOLLOWUP].flags] == ["segment_warning", "dicom_failed"]
    assert [f["message"] for f in cases[pair_id].flags] == ["large repositioning"]
    svc = ReviewService(qa_out, reviewer="dr.m")
    detail = svc.detail(pair_id)
    assert detail["baseline_case"] == BASELINE and "delta" in detail["volumes"]
    ref = labels_of(qa_out)
    result = svc.correct(BASELINE, nifti_bytes(np.asarray(ref.dataobj), ref.affine), expected_version=0)
    assert [p["pair"] for p in result["pairs"]] == [pair_id] and result["pairs"][0]["recomputed"]
    assert (pair_dir / "MR" / "corrected" / "v1" / "change.csv").is_file()
    assert result["correction"]["report"] == "report.html" and result["pairs"][0]["report"] == "report.html"
    assert (qa_out / SUBJECT / "baseline" / "MR" / "corrected" / "v1" / "report.html").is_file()
    assert (pair_dir / "MR" / "corrected" / "v1" / "report.html").is_file()
    assert pair_id in discover_cases(qa_out)[0]  # the corrected/ folder is not mistaken for a modality


def test_broken_manifest_is_ignored(qa_out: Path) -> None:
    (qa_out / "koaimg_manifest.sqlite").write_bytes(b"not a database")
    cases, _ = discover_cases(qa_out)
    assert BASELINE in cases and cases[BASELINE].flags[0]["code"] == "low_contrast"
