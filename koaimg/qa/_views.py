"""What the case view shows, read from the tidy tables: regional metrics, the MOAKS grid and a pair's change table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..core import STRUCTURE_COLOURS, Structure
from ._cases import Case
from ._corrections import version_folder

#: regional metrics shown per MR subregion (Eckstein names, in reading order)
REGIONAL_METRICS = ("tAB", "ThCtAB.Me", "ThCcAB.Me", "ThCtAB.Max", "VC", "dAB%", "any_loss_area%",
                    "full_thickness_area%")
GRADES = ("moaks_any_loss_grade", "moaks_full_thickness_grade")
CHANGE_COLUMNS = ("structure", "region", "metric", "unit", "baseline", "followup", "delta", "pct_delta", "beyond_sdd")


def _num(text: str | None) -> float | None:
    if text in (None, "", "nan", "NaN", "None"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty when the file is absent)."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def regional_table(case: Case, versions: list[int]) -> dict:
    """Per structure × region the metrics of each version: ``values[str(version)][metric]``."""
    table: dict[tuple[str, str], dict] = {}
    units: dict[str, str] = {}
    metrics: list[str] = []
    for version in versions:
        for row in read_rows(version_folder(case, version) / "measures.csv"):
            metric = row.get("metric", "")
            if metric in GRADES:
                continue
            if metric not in metrics:
                metrics.append(metric)
            units[metric] = row.get("unit", "")
            key = (row.get("structure", ""), row.get("region", ""))
            entry = table.setdefault(key, {"structure": key[0], "region": key[1], "values": {}})
            entry["values"].setdefault(str(version), {})[metric] = _num(row.get("value"))
    order = [m for m in REGIONAL_METRICS if m in metrics] + [m for m in metrics if m not in REGIONAL_METRICS]
    return {"metrics": order, "units": units, "versions": versions, "rows": list(table.values())}


def moaks_grid(case: Case, version: int, overrides: dict[str, dict[str, int]]) -> list[dict]:
    """MOAKS subregions with the automated grades of ``version`` and any reviewer override."""
    path = version_folder(case, version) / "moaks.json"
    try:
        regions = json.loads(path.read_text()).get("regions", {}) if path.is_file() else {}
    except (OSError, ValueError):
        regions = {}
    from ..measure import MOAKS_REGIONS

    grid = []
    for code in [c for c in MOAKS_REGIONS if c in regions] + [c for c in regions if c not in MOAKS_REGIONS]:
        r = regions[code]
        grid.append({"region": code, "any_loss_area%": r.get("any_loss_area%"),
                     "full_thickness_area%": r.get("full_thickness_area%"), "tAB": r.get("tAB"),
                     "automated": {g: r.get(g) for g in GRADES}, "override": overrides.get(code, {})})
    return grid


def change_table(case: Case, version: int) -> list[dict]:
    """Rows of a pair's change.csv (of a recomputed version when there is one)."""
    path = version_folder(case, version) / "change.csv"
    if not path.is_file():
        path = case.files["change"]
    rows = []
    for row in read_rows(path):
        out = {c: row.get(c, "") for c in CHANGE_COLUMNS}
        for c in ("baseline", "followup", "delta", "pct_delta"):
            out[c] = _num(out[c])
        rows.append(out)
    return rows


def label_lut() -> dict:
    """NiiVue label colour table for koaimg's schema (``{R, G, B, A, I, labels}``)."""
    items = [(0, "background", (0, 0, 0), 0)] + [(int(s), s.key, STRUCTURE_COLOURS[s], 255)
                                                 for s in Structure if s != Structure.BACKGROUND]
    return {"R": [c[0] for _, _, c, _ in items], "G": [c[1] for _, _, c, _ in items],
            "B": [c[2] for _, _, c, _ in items], "A": [a for *_, a in items], "I": [i for i, *_ in items],
            "labels": [n for _, n, _, _ in items]}


def provenance_summary(case: Case) -> dict:
    """Versions and configuration only: input file names and hashes stay on the server."""
    path = case.files.get("provenance")
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in ("koaimg", "config", "model") if k in data}
