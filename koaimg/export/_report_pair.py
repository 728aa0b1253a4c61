"""Per-pair (baseline -> follow-up) HTML report: change map, regional change with detectability marks, MOAKS-style
grade transitions. Reads ``change.csv`` (DESIGN.md columns) and whatever maps the change stage left beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import UnreadableFileError
from ._plots import map_figure
from ._report_html import Cell, Row, Section, Table, figure, fmt, num, read_csv, read_json, render_report
from ._report_scan import PLATES, REGION_NAMES

_TRUE = {"true", "1", "yes", "y", "t"}


def beyond(value) -> bool | None:
    """``beyond_sdd`` as written by any CSV writer (True/False, 1/0, yes/no); None when not assessed."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    x = num(text)
    return bool(x) if x is not None else False


def _visits(rows: list[dict]) -> tuple[str, str]:
    first = rows[0] if rows else {}
    keys = [k for k in first if "visit" in k.lower()]
    bl = next((first[k] for k in keys if "base" in k.lower()), "")
    fu = next((first[k] for k in keys if "follow" in k.lower()), "")
    return str(bl or "baseline"), str(fu or "follow-up")


def _change_cells(row: dict | None, digits: int = 2, *, with_values: bool = True) -> list[Cell]:
    if row is None:
        return [Cell("–")] * (5 if with_values else 3)
    delta = num(row.get("delta"))
    flag = beyond(row.get("beyond_sdd"))
    mark, css = "", ""
    if flag and delta is not None:
        mark, css = ("▼ thinning", "thin") if delta < 0 else ("▲ thickening", "thick")
    elif flag is False:
        mark = "within SDD"
    cells = [Cell(fmt(row.get("baseline"), digits)), Cell(fmt(row.get("followup"), digits))] if with_values else []
    return [*cells, Cell(fmt(delta, digits, signed=True), css=css), Cell(fmt(row.get("pct_delta"), 1, signed=True)),
            Cell(mark, css=css)]


def _lookup(rows: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(r.get("structure", ""), r.get("region", ""), r.get("metric", "")): r for r in rows}


def _files(change_dir: Path, pattern: str) -> list[Path]:
    """Files in the pair folder or its per-modality subfolders (``change_<bl>_<fu>/MR/`` as the batch writes)."""
    return sorted(change_dir.glob(pattern)) + sorted(change_dir.glob(f"MR/{pattern}"))


def _delta_map(change_dir: Path) -> tuple[bytes, str] | None:
    """The unrolled Δ map: a saved grid (re-plotted with a diverging bar) or the change stage's own PNG."""
    grids = [p for p in _files(change_dir, "*.npy") if "delta" in p.name.lower() or "change" in p.name.lower()]
    caption = ("Change in femoral cartilage thickness, follow-up − baseline, after femur-based registration "
               "(red: thinning, blue: thickening), unrolled as in the scan reports.")
    if grids:
        axes = read_json(grids[0].with_suffix(".json"))
        return map_figure(np.load(grids[0]), axes, diverging=True, title="Δ femoral cartilage thickness",
                          label="Δ thickness (mm), follow-up − baseline"), caption
    pngs = [p for p in _files(change_dir, "*.png") if "delta" in p.name.lower() or "change" in p.name.lower()]
    return (pngs[0].read_bytes(), caption) if pngs else None


def _visit_maps(change_dir: Path, subject_dir: Path, visits: tuple[str, str], modality: str) -> list[dict]:
    figs = []
    for label, visit in zip(("baseline", "follow-up"), visits, strict=True):
        scan = subject_dir / visit / modality
        grid = scan / "femoral_thickness_map.npy"
        overlay = scan / "overlay.png"
        if grid.is_file():
            png = map_figure(np.load(grid), read_json(scan / "femoral_thickness_map.json"), lo=0.0, hi=4.0,
                             title=f"{label} ({visit}) thickness")
            figs.append(figure(png, f"{label.capitalize()} femoral cartilage thickness ({visit})."))
        elif overlay.is_file():
            figs.append(figure(overlay.read_bytes(), f"{label.capitalize()} ({visit})."))
    return figs


def transitions_table(lookup: dict) -> Table | None:
    """Per subregion: area and full-thickness grades at both visits, coloured by direction (worse/better)."""
    rows = []
    for (structure, region, metric), row in lookup.items():
        if metric != "moaks_any_loss_grade" or region == "all":
            continue
        ft = lookup.get((structure, region, "moaks_full_thickness_grade"), {})
        cells = [Cell(region, title=REGION_NAMES.get(region, region))]
        for r in (row, ft):
            b, f = num(r.get("baseline")), num(r.get("followup"))
            text = "–" if b is None or f is None else f"{int(b)} → {int(f)}"
            css = "" if b is None or f is None or b == f else "worse" if f > b else "better"
            cells.append(Cell(text, css=css))
        rows.append(Row(cells))
    if not rows:
        return None
    return Table(["subregion", "any-loss grade", "full-thickness grade"], rows, css="moaks",
                 legend="red: higher grade at follow-up (worse); blue: lower grade (better).")


def write_pair_report(change_dir: str | Path, *, path: str | Path | None = None) -> Path:
    """Write ``change_dir/report.html`` from ``change.csv`` (MR and/or US rows) and the Δ maps / transitions.json
    found in the folder or its per-modality subfolders."""
    change_dir = Path(change_dir)
    csv_path = change_dir / "change.csv"
    if not csv_path.is_file():
        raise UnreadableFileError("no change.csv in this folder", path=change_dir,
                                  hint="run `koaimg change BASELINE FOLLOWUP` first")
    rows = read_csv(csv_path)
    first = rows[0] if rows else {}
    visits = _visits(rows)
    us = [r for r in rows if r.get("modality") == "US" or r.get("structure") == "ultrasound_femoral_cartilage"]
    mr = [r for r in rows if r not in us]
    modalities = (["MR"] if mr else []) + (["US"] if us else [])
    both = len(modalities) == 2
    meta = [("subject", first.get("subject") or "–"), ("visits", f"{visits[0]} → {visits[1]}"),
            ("modality", " + ".join(modalities) or "–"), ("knee", first.get("side") or "–")]
    sections = []
    if mr:
        sections += _mr_pair(change_dir, mr, visits, prefix="MRI — " if both else "")
    if us:
        sections += _us_pair(us, prefix="Ultrasound — " if both else "", change_dir=change_dir, visits=visits)
    items = []
    for info_path in [change_dir / "transitions.json", *sorted(change_dir.glob("*/transitions.json"))]:
        info = read_json(info_path)
        where = "" if info_path.parent == change_dir else f"{info_path.parent.name}: "
        items += [f"{where}{k.replace('_', ' ')}: {v}" for k, v in info.items()
                  if isinstance(v, (str, int, float)) and k not in ("subject",)]
        for key in ("notes", "warnings", "flags"):
            if isinstance(info.get(key), list):
                items += [f"{where}{x}" for x in info[key]]
    # the comparison's own notes (registration, plates cut by the field of view, coverage) are kept per modality
    for modality, info in sorted(read_json(change_dir / "change.json").items()):
        if isinstance(info, dict) and isinstance(info.get("notes"), list):
            items += [f"{modality}: {x}" if both else str(x) for x in info["notes"] if str(x) not in items]
    if items:
        sections.append(Section("details", "Change details", items=items))
    sections.append(Section("method", "How to read this", items=[
        "Δ = follow-up − baseline; %Δ = 100·Δ/baseline. Positive thickness change = thicker cartilage.",
        "Marks: ▼/▲ when |Δ| exceeds the smallest detectable difference (SDD = 1.96·√2·SEM of the modality's "
        "test–retest precision, shown per row when recorded); 'within SDD' otherwise. A single knee's 6-month MRI "
        "change below the SDD is not distinguishable from measurement error.",
        "Never compare scans from different sequences, scanners or segmentation methods."]))
    title = "Knee cartilage change report" + ("" if both else " — ultrasound" if us else " — MRI")
    subtitle = f"Change from the baseline visit ({visits[0]}) to the follow-up visit ({visits[1]})"
    return render_report(Path(path) if path else change_dir / "report.html", title=title, subtitle=subtitle,
                         meta=meta, sections=sections)


def _subject_dir(change_dir: Path) -> Path:
    """``OUT/<subject>`` for ``OUT/<subject>/change_x`` and for its per-modality subfolder ``change_x/MR``."""
    return change_dir.parent if change_dir.name.startswith("change") else change_dir.parent.parent


def _by_scheme(rows: list[dict]) -> dict[str, dict]:
    schemes: dict[str, list[dict]] = {}
    for r in rows:
        schemes.setdefault(r.get("scheme", "") or "", []).append(r)
    ordered = sorted(schemes, key=lambda k: (k != "moaks", k))
    return {k: _lookup(schemes[k]) for k in ordered}


def _mr_pair(change_dir: Path, rows: list[dict], visits: tuple[str, str], *, prefix: str = "") -> list[Section]:
    schemes = _by_scheme(rows)
    lookup = next(iter(schemes.values()))
    show_sdd = any(str(r.get("sdd", "")).strip() for r in rows)
    cards = []
    for plate, name in PLATES:
        row = lookup.get((plate, "all", "ThCtAB.Me"))
        if row is not None:
            cards.append({"key": f"{name} ΔThCtAB", "value": f"{fmt(row.get('delta'), 3, signed=True)} mm",
                          "note": f"{fmt(row.get('baseline'))} → {fmt(row.get('followup'))} mm "
                                  f"({fmt(row.get('pct_delta'), 1, signed=True)} %)"})
    regional = [row for (s, r, m), row in lookup.items() if m == "ThCtAB.Me" and r != "all"
                and beyond(row.get("beyond_sdd"))]
    thin = sum(1 for row in regional if (num(row.get("delta")) or 0) < 0)
    thick = sum(1 for row in regional if (num(row.get("delta")) or 0) > 0)
    cards.append({"key": "Subregions beyond SDD", "value": f"{thin} ▼ / {thick} ▲",
                  "note": "thinning / thickening (ThCtAB)"})
    summed = lookup.get(("knee", "all", "moaks_summed_score_pos_worse"))
    if summed is not None:
        cards.append({"key": "MOAKS-style summed score", "value": f"{fmt(summed.get('baseline'), 0)} → "
                      f"{fmt(summed.get('followup'), 0)}", "note": f"Δ {fmt(summed.get('delta'), 0, signed=True)}; "
                                                               "higher = worse"})
    sections = [Section("summary", f"{prefix}Summary", cards=cards)]
    figs = []
    delta = _delta_map(change_dir)
    if delta is not None:
        figs.append(figure(*delta))
    figs += _visit_maps(change_dir, _subject_dir(change_dir), visits, "MR")
    sections.append(Section("maps", f"{prefix}Change map", figures=figs,
                            note="" if figs else "No Δ map was saved in this folder."))
    tables = []
    columns = ["region", "ThCtAB baseline mm", "follow-up mm", "Δ mm", "Δ %", "beyond SDD"]
    columns += (["SDD mm"] if show_sdd else []) + ["VC Δ %"]
    for scheme, scheme_lookup in schemes.items():
        for plate, name in PLATES:
            regions = list(dict.fromkeys(r for (s, r, m) in scheme_lookup if s == plate and m == "ThCtAB.Me"))
            if not regions or (scheme != next(iter(schemes)) and regions == ["all"]):
                continue
            ordered = [r for r in regions if r != "all"] + (["all"] if "all" in regions else [])
            table_rows = []
            for region in ordered:
                th = scheme_lookup.get((plate, region, "ThCtAB.Me"))
                vc = scheme_lookup.get((plate, region, "VC"))
                cells = [Cell(region if region != "all" else "plate", title=REGION_NAMES.get(region, region))]
                cells += _change_cells(th)
                cells += [Cell(fmt(th.get("sdd") if th else None, 2))] if show_sdd else []
                cells += [Cell(fmt(vc.get("pct_delta") if vc else None, 1, signed=True))]
                table_rows.append(Row(cells, css="total" if region == "all" else ""))
            label = {"moaks": "MOAKS subregions", "": ""}.get(scheme, f"{scheme} subregions")
            tables.append(Table(columns, table_rows, caption=f"{name} — {label}" if label else name))
    sections.append(Section("regions", f"{prefix}Regional change", tables=tables))
    knee_rows = [Row([Cell(m.replace("_", " "), css="l"), Cell(r if r != "all" else "knee", css="l"),
                      Cell(fmt(row.get("baseline"), 2)), Cell(fmt(row.get("followup"), 2)),
                      Cell(fmt(row.get("delta"), 2, signed=True)), Cell(fmt(row.get("pct_delta"), 1, signed=True))])
                 for (st, r, m), row in lookup.items() if st == "knee"]
    if knee_rows:
        sections.append(Section("scores", f"{prefix}Knee-level scores", tables=[Table(
            ["score", "region", "baseline", "follow-up", "Δ", "Δ %"], knee_rows, left=2)],
            note="Summary scores state their direction in the name (_pos_worse: a positive value or change is "
                 "worse); thinning/thickening scores sum the ordered subregion changes (Eckstein)."))
    trans = transitions_table(lookup)
    if trans is not None:
        sections.append(Section("moaks", f"{prefix}MOAKS-style grade transitions", tables=[trans]))
    return sections


def _us_pair(rows: list[dict], *, prefix: str = "", change_dir: Path | None = None,
             visits: tuple[str, str] = ("", "")) -> list[Section]:
    lookup = _lookup(rows)
    show_sdd = any(str(r.get("sdd", "")).strip() for r in rows)
    mean = lookup.get(("ultrasound_femoral_cartilage", "mean", "thickness"))
    cards = [{"key": "Mean thickness Δ", "value": f"{fmt(mean.get('delta') if mean else None, 2, signed=True)} mm",
              "note": (f"{fmt(mean.get('baseline'))} → {fmt(mean.get('followup'))} mm" if mean else "")}]
    table_rows = []
    for site in ("LC", "IN", "MC", "mean"):
        row = lookup.get(("ultrasound_femoral_cartilage", site, "thickness"))
        if row is None:
            continue
        cells = [Cell(site), Cell(REGION_NAMES[site], css="l"), *_change_cells(row)]
        cells += [Cell(fmt(row.get("sdd"), 2))] if show_sdd else []
        table_rows.append(Row(cells, css="total" if site == "mean" else ""))
    columns = ["site", "location", "baseline mm", "follow-up mm", "Δ mm", "Δ %", "beyond SDD"]
    table = Table(columns + (["SDD mm"] if show_sdd else []), table_rows, left=2)
    sections = [Section("us-summary", f"{prefix}Summary", cards=cards)]
    figs = _visit_maps(change_dir, _subject_dir(change_dir), visits, "US") if change_dir is not None else []
    if figs:
        sections.append(Section("us-images", f"{prefix}Images", figures=figs,
                                note="Measurement overlays of both visits (same sites: LC, IN, MC)."))
    sections.append(Section("sites", f"{prefix}Site change", tables=[table]))
    return sections
