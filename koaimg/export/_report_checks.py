"""Plausibility checks a report shows next to the numbers: is this a knee, measured sensibly, on the stated side?

Pure functions on tidy ``measures.csv`` rows (strings or numbers) and a few facts, so that batch runs, the report
and the QA app flag the same scans. Limits are deliberately wide: a flag asks a reader to look, it does not reject.
Sources for the ranges: healthy plate thickness 1.6-2.8 mm, patella up to ~5.7 mm (domain-specs 4.3); US femoral
cartilage 1.9-3.6 mm in healthy knees (Kauppinen 2021); OAI-scale plate volumes of a few cm3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

OK, WARN, FAIL = "ok", "warn", "fail"

#: the 14 MOAKS cartilage subregions a complete knee measurement grades (TS carries no cartilage)
MOAKS_CARTILAGE_REGIONS = ("PM", "PL", "FMT", "FLT", "FMC", "FLC", "FMP", "FLP",
                           "TMA", "TMC", "TMP", "TLA", "TLC", "TLP")


@dataclass(frozen=True)
class QALimits:
    """Plausible ranges (warn outside them)."""

    #: cartilage volume VC per plate, mm3
    volume_mm3: Mapping[str, tuple[float, float]] = field(default_factory=lambda: {
        "femoral_cartilage": (2000.0, 25000.0), "tibial_cartilage": (800.0, 12000.0),
        "patellar_cartilage": (400.0, 8000.0)})
    #: plate mean thickness ThCtAB.Me, mm
    mean_thickness_mm: tuple[float, float] = (0.8, 4.5)
    #: plate maximum thickness ThCtAB.Max above this suggests a segmentation leak, mm
    max_thickness_mm: float = 8.0
    #: ultrasound site thickness, mm
    ultrasound_mm: tuple[float, float] = (0.5, 5.0)
    #: denuded area above this share of a plate is unusual enough to look at, %
    denuded_pct: float = 30.0


@dataclass(frozen=True)
class QAFlag:
    """One check's outcome: ``level`` is ok, warn or fail; ``message`` says what was found, in one line."""

    check: str
    level: str
    message: str


def _num(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def _value(rows: list[Mapping], structure: str, region: str, metric: str) -> float | None:
    for r in rows:
        if r.get("structure") == structure and r.get("region") == region and r.get("metric") == metric:
            return _num(r.get("value"))
    return None


def check_volumes(rows: list[Mapping], limits: QALimits = QALimits()) -> list[QAFlag]:
    """Cartilage volume of each measured plate within a plausible adult range."""
    out = []
    for plate, (lo, hi) in limits.volume_mm3.items():
        vc = _value(rows, plate, "all", "VC")
        if vc is None:
            continue
        name = plate.replace("_", " ")
        if lo <= vc <= hi:
            out.append(QAFlag("volume", OK, f"{name} volume {vc:.0f} mm³ within {lo:.0f}–{hi:.0f}"))
        else:
            out.append(QAFlag("volume", WARN, f"{name} volume {vc:.0f} mm³ outside the plausible {lo:.0f}–{hi:.0f} "
                                              "mm³: check the segmentation and the voxel size"))
    return out


def check_thickness(rows: list[Mapping], limits: QALimits = QALimits()) -> list[QAFlag]:
    """Plate mean and maximum thickness (MR) or site thickness (US) within plausible ranges."""
    out = []
    plates = sorted({r.get("structure", "") for r in rows if r.get("region") == "all"})
    for plate in plates:
        mean = _value(rows, plate, "all", "ThCtAB.Me")
        peak = _value(rows, plate, "all", "ThCtAB.Max")
        denuded = _value(rows, plate, "all", "dAB%")
        name = plate.replace("_", " ")
        lo, hi = limits.mean_thickness_mm
        if mean is not None:
            ok = lo <= mean <= hi
            out.append(QAFlag("thickness", OK if ok else WARN,
                              f"{name} mean thickness {mean:.2f} mm" + ("" if ok else
                                                                          f" outside the plausible {lo}–{hi} mm")))
        if peak is not None and peak > limits.max_thickness_mm:
            out.append(QAFlag("thickness", WARN, f"{name} maximum thickness {peak:.1f} mm > "
                                                 f"{limits.max_thickness_mm:g} mm: possible segmentation leak"))
        if denuded is not None and denuded > limits.denuded_pct:
            out.append(QAFlag("thickness", WARN, f"{name}: {denuded:.0f} % of the bone surface denuded: check for "
                                                 "missing cartilage labels"))
    us = [(r.get("region"), _num(r.get("value"))) for r in rows
          if r.get("structure") == "ultrasound_femoral_cartilage" and r.get("metric") == "thickness"]
    lo, hi = limits.ultrasound_mm
    for site, value in us:
        if value is None:
            out.append(QAFlag("thickness", WARN, f"ultrasound site {site}: no thickness measured"))
        elif not lo <= value <= hi:
            out.append(QAFlag("thickness", WARN, f"ultrasound site {site} thickness {value:.2f} mm outside the "
                                                 f"plausible {lo}–{hi} mm"))
    if us and all(v is not None and lo <= v <= hi for _, v in us):
        out.append(QAFlag("thickness", OK, f"ultrasound thickness within {lo}–{hi} mm at all {len(us)} sites"))
    return out


def check_side(rows: list[Mapping], *, expected_side: str | None = None,
               anatomy_side: str | None = None) -> list[QAFlag]:
    """One knee side across the table, known, and agreeing with the header/filename side and the anatomy."""
    sides = {str(r.get("side", "")).lower() for r in rows} - {""}
    if len(sides) > 1:
        return [QAFlag("side", FAIL, f"the table mixes knee sides {sorted(sides)}")]
    side = next(iter(sides), "unknown")
    if side not in ("right", "left"):
        return [QAFlag("side", WARN, "knee side unknown: medial/lateral subregions may be swapped")]
    out = []
    for source, other in (("image header", expected_side), ("anatomy (fibula position)", anatomy_side)):
        other = (other or "").lower()
        if other in ("right", "left") and other != side:
            out.append(QAFlag("side", FAIL, f"measured as a {side} knee but the {source} says {other}: medial and "
                                            "lateral subregions are swapped"))
    if not out:
        checked = [s for s, o in (("header", expected_side), ("anatomy", anatomy_side))
                   if (o or "").lower() in ("right", "left")]
        out.append(QAFlag("side", OK, f"{side} knee" + (f", consistent with {' and '.join(checked)}" if checked
                                                        else "")))
    return out


def check_coverage(rows: list[Mapping], *, expected: Iterable[str] = MOAKS_CARTILAGE_REGIONS) -> list[QAFlag]:
    """Every MOAKS subregion measured with a non-zero bone area (MR); all three sites present (US)."""
    if any(r.get("structure") == "ultrasound_femoral_cartilage" for r in rows):
        sites = {r.get("region") for r in rows if r.get("structure") == "ultrasound_femoral_cartilage"}
        missing = [s for s in ("LC", "IN", "MC") if s not in sites]
        if missing:
            return [QAFlag("coverage", WARN, f"ultrasound sites missing: {', '.join(missing)}")]
        return [QAFlag("coverage", OK, "all three ultrasound sites (LC, IN, MC) measured")]
    area = {r.get("region"): _num(r.get("value")) for r in rows
            if r.get("metric") == "tAB" and r.get("region") != "all"}
    expected = list(expected)
    missing = [code for code in expected if not (area.get(code) or 0) > 0]
    if not area:
        return [QAFlag("coverage", FAIL, "no subregional measurements in the table")]
    if missing:
        level = FAIL if len(missing) > len(expected) // 2 else WARN
        return [QAFlag("coverage", level, f"{len(expected) - len(missing)} of {len(expected)} MOAKS subregions "
                                          f"measured; missing or empty: {', '.join(missing)}")]
    return [QAFlag("coverage", OK, f"all {len(expected)} MOAKS cartilage subregions measured")]


def plausibility_checks(rows: Iterable[Mapping], *, expected_side: str | None = None,
                        anatomy_side: str | None = None, limits: QALimits = QALimits()) -> list[QAFlag]:
    """All checks on one scan's tidy rows: volume range, thickness range, side consistency, coverage."""
    table = list(rows)
    return (check_volumes(table, limits) + check_thickness(table, limits)
            + check_side(table, expected_side=expected_side, anatomy_side=anatomy_side) + check_coverage(table))


def overall_level(flags: Iterable[QAFlag]) -> str:
    """The worst level among the flags (``ok`` when there are none)."""
    levels = {f.level for f in flags}
    return FAIL if FAIL in levels else WARN if WARN in levels else OK
