"""Ultrasound pairs: per-site (lateral condyle LC, intercondylar notch IN, medial condyle MC) and mean thickness
change from the two visits' tidy measures rows (domain-specs §6.1: the mean of LC, IN, MC and each site)."""

from __future__ import annotations

import math

from ._compare import change_row
from ._precision import Precision

US_SITES = ("LC", "IN", "MC")
US_STRUCTURE = "ultrasound_femoral_cartilage"


def _values(rows: list[dict]) -> dict[tuple, tuple[float, str]]:
    out = {}
    for r in rows:
        if r.get("modality", "US") != "US":
            continue
        try:
            value = float(r["value"])
        except (TypeError, ValueError):
            continue
        out[(r["structure"], r.get("scheme", "") or "", r["region"], r["metric"])] = (value, r.get("unit", "mm"))
    return out


def compare_ultrasound(baseline_rows: list[dict], followup_rows: list[dict], *,
                       precision: Precision | None = None) -> tuple[list[dict], list[str]]:
    """Change rows for every ultrasound site/metric present at both visits, plus the site mean when the measurement
    did not report one. Returns (rows, notes)."""
    precision = precision or Precision()
    b, f = _values(baseline_rows), _values(followup_rows)
    rows, notes = [], []
    for key, (b_value, unit) in b.items():
        structure, scheme, region, metric = key
        if key not in f:
            notes.append(f"{region} {metric}: measured at baseline only")
            rows.append(change_row(structure, scheme, region, metric, b_value, None, unit, precision))
            continue
        rows.append(change_row(structure, scheme, region, metric, b_value, f[key][0], unit, precision))
    for key in f.keys() - b.keys():
        notes.append(f"{key[2]} {key[3]}: measured at follow-up only")
    schemes = {k[1] for k in b if k[0] == US_STRUCTURE}
    for scheme in schemes:
        if (US_STRUCTURE, scheme, "mean", "thickness") in b:
            continue
        sites = [(b.get((US_STRUCTURE, scheme, s, "thickness")), f.get((US_STRUCTURE, scheme, s, "thickness")))
                 for s in US_SITES]
        pairs = [(x[0], y[0]) for x, y in sites if x is not None and y is not None]
        if len(pairs) == len(US_SITES):
            mb = sum(p[0] for p in pairs) / len(pairs)
            mf = sum(p[1] for p in pairs) / len(pairs)
            if math.isfinite(mb) and math.isfinite(mf):
                rows.append(change_row(US_STRUCTURE, scheme, "mean", "thickness", mb, mf, "mm", precision))
        else:
            notes.append("site mean not computed: not every site (LC, IN, MC) was measured at both visits")
    return rows, notes
