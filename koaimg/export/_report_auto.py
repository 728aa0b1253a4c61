"""Pick and (re)write the right report for a folder: a scan, a pair (change), a cohort, or a whole output tree."""

from __future__ import annotations

import csv
from pathlib import Path

from ..core import KoaimgError, UnreadableFileError, Volume


def report_kind(folder: str | Path) -> str | None:
    """``"pair"`` (change.csv), ``"scan"`` (measures.csv), ``"cohort"`` (cohort*.csv, or a CSV with ``arm`` and
    ``delta`` columns; an allocation table alone is not a cohort) or None."""
    folder = Path(folder)
    if (folder / "change.csv").is_file():
        return "pair"
    if (folder / "measures.csv").is_file():
        return "scan"
    for path in sorted(folder.glob("*.csv")):
        if path.name.startswith("cohort"):
            return "cohort"
        with open(path, newline="") as fh:
            if {"arm", "delta"} <= set(next(csv.reader(fh), [])):
                return "cohort"
    return None


def write_report(folder: str | Path, *, image: Volume | None = None) -> Path:
    """Write the report that fits ``folder`` (see ``report_kind``)."""
    from ._report_cohort import write_cohort_report
    from ._report_pair import write_pair_report
    from ._report_scan import write_scan_report

    kind = report_kind(folder)
    if kind == "pair":
        return write_pair_report(folder)
    if kind == "scan":
        return write_scan_report(folder, image=image)
    if kind == "cohort":
        return write_cohort_report(folder)
    raise UnreadableFileError("no measures.csv, change.csv or cohort table in this folder", path=folder,
                              hint="pass a scan, change_<bl>_<fu> or cohort output folder (or use --recursive)")


def write_reports_tree(root: str | Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every report under an output tree; returns the reports written and (folder, error) for those that failed."""
    root = Path(root)
    written, failed = [], []
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        if report_kind(folder) is None:
            continue
        try:
            written.append(write_report(folder))
        except (KoaimgError, OSError, ValueError) as exc:
            failed.append((folder, exc.one_line() if isinstance(exc, KoaimgError) else str(exc)))
    return written, failed
