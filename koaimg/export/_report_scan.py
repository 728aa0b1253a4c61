"""Per-scan HTML report: segmentation overlay, thickness map, QA flags, MOAKS grid and regional tables (MR), or the
ultrasound overlay and site table (US). Reads only the files of the scan's output folder (DESIGN.md layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import KoaimgError, LabelVolume, Structure, UnreadableFileError, Volume
from ._plots import map_figure, overlay_figure
from ._report_checks import MOAKS_CARTILAGE_REGIONS, overall_level, plausibility_checks
from ._report_html import Cell, Row, Section, Table, figure, fmt, num, read_csv, read_json, render_report

PLATES = (("femoral_cartilage", "Femoral cartilage"), ("tibial_cartilage", "Tibial cartilage"),
          ("patellar_cartilage", "Patellar cartilage"))
REGION_NAMES = {
    "all": "whole plate", "PM": "patella medial", "PL": "patella lateral", "FMT": "medial trochlea",
    "FLT": "lateral trochlea", "FMC": "medial central", "FLC": "lateral central", "FMP": "medial posterior",
    "FLP": "lateral posterior", "TMA": "medial anterior", "TMC": "medial central", "TMP": "medial posterior",
    "TLA": "lateral anterior", "TLC": "lateral central", "TLP": "lateral posterior",
    "LC": "lateral condyle", "IN": "intercondylar notch", "MC": "medial condyle", "mean": "mean of sites"}
_METRIC_COLUMNS = (("tAB", "tAB mm²", 0), ("ThCtAB.Me", "ThCtAB mm", 2), ("ThCtAB.SD", "SD mm", 2),
                   ("ThCtAB.Max", "max mm", 2), ("ThCcAB.Me", "ThCcAB mm", 2), ("VC", "VC mm³", 0),
                   ("dAB%", "dAB %", 1), ("any_loss_area%", "any loss %", 1),
                   ("full_thickness_area%", "full-thick. %", 1))


def grade_css(grade) -> str:
    g = num(grade)
    return "gna" if g is None else f"g{int(g)}"


def _value_map(rows: list[dict]) -> dict[tuple[str, str, str], str]:
    return {(r.get("structure", ""), r.get("region", ""), r.get("metric", "")): r.get("value", "") for r in rows}


def load_scan_rows(scan_dir: Path) -> list[dict]:
    """measures.csv of a scan folder (the one file a report cannot do without)."""
    path = scan_dir / "measures.csv"
    if not path.is_file():
        raise UnreadableFileError("no measures.csv in this folder", path=scan_dir,
                                  hint="run `koaimg measure` (or `koaimg run`) on the scan first")
    return read_csv(path)


def _labels(scan_dir: Path) -> LabelVolume | None:
    path = scan_dir / "labels.nii.gz"
    if not path.is_file():
        return None
    from ..io import read_labels

    try:
        return read_labels(path)
    except KoaimgError:
        return None


def _image(scan_dir: Path, image: Volume | None) -> Volume | None:
    if image is not None:
        return image
    for name in ("image.nii.gz", "image.nii"):
        if (scan_dir / name).is_file():
            from ..io import read_image

            try:
                return read_image(scan_dir / name)
            except KoaimgError:
                return None
    return None


def anatomy_side(labels: LabelVolume | None) -> str | None:
    """Knee side from the fibula's position relative to the tibia (None when either is missing)."""
    if labels is None:
        return None
    from ..core import side_from_anatomy

    arr = np.asarray(labels.array)
    centroids = []
    for s in (Structure.FIBULA, Structure.TIBIA):
        ijk = np.argwhere(arr == int(s))
        if len(ijk) == 0:
            return None
        centroids.append(labels.affine[:3, :3] @ ijk.mean(axis=0) + labels.affine[:3, 3])
    side = side_from_anatomy(centroids[0], centroids[1])
    return side.value if side.value in ("right", "left") else None


#: inputs of the figures; with the image's content they key the memo below
_FIGURE_INPUTS = ("labels.nii.gz", "femoral_thickness_map.npy", "femoral_thickness_map.json",
                  "femoral_thickness_map.png", "image.nii.gz", "image.nii")
#: the batch renders a scan's figures for report.html and again for its DICOM secondary captures, in one process;
#: the last rendering is kept, keyed by the folder, its input files (size, mtime) and the image's content
_LAST_FIGURES: list = []


def _figures_key(scan_dir: Path, image: Volume | None) -> tuple:
    import hashlib

    files = []
    for name in _FIGURE_INPUTS:
        path = scan_dir / name
        stat = path.stat() if path.is_file() else None
        files.append((name, None if stat is None else (stat.st_size, stat.st_mtime_ns)))
    digest = None
    if image is not None:
        array = np.ascontiguousarray(image.array)
        digest = (array.shape, str(array.dtype), hashlib.blake2b(array.view(np.uint8).ravel(), digest_size=16).digest(),
                  np.asarray(image.affine).tobytes())
    return str(scan_dir.resolve()), tuple(files), digest


def scan_figures(scan_dir: Path, *, image: Volume | None = None) -> dict[str, tuple[bytes, str]]:
    """The key figures of an MR scan folder as PNG bytes with captions (used by the report and DICOM SC)."""
    scan_dir = Path(scan_dir)
    key = _figures_key(scan_dir, image)
    if _LAST_FIGURES and _LAST_FIGURES[0] == key:
        return dict(_LAST_FIGURES[1])
    out = _render_figures(scan_dir, image)
    _LAST_FIGURES[:] = [key, dict(out)]
    return out


def _render_figures(scan_dir: Path, image: Volume | None) -> dict[str, tuple[bytes, str]]:
    out: dict[str, tuple[bytes, str]] = {}
    labels = _labels(scan_dir)
    img = _image(scan_dir, image)
    if labels is not None:
        if img is None:
            note = "label map (no image supplied)"
        elif tuple(img.shape[:3]) != tuple(labels.shape):
            note = "label map alone (the image is on another voxel grid)"
        else:
            note = "MR image with cartilage filled and bone outlines"
        out["overlay"] = (overlay_figure(labels, img), f"Segmentation overlay: {note}; sagittal slice through the "
                                                       "femoral condyle with the most cartilage, coronal slice "
                                                       "through the weight-bearing zone.")
    grid_path = scan_dir / "femoral_thickness_map.npy"
    if grid_path.is_file():
        axes = read_json(scan_dir / "femoral_thickness_map.json")
        out["thickness_map"] = (map_figure(np.load(grid_path), axes, title="Femoral cartilage thickness (unrolled)",
                                           lo=0.0, hi=4.0),
                                "Unrolled femoral cartilage thickness (ThCtAB convention: denuded bone = 0 mm). "
                                "Columns medial → lateral in a right-knee frame; rows from the posterior condyles "
                                "(bottom) over the weight-bearing zone to the trochlea (top).")
    elif (scan_dir / "femoral_thickness_map.png").is_file():
        out["thickness_map"] = ((scan_dir / "femoral_thickness_map.png").read_bytes(),
                                "Unrolled femoral cartilage thickness (mm).")
    return out


def _plate_table(values: dict, plate: str, title: str) -> Table | None:
    """One plate's regional table; metric columns with no value in this scheme are left out."""
    regions = [r for (s, r, _m) in values if s == plate]
    if not regions:
        return None
    ordered = list(dict.fromkeys([r for r in regions if r != "all"])) + (["all"] if "all" in regions else [])
    columns = [c for c in _METRIC_COLUMNS if any(num(values.get((plate, r, c[0]))) is not None for r in ordered)]
    graded = any(num(values.get((plate, r, "moaks_any_loss_grade"))) is not None for r in ordered)
    rows = []
    for region in ordered:
        cells = [Cell(region if region != "all" else "plate", title=REGION_NAMES.get(region, region))]
        for metric, _label, digits in columns:
            cells.append(Cell(fmt(values.get((plate, region, metric)), digits)))
        if graded:
            grades = [values.get((plate, region, m)) for m in ("moaks_any_loss_grade", "moaks_full_thickness_grade")]
            ok = all(num(g) is not None for g in grades)
            cells.append(Cell(f"{int(num(grades[0]))}.{int(num(grades[1]))}" if ok else "–",
                              css=grade_css(grades[0]) if ok else ""))
        rows.append(Row(cells, css="total" if region == "all" else ""))
    return Table(["region"] + [c[1] for c in columns] + (["MOAKS area.FT"] if graded else []), rows, caption=title)


def _schemes(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows per subregion scheme, MOAKS first (it carries the grades)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r.get("scheme", "") or "", []).append(r)
    return {k: out[k] for k in sorted(out, key=lambda k: (k != "moaks", k))}


def moaks_table(values: dict) -> Table:
    """The 14-subregion MOAKS grid: medial and lateral side by side, coloured by grade."""
    pairs = (("PM", "PL", "patella, facets"), ("FMT", "FLT", "femur, trochlea"), ("FMC", "FLC", "femur, central"),
             ("FMP", "FLP", "femur, posterior"), ("TMA", "TLA", "tibia, anterior"), ("TMC", "TLC", "tibia, central"),
             ("TMP", "TLP", "tibia, posterior"))
    plate_of = {c: "patellar_cartilage" if c[0] == "P" else "femoral_cartilage" if c[0] == "F"
                else "tibial_cartilage" for c in MOAKS_CARTILAGE_REGIONS}
    rows = []
    for medial, lateral, location in pairs:
        cells = [Cell(location)]
        for code in (medial, lateral):
            plate = plate_of[code]
            any_g = values.get((plate, code, "moaks_any_loss_grade"))
            ft_g = values.get((plate, code, "moaks_full_thickness_grade"))
            any_pct = values.get((plate, code, "any_loss_area%"))
            ft_pct = values.get((plate, code, "full_thickness_area%"))
            cells += [Cell(code, css="l"),
                      Cell(fmt(any_g, 0), css=grade_css(any_g), title=f"any loss {fmt(any_pct, 1)} % of area"),
                      Cell(fmt(ft_g, 0), css=grade_css(ft_g), title=f"full thickness {fmt(ft_pct, 1)} % of area"),
                      Cell(f"{fmt(any_pct, 1)} / {fmt(ft_pct, 1)}")]
        rows.append(Row(cells))
    columns = ["location", "medial", "any loss", "full thick.", "% any / FT", "lateral", "any loss", "full thick.",
               "% any / FT"]
    return Table(columns, rows, css="moaks", legend="grades")


def _provenance(scan_dir: Path) -> list[tuple[str, str]]:
    prov = read_json(scan_dir / "provenance.json")
    out = [("measured_with", f"koaimg {prov['koaimg']}")] if "koaimg" in prov else []
    for key, value in (prov.get("config") or {}).items():
        out.append((str(key), str(value)))
    for name, digest in (prov.get("inputs") or {}).items():
        out.append((f"sha256({name})", str(digest)[:16]))
    return out


def write_scan_report(scan_dir: str | Path, *, image: Volume | None = None, expected_side: str | None = None,
                      path: str | Path | None = None) -> Path:
    """Write ``scan_dir/report.html`` from the scan's output files (MR or ultrasound).

    ``image`` (the MR Volume on the label map's grid) puts the image under the segmentation overlay; without it
    ``image.nii.gz`` in the folder is used when present, else the label map is shown alone. ``expected_side`` is the
    side from the image header, checked against the measured side.
    """
    scan_dir = Path(scan_dir)
    rows = load_scan_rows(scan_dir)
    first = rows[0] if rows else {}
    is_us = first.get("modality") == "US" or (scan_dir / "ultrasound.json").is_file()
    if expected_side is None and image is not None and image.meta.side.value in ("right", "left"):
        expected_side = image.meta.side.value
    labels = None if is_us else _labels(scan_dir)
    flags = plausibility_checks(rows, expected_side=expected_side, anatomy_side=anatomy_side(labels))
    level = overall_level(flags)
    meta = [("subject", first.get("subject") or "–"), ("visit", first.get("visit") or "–"),
            ("modality", first.get("modality") or "–"), ("knee", first.get("side") or "–"),
            ("QA", {"ok": "passed", "warn": "review", "fail": "failed"}[level])]
    sections = (_us_sections(scan_dir, rows) if is_us else _mr_sections(scan_dir, rows, image))
    sections.insert(1, Section("qa", "Quality checks", flags=flags,
                               note="Plausibility of volume and thickness ranges, knee side and subregion coverage. "
                                    "A warning asks for a look at the images; it does not invalidate the scan."))
    title = "Knee cartilage report" + (" — ultrasound" if is_us else " — MRI")
    subtitle = "Femoral cartilage thickness at three sites" if is_us else \
        "Cartilage thickness, subregional morphometry (Eckstein nomenclature) and MOAKS-style grades"
    return render_report(Path(path) if path else scan_dir / "report.html", title=title, subtitle=subtitle, meta=meta,
                         sections=sections, provenance=_provenance(scan_dir))


def _mr_sections(scan_dir: Path, rows: list[dict], image: Volume | None) -> list[Section]:
    schemes = _schemes(rows)
    values = _value_map(next(iter(schemes.values()), []))
    moaks = read_json(scan_dir / "moaks.json")
    summary = moaks.get("summary", {})
    cards = []
    for plate, name in PLATES:
        th = values.get((plate, "all", "ThCtAB.Me"))
        if th is not None:
            cards.append({"key": f"{name} ThCtAB", "value": f"{fmt(th)} mm",
                          "note": f"VC {fmt(values.get((plate, 'all', 'VC')), 0)} mm³, "
                                  f"dAB {fmt(values.get((plate, 'all', 'dAB%')), 1)} %"})
    if "moaks_summed_score_pos_worse" in summary:
        cards.append({"key": "MOAKS-style summed score", "value": fmt(summary["moaks_summed_score_pos_worse"], 0),
                      "note": f"over {fmt(summary.get('n_subregions_graded'), 0)} subregions; higher = worse"})
    if "defect_area_pct_pos_worse" in summary:
        cards.append({"key": "Defect area", "value": f"{fmt(summary['defect_area_pct_pos_worse'], 1)} %",
                      "note": "area of any loss / bone area; higher = worse"})
    sections = [Section("summary", "Summary", cards=cards)]
    figs = scan_figures(scan_dir, image=image)
    sections.append(Section("images", "Images", figures=[figure(png, cap, wide=name == "overlay")
                                                         for name, (png, cap) in figs.items()],
                            note="" if figs else "No label map or thickness map in this folder."))
    sections.append(Section("moaks", "MOAKS-style cartilage grid", tables=[moaks_table(values)],
                            note="Size of any cartilage loss and of full-thickness loss per subregion as MOAKS "
                                 "area grades (0 none, 1 <10 %, 2 10–75 %, 3 >75 % of the subregion surface), "
                                 "derived automatically from the thickness map against the knee's own expected "
                                 "thickness. Hover a grade for its area percentage."))
    tables = []
    for n, (scheme, scheme_rows) in enumerate(schemes.items()):
        scheme_values = _value_map([r for r in scheme_rows if n == 0 or r.get("region") != "all"])
        label = {"moaks": "MOAKS subregions", "wirth-eckstein": "Wirth–Eckstein subregions", "": ""}.get(
            scheme, f"{scheme} subregions")
        tables += [t for plate, name in PLATES
                   if (t := _plate_table(scheme_values, plate, f"{name} — {label}" if label else name)) is not None]
    formulas = [f"{k.replace('_formula', '').replace('_', ' ')}: {v}" for k, v in summary.items()
                if k.endswith("_formula")]
    sections.append(Section("regions", "Regional measurements", tables=tables, items=formulas,
                            note="tAB total subchondral bone area; ThCtAB mean thickness over tAB (denuded = 0 mm); "
                                 "ThCcAB over cartilage-covered bone; VC cartilage volume; dAB denuded bone area."))
    notes = list(moaks.get("notes", []))
    if notes:
        sections.append(Section("notes", "Measurement notes", items=[str(n) for n in notes]))
    return sections


def _us_sections(scan_dir: Path, rows: list[dict]) -> list[Section]:
    info = read_json(scan_dir / "ultrasound.json")
    sites = [r for r in rows if r.get("structure") == "ultrasound_femoral_cartilage"]
    by_site = {r.get("region"): r for r in sites if r.get("metric") == "thickness"}
    mean = by_site.get("mean", {}).get("value")
    cards = [{"key": "Mean femoral cartilage thickness", "value": f"{fmt(mean)} mm", "note": "mean of LC, IN, MC"}]
    for code in ("LC", "IN", "MC"):
        if code in by_site:
            cards.append({"key": REGION_NAMES[code], "value": f"{fmt(by_site[code].get('value'))} mm", "note": code})
    sections = [Section("summary", "Summary", cards=cards)]
    overlay = scan_dir / "overlay.png"
    figs = [figure(overlay.read_bytes(), "Suprapatellar transverse view with the measured cartilage boundaries and "
                   "the three measurement sites.")] if overlay.is_file() else []
    sections.append(Section("images", "Image", figures=figs, note="" if figs else "No overlay.png in this folder."))
    metrics = list(dict.fromkeys(["thickness"] + [r.get("metric", "") for r in sites]))
    units = {r.get("metric"): r.get("unit", "") for r in sites}
    values = {(r.get("region"), r.get("metric")): r.get("value") for r in sites}
    regions = [code for code in ("LC", "IN", "MC", "mean") if any((code, m) in values for m in metrics)]
    regions += list(dict.fromkeys(r.get("region") for r in sites if r.get("region") not in regions))
    table_rows = [Row([Cell(code), Cell(REGION_NAMES.get(code, ""), css="l")]
                      + [Cell(fmt(values.get((code, m)))) for m in metrics],
                      css="total" if code == "mean" else "") for code in regions]
    columns = ["site", "location"] + [f"{m.replace('_', ' ')} {units.get(m) or ''}".strip() for m in metrics]
    sections.append(Section("sites", "Site measurements", tables=[Table(columns, table_rows, left=2)],
                            note="thickness: the primary measure; other columns are the measurement's own "
                                 "cross-checks when it records them."))
    details = [f"{k}: {v}" for k, v in info.items() if isinstance(v, (str, int, float, bool)) and k != "subject"]
    for key in ("flags", "warnings", "notes"):
        if isinstance(info.get(key), list):
            details += [f"{key[:-1]}: {x}" for x in info[key]]
    if details:
        sections.append(Section("details", "Measurement details", items=details))
    return sections
