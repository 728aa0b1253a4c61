"""Location-independent change scores: ordered values, thinning/thickening scores, counts beyond the SDD, and the
MOAKS grade transitions with their summary-score change (domain-specs §1.8-1.9, §2.3).

Signs: Δ = follow-up - baseline. Thickness Δ > 0 is thickening; for MOAKS grades and scores Δ > 0 is worsening, and
every such name ends in ``_pos_worse``.
"""

from __future__ import annotations

import math

#: MOAKS subregions grouped as femorotibial compartments (Buck et al. ordered values use the weight-bearing femur
#: and the tibia of a compartment; the MOAKS posterior femur is loaded in flexion and is kept with its compartment)
MOAKS_COMPARTMENTS = {
    "MFTC": ("FMC", "FMP", "TMA", "TMC", "TMP"),
    "LFTC": ("FLC", "FLP", "TLA", "TLC", "TLP"),
    "PFJ": ("FMT", "FLT", "PM", "PL"),
}
#: the femorotibial joint: the subregions summed by the thinning and thickening scores (Eckstein 2015 use the 16
#: Wirth-Eckstein femorotibial subregions; with MOAKS these are its 10 femorotibial subregions)
MOAKS_FTJ = MOAKS_COMPARTMENTS["MFTC"] + MOAKS_COMPARTMENTS["LFTC"]
GRADE_ITEMS = {"moaks_any_loss_grade": "any_loss", "moaks_full_thickness_grade": "full_thickness"}
SUMMARY_FORMULAS = {
    "moaks_summed_score_pos_worse": "S = sum over subregions of (area-of-any-loss grade + full-thickness grade)",
    "moaks_sum_pct_change_pos_worse": "100 x (S_followup - S_baseline) / S_baseline; undefined when S_baseline = 0",
    "moaks_damage_score_0_100_pos_worse": "100 x S / (6 x number of graded subregions)",
    "defect_area_pct_pos_worse": "100 x area of any loss / total bone area (tAB) over graded subregions",
    "n_subregions_worsened": "subregions where either MOAKS cartilage grade increased",
    "n_subregions_improved": "subregions where either grade decreased and neither increased",
    "net_subregions_worsened_pos_worse": "n_subregions_worsened - n_subregions_improved",
    "thinning_score": "sum of the negative subregional ThCtAB.Me changes over the femorotibial subregions (mm)",
    "thickening_score": "sum of the positive subregional ThCtAB.Me changes over the femorotibial subregions (mm)",
    "OV": "ordered values: a compartment's subregional ThCtAB.Me changes sorted from most negative (OV1) upwards",
}


def compartments_for(scheme: str, regions: list[str]) -> dict[str, tuple[str, ...]]:
    """Compartments of a scheme's subregions: the MOAKS table, or by name for Wirth-Eckstein codes (Buck et al.:
    the 3 central femoral and 5 tibial subregions of each compartment, e.g. cMF.e ... MT.i)."""
    if scheme == "moaks":
        return {name: tuple(r for r in members if r in regions) for name, members in MOAKS_COMPARTMENTS.items()}
    medial = tuple(r for r in regions if ("cMF." in r or "MT." in r))
    lateral = tuple(r for r in regions if ("cLF." in r or "LT." in r))
    return {"MFTC": medial, "LFTC": lateral}


def ordered_values(deltas: dict[str, float], members: tuple[str, ...]) -> list[float]:
    """A compartment's subregional changes sorted ascending (OV1 = most negative); missing ones are left out."""
    return sorted(deltas[r] for r in members if r in deltas and math.isfinite(deltas[r]))


def thinning_thickening(deltas: dict[str, float], members: tuple[str, ...]) -> tuple[float, float]:
    """(thinning score <= 0, thickening score >= 0): sums of the negative and positive subregional changes."""
    values = [deltas[r] for r in members if r in deltas and math.isfinite(deltas[r])]
    return float(sum(v for v in values if v < 0)), float(sum(v for v in values if v > 0))


def grade_transitions(baseline: dict[str, dict[str, int]], followup: dict[str, dict[str, int]]) -> dict:
    """Per subregion and item: baseline and follow-up grade, and the worsened / improved counts.

    ``baseline``/``followup``: region -> {metric: grade} with the metrics of ``GRADE_ITEMS``.
    """
    regions = {}
    worsened = improved = 0
    for region in baseline:
        if region not in followup:
            continue
        items = {}
        up = down = False
        for metric, item in GRADE_ITEMS.items():
            b, f = baseline[region].get(metric), followup[region].get(metric)
            if b is None or f is None:
                continue
            items[item] = {"baseline": int(b), "followup": int(f), "change_pos_worse": int(f) - int(b)}
            up |= f > b
            down |= f < b
        regions[region] = items
        worsened += up
        improved += down and not up
    return {"regions": regions, "n_subregions_worsened": worsened, "n_subregions_improved": improved,
            "net_subregions_worsened_pos_worse": worsened - improved}


def summed_score_pct_change(s_baseline: float, s_followup: float) -> float | None:
    """% change of the summed MOAKS score (positive = worse), None when the baseline score is 0."""
    if not s_baseline:
        return None
    return 100.0 * (s_followup - s_baseline) / s_baseline
