"""Cohort statistics on synthetic per-knee changes with known arm effects."""

from __future__ import annotations

import numpy as np
import pytest

from koaimg.change._stats import cohort_statistics

ARMS = {"two_dose": 0.25, "single": 0.10, "ha": -0.06}


def _rows(seed: int = 0, n: int = 20) -> tuple[list[dict], dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows, allocation = [], {}
    for arm, effect in ARMS.items():
        for i in range(n):
            subject = f"{arm}-{i}"
            allocation[subject] = arm
            base = rng.normal(2.0, 0.3)
            follow = base + effect + rng.normal(0, 0.15)
            rows.append({"subject": subject, "modality": "US", "structure": "ultrasound_femoral_cartilage",
                         "scheme": "", "region": "mean", "metric": "thickness", "baseline": str(base),
                         "followup": str(follow), "delta": str(follow - base),
                         "beyond_sdd": str(abs(follow - base) > 0.28),
                         "unit": "mm"})
            for region, grades in (("FMC", (1, 2 if arm == "ha" else 1)), ("FLC", (2, 1 if arm == "two_dose" else 2))):
                rows.append({"subject": subject, "modality": "MR", "structure": "femoral_cartilage", "scheme": "moaks",
                             "region": region, "metric": "moaks_any_loss_grade", "baseline": str(grades[0]),
                             "followup": str(grades[1]), "delta": str(grades[1] - grades[0]), "beyond_sdd": "",
                             "unit": "grade"})
    return rows, allocation


def test_per_arm_summary_and_between_arm_tests():
    rows, allocation = _rows()
    result = cohort_statistics(rows, allocation, arms=list(ARMS))
    per_arm = {r["arm"]: r for r in result.arm_rows}
    for arm, effect in ARMS.items():
        r = per_arm[arm]
        assert r["n_analysed"] == r["n_randomised"] == 20
        assert r["delta_ci95_low"] < r["delta_mean"] < r["delta_ci95_high"]
        assert abs(r["delta_mean"] - effect) < 0.1
        assert r["srm"] == pytest.approx(r["delta_mean"] / r["delta_sd"])
        assert r["delta_q1"] <= r["delta_median"] <= r["delta_q3"]
    assert per_arm["two_dose"]["p_within_t"] < 1e-6 and per_arm["two_dose"]["flag"]  # SRM > 1 is flagged
    contrast = next(r for r in result.contrast_rows if (r["arm_a"], r["arm_b"]) == ("two_dose", "ha"))
    assert contrast["ancova_ci95_low"] < contrast["ancova_diff_a_minus_b"] < contrast["ancova_ci95_high"]
    assert abs(contrast["ancova_diff_a_minus_b"] - 0.31) < 0.1 and contrast["p_ancova"] < 1e-6
    assert contrast["p_welch"] < 1e-6 and contrast["p_mannwhitney"] < 1e-4 and contrast["hedges_g"] > 1


def test_ancova_matches_statsmodels_formula():
    import pandas as pd
    import statsmodels.formula.api as smf

    rows, allocation = _rows(seed=1)
    result = cohort_statistics(rows, allocation, arms=list(ARMS))
    frame = pd.DataFrame([{"arm": allocation[r["subject"]], "baseline": float(r["baseline"]),
                           "followup": float(r["followup"])} for r in rows if r["metric"] == "thickness"])
    fit = smf.ols("followup ~ baseline + C(arm, Treatment('ha'))", frame).fit()
    expected = fit.params["C(arm, Treatment('ha'))[T.single]"]
    contrast = next(r for r in result.contrast_rows if (r["arm_a"], r["arm_b"]) == ("single", "ha"))
    assert contrast["ancova_diff_a_minus_b"] == pytest.approx(expected)
    assert contrast["p_ancova"] == pytest.approx(fit.pvalues["C(arm, Treatment('ha'))[T.single]"])


def test_transitions_and_missing_subjects():
    rows, allocation = _rows(n=5)
    allocation["ha-99"] = "ha"  # randomised, never analysed
    result = cohort_statistics(rows, allocation, arms=list(ARMS))
    counts = {(t["arm"], t["region"], t["baseline_grade"], t["followup_grade"]): t["n"] for t in result.transition_rows}
    assert counts[("ha", "FMC", 1, 2)] == 5 and counts[("two_dose", "FLC", 2, 1)] == 5
    ha = next(r for r in result.arm_rows if r["arm"] == "ha")
    assert ha["n_randomised"] == 6 and ha["n_analysed"] == 5
    worse = {(g["arm"], g["arm_b"]): g for g in result.grade_rows if g["outcome"] == "any_worsening"}
    assert worse[("ha", "")]["n_with"] == 5 and worse[("two_dose", "")]["n_with"] == 0
    assert worse[("two_dose", "ha")]["p_fisher"] < 0.01
