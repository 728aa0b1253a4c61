"""Cohort HTML report: per-arm change table and box/strip plots of every knee's change, from the cohort CSVs.

Tolerant by design: the per-knee table is any CSV in the cohort folder with ``subject``, ``arm`` and ``delta``
columns; failing that, the pairs' ``change.csv`` files under the results folder joined with an allocation CSV
(``subject, arm``). Any other CSV there (per-arm statistics, between-arm tests) is shown as a table.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..core import UnreadableFileError
from ._plots import box_strip_figure
from ._report_html import Cell, Row, Section, Table, figure, fmt, num, read_csv, render_report
from ._report_pair import beyond

_PRIMARY = (("US", "ultrasound_femoral_cartilage", "mean", "thickness"),
            ("MR", "femoral_cartilage", "all", "ThCtAB.Me"),
            ("MR", "femoral_cartilage", "FMC", "ThCtAB.Me"),
            ("MR", "femoral_cartilage", "FLC", "ThCtAB.Me"),
            ("MR", "tibial_cartilage", "all", "ThCtAB.Me"),
            ("MR", "patellar_cartilage", "all", "ThCtAB.Me"))
_MAX_PLOTS = 6
_MAX_TABLE_ROWS = 200


def _header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


def _allocation(cohort_dir: Path) -> dict[str, str]:
    for folder in (cohort_dir, cohort_dir.parent, cohort_dir.parent.parent):
        for path in sorted(folder.glob("*.csv")):
            head = {h.lower() for h in _header(path)}
            if {"subject", "arm"} <= head and "delta" not in head:
                return {r["subject"]: r["arm"] for r in read_csv(path)}
    return {}


def per_knee_rows(cohort_dir: Path) -> tuple[list[dict], str]:
    """Tidy change rows with an ``arm`` column, and where they came from."""
    for path in sorted(cohort_dir.glob("*.csv")):
        if {"subject", "arm", "delta"} <= set(_header(path)):
            return read_csv(path), path.name
    allocation = _allocation(cohort_dir)
    rows = []
    pairs = sorted(cohort_dir.parent.glob("*/change_*/change.csv")) or sorted(cohort_dir.glob("*/change_*/change.csv"))
    for path in pairs:
        for r in read_csv(path):
            arm = allocation.get(r.get("subject", ""))
            if arm is not None:
                rows.append({**r, "arm": arm})
    return rows, "change.csv files of the pairs joined with the allocation"


def _endpoint_name(key: tuple[str, str, str, str]) -> str:
    modality, structure, region, metric = key
    plate = structure.replace("ultrasound_", "").replace("_", " ")
    where = "" if region in ("all", "mean") else f" {region}"
    return f"{modality} {plate}{where} {'mean ' if region == 'mean' else ''}{metric}"


def arm_summary(values: list[dict]) -> dict:
    """n, baseline/follow-up/Δ mean ± SD, t-based 95 % CI of Δ, median [IQR], SRM and n beyond SDD."""
    from scipy import stats

    delta = np.array([num(v.get("delta")) for v in values if num(v.get("delta")) is not None], float)
    base = np.array([num(v.get("baseline")) for v in values if num(v.get("baseline")) is not None], float)
    follow = np.array([num(v.get("followup")) for v in values if num(v.get("followup")) is not None], float)
    n = len(delta)
    out = {"n": n, "baseline": _msd(base), "followup": _msd(follow), "delta": _msd(delta)}
    if n >= 2:
        sd = float(delta.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out["ci"] = (float(delta.mean()) - half, float(delta.mean()) + half)
        out["srm"] = float(delta.mean()) / sd if sd > 0 else float("nan")
    q1, med, q3 = np.percentile(delta, [25, 50, 75]) if n else (float("nan"),) * 3
    out["median"] = (float(med), float(q1), float(q3))
    out["beyond"] = sum(1 for v in values if beyond(v.get("beyond_sdd")))
    return out


def _msd(x: np.ndarray) -> str:
    if len(x) == 0:
        return "–"
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def _generic_table(path: Path) -> Table:
    rows = read_csv(path)
    columns = list(rows[0]) if rows else _header(path)
    body = []
    for r in rows[:_MAX_TABLE_ROWS]:
        cells = []
        for c in columns:
            value = r.get(c, "")
            x = num(value)
            cells.append(Cell(value if x is None or value.strip().isdigit() else f"{x:.4g}",
                              css="l" if x is None else ""))
        body.append(Row(cells))
    caption = path.name + (f" (first {_MAX_TABLE_ROWS} of {len(rows)} rows)" if len(rows) > _MAX_TABLE_ROWS else "")
    return Table(columns, body, caption=caption)


def write_cohort_report(cohort_dir: str | Path, *, path: str | Path | None = None) -> Path:
    """Write ``cohort_dir/report.html``: per-arm summary of each endpoint's change, box/strip plots per arm, and
    the cohort stage's own tables."""
    cohort_dir = Path(cohort_dir)
    if not cohort_dir.is_dir():
        raise UnreadableFileError("not a folder", path=cohort_dir, hint="pass the cohort output folder")
    rows, origin = per_knee_rows(cohort_dir)
    other_csvs = [p for p in sorted(cohort_dir.glob("*.csv")) if p.name != origin]
    if not rows and not other_csvs:
        raise UnreadableFileError("no cohort tables found (no CSV with subject, arm, delta and no change.csv files)",
                                  path=cohort_dir, hint="run `koaimg cohort ALLOCATION.csv RESULTS_DIR` first")
    by_endpoint: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r.get("modality", ""), r.get("structure", ""), r.get("region", ""), r.get("metric", ""))
        by_endpoint[key][r.get("arm", "")].append(r)
    endpoints = [k for k in _PRIMARY if k in by_endpoint]
    arms = sorted({r.get("arm", "") for r in rows})
    subjects = {r.get("subject") for r in rows}
    sections = []
    summary_rows = []
    for key in endpoints:
        for arm in arms:
            values = by_endpoint[key].get(arm, [])
            if not values:
                continue
            s = arm_summary(values)
            ci = s.get("ci")
            med = s["median"]
            summary_rows.append(Row([
                Cell(_endpoint_name(key), css="l"), Cell(arm, css="l"), Cell(str(s["n"])), Cell(s["baseline"]),
                Cell(s["followup"]), Cell(s["delta"]),
                Cell("–" if ci is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}"),
                Cell(f"{med[0]:+.3f} [{med[1]:+.3f}, {med[2]:+.3f}]"), Cell(fmt(s.get("srm"), 2, signed=True)),
                Cell(f"{s['beyond']} ({100 * s['beyond'] / max(s['n'], 1):.0f} %)")]))
    if summary_rows:
        sections.append(Section("arms", "Per-arm change", tables=[Table(
            ["endpoint", "arm", "n", "baseline mean ± SD", "follow-up mean ± SD", "Δ mean ± SD", "95 % CI of Δ",
             "median [IQR] of Δ", "SRM", "beyond SDD"], summary_rows)],
            note="Computed by the report from the per-knee rows (" + origin + "); Δ = follow-up − baseline in the "
                 "endpoint's unit (mm); SRM = mean Δ / SD of Δ; CI t-based. Between-arm tests (ANCOVA of follow-up on "
                 "baseline and arm, Welch, Mann–Whitney) are in the cohort tables below when present."))
    figs = []
    for key in endpoints[:_MAX_PLOTS]:
        groups = {arm: [num(v.get("delta")) for v in by_endpoint[key].get(arm, []) if num(v.get("delta")) is not None]
                  for arm in arms}
        unit = next((v.get("unit") for vs in by_endpoint[key].values() for v in vs if v.get("unit")), "mm")
        figs.append(figure(box_strip_figure(groups, title=_endpoint_name(key), ylabel=f"Δ ({unit})"),
                           f"{_endpoint_name(key)}: change per knee by arm (box: median and IQR; points: knees)."))
    if figs:
        sections.append(Section("plots", "Change per arm", figures=figs))
    tables = [_generic_table(p) for p in other_csvs]
    if tables:
        sections.append(Section("tables", "Cohort tables", tables=tables))
    meta = [("subjects", str(len(subjects))), ("arms", str(len(arms))), ("endpoints", str(len(by_endpoint)))]
    if not sections:
        sections.append(Section("empty", "No change data", note="The cohort folder holds no per-knee change rows."))
    return render_report(Path(path) if path else cohort_dir / "report.html", title="Trial cohort report",
                         subtitle="Baseline → follow-up cartilage change by treatment arm", meta=meta,
                         sections=sections)
