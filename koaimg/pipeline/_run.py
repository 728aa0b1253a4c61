"""``koaimg run`` (one subject's folder) and ``koaimg batch`` (a trial export): discover, then run the stage graph."""

from __future__ import annotations

from pathlib import Path

from ._batch import RunOptions, RunSummary, _Reporter, run_plan
from ._subjects import discover_batch, discover_study


def run_study(study_dir: str | Path, out: str | Path, options: RunOptions | None = None, *,
              subject: str | None = None, subject_from: str = "folder", overrides_csv: str | Path | None = None,
              labels_dir: str | Path | None = None, reporter: _Reporter | None = None) -> RunSummary:
    """All visits and modalities of one subject (``STUDY_DIR/<visit>/...``) into ``OUT/<subject>/...``."""
    options = options or RunOptions(command="run", cohort=False)
    plan = discover_study(study_dir, subject=subject, subject_from=subject_from, overrides_csv=overrides_csv,
                          labels_dir=labels_dir, skip=(out, labels_dir or ""))
    return run_plan(plan, out, options, reporter)


def run_batch(scan_root: str | Path, out: str | Path, options: RunOptions | None = None, *,
              subject_from: str = "folder", overrides_csv: str | Path | None = None,
              labels_dir: str | Path | None = None, reporter: _Reporter | None = None) -> RunSummary:
    """A whole export (``SCAN_ROOT/<subject>/<visit>/...``), its pairs and the cohort table."""
    options = options or RunOptions()
    plan = discover_batch(scan_root, subject_from=subject_from, overrides_csv=overrides_csv, labels_dir=labels_dir,
                          skip=(out, labels_dir or ""))
    return run_plan(plan, out, options, reporter)
