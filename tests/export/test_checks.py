"""Plausibility checks: pure functions over tidy rows."""

from __future__ import annotations

from koaimg.export import QALimits, plausibility_checks
from koaimg.export._report_checks import (
    FAIL,
    OK,
    WARN,
    check_coverage,
    check_side,
    check_thickness,
    check_volumes,
    overall_level,
)

from .conftest import measure_rows


def _levels(flags, check):
    return [f.level for f in flags if f.check == check]


def test_plausible_knee_passes_every_check():
    flags = plausibility_checks(measure_rows(), expected_side="right")
    assert overall_level(flags) == OK
    assert {f.check for f in flags} == {"volume", "thickness", "side", "coverage"}


def test_rows_read_from_csv_as_strings_are_checked_alike():
    rows = [{k: str(v) for k, v in r.items()} for r in measure_rows()]
    assert overall_level(plausibility_checks(rows)) == OK


def test_volume_out_of_range_warns():
    flags = check_volumes(measure_rows(scale=0.1))
    assert WARN in _levels(flags, "volume")
    assert any("femoral cartilage volume 900" in f.message for f in flags)


def test_custom_limits_apply():
    limits = QALimits(volume_mm3={"femoral_cartilage": (10000.0, 20000.0)})
    assert _levels(check_volumes(measure_rows(), limits), "volume") == [WARN]


def test_thickness_range_and_leak():
    flags = check_thickness(measure_rows(scale=3.0))
    messages = " ".join(f.message for f in flags)
    assert WARN in _levels(flags, "thickness")
    assert "outside the plausible" in messages and "possible segmentation leak" in messages


def test_ultrasound_thickness_and_coverage():
    rows = [{"structure": "ultrasound_femoral_cartilage", "region": site, "metric": "thickness", "value": v,
             "side": "right", "unit": "mm"} for site, v in (("LC", 2.1), ("IN", 7.5), ("mean", 2.4))]
    flags = check_thickness(rows)
    assert [f.level for f in flags] == [WARN]
    assert "IN" in flags[0].message
    coverage = check_coverage(rows)
    assert coverage[0].level == WARN and "MC" in coverage[0].message


def test_side_mixed_unknown_and_conflicting():
    rows = measure_rows()
    assert check_side(rows + measure_rows(side="left"))[0].level == FAIL
    assert check_side(measure_rows(side="unknown"))[0].level == WARN
    header = check_side(rows, expected_side="left")
    assert header[0].level == FAIL and "swapped" in header[0].message
    anatomy = check_side(rows, anatomy_side="left")
    assert anatomy[0].level == FAIL and "anatomy" in anatomy[0].message
    agree = check_side(rows, expected_side="RIGHT", anatomy_side="right")
    assert agree[0].level == OK and "header and anatomy" in agree[0].message


def test_coverage_missing_subregions():
    flags = check_coverage(measure_rows(drop=("FMP", "TLA")))
    assert flags[0].level == WARN and "12 of 14" in flags[0].message and "FMP" in flags[0].message
    many = check_coverage(measure_rows(drop=("FMT", "FLT", "FMC", "FLC", "FMP", "FLP", "TMA", "TMC")))
    assert many[0].level == FAIL
    assert check_coverage([])[0].level == FAIL
