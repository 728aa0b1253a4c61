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
from ._report_html import Cell, Row, Section, Table, figure, fmt, num, read_csv, read_json, render_report
from ._report_pair import beyond

_PRIMARY = (("US", "ultrasound_femoral_cartilage", "mean", "thickness"),
            ("MR", "femoral_cartilage", "all", "ThCtAB.Me"),
            ("MR", "femoral_cartilage", "FMC", "ThCtAB.Me"),
            ("MR", "femoral_cartilage", "FLC", "ThCtAB.Me"),
            ("MR", "tibial_cartilage", "all", "ThCtAB.Me"),
            ("MR", "patellar_cartilage", "all", "ThCtAB.Me"))
_MAX_PLOTS = 6
#: regions shown in the formatted per-arm and contrast tables (every region stays in the CSVs)
_TABLE_REGIONS = ("all", "mean", "LC", "IN", "MC")
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
    info = read_json(cohort_dir / "cohort.json")  # the cohort stage records its allocation and results folder
    allocation_path = Path(str(info.get("allocation", ""))) if info.get("allocation") else None
    if allocation_path is not None and allocation_path.is_file():
        allocation = {r["subject"]: r["arm"] for r in read_csv(allocation_path) if "subject" in r and "arm" in r}
    else:
        allocation = _allocation(cohort_dir)
    bases = [Path(str(info["results_dir"]))] if info.get("results_dir") else []
    bases += [cohort_dir.parent, cohort_dir]
    pairs: list[Path] = []
    for base in bases:
        pairs = sorted(base.glob("*/change_*/change.csv"))
        if pairs:
            break
    rows = []
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


def _arm_table_from_cohort_csv(rows: list[dict]) -> Table:
    """The cohort stage's per-arm statistics (cohort.csv), restricted to plate/knee-level and site endpoints."""
    body = []
    for r in rows:
        if r.get("region") not in _TABLE_REGIONS:
            continue
        key = (r.get("modality", ""), r.get("structure", ""), r.get("region", ""), r.get("metric", ""))
        ci = (num(r.get("delta_ci95_low")), num(r.get("delta_ci95_high")))
        body.append(Row([
            Cell(_endpoint_name(key), css="l"), Cell(r.get("arm", ""), css="l"),
            Cell(f"{r.get('n_analysed', '')}/{r.get('n_randomised', '')}"),
            Cell(_pm(r.get("baseline_mean"), r.get("baseline_sd"))),
            Cell(_pm(r.get("followup_mean"), r.get("followup_sd"))),
            Cell(_pm(r.get("delta_mean"), r.get("delta_sd"), signed=True)),
            Cell("–" if None in ci else f"{ci[0]:+.3f} to {ci[1]:+.3f}"),
            Cell(f"{fmt(r.get('delta_median'), 3, signed=True)} [{fmt(r.get('delta_q1'), 3, signed=True)}, "
                 f"{fmt(r.get('delta_q3'), 3, signed=True)}]"),
            Cell(fmt(r.get("srm"), 2, signed=True)), Cell(_p(r.get("p_within_t"))),
            Cell(f"{r.get('n_beyond_sdd', '')} ({fmt(r.get('pct_beyond_sdd'), 0)} %)"),
            Cell(str(r.get("flag", "")).split(":")[0], css="l thin" if r.get("flag") else "l",
                 title=str(r.get("flag", "")))]))
    return Table(["endpoint", "arm", "n", "baseline mean ± SD", "follow-up mean ± SD", "Δ mean ± SD", "95 % CI of Δ",
                  "median [IQR] of Δ", "SRM", "p (paired t)", "beyond SDD", "flag"], body, left=2)


def _contrast_table(rows: list[dict]) -> Table:
    body = []
    for r in rows:
        if r.get("region") not in _TABLE_REGIONS:
            continue
        key = (r.get("modality", ""), r.get("structure", ""), r.get("region", ""), r.get("metric", ""))
        low, high = num(r.get("ancova_ci95_low")), num(r.get("ancova_ci95_high"))
        body.append(Row([
            Cell(_endpoint_name(key), css="l"), Cell(f"{r.get('arm_a', '')} − {r.get('arm_b', '')}", css="l"),
            Cell(f"{r.get('n_a', '')}/{r.get('n_b', '')}"),
            Cell(fmt(r.get("ancova_diff_a_minus_b"), 3, signed=True)),
            Cell("–" if low is None or high is None else f"{low:+.3f} to {high:+.3f}"),
            Cell(_p(r.get("p_ancova"))), Cell(_p(r.get("p_welch"))), Cell(_p(r.get("p_mannwhitney"))),
            Cell(fmt(r.get("hedges_g"), 2, signed=True))]))
    return Table(["endpoint", "contrast (A − B)", "n A/B", "ANCOVA difference", "95 % CI", "p ANCOVA", "p Welch",
                  "p Mann–Whitney", "Hedges g"], body, left=2)


def _transition_table(rows: list[dict]) -> Table:
    """Per arm and grade item: subregion transitions that worsened, stayed, improved (summed over knees)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        b, f, n = num(r.get("baseline_grade")), num(r.get("followup_grade")), num(r.get("n")) or 0
        if b is None or f is None:
            continue
        counts[(r.get("arm", ""), r.get("item", ""))][0 if f > b else 1 if f == b else 2] += int(n)
    body = [Row([Cell(arm, css="l"), Cell(item.replace("_", " "), css="l"), Cell(str(w), css="worse" if w else ""),
                 Cell(str(same)), Cell(str(better), css="better" if better else "")])
            for (arm, item), (w, same, better) in sorted(counts.items())]
    return Table(["arm", "grade", "worsened", "unchanged", "improved"], body, left=2,
                 legend="subregion × knee transitions of the MOAKS-style grades between the visits")


def _pm(mean, sd, *, signed: bool = False) -> str:
    m = num(mean)
    if m is None:
        return "–"
    text = f"{m:+.3f}" if signed else f"{m:.3f}"
    return text + (f" ± {num(sd):.3f}" if num(sd) is not None else "")


def _p(value) -> str:
    x = num(value)
    return "–" if x is None else "<0.001" if x < 0.001 else f"{x:.3f}"


def write_cohort_report(cohort_dir: str | Path, *, path: str | Path | None = None) -> Path:
    """Write ``cohort_dir/report.html``: per-arm change of each endpoint (from the cohort stage's cohort.csv, or
    computed from the per-knee rows), between-arm contrasts, grade transitions, and box/strip plots per arm."""
    cohort_dir = Path(cohort_dir)
    if not cohort_dir.is_dir():
        raise UnreadableFileError("not a folder", path=cohort_dir, hint="pass the cohort output folder")
    rows, origin = per_knee_rows(cohort_dir)
    known = {"cohort.csv", "contrasts.csv", "transitions.csv", origin}
    arm_csv = cohort_dir / "cohort.csv"
    arm_rows = read_csv(arm_csv) if arm_csv.is_file() and "delta_mean" in _header(arm_csv) else []
    other_csvs = [p for p in sorted(cohort_dir.glob("*.csv")) if p.name not in known or
                  (p.name == "cohort.csv" and not arm_rows)]
    if not rows and not arm_rows and not other_csvs:
        raise UnreadableFileError("no cohort tables found (no cohort.csv, no CSV with subject, arm, delta, no "
                                  "change.csv files)", path=cohort_dir,
                                  hint="run `koaimg cohort ALLOCATION.csv RESULTS_DIR` first")
    by_endpoint: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (r.get("modality", ""), r.get("structure", ""), r.get("region", ""), r.get("metric", ""))
        by_endpoint[key][r.get("arm", "")].append(r)
    endpoints = [k for k in _PRIMARY if k in by_endpoint]
    arms = sorted({r.get("arm", "") for r in rows} | {r.get("arm", "") for r in arm_rows})
    subjects = {r.get("subject") for r in rows}
    sections = []
    if arm_rows:
        sections.append(Section("arms", "Per-arm change", tables=[_arm_table_from_cohort_csv(arm_rows)],
                                note="From cohort.csv (all endpoints and subregions are in that file). Δ = follow-up "
                                     "− baseline; SRM = mean Δ / SD of Δ; 95 % CI t-based; flag: a within-arm SRM "
                                     "above 1 over 6 months is implausible cartilage biology — check acquisition "
                                     "and blinding."))
    else:
        summary_rows = [_computed_row(key, arm, by_endpoint[key][arm]) for key in endpoints for arm in arms
                        if by_endpoint[key].get(arm)]
        if summary_rows:
            sections.append(Section("arms", "Per-arm change", tables=[Table(
                ["endpoint", "arm", "n", "baseline mean ± SD", "follow-up mean ± SD", "Δ mean ± SD", "95 % CI of Δ",
                 "median [IQR] of Δ", "SRM", "beyond SDD"], summary_rows, left=2)],
                note=f"Computed by the report from the per-knee rows ({origin}); Δ = follow-up − baseline; "
                     "SRM = mean Δ / SD of Δ; CI t-based."))
    figs = []
    for key in endpoints[:_MAX_PLOTS]:
        groups = {arm: [num(v.get("delta")) for v in by_endpoint[key].get(arm, []) if num(v.get("delta")) is not None]
                  for arm in arms}
        unit = next((v.get("unit") for vs in by_endpoint[key].values() for v in vs if v.get("unit")), "mm")
        figs.append(figure(box_strip_figure(groups, title=_endpoint_name(key), ylabel=f"Δ ({unit})"),
                           f"{_endpoint_name(key)}: change per knee by arm (box: median and IQR; points: knees)."))
    sections.append(Section("plots", "Change per arm", figures=figs,
                            note="" if figs else "No per-knee change rows found (the pairs' change.csv files and "
                                                 "the allocation are needed for the plots)."))
    contrasts = cohort_dir / "contrasts.csv"
    if contrasts.is_file():
        sections.append(Section("contrasts", "Between arms", tables=[_contrast_table(read_csv(contrasts))],
                                note="ANCOVA of follow-up on baseline and arm (primary), Welch t and Mann–Whitney U "
                                     "on Δ (sensitivity); p-values unadjusted for multiplicity."))
    transitions = cohort_dir / "transitions.csv"
    if transitions.is_file():
        sections.append(Section("transitions", "MOAKS-style grade transitions",
                                tables=[_transition_table(read_csv(transitions))]))
    tables = [_generic_table(p) for p in other_csvs]
    info = read_json(cohort_dir / "cohort.json")
    notes = [str(n) for n in info.get("notes", [])] if isinstance(info.get("notes"), list) else []
    methods = info.get("methods") if isinstance(info.get("methods"), dict) else {}
    notes += [f"{k.replace('_', ' ')}: {v}" for k, v in methods.items()]
    if tables or notes:
        sections.append(Section("tables", "Cohort tables and notes", tables=tables, items=notes))
    n_subjects = info.get("n_subjects") or len(subjects)
    meta = [("subjects", str(n_subjects)), ("arms", str(len(arms))),
            ("endpoints", str(len({tuple(r.get(k) for k in ("modality", "structure", "scheme", "region", "metric"))
                                   for r in (arm_rows or rows)})))]
    return render_report(Path(path) if path else cohort_dir / "report.html", title="Trial cohort report",
                         subtitle="Baseline → follow-up cartilage change by treatment arm", meta=meta,
                         sections=sections)


def _computed_row(key: tuple, arm: str, values: list[dict]) -> Row:
    s = arm_summary(values)
    ci = s.get("ci")
    med = s["median"]
    return Row([Cell(_endpoint_name(key), css="l"), Cell(arm, css="l"), Cell(str(s["n"])), Cell(s["baseline"]),
                Cell(s["followup"]), Cell(s["delta"]), Cell("–" if ci is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}"),
                Cell(f"{med[0]:+.3f} [{med[1]:+.3f}, {med[2]:+.3f}]"), Cell(fmt(s.get("srm"), 2, signed=True)),
                Cell(f"{s['beyond']} ({100 * s['beyond'] / max(s['n'], 1):.0f} %)")])
