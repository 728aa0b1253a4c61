"""The batch engine in one process: outputs in the DESIGN layout, resume, force, unavailable components, bad scans,
a full disk and a read-only output folder."""

from __future__ import annotations

import csv
import errno
import json
import sqlite3

import pytest

import koaimg.pipeline._stages as stages
from koaimg.pipeline import RunOptions, read_manifest, run_batch, run_study
from koaimg.pipeline._manifest import MANIFEST_NAME, ManifestError

QUICK = ("dicom", "report", "pair_report", "cohort_report")


def _opts(**kw) -> RunOptions:
    kw.setdefault("workers", 0)
    kw.setdefault("skip", QUICK)
    return RunOptions(**kw)


def _status(summary) -> dict[tuple[str, str], str]:
    return {(r.unit, r.stage): r.status for r in summary.records}


def test_run_layout_resume_and_force(mr_trial, tmp_path, tools):
    out = tmp_path / "out"
    first = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False),
                      labels_dir=mr_trial / "ground_truth")
    status = _status(first)
    for visit in ("baseline", "month6"):
        assert status[(f"KOA-001/{visit}/MR", "measure")] == "done"
        folder = out / "KOA-001" / visit / "MR"
        for name in ("labels.nii.gz", "thickness.nii.gz", "regions.nii.gz", "measures.csv", "moaks.json",
                     "provenance.json"):
            assert (folder / name).is_file(), name
        with (folder / "measures.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert {r["subject"] for r in rows} == {"KOA-001"} and {r["visit"] for r in rows} == {visit}
    assert status[("KOA-001/baseline/MR", "dicom")] == "skipped"
    assert (out / MANIFEST_NAME).is_file() and not tools.leftovers(out)
    hashes = tools.output_hashes(out)

    again = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False, resume=True),
                      labels_dir=mr_trial / "ground_truth")
    ran = {(r.unit, r.stage) for r in again.records if (r.unit, r.stage) not in again.reused and r.status == "done"}
    assert not ran, f"a resumed run with nothing changed must reuse everything, ran {ran}"
    assert tools.output_hashes(out) == hashes

    forced = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False, resume=True, force=("measure",)),
                       labels_dir=mr_trial / "ground_truth")
    redone = {(r.unit, r.stage) for r in forced.records if (r.unit, r.stage) not in forced.reused}
    assert ("KOA-001/baseline/MR", "measure") in redone and ("KOA-001/baseline/MR", "segment") not in redone
    assert tools.output_hashes(out) == hashes, "re-running a deterministic stage gives the same files"

    # a changed input (new labels) invalidates segment and everything after it, nothing else
    labels = mr_trial / "ground_truth" / "KOA-001" / "month6" / "MR" / "labels.nii.gz"
    labels.write_bytes((mr_trial / "ground_truth" / "KOA-001" / "baseline" / "MR" / "labels.nii.gz").read_bytes())
    changed = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False, resume=True),
                        labels_dir=mr_trial / "ground_truth")
    redone = {(r.unit, r.stage) for r in changed.records if (r.unit, r.stage) not in changed.reused}
    assert ("KOA-001/month6/MR", "segment") in redone and ("KOA-001/month6/MR", "measure") in redone
    assert ("KOA-001/baseline/MR", "segment") not in redone


def test_unavailable_components_are_recorded(trial, tmp_path, monkeypatch):
    monkeypatch.setitem(stages.COMPONENTS, "segment_volume", ("koaimg.no_model_here", "segment_volume", "issue 5"))
    monkeypatch.setitem(stages.COMPONENTS, "run_change", ("koaimg.pipeline", "no_such_function", "change, issue 6"))
    monkeypatch.setitem(stages.COMPONENTS, "measure_ultrasound_file",
                        ("koaimg.no_such_module", "measure_ultrasound_file", "ultrasound, issue 7"))
    out = tmp_path / "out"
    summary = run_study(trial / "KOA-001", out, _opts(command="run", cohort=False))  # no labels, no model
    by = {(r.unit, r.stage): r for r in summary.records}
    seg = by[("KOA-001/baseline/MR", "segment")]
    assert seg.status == "unavailable" and seg.reason.startswith("unavailable:")
    assert by[("KOA-001/baseline/MR", "measure")].status == "skipped"
    assert "needs segment" in by[("KOA-001/baseline/MR", "measure")].reason
    us = by[("KOA-001/baseline/US", "measure")]
    assert us.status == "unavailable" and "ultrasound, issue 7" in us.reason
    assert by[("KOA-001/change_baseline_month6", "change")].status == "unavailable"
    assert summary.exit_code == 0  # missing components degrade with a reason; they are not failures
    rows = read_manifest(out)
    assert {r["status"] for r in rows} >= {"unavailable", "skipped", "done"}


def test_corrupted_scan_among_good_ones(mr_trial, tmp_path, tools):
    victim = sorted((mr_trial / "KOA-002" / "baseline" / "MR").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:300])  # a truncated copy
    out = tmp_path / "out"
    summary = run_batch(mr_trial, out, _opts(), labels_dir=mr_trial / "ground_truth")
    status = _status(summary)
    assert status[("KOA-002/baseline/MR", "ingest")] == "failed"
    assert status[("KOA-002/baseline/MR", "measure")] == "skipped"
    for unit in ("KOA-001/baseline/MR", "KOA-001/month6/MR", "KOA-002/month6/MR"):
        assert status[(unit, "measure")] == "done", unit
    assert status[("KOA-001/change_baseline_month6", "change")] == "done"
    assert summary.exit_code == 1
    failed = next(r for r in summary.records if r.status == "failed")
    assert failed.unit == "KOA-002/baseline/MR" and "\n" not in failed.reason and "missing" in failed.reason
    assert any(victim.name in text for _, text in summary.problems)
    assert not (out / "KOA-002" / "baseline" / "MR" / "measures.csv").exists()
    assert not tools.leftovers(out)


def _fail_writes(monkeypatch, after: int = 0):
    """Every atomic write (after the first ``after``) fails like a full disk, leaving its temp file to clean up."""
    import contextlib
    import sys

    from koaimg.io import _atomic

    real = _atomic.atomic_path
    count = {"n": 0}

    @contextlib.contextmanager
    def full_disk(path):
        with real(path) as tmp:
            count["n"] += 1
            if count["n"] > after:
                tmp.write_bytes(b"half")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            yield tmp

    def full_disk_bytes(path, data):
        with full_disk(path) as tmp:
            tmp.write_bytes(data)
        return path

    for name, module in list(sys.modules.items()):
        if name.startswith("koaimg") and module is not None:
            if getattr(module, "atomic_path", None) is real:
                monkeypatch.setattr(module, "atomic_path", full_disk)
            if getattr(module, "atomic_write_bytes", None) is _atomic.atomic_write_bytes:
                monkeypatch.setattr(module, "atomic_write_bytes", full_disk_bytes)
    monkeypatch.setattr(_atomic, "atomic_write_bytes", full_disk_bytes)


def test_full_disk_fails_cleanly_and_resumes(mr_trial, tmp_path, tools, monkeypatch):
    import shutil

    out = tmp_path / "out"
    run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False), labels_dir=mr_trial / "ground_truth")
    reference = tools.output_hashes(out)  # same OUT path: some outputs record their folder
    shutil.rmtree(out)
    with monkeypatch.context() as m:
        _fail_writes(m)
        summary = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False),
                            labels_dir=mr_trial / "ground_truth")
    failed = [r for r in summary.records if r.status == "failed"]
    assert failed and all("disk full" in r.reason and "ENOSPC" in r.reason for r in failed)
    assert summary.exit_code == 1
    assert not tools.leftovers(out), "no temp files or staging folders after a failed write"
    for folder in (out / "KOA-001").rglob("*"):
        if folder.is_file() and not folder.name.startswith(".koaimg-"):  # unit lock files are empty by design
            assert folder.stat().st_size > 0
    assert not list(out.rglob("measures.csv")), "a stage that failed to write leaves none of its files"
    resumed = run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False, resume=True),
                        labels_dir=mr_trial / "ground_truth")
    assert resumed.exit_code == 0
    assert tools.output_hashes(out) == reference


def test_read_only_output_folder(mr_trial, tmp_path):
    import os
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True).returncode == 0
    else:
        ro.chmod(0o555)
    if os.geteuid() == 0 and not mounted:
        pytest.skip("running as root without permission to mount a read-only file system")
    try:
        with pytest.raises(ManifestError, match="not writable") as info:
            run_study(mr_trial / "KOA-001", ro / "out", _opts(command="run", cohort=False),
                      labels_dir=mr_trial / "ground_truth")
        assert "\n" not in info.value.one_line()
        assert not any(ro.iterdir())
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)


def test_unwritable_scan_folder_is_recorded(mr_trial, tmp_path, monkeypatch):
    """A folder that refuses writes mid-run (EROFS) fails that scan with a clear reason; the others finish."""
    import tempfile

    real = tempfile.mkdtemp

    def refuse(*args, **kwargs):
        if "month6" in str(kwargs.get("dir", "")):
            raise OSError(errno.EROFS, "Read-only file system", str(kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(stages.tempfile, "mkdtemp", refuse)
    summary = run_study(mr_trial / "KOA-001", tmp_path / "out", _opts(command="run", cohort=False),
                        labels_dir=mr_trial / "ground_truth")
    status = _status(summary)
    assert status[("KOA-001/baseline/MR", "measure")] == "done"
    bad = next(r for r in summary.records if r.unit == "KOA-001/month6/MR" and r.stage == "ingest")
    assert bad.status == "failed" and "not writable" in bad.reason and "EROFS" in bad.reason
    assert summary.exit_code == 1


def test_manifest_contents(mr_trial, tmp_path):
    out = tmp_path / "out"
    run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False), labels_dir=mr_trial / "ground_truth")
    db = sqlite3.connect(out / MANIFEST_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    units = db.execute("SELECT unit, kind, n_files, input_hash FROM units ORDER BY unit").fetchall()
    assert [u[0] for u in units][:2] == ["KOA-001/baseline/MR", "KOA-001/change_baseline_month6"]
    assert all(len(u[3]) == 64 for u in units if u[1] == "scan")
    versions, outputs = db.execute("SELECT versions, outputs FROM stages WHERE unit='KOA-001/baseline/MR' AND "
                                   "stage='measure'").fetchone()
    assert json.loads(versions)["koaimg"]
    assert "measures.csv" in json.loads(outputs)
    text = "\n".join(str(row) for row in db.execute("SELECT * FROM stages").fetchall())
    assert str(mr_trial) not in text, "no user paths in the manifest"
    db.close()


def test_ultrasound_scans_are_measured_and_paired(trial, tmp_path):
    """MR and US of a subject: US sites measured, change.csv holds both modalities (US Δ close to the truth)."""
    pytest.importorskip("koaimg.pipeline._ultrasound")
    out = tmp_path / "out"
    summary = run_study(trial / "KOA-001", out, _opts(command="run", cohort=False),
                        labels_dir=trial / "ground_truth")
    status = _status(summary)
    if status[("KOA-001/baseline/US", "measure")] == "unavailable":
        pytest.skip("ultrasound measurement has not landed")
    assert status[("KOA-001/baseline/US", "measure")] == "done"
    assert (out / "KOA-001" / "baseline" / "US" / "measures.csv").is_file()
    with (out / "KOA-001" / "change_baseline_month6" / "change.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["modality"] for r in rows} == {"MR", "US"}
    truth = json.loads((trial / "ground_truth" / "KOA-001" / "month6" / "US" / "truth.json").read_text())
    base = json.loads((trial / "ground_truth" / "KOA-001" / "baseline" / "US" / "truth.json").read_text())
    true_mean = sum(truth["sites"][s]["mean_thickness_mm"] - base["sites"][s]["mean_thickness_mm"]
                    for s in ("LC", "IN", "MC")) / 3
    measured = next(float(r["delta"]) for r in rows if r["modality"] == "US" and r["region"] == "mean"
                    and r["metric"] == "thickness")
    assert abs(measured - true_mean) < 0.15


def test_one_run_per_output_folder(mr_trial, tmp_path):
    from koaimg.pipeline._batch import _OutLock

    out = tmp_path / "out"
    out.mkdir()
    with _OutLock(out), pytest.raises(ManifestError, match="another koaimg run"):
        run_study(mr_trial / "KOA-001", out, _opts(command="run", cohort=False))


def test_bad_arguments_are_one_line_errors(mr_trial, tmp_path):
    from koaimg.core import KoaimgError
    from koaimg.pipeline._batch import expand_force

    assert expand_force(("export", "measure")) == {"report", "dicom", "pair_report", "cohort_report", "measure"}
    with pytest.raises(KoaimgError, match="unknown stage 'mesure'"):
        expand_force(("mesure",))
    empty = tmp_path / "empty"
    (empty / "P1" / "baseline").mkdir(parents=True)
    (empty / "P1" / "baseline" / "notes.txt").write_text("no scans here")
    with pytest.raises(KoaimgError, match="no MR or US scan found"):
        run_batch(empty, tmp_path / "out", _opts())
    assert not (tmp_path / "out").exists()


def test_recover_tidies_an_interrupted_swap(tmp_path):
    from koaimg.pipeline._stages import recover

    visit = tmp_path / "S1" / "baseline"
    (visit / ".MR.old-abc123").mkdir(parents=True)
    (visit / ".MR.old-abc123" / "measures.csv").write_text("complete\n")
    (visit / ".MR.staging-abc123").mkdir()
    (visit / ".MR.staging-abc123" / "measures.csv").write_text("half")
    (visit / "US").mkdir()
    (visit / "US" / ".measures.csv.x1.part.csv").write_text("half")
    (visit / ".US.old-zzz").mkdir()  # final exists: the moved-aside copy is stale
    actions = recover(tmp_path)
    assert (visit / "MR" / "measures.csv").read_text() == "complete\n"
    assert sorted(p.name for p in visit.iterdir()) == ["MR", "US"]
    assert not any((visit / "US").iterdir())
    assert any("restored" in a for a in actions)


@pytest.mark.slow
def test_segmentation_model_is_used_without_labels(mr_trial, tmp_path):
    """No label maps given: the shipped segmentation bundle segments, and its version is recorded."""
    from koaimg.pipeline._batch import _model_status

    usable, reason, version = _model_status(None)
    if not usable:
        pytest.skip(f"no usable segmentation model: {reason}")
    summary = run_study(mr_trial / "KOA-001", tmp_path / "out", _opts(command="run", cohort=False))
    seg = next(r for r in summary.records if r.unit == "KOA-001/baseline/MR" and r.stage == "segment")
    assert seg.status == "done" and seg.info["labels"] == "model" and seg.versions["model"] == version
    assert _status(summary)[("KOA-001/baseline/MR", "measure")] in ("done", "failed")


def test_a_correction_stored_during_a_rerun_of_its_unit_survives_the_swap(mr_trial, tmp_path, monkeypatch, tools):
    """The QA app may store a corrected version while a batch job rebuilds that unit; the swap must keep it."""
    from koaimg.io._locks import unit_lock

    out = tmp_path / "out"
    opts = dict(command="run", cohort=False)
    run_study(mr_trial / "KOA-001", out, _opts(**opts), labels_dir=mr_trial / "ground_truth")
    unit = out / "KOA-001" / "baseline" / "MR"
    (unit / "corrected" / "v1").mkdir(parents=True)
    (unit / "corrected" / "v1" / "labels.nii.gz").write_bytes(b"v1")  # stored before the re-run: copied with the unit

    real_crash_point = stages.crash_point

    arrived = []

    def review_arrives(name: str) -> None:  # once, after the job copied the unit, before its swap
        if name == "stage:measure" and not arrived and any(unit.parent.glob(".MR.staging-*")):
            with unit_lock(unit):
                (unit / "corrected" / "v2").mkdir()
                (unit / "corrected" / "v2" / "labels.nii.gz").write_bytes(b"v2")
            arrived.append(name)
        real_crash_point(name)

    monkeypatch.setattr(stages, "crash_point", review_arrives)
    run_study(mr_trial / "KOA-001", out, _opts(**opts, resume=True, force=("measure",)),
              labels_dir=mr_trial / "ground_truth")
    assert arrived, "the correction was stored while the unit's job was running"
    assert (unit / "corrected" / "v1" / "labels.nii.gz").read_bytes() == b"v1"
    assert (unit / "corrected" / "v2" / "labels.nii.gz").read_bytes() == b"v2"
    assert (unit / "measures.csv").is_file() and not tools.leftovers(out)
