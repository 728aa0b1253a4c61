"""Pair identity checks and ultrasound site changes."""

from __future__ import annotations

import pytest

from koaimg.change._guards import VisitIdentity, check_pair
from koaimg.change._ultrasound import compare_ultrasound
from koaimg.core import KoaimgError, PairMismatchError

SAME = VisitIdentity(subject="KOA-001", side="right", modality="MR", sequence="SAG 3D DESS",
                     spacing=(0.365, 0.365, 0.7))


def test_matching_pair_passes():
    check = check_pair(SAME, SAME)
    assert check.ok and not check.unchecked


@pytest.mark.parametrize(("change", "reason"), [
    ({"subject": "KOA-002"}, "different subject pseudonym"),
    ({"side": "left"}, "different knee side"),
    ({"sequence": "COR FLASH"}, "different sequence"),
    ({"spacing": (0.5, 0.5, 0.7)}, "voxel size differs"),
])
def test_mismatch_is_refused_with_its_reason(change, reason):
    other = VisitIdentity(**{**SAME.__dict__, **change})
    with pytest.raises(PairMismatchError) as info:
        check_pair(SAME, other)
    assert isinstance(info.value, KoaimgError) and reason in str(info.value) and "\n" not in str(info.value)
    flagged = check_pair(SAME, other, on_mismatch="flag")
    assert not flagged.ok and reason in flagged.mismatches[0]


def test_small_voxel_difference_is_tolerated_and_unknowns_are_listed():
    other = VisitIdentity(subject="KOA-001", side="right", modality="MR", sequence=None, spacing=(0.37, 0.365, 0.7))
    check = check_pair(SAME, other)
    assert check.ok and any("sequence" in u for u in check.unchecked)
    with pytest.raises(ValueError):
        check_pair(SAME, SAME, on_mismatch="ignore")


def _us_rows(values: dict[str, float], visit: str) -> list[dict]:
    return [{"subject": "S", "visit": visit, "modality": "US", "side": "right",
             "structure": "ultrasound_femoral_cartilage", "scheme": "", "region": site, "metric": "thickness",
             "value": v, "unit": "mm"} for site, v in values.items()]


def test_ultrasound_sites_and_mean():
    rows, notes = compare_ultrasound(_us_rows({"LC": 2.0, "IN": 2.6, "MC": 1.8}, "baseline"),
                                     _us_rows({"LC": 2.3, "IN": 2.7, "MC": 1.5}, "month6"))
    by = {r["region"]: r for r in rows}
    assert by["LC"]["delta"] == pytest.approx(0.3) and by["MC"]["delta"] == pytest.approx(-0.3)
    assert by["mean"]["delta"] == pytest.approx(0.1 / 3) and by["mean"]["baseline"] == pytest.approx(6.4 / 3)
    assert by["LC"]["sdd"] == pytest.approx(2.77 * 0.10, rel=1e-2) and by["LC"]["beyond_sdd"] is True
    assert not notes


def test_ultrasound_reported_mean_is_used_and_missing_sites_noted():
    base = _us_rows({"LC": 2.0, "IN": 2.6, "MC": 1.8, "mean": 2.1}, "baseline")
    rows, _ = compare_ultrasound(base, _us_rows({"LC": 2.1, "IN": 2.6, "MC": 1.8, "mean": 2.2}, "month6"))
    assert [r["delta"] for r in rows if r["region"] == "mean"] == [pytest.approx(0.1)]
    rows, notes = compare_ultrasound(_us_rows({"LC": 2.0, "MC": 1.8}, "baseline"),
                                     _us_rows({"LC": 2.1, "MC": 1.9}, "month6"))
    assert not any(r["region"] == "mean" for r in rows) and notes
