"""Crash safety and executors: kill -9 at stage boundaries, mid-write, mid-swap and before the manifest commit, then
``--resume`` gives the same files as an uninterrupted run; a Dask cluster gives the same manifest as a local run."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from koaimg.pipeline import RunOptions, read_manifest, run_batch
from koaimg.pipeline._manifest import MANIFEST_NAME

QUICK = ("--skip", "dicom", "--skip", "report", "--skip", "pair_report", "--skip", "cohort", "--skip",
         "cohort_report")


def _batch_args(trial, out, *extra):
    return ("batch", str(trial), str(out), "--labels-dir", str(trial / "ground_truth"), "--no-progress", *QUICK,
            *extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, phantom_subject, tools):
    """One subject's export and the hashes of an uninterrupted run into ``out`` (removed again: every test runs into
    the same path, as some outputs record their folder)."""
    root = tmp_path_factory.mktemp("crash")
    trial = tools.make_trial(root / "export", phantom_subject, subjects=("KOA-001",), with_us=False)
    out = root / "out"
    proc = tools.koaimg_cli(*_batch_args(trial, out, "--workers", "0"), check=True)
    hashes = tools.output_hashes(out)
    rows = read_manifest(out)
    shutil.rmtree(out)
    return trial, out, hashes, rows, proc.returncode


def _check_resumed(tools, trial, out, hashes, rows, rc, *extra):
    resumed = tools.koaimg_cli(*_batch_args(trial, out, "--resume", *extra))
    assert resumed.returncode == rc, resumed.stderr[-2000:]
    assert tools.output_hashes(out) == hashes
    assert not tools.leftovers(out)
    assert read_manifest(out) == rows
    db = sqlite3.connect(out / MANIFEST_NAME)
    n, distinct = db.execute("SELECT count(*), count(DISTINCT unit || '/' || stage) FROM stages").fetchone()
    db.close()
    assert n == distinct == len(rows), "resuming never duplicates manifest rows"


@pytest.mark.parametrize("point,count,again", [
    ("stage:measure", 2, False),
    ("mid_write", 2, False),
    pytest.param("mid_swap", 1, True, marks=pytest.mark.slow),
    pytest.param("before_commit", 3, False, marks=pytest.mark.slow),
])
def test_kill_then_resume_gives_identical_outputs(reference, tools, point, count, again):
    """kill -9 at a stage boundary, half-way through writing a file, between the two renames that swap a redone
    scan folder into place (needs a finished run redone with --force), and after the swap but before the commit."""
    trial, out, hashes, rows, rc = reference
    shutil.rmtree(out, ignore_errors=True)
    extra = ("--workers", "0")
    if again:
        tools.koaimg_cli(*_batch_args(trial, out, *extra), check=True)
        extra = (*extra, "--resume", "--force", "measure")
    crashed = tools.koaimg_cli(*_batch_args(trial, out, *extra),
                               env={"KOAIMG_CRASH_AT": point, "KOAIMG_CRASH_COUNT": str(count)})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    _check_resumed(tools, trial, out, hashes, rows, rc, "--workers", "0")


def test_kill_two_workers_mid_batch_then_resume(reference, tools):
    """SIGKILL the whole process group of a 2-worker run once a few stages are recorded, then resume."""
    trial, out, hashes, rows, rc = reference
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "from koaimg.cli import main; main()", *_batch_args(trial, out, "--workers", "2")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                db = sqlite3.connect(f"file:{out / MANIFEST_NAME}?mode=ro", uri=True, timeout=1)
                done = db.execute("SELECT count(*) FROM stages WHERE status='done'").fetchone()[0]
                db.close()
            except sqlite3.Error:
                continue
            if done >= 3:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    _check_resumed(tools, trial, out, hashes, rows, rc, "--workers", "2")


def test_dask_cluster_gives_the_same_manifest(mr_trial, tmp_path, tools):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "out"
    skip = ("dicom", "report", "pair_report", "cohort_report")
    local = run_batch(mr_trial, out, RunOptions(workers=0, skip=skip), labels_dir=mr_trial / "ground_truth")
    local_rows, local_hashes = read_manifest(out), tools.output_hashes(out)
    shutil.rmtree(out)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c:
        remote = run_batch(mr_trial, out, RunOptions(workers=0, skip=skip, scheduler=c.scheduler_address),
                           labels_dir=mr_trial / "ground_truth")
    assert remote.executor == "dask"
    assert read_manifest(out) == local_rows
    assert tools.output_hashes(out) == local_hashes
    assert remote.exit_code == local.exit_code


def test_gpu_split_path_gives_the_same_outputs(mr_trial, tmp_path, tools, monkeypatch):
    """The job split used with a GPU worker (segment on one pool, the rest on another) changes nothing."""
    import koaimg.pipeline._batch as batch

    class FakeSegmentation:
        def __init__(self, labels):
            self.labels, self.probabilities, self.warnings = labels, None, []

    def fake_segment(volume, *, bundle=None, device="auto", probabilities=False):
        from koaimg.io import read_labels

        truth = mr_trial / "ground_truth" / "KOA-001" / "baseline" / "MR" / "labels.nii.gz"
        return FakeSegmentation(read_labels(truth))

    import koaimg.pipeline._stages as stages

    real_component = stages.component
    monkeypatch.setattr(batch, "_model_status", lambda bundle: (True, "", "fake-model-1"))
    monkeypatch.setattr(stages, "component",
                        lambda name: fake_segment if name == "segment_volume" else real_component(name))
    summary = run_batch(mr_trial, tmp_path / "out", RunOptions(workers=0, gpu_worker=True, skip=(
        "dicom", "report", "pair_report", "cohort", "cohort_report")))
    by = {(r.unit, r.stage): r for r in summary.records}
    seg = by[("KOA-001/baseline/MR", "segment")]
    assert seg.status == "done" and seg.info["labels"] == "model" and seg.versions["model"] == "fake-model-1"
    assert by[("KOA-001/baseline/MR", "measure")].status == "done"
