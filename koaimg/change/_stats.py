"""Trial statistics from per-knee change rows and an allocation (domain-specs §6).

Per endpoint and arm (§6.2): n analysed / randomised, baseline and follow-up mean ± SD, Δ mean ± SD, t-based 95 % CI,
median [IQR], SRM (= mean Δ / SD Δ), within-arm p (paired t; Wilcoxon signed-rank as the nonparametric check) and
n (%) beyond the SDD. Between arms (§6.3): ANCOVA of follow-up on baseline + arm (statsmodels OLS; the adjusted
difference for every pair of arms with its 95 % CI and p), Welch t and Mann-Whitney U (with the Hodges-Lehmann shift)
on Δ, and Hedges' g. MOAKS grades: baseline x follow-up transition counts per arm and subregion, knees with any
worsening / improvement per arm and Fisher's exact test between arms.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ..core import KoaimgError

ENDPOINT_KEYS = ("modality", "structure", "scheme", "region", "metric")
GRADE_METRICS = ("moaks_any_loss_grade", "moaks_full_thickness_grade")
ARM_COLUMNS = ("modality", "structure", "scheme", "region", "metric", "unit", "arm", "n_randomised", "n_analysed",
               "baseline_mean", "baseline_sd", "followup_mean", "followup_sd", "delta_mean", "delta_sd",
               "delta_ci95_low", "delta_ci95_high", "delta_median", "delta_q1", "delta_q3", "srm", "p_within_t",
               "p_within_wilcoxon", "n_beyond_sdd", "pct_beyond_sdd", "flag")
CONTRAST_COLUMNS = ("modality", "structure", "scheme", "region", "metric", "unit", "arm_a", "arm_b", "n_a", "n_b",
                    "ancova_diff_a_minus_b", "ancova_ci95_low", "ancova_ci95_high", "p_ancova",
                    "delta_diff_a_minus_b", "welch_t", "p_welch", "mannwhitney_u", "p_mannwhitney",
                    "hodges_lehmann_a_minus_b", "hedges_g")
TRANSITION_COLUMNS = ("arm", "region", "item", "baseline_grade", "followup_grade", "n")
#: metrics analysed by default (descriptive ones such as ThCtAB.SD/.Max, tAB and cAB are left to the per-knee files);
#: every knee-level row (summary scores, counts, ordered values, thinning/thickening) is analysed too
DEFAULT_METRICS = ("ThCtAB.Me", "ThCcAB.Me", "VC", "dAB%", "any_loss_area%", "full_thickness_area%", "thickness")
#: thickness endpoints whose within-arm SRM above this over 6 months is implausible biology (domain-specs §6.4)
SRM_FLAG = 1.0


class StatsDependencyError(KoaimgError, ImportError):
    """The cohort statistics need the ``stats`` extra (statsmodels)."""

    code = "missing_dependency"


@dataclass
class CohortResult:
    """Tidy tables of the cohort analysis."""

    arms: list[str]
    arm_rows: list[dict]
    contrast_rows: list[dict]
    transition_rows: list[dict]
    grade_rows: list[dict]
    notes: list[str] = field(default_factory=list)


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _truthy(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    return None


def _t_ci(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def _quiet(fn, *args, **kwargs):
    """Run a scipy test with its small-sample warnings silenced; NaN result when the test is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except ValueError:
            return None


def _arm_row(endpoint: dict, arm: str, n_randomised: int, data: list[dict]) -> dict:
    from scipy import stats

    d = np.array([x["delta"] for x in data], float)
    b = np.array([x["baseline"] for x in data], float)
    f = np.array([x["followup"] for x in data], float)
    d = d[np.isfinite(d)]
    n = len(d)
    row = {**endpoint, "arm": arm, "n_randomised": n_randomised, "n_analysed": n}

    def mean_sd(v):
        v = v[np.isfinite(v)]
        return (float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan)

    row["baseline_mean"], row["baseline_sd"] = mean_sd(b)
    row["followup_mean"], row["followup_sd"] = mean_sd(f)
    row["delta_mean"], row["delta_sd"] = mean_sd(d)
    row["delta_ci95_low"], row["delta_ci95_high"] = _t_ci(d)
    if n:
        q1, med, q3 = np.percentile(d, [25, 50, 75])
        row.update(delta_median=float(med), delta_q1=float(q1), delta_q3=float(q3))
    sd = row["delta_sd"]
    row["srm"] = row["delta_mean"] / sd if n > 1 and sd > 0 else math.nan
    # paired t on Δ (one-sample t against 0), by formula: scipy's wrappers cost more than the test
    if n > 1 and sd > 0:
        row["p_within_t"] = float(2.0 * stats.t.sf(abs(row["delta_mean"]) / (sd / math.sqrt(n)), n - 1))
    else:
        row["p_within_t"] = math.nan
    w = _quiet(stats.wilcoxon, d) if n > 1 and np.any(d != 0) else None
    row["p_within_wilcoxon"] = float(w.pvalue) if w is not None else math.nan
    flags = [x["beyond_sdd"] for x in data if x["beyond_sdd"] is not None]
    row["n_beyond_sdd"] = int(sum(flags)) if flags else None
    row["pct_beyond_sdd"] = 100.0 * sum(flags) / len(flags) if flags else None
    unit_is_thickness = endpoint.get("unit") == "mm" and endpoint["metric"] in ("ThCtAB.Me", "ThCcAB.Me", "thickness")
    row["flag"] = (f"|SRM| > {SRM_FLAG:g} over one follow-up: larger than plausible cartilage biology; check "
                   "blinding and same-operator/same-scanner acquisition" if unit_is_thickness
                   and math.isfinite(row["srm"]) and abs(row["srm"]) > SRM_FLAG else "")
    return row


def _ancova(data: dict[str, list[dict]], arms: list[str]) -> dict[tuple[str, str], tuple] | None:
    """follow-up ~ baseline + arm; adjusted difference, CI and p for each pair of arms."""
    try:
        import statsmodels.api as sm
    except ImportError:
        raise StatsDependencyError("statsmodels is not installed: the between-arm ANCOVA needs it",
                                   hint="pip install 'koaimg[stats]'") from None

    rows = [(arm, x["baseline"], x["followup"]) for arm in arms for x in data.get(arm, [])
            if math.isfinite(x["baseline"]) and math.isfinite(x["followup"])]
    present = [a for a in arms if any(r[0] == a for r in rows)]
    if len(present) < 2 or len(rows) < len(present) + 3:
        return None
    y = np.array([r[2] for r in rows])
    base = np.array([r[1] for r in rows])
    dummies = np.array([[1.0 if r[0] == a else 0.0 for a in present[1:]] for r in rows])
    x = np.column_stack([np.ones(len(rows)), base, dummies])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.OLS(y, x).fit()
    out = {}
    for a, b in combinations(present, 2):
        contrast = np.zeros(x.shape[1])
        if a != present[0]:
            contrast[2 + present.index(a) - 1] += 1.0
        if b != present[0]:
            contrast[2 + present.index(b) - 1] -= 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            test = fit.t_test(contrast)
        low, high = np.asarray(test.conf_int(alpha=0.05)).ravel()
        out[(a, b)] = (float(np.asarray(test.effect).ravel()[0]), float(low), float(high),
                       float(np.asarray(test.pvalue).ravel()[0]))
    return out


def _contrast_row(endpoint: dict, a: str, b: str, da: np.ndarray, db: np.ndarray, ancova: tuple | None) -> dict:
    from scipy import stats

    row = {**endpoint, "arm_a": a, "arm_b": b, "n_a": len(da), "n_b": len(db)}
    if ancova is not None:
        row.update(zip(("ancova_diff_a_minus_b", "ancova_ci95_low", "ancova_ci95_high", "p_ancova"), ancova,
                       strict=True))
    if len(da) and len(db):
        row["delta_diff_a_minus_b"] = float(da.mean() - db.mean())
        row["hodges_lehmann_a_minus_b"] = float(np.median(np.subtract.outer(da, db)))
    if len(da) > 1 and len(db) > 1:
        va, vb = da.var(ddof=1) / len(da), db.var(ddof=1) / len(db)
        if va + vb > 0:
            t = (da.mean() - db.mean()) / math.sqrt(va + vb)
            dof = (va + vb) ** 2 / (va**2 / (len(da) - 1) + vb**2 / (len(db) - 1))
            row.update(welch_t=float(t), p_welch=float(2.0 * stats.t.sf(abs(t), dof)))
        u = _quiet(stats.mannwhitneyu, da, db, alternative="two-sided")
        if u is not None:
            row.update(mannwhitney_u=float(u.statistic), p_mannwhitney=float(u.pvalue))
        pooled = math.sqrt(((len(da) - 1) * da.var(ddof=1) + (len(db) - 1) * db.var(ddof=1))
                           / (len(da) + len(db) - 2))
        if pooled > 0:
            correction = 1.0 - 3.0 / (4.0 * (len(da) + len(db)) - 9.0)
            row["hedges_g"] = float((da.mean() - db.mean()) / pooled * correction)
    return row


def cohort_statistics(change_rows: list[dict], allocation: dict[str, str], *, arms: list[str] | None = None,
                      endpoints: list[tuple] | None = None,
                      metrics: tuple[str, ...] | None = DEFAULT_METRICS) -> CohortResult:
    """Per-arm summaries, between-arm tests and MOAKS transition tables.

    Parameters
    ----------
    change_rows : list of dict
        ``change.csv`` rows of every knee (one knee per subject: the index knee).
    allocation : dict
        subject -> arm.
    arms : list of str, optional
        Arm order (contrasts are arm_a - arm_b for a before b); default the allocation's order of first appearance.
    endpoints : list of tuple, optional
        (modality, structure, scheme, region, metric) keys to analyse; overrides ``metrics``.
    metrics : tuple of str or None
        Metrics analysed (plus every knee-level row) when ``endpoints`` is not given; None = every metric present.
    """
    arms = arms or list(dict.fromkeys(allocation.values()))
    randomised = {a: sum(1 for v in allocation.values() if v == a) for a in arms}
    notes: list[str] = []
    unallocated = sorted({r["subject"] for r in change_rows} - allocation.keys())
    if unallocated:
        notes.append(f"{len(unallocated)} subject(s) with results but no allocation were left out: "
                     + ", ".join(unallocated[:10]))
    per: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    units: dict[tuple, str] = {}
    seen: set[tuple] = set()
    grades: dict[str, dict[tuple, tuple]] = defaultdict(dict)
    for r in change_rows:
        arm = allocation.get(r["subject"])
        if arm is None:
            continue
        key = tuple(r[k] for k in ENDPOINT_KEYS)
        if r["metric"] in GRADE_METRICS:
            grades[arm][(r["subject"], r["region"], r["metric"])] = (_num(r["baseline"]), _num(r["followup"]))
            continue
        if (r["subject"], *key) in seen:
            notes.append(f"{r['subject']}: more than one result for {'/'.join(key)}; the first is used")
            continue
        seen.add((r["subject"], *key))
        units[key] = r.get("unit", "")
        per[key][arm].append({"subject": r["subject"], "baseline": _num(r["baseline"]),
                              "followup": _num(r["followup"]), "delta": _num(r["delta"]),
                              "beyond_sdd": _truthy(r.get("beyond_sdd"))})
    if endpoints is not None:
        keys = [tuple(e) for e in endpoints]
    else:
        keys = sorted(k for k in per if metrics is None or k[4] in metrics or k[1] == "knee")
    arm_rows, contrast_rows = [], []
    for key in keys:
        if key not in per:
            notes.append(f"endpoint {'/'.join(key)} has no results")
            continue
        endpoint = dict(zip(ENDPOINT_KEYS, key, strict=True)) | {"unit": units[key]}
        data = per[key]
        for arm in arms:
            arm_rows.append(_arm_row(endpoint, arm, randomised[arm], data.get(arm, [])))
        ancova = _ancova(data, arms)
        for a, b in combinations(arms, 2):
            da = np.array([x["delta"] for x in data.get(a, []) if math.isfinite(x["delta"])])
            db = np.array([x["delta"] for x in data.get(b, []) if math.isfinite(x["delta"])])
            contrast_rows.append(_contrast_row(endpoint, a, b, da, db, None if ancova is None else ancova.get((a, b))))
    transitions, grade_rows = _transitions(grades, arms)
    return CohortResult(arms, arm_rows, contrast_rows, transitions, grade_rows, notes)


def _transitions(grades: dict[str, dict[tuple, tuple]], arms: list[str]) -> tuple[list[dict], list[dict]]:
    """Transition counts per arm/region/item, and knees with any worsening/improvement with Fisher tests."""
    from scipy import stats

    counts: dict[tuple, int] = defaultdict(int)
    knee_up: dict[str, dict[str, bool]] = defaultdict(dict)
    knee_down: dict[str, dict[str, bool]] = defaultdict(dict)
    for arm in arms:
        for (subject, region, metric), (b, f) in grades.get(arm, {}).items():
            if not (math.isfinite(b) and math.isfinite(f)):
                continue
            item = metric.removeprefix("moaks_").removesuffix("_grade")
            counts[(arm, region, item, int(b), int(f))] += 1
            knee_up[arm][subject] = knee_up[arm].get(subject, False) or f > b
            knee_down[arm][subject] = knee_down[arm].get(subject, False) or f < b
    transitions = [dict(zip(TRANSITION_COLUMNS, (*k, n), strict=True)) for k, n in sorted(counts.items())]
    grade_rows = []
    for arm in arms:
        n = len(knee_up[arm])
        for what, table in (("any_worsening", knee_up), ("any_improvement", knee_down)):
            k = sum(table[arm].values())
            grade_rows.append({"arm": arm, "arm_b": "", "outcome": what, "n_knees": n, "n_with": k,
                               "pct_with": 100.0 * k / n if n else math.nan, "p_fisher": math.nan})
    for a, b in combinations(arms, 2):
        for what, table in (("any_worsening", knee_up), ("any_improvement", knee_down)):
            ka, na = sum(table[a].values()), len(table[a])
            kb, nb = sum(table[b].values()), len(table[b])
            if na and nb:
                p = float(stats.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)
                grade_rows.append({"arm": a, "arm_b": b, "outcome": what, "n_knees": na + nb, "n_with": ka + kb,
                                   "pct_with": 100.0 * (ka + kb) / (na + nb), "p_fisher": p})
    return transitions, grade_rows
