"""Change between two measured visits of one knee: registration, Δ per point, regional Δ and the change scores.

Regional ThCtAB.Me change is computed on the baseline's footprint: the follow-up thickness is carried onto the
baseline interface points after femur-based registration and Δ is averaged with the baseline point areas over the
baseline subregion. The same anatomical bone area is compared at both visits, so subregion-boundary jitter between
visits does not enter Δ. Every other metric (ThCcAB, VC, areas, loss areas, grades) is each visit's own regional
value and Δ = follow-up - baseline of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._data import KneeVisit
from ._precision import Precision
from ._register import RigidTransform, register_femur
from ._scores import (
    GRADE_ITEMS,
    MOAKS_FTJ,
    SUMMARY_FORMULAS,
    compartments_for,
    grade_transitions,
    ordered_values,
    summed_score_pct_change,
    thinning_thickening,
)
from ._transfer import transfer_thickness

#: change.csv columns (DESIGN.md: measures.csv with baseline/follow-up values in place of ``value``, plus the SDD)
CHANGE_COLUMNS = ("subject", "baseline_visit", "followup_visit", "modality", "side", "structure", "scheme", "region",
                  "metric", "baseline", "followup", "delta", "pct_delta", "sdd", "beyond_sdd", "unit")
REGISTERED_METRIC = "ThCtAB.Me"
#: a subregion is reported only when at least this share of its baseline area received follow-up values
MIN_COVERAGE = 0.5


@dataclass
class KneeChange:
    """Everything computed for one baseline/follow-up pair (rows without subject/visit names; see ``rows``)."""

    side: str
    transform: RigidTransform
    #: structure -> (N,) follow-up thickness on the baseline points, and Δ = follow-up - baseline per point
    followup_on_baseline: dict[str, np.ndarray]
    delta_points: dict[str, np.ndarray]
    table: list[dict]
    transitions: dict
    summary: dict
    notes: list[str] = field(default_factory=list)
    modality: str = "MR"

    def rows(self, *, subject: str = "", baseline_visit: str = "baseline", followup_visit: str = "month6"
             ) -> list[dict]:
        """Tidy change rows in ``CHANGE_COLUMNS`` order."""
        head = {"subject": subject, "baseline_visit": baseline_visit, "followup_visit": followup_visit,
                "modality": self.modality, "side": self.side}
        return [{**head, **r} for r in self.table]


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def change_row(structure: str, scheme: str, region: str, metric: str, baseline, followup, unit: str,
               precision: Precision | None, *, delta=None) -> dict:
    """One change row: Δ, %Δ, SDD and the beyond-SDD flag filled in (empty where undefined)."""
    if delta is None and _finite(baseline) and _finite(followup):
        delta = float(followup) - float(baseline)
    pct = 100.0 * delta / float(baseline) if _finite(delta) and _finite(baseline) and baseline != 0 else None
    sdd = precision.sdd(metric, float(baseline)) if precision is not None and _finite(baseline) else None
    beyond = bool(abs(delta) > sdd) if sdd is not None and _finite(delta) else None
    return {"structure": structure, "scheme": scheme, "region": region, "metric": metric,
            "baseline": baseline if _finite(baseline) else None, "followup": followup if _finite(followup) else None,
            "delta": delta if _finite(delta) else None, "pct_delta": pct, "sdd": sdd, "beyond_sdd": beyond,
            "unit": unit}


def _registered_regions(visit: KneeVisit, on_baseline: dict[str, np.ndarray]) -> dict[tuple, tuple]:
    """(structure, scheme, region) -> (baseline ThCtAB.Me, mean Δ, covered share of the area) on baseline points."""
    out = {}
    for structure, plate in visit.plates.items():
        if structure not in on_baseline:
            continue
        follow = on_baseline[structure]
        finite = np.isfinite(plate.thickness)
        for scheme, codes in plate.regions.items():
            names = sorted(set(codes.tolist()) - {""})
            # aggregates of dotted codes (Wirth-Eckstein "cMF" = "cMF.e" + "cMF.c" + "cMF.i")
            groups = {"all": np.ones(len(codes), bool)} | {n: codes == n for n in names}
            for agg in sorted({n.split(".")[0] for n in names if "." in n}):
                groups[agg] = np.char.startswith(codes, agg + ".")
            for region, mask in groups.items():
                sel = finite & mask
                area = plate.area[sel]
                if area.sum() <= 0:
                    continue
                base = float((plate.thickness[sel] * area).sum() / area.sum())
                valid = sel & np.isfinite(follow)
                va = plate.area[valid]
                share = float(va.sum() / area.sum())
                delta = float(((follow[valid] - plate.thickness[valid]) * va).sum() / va.sum()) if va.sum() else np.nan
                out[(structure, scheme, region)] = (base, delta, share)
    return out


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["structure"], r["scheme"], r["region"], r["metric"]): r for r in rows}


def _grades(rows: list[dict], scheme: str = "moaks") -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["scheme"] == scheme and r["metric"] in GRADE_ITEMS and r["region"] != "all":
            out.setdefault(r["region"], {})[r["metric"]] = round(float(r["value"]))
    return out


def _knee_summary(rows: list[dict]) -> dict:
    """MOAKS knee summaries recomputed from a visit's regional rows (same formulas as ``measure.knee_summary``)."""
    from ..measure import knee_summary

    per_region: dict[tuple, dict] = {}
    for r in rows:
        if r["scheme"] != "moaks" or r["region"] == "all":
            continue
        per_region.setdefault((r["structure"], r["region"]), {})[r["metric"]] = float(r["value"])
    wanted = ("tAB", "any_loss_area%", "moaks_any_loss_grade", "moaks_full_thickness_grade")
    usable = [v for v in per_region.values() if all(k in v for k in wanted)]
    return knee_summary(usable)


def compare_knees(baseline: KneeVisit, followup: KneeVisit, *, transform: RigidTransform | None = None,
                  precision: Precision | None = None, radius_mm: float | None = None) -> KneeChange:
    """Register the follow-up onto the baseline (femur-based) and compute every change row.

    Parameters
    ----------
    baseline, followup : KneeVisit
        The two measured visits of the same knee (identity checks are the caller's: see ``check_pair``).
    transform : RigidTransform, optional
        Follow-up -> baseline RAS transform; registered on the femur when not given.
    precision : Precision, optional
        Test-retest precision for the SDD flags (default: domain-specs values).
    radius_mm : float, optional
        Reach of the thickness transfer; default the coarsest voxel size of either visit.
    """
    precision = precision or Precision()
    notes: list[str] = []
    if transform is None:
        transform = register_femur(baseline, followup)
    notes += transform.notes
    if radius_mm is None:
        sizes = [float(np.max(v.spacing)) for v in (baseline, followup) if v.spacing is not None]
        radius_mm = max(sizes) if sizes else 1.0
    on_base, delta_points = {}, {}
    for structure, plate in baseline.plates.items():
        if structure not in followup.plates:
            notes.append(f"{structure} is measured at baseline only: no change computed for it")
            continue
        on_base[structure] = transfer_thickness(plate, followup.plates[structure], transform, radius_mm=radius_mm)
        delta_points[structure] = on_base[structure] - plate.thickness
    registered = _registered_regions(baseline, on_base)
    notes += _fov_notes(baseline, followup, registered)
    b_index, f_index = _index(baseline.rows), _index(followup.rows)
    table = []
    for key, b in b_index.items():
        structure, scheme, region, metric = key
        f = f_index.get(key)
        b_value = float(b["value"])
        f_value = float(f["value"]) if f is not None else None
        if metric == REGISTERED_METRIC and (structure, scheme, region) in registered:
            base, delta, share = registered[(structure, scheme, region)]
            if share < MIN_COVERAGE or not math.isfinite(delta):
                notes.append(f"{structure} {region}: only {100 * share:.0f} % of the baseline area has follow-up "
                             "thickness after registration; its ThCtAB.Me change is not reported")
                table.append(change_row(structure, scheme, region, metric, base, None, b["unit"], precision))
                continue
            table.append(change_row(structure, scheme, region, metric, base, base + delta, b["unit"], precision,
                                    delta=delta))
            continue
        table.append(change_row(structure, scheme, region, metric, b_value, f_value, b["unit"], precision))
    table += _derived_rows(table, baseline, followup, precision)
    transitions = grade_transitions(_grades(baseline.rows), _grades(followup.rows))
    s_b, s_f = _knee_summary(baseline.rows), _knee_summary(followup.rows)
    summary = {"baseline": s_b, "followup": s_f, "formulas": SUMMARY_FORMULAS, "registration": transform.describe(),
               "moaks_sum_pct_change_pos_worse": summed_score_pct_change(
                   s_b.get("moaks_summed_score_pos_worse", 0.0), s_f.get("moaks_summed_score_pos_worse", 0.0))}
    table += _summary_rows(s_b, s_f, transitions, notes)
    transitions["formulas"] = {k: v for k, v in SUMMARY_FORMULAS.items() if "subregions" in k}
    return KneeChange(side=baseline.side.value, transform=transform, followup_on_baseline=on_base,
                      delta_points=delta_points, table=table, transitions=transitions, summary=summary, notes=notes)


def _fov_notes(baseline: KneeVisit, followup: KneeVisit, registered: dict[tuple, tuple]) -> list[str]:
    """Say which plates a field of view cut: their change covers only the cartilage imaged at both visits."""
    out = []
    cut_b, cut_f = baseline.cut_by_fov, followup.cut_by_fov
    for structure in sorted(cut_b | cut_f):
        where = " and ".join(v for v, cut in (("baseline", cut_b), ("follow-up", cut_f)) if structure in cut)
        share = next((v[2] for k, v in registered.items() if k[0] == structure and k[2] == "all"), None)
        covered = f" ({100 * share:.0f} % of the baseline plate's area)" if share is not None else ""
        out.append(f"{structure.replace('_', ' ')} is cut by the field of view at the {where}: its change covers "
                   f"only the cartilage imaged at both visits{covered}")
    return out


def _derived_rows(table: list[dict], baseline: KneeVisit, followup: KneeVisit, precision: Precision) -> list[dict]:
    """Counts beyond SDD, ordered values and thinning/thickening scores from the regional ThCtAB.Me changes."""
    out = []
    schemes = sorted({r["scheme"] for r in table if r["metric"] == REGISTERED_METRIC})
    for scheme in schemes:
        sub = [r for r in table if r["metric"] == REGISTERED_METRIC and r["scheme"] == scheme and r["region"] != "all"]
        # subregions only: aggregates (Wirth-Eckstein "cMF" of "cMF.e/.c/.i") would be counted twice
        names = {r["region"] for r in sub}
        sub = [r for r in sub if not any(n.startswith(r["region"] + ".") for n in names)]
        deltas = {r["region"]: r["delta"] for r in sub if r["delta"] is not None}
        for structure in [*sorted({r["structure"] for r in sub}), "knee"]:
            rows = [r for r in sub if structure in ("knee", r["structure"])]
            flagged = [r for r in rows if r["beyond_sdd"]]
            for metric, n in (("n_subregions_beyond_sdd", len(flagged)),
                              ("n_subregions_thinning_beyond_sdd", sum(r["delta"] < 0 for r in flagged)),
                              ("n_subregions_thickening_beyond_sdd", sum(r["delta"] > 0 for r in flagged))):
                out.append(change_row(structure, scheme, "all", metric, None, None, "count", None, delta=float(n)))
        comps = compartments_for(scheme, list(deltas))
        for name, members in comps.items():
            for k, value in enumerate(ordered_values(deltas, members), start=1):
                out.append(change_row("knee", scheme, name, f"{REGISTERED_METRIC}.OV{k}", None, None, "mm", None,
                                      delta=value))
        ftj = MOAKS_FTJ if scheme == "moaks" else comps.get("MFTC", ()) + comps.get("LFTC", ())
        thin, thick = thinning_thickening(deltas, ftj)
        out.append(change_row("knee", scheme, "FTJ", "thinning_score", None, None, "mm", None, delta=thin))
        out.append(change_row("knee", scheme, "FTJ", "thickening_score", None, None, "mm", None, delta=thick))
    return out


def _summary_rows(s_b: dict, s_f: dict, transitions: dict, notes: list[str]) -> list[dict]:
    out = []
    for metric in ("moaks_summed_score_pos_worse", "moaks_damage_score_0_100_pos_worse", "defect_area_pct_pos_worse"):
        if metric in s_b and metric in s_f:
            unit = "score" if "score" in metric else "%"
            out.append(change_row("knee", "moaks", "all", metric, s_b[metric], s_f[metric], unit, None))
    pct = summed_score_pct_change(s_b.get("moaks_summed_score_pos_worse", 0.0),
                                  s_f.get("moaks_summed_score_pos_worse", 0.0))
    if pct is None:
        notes.append("summed MOAKS score is 0 at baseline: its % change is undefined (not reported)")
    out.append(change_row("knee", "moaks", "all", "moaks_sum_pct_change_pos_worse", None, None, "%", None,
                          delta=pct))
    for metric in ("n_subregions_worsened", "n_subregions_improved", "net_subregions_worsened_pos_worse"):
        out.append(change_row("knee", "moaks", "all", metric, None, None, "count", None,
                              delta=float(transitions[metric])))
    return out
