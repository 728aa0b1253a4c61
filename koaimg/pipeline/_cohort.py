"""``koaimg cohort``: trial statistics over every pair result of a cohort, written as tidy CSVs and one HTML table."""

from __future__ import annotations

import csv
import html
import math
import platform
from pathlib import Path

from .. import __version__
from ..change._stats import (
    ARM_COLUMNS,
    CONTRAST_COLUMNS,
    TRANSITION_COLUMNS,
    CohortResult,
    cohort_statistics,
)
from ..core import KoaimgError, UnreadableFileError
from ..export import write_json, write_rows_csv
from ..io import atomic_write_text


class AllocationError(KoaimgError, ValueError):
    """The allocation table cannot be used (missing columns, duplicate subjects, no subjects)."""

    code = "bad_allocation"


#: endpoints shown in cohort.html (all endpoints are in the CSVs): plate/knee level and ultrasound sites
HTML_REGIONS = ("all", "mean", "LC", "IN", "MC", "FTJ")


def read_allocation(path: Path) -> dict[str, str]:
    """subject -> arm from a CSV with ``subject`` and ``arm`` columns."""
    if not path.is_file():
        raise UnreadableFileError("allocation table not found", path=path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"subject", "arm"} <= set(reader.fieldnames):
            raise AllocationError("the allocation table needs the columns subject and arm", path=path,
                                  hint="one row per randomised subject: subject,arm")
        out: dict[str, str] = {}
        for row in reader:
            subject, arm = row["subject"].strip(), row["arm"].strip()
            if subject in out and out[subject] != arm:
                raise AllocationError(f"subject {subject} is allocated to two arms", path=path)
            out[subject] = arm
    if not out:
        raise AllocationError("the allocation table lists no subjects", path=path)
    return out


def collect_change_rows(results_dir: Path, subjects: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Every ``results_dir/<subject>/change_*/change.csv`` row (sorted by folder), and notes on what is missing."""
    rows, notes = [], []
    folders = sorted(results_dir.glob("*/change_*/change.csv"))
    found = set()
    for path in folders:
        with path.open(newline="") as fh:
            part = list(csv.DictReader(fh))
        for r in part:
            r["subject"] = r.get("subject") or path.parent.parent.name
        found.update(r["subject"] for r in part)
        rows.extend(part)
    if subjects is not None:
        missing = [s for s in subjects if s not in found]
        if missing:
            notes.append(f"{len(missing)} allocated subject(s) have no change.csv (not analysed): "
                         + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return rows, notes


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if abs(value) < 10 ** -digits and value != 0:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def cohort_html(result: CohortResult, *, title: str = "koaimg cohort analysis") -> str:
    """One self-contained HTML page (no external resources): per-arm table, between-arm table, grade changes."""
    def mean_sd(r, a):
        if r.get(a + "_mean") is None:
            return ""
        sd = _fmt(r.get(a + "_sd"))
        return f"{_fmt(r.get(a + '_mean'))} ± {sd}" if sd else _fmt(r.get(a + "_mean"))

    def first_us(rows):  # the ultrasound endpoint (the trial's primary) first, then MR
        return sorted(rows, key=lambda r: r["modality"] != "US")

    shown = first_us([r for r in result.arm_rows if r["region"] in HTML_REGIONS and ".OV" not in r["metric"]])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;font-size:13px;margin:16px}table{border-collapse:collapse;margin:8px 0 20px}"
             "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}th{background:#eee}"
             "td.l,th.l{text-align:left}.flag{color:#a00}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<p>Δ = follow-up − baseline; positive thickness Δ = thickening; names ending in _pos_worse: positive = "
             "worse. SRM = mean Δ / SD Δ. 95 % CI t-based. Between arms: ANCOVA follow-up ~ baseline + arm "
             "(adjusted difference arm A − arm B), Welch t and Mann–Whitney U on Δ. Full tables: cohort.csv, "
             "contrasts.csv, transitions.csv, grade_changes.csv.</p>",
             "<h2>Per arm</h2><table><tr><th class=l>endpoint</th><th class=l>arm</th><th>n</th><th>baseline</th>"
             "<th>follow-up</th><th>Δ mean ± SD</th><th>95 % CI</th><th>median [IQR]</th><th>SRM</th><th>p within</th>"
             "<th>beyond SDD</th><th class=l>flag</th></tr>"]
    for r in shown:
        name = f"{r['modality']} {r['structure']} {r['scheme']} {r['region']} {r['metric']} ({r['unit']})"
        beyond = "" if r.get("n_beyond_sdd") is None else f"{r['n_beyond_sdd']} ({_fmt(r['pct_beyond_sdd'], 0)} %)"
        parts.append(
            f"<tr><td class=l>{html.escape(name)}</td><td class=l>{html.escape(r['arm'])}</td>"
            f"<td>{r['n_analysed']}/{r['n_randomised']}</td><td>{mean_sd(r, 'baseline')}</td>"
            f"<td>{mean_sd(r, 'followup')}</td><td>{mean_sd(r, 'delta')}</td>"
            f"<td>{_fmt(r.get('delta_ci95_low'))} to {_fmt(r.get('delta_ci95_high'))}</td>"
            f"<td>{_fmt(r.get('delta_median'))} [{_fmt(r.get('delta_q1'))}, {_fmt(r.get('delta_q3'))}]</td>"
            f"<td>{_fmt(r.get('srm'), 2)}</td><td>{_fmt(r.get('p_within_t'), 4)}</td><td>{beyond}</td>"
            f"<td class='l flag'>{html.escape(r.get('flag') or '')}</td></tr>")
    parts.append("</table><h2>Between arms</h2><table><tr><th class=l>endpoint</th><th class=l>A − B</th>"
                 "<th>ANCOVA diff</th><th>95 % CI</th><th>p ANCOVA</th><th>Δ diff</th><th>p Welch</th>"
                 "<th>p Mann–Whitney</th><th>Hodges–Lehmann</th><th>Hedges g</th></tr>")
    for r in first_us(result.contrast_rows):
        if r["region"] not in HTML_REGIONS or ".OV" in r["metric"]:
            continue
        name = f"{r['modality']} {r['structure']} {r['scheme']} {r['region']} {r['metric']} ({r['unit']})"
        parts.append(
            f"<tr><td class=l>{html.escape(name)}</td><td class=l>{html.escape(r['arm_a'])} − "
            f"{html.escape(r['arm_b'])}</td><td>{_fmt(r.get('ancova_diff_a_minus_b'))}</td>"
            f"<td>{_fmt(r.get('ancova_ci95_low'))} to {_fmt(r.get('ancova_ci95_high'))}</td>"
            f"<td>{_fmt(r.get('p_ancova'), 4)}</td><td>{_fmt(r.get('delta_diff_a_minus_b'))}</td>"
            f"<td>{_fmt(r.get('p_welch'), 4)}</td><td>{_fmt(r.get('p_mannwhitney'), 4)}</td>"
            f"<td>{_fmt(r.get('hodges_lehmann_a_minus_b'))}</td><td>{_fmt(r.get('hedges_g'), 2)}</td></tr>")
    parts.append("</table><h2>MOAKS cartilage grades: knees with any change</h2><table><tr><th class=l>arm</th>"
                 "<th class=l>vs</th><th class=l>outcome</th><th>knees</th><th>with</th><th>%</th>"
                 "<th>p Fisher</th></tr>")
    for r in result.grade_rows:
        parts.append(f"<tr><td class=l>{html.escape(r['arm'])}</td><td class=l>{html.escape(r['arm_b'])}</td>"
                     f"<td class=l>{r['outcome']}</td><td>{r['n_knees']}</td><td>{r['n_with']}</td>"
                     f"<td>{_fmt(r['pct_with'], 1)}</td><td>{_fmt(r['p_fisher'], 4)}</td></tr>")
    parts.append("</table>")
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) + "</ul>")
    parts.append(f"<p>koaimg {html.escape(__version__)}</p></body></html>")
    return "\n".join(parts)


def run_cohort(allocation_csv: Path, results_dir: Path, out_dir: Path, *, arms: list[str] | None = None,
               endpoints: list[tuple] | None = None) -> Path:
    """Read the allocation and every pair's ``change.csv`` under ``results_dir``; write ``cohort.csv`` (per endpoint
    and arm), ``contrasts.csv`` (between arms), ``transitions.csv``, ``grade_changes.csv``, ``cohort.html`` and
    ``cohort.json`` into ``out_dir``."""
    allocation_csv, results_dir, out_dir = Path(allocation_csv), Path(results_dir), Path(out_dir)
    allocation = read_allocation(allocation_csv)
    rows, notes = collect_change_rows(results_dir, list(allocation))
    if not rows:
        raise UnreadableFileError("no change.csv found under <subject>/change_*/", path=results_dir,
                                  hint="run `koaimg change` for each subject first")
    result = cohort_statistics(rows, allocation, arms=arms, endpoints=endpoints)
    result.notes[:0] = notes
    out_dir.mkdir(parents=True, exist_ok=True)
    for table in (result.arm_rows, result.contrast_rows, result.grade_rows):
        for row in table:  # undefined statistics are empty cells, not "nan"
            row.update({k: None for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)})
            # p-values with significant digits (the CSV writer rounds floats to 6 decimals: p < 5e-7 would read 0)
            row.update({k: f"{v:.3g}" for k, v in row.items() if k.startswith("p_") and isinstance(v, float)})
    write_rows_csv(result.arm_rows, out_dir / "cohort.csv", columns=ARM_COLUMNS)
    write_rows_csv(result.contrast_rows, out_dir / "contrasts.csv", columns=CONTRAST_COLUMNS)
    write_rows_csv(result.transition_rows, out_dir / "transitions.csv", columns=TRANSITION_COLUMNS)
    write_rows_csv(result.grade_rows, out_dir / "grade_changes.csv",
                   columns=("arm", "arm_b", "outcome", "n_knees", "n_with", "pct_with", "p_fisher"))
    atomic_write_text(out_dir / "cohort.html", cohort_html(result))
    write_json({"koaimg": __version__, "python": platform.python_version(), "allocation": str(allocation_csv),
                "results_dir": str(results_dir), "arms": result.arms, "n_subjects": len(allocation),
                "n_change_rows": len(rows), "notes": result.notes,
                "methods": {"within_arm": "paired t on delta (Wilcoxon signed-rank as check); SRM = mean/SD",
                            "between_arms": "ANCOVA follow-up ~ baseline + arm (OLS); Welch t and Mann-Whitney U "
                                            "on delta; Hodges-Lehmann shift; Hedges g",
                            "grades": "transition counts per arm; Fisher exact on knees with any change",
                            "sign": "delta = follow-up - baseline; _pos_worse: positive = worse"}},
               out_dir / "cohort.json")
    return out_dir
