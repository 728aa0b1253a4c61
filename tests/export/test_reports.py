"""HTML reports: self-contained, the right sections, tolerant inputs; figures in reading orientation; the CLI."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from koaimg.core import UnreadableFileError
from koaimg.export import (
    report_kind,
    write_cohort_report,
    write_pair_report,
    write_report,
    write_reports_tree,
    write_scan_report,
)
from koaimg.export._plots import display_slice

from .conftest import change_rows, measure_rows, write_csv


def _assert_self_contained(html: str) -> None:
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "external resource referenced"
    assert "<link" not in html
    assert "<style>" in html


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_scan_report_is_self_contained_with_all_sections(scan_dir):
    path = write_scan_report(scan_dir)
    assert path == scan_dir / "report.html"
    html = path.read_text()
    _assert_self_contained(html)
    assert html.count("data:image/png;base64,") == 2  # overlay + thickness map
    for text in ("SUBJ-001", "Quality checks", "MOAKS-style cartilage grid", "Regional measurements", "FMC",
                 'class="g2"', "a crafted note", "sum of grades", "passed"):
        assert text in html, text
    assert not list(scan_dir.glob(".report.html.*"))  # atomic write left no temporary file


def test_scan_report_flags_a_side_conflict(scan_dir):
    html = write_scan_report(scan_dir, expected_side="left").read_text()
    assert "failed" in html and "swapped" in html


def test_scan_report_without_label_map_or_map(scan_dir):
    for name in ("labels.nii.gz", "femoral_thickness_map.npy", "moaks.json"):
        (scan_dir / name).unlink()
    html = write_scan_report(scan_dir).read_text()
    assert "No label map or thickness map" in html
    assert "data:image/png" not in html


def test_scan_report_of_the_measured_sample(measured_sample):
    html = write_scan_report(measured_sample).read_text()
    assert "all 14 MOAKS cartilage subregions measured" in html
    assert "right knee, consistent with anatomy" in html
    assert html.count("data:image/png;base64,") == 2


def test_ultrasound_scan_report(tmp_path):
    rows = [{"subject": "SUBJ-002", "visit": "baseline", "modality": "US", "side": "left",
             "structure": "ultrasound_femoral_cartilage", "scheme": "us", "region": site, "metric": "thickness",
             "value": v, "unit": "mm"} for site, v in (("LC", 2.1), ("IN", 2.6), ("MC", 1.9), ("mean", 2.2))]
    write_csv(rows, tmp_path / "measures.csv")
    (tmp_path / "overlay.png").write_bytes(_tiny_png())
    (tmp_path / "ultrasound.json").write_text(json.dumps({"frame_index": 3, "method": "edges",
                                                          "flags": ["low contrast at IN"], "profile": [1, 2]}))
    html = write_scan_report(tmp_path).read_text()
    _assert_self_contained(html)
    assert "ultrasound" in html and "intercondylar notch" in html and "2.20 mm" in html
    assert "frame_index: 3" in html and "low contrast at IN" in html
    assert "all three ultrasound sites" in html


def test_missing_measures_is_a_clear_error(tmp_path):
    with pytest.raises(UnreadableFileError, match=r"no measures\.csv"):
        write_scan_report(tmp_path)


def _pair(tmp_path, *, beyond_format=str):
    subject = tmp_path / "OUT" / "SUBJ-001"
    bl = measure_rows()
    fu = measure_rows(visit="month6", scale=0.9)
    rows = change_rows(bl, fu)
    for r in rows:
        r["beyond_sdd"] = beyond_format(r["beyond_sdd"])
    fu_fmc = next(r for r in rows if r["region"] == "FMC" and r["metric"] == "moaks_any_loss_grade")
    fu_fmc["followup"] = 3
    change = subject / "change_baseline_month6"
    write_csv(rows, change / "change.csv")
    np.save(change / "delta_thickness_map.npy", np.linspace(-0.5, 0.3, 600).reshape(30, 20))
    (change / "notes.txt").write_text("an extra file the report ignores")
    write_csv([{"a": 1}], change / "unrelated.csv")
    (change / "transitions.json").write_text(json.dumps({"moaks_summed_score_change_pos_worse": 1,
                                                         "notes": ["registration converged"]}))
    return change


def test_pair_report_marks_detectable_change_and_transitions(tmp_path):
    change = _pair(tmp_path)
    html = write_pair_report(change).read_text()
    _assert_self_contained(html)
    assert "baseline → month6" in html
    assert "▼ thinning" in html and 'class="thin"' in html
    assert "2 → 3" in html and 'class="worse"' in html
    assert "data:image/png;base64," in html
    assert "registration converged" in html


@pytest.mark.parametrize("fmt", [lambda b: "1" if b is True else "0" if b is False else "",
                                 lambda b: "yes" if b is True else "no" if b is False else ""])
def test_pair_report_reads_other_boolean_spellings(tmp_path, fmt):
    html = write_pair_report(_pair(tmp_path, beyond_format=fmt)).read_text()
    assert "▼ thinning" in html


def test_ultrasound_pair_report(tmp_path):
    def us(visit, values):
        return [{"subject": "S", "visit": visit, "modality": "US", "side": "right",
                 "structure": "ultrasound_femoral_cartilage", "scheme": "us", "region": site, "metric": "thickness",
                 "value": v, "unit": "mm"} for site, v in zip(("LC", "IN", "MC", "mean"), values, strict=True)]

    write_csv(change_rows(us("baseline", (2.0, 2.5, 1.8, 2.1)), us("month6", (2.3, 2.6, 2.2, 2.37)), sdd=0.2),
              tmp_path / "change.csv")
    html = write_pair_report(tmp_path).read_text()
    assert "Site change" in html and "+0.27 mm" in html and "▲ thickening" in html


def _cohort_rows(n=6):
    rng = np.random.default_rng(3)
    rows = []
    for arm, mean in (("two_dose", 0.25), ("single_dose", 0.1), ("hyaluronic_acid", -0.06)):
        for i in range(n):
            b = 2.2 + rng.normal(0, 0.2)
            d = rng.normal(mean, 0.15)
            rows.append({"subject": f"{arm}-{i}", "arm": arm, "modality": "US", "side": "right",
                         "structure": "ultrasound_femoral_cartilage", "scheme": "us", "region": "mean",
                         "metric": "thickness", "baseline": b, "followup": b + d, "delta": d,
                         "pct_delta": 100 * d / b, "beyond_sdd": abs(d) > 0.3, "unit": "mm"})
    return rows


def test_cohort_report_from_a_per_knee_table(tmp_path):
    write_csv(_cohort_rows(), tmp_path / "cohort_knees.csv")
    write_csv([{"endpoint": "US mean thickness", "comparison": "two_dose - hyaluronic_acid", "estimate": 0.31,
                "p_value": 0.0004}], tmp_path / "between_arms.csv")
    html = write_cohort_report(tmp_path).read_text()
    _assert_self_contained(html)
    assert html.count("data:image/png;base64,") == 1
    for text in ("Per-arm change", "two_dose", "hyaluronic_acid", "95 % CI of Δ", "between_arms.csv", "0.0004"):
        assert text in html, text


def test_cohort_report_from_pairs_and_allocation(tmp_path):
    out = tmp_path / "OUT"
    rows = _cohort_rows(n=3)
    write_csv([{"subject": r["subject"], "arm": r["arm"]} for r in rows], out / "allocation.csv")
    for r in rows:
        pair = {k: v for k, v in r.items() if k != "arm"}
        write_csv([pair], out / r["subject"] / "change_baseline_month6" / "change.csv")
    (out / "cohort").mkdir()
    html = write_cohort_report(out / "cohort").read_text()
    assert ">9<" in html  # subjects in the header
    assert "single_dose" in html


def test_cohort_arm_summary_numbers():
    from koaimg.export._report_cohort import arm_summary

    values = [{"delta": d, "baseline": 2.0, "followup": 2.0 + d, "beyond_sdd": d > 0.25} for d in (0.1, 0.2, 0.3)]
    s = arm_summary(values)
    assert s["n"] == 3 and s["delta"] == "0.200 ± 0.100"
    assert s["ci"][0] == pytest.approx(0.2 - 4.302653 * 0.1 / np.sqrt(3), abs=1e-5)
    assert s["srm"] == pytest.approx(2.0) and s["beyond"] == 1


def test_report_kind_tree_and_cli(scan_dir, tmp_path):
    from koaimg.cli import app
    from koaimg.cli._app import _register

    out = scan_dir.parents[2]
    change = out / "SUBJ-001" / "change_baseline_month6"
    write_csv(change_rows(measure_rows(), measure_rows(visit="month6")), change / "change.csv")
    write_csv([{"subject": "SUBJ-001", "arm": "A"}], out / "allocation.csv")
    assert report_kind(scan_dir) == "scan" and report_kind(change) == "pair" and report_kind(out) is None
    written, failed = write_reports_tree(out)
    assert sorted(p.parent.name for p in written) == ["MR", "change_baseline_month6"] and not failed
    assert write_report(change) == change / "report.html"
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(scan_dir)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    result = runner.invoke(app, ["report", "--recursive", str(out)])
    assert result.exit_code == 0 and result.output.count("wrote") == 2


def test_cli_error_on_a_folder_without_outputs(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from koaimg.cli import main; main()", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no measures.csv, change.csv or cohort table" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_display_slice_reading_orientation():
    """A marker placed anterior-superior shows at the top left (sagittal); a right-side marker at the left
    (coronal), whatever the voxel axis order and signs."""
    for affine in (np.diag([1.0, 1.0, 1.0, 1.0]),                               # RAS
                   np.array([[0, 0, -1.0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]]),  # permuted, flipped
                   np.diag([-0.5, -0.5, 2.0, 1.0])):                            # LPS-like, anisotropic
        arr = np.zeros((10, 10, 10))
        inv = np.linalg.inv(affine)
        centre = affine[:3, :3] @ np.full(3, 4.5) + affine[:3, 3]

        def put(offset, value, arr=arr, inv=inv, centre=centre, affine=affine):
            ijk = np.rint(inv[:3, :3] @ (centre + np.asarray(offset) * np.abs(affine[:3, :3]).max(axis=1)
                                         - affine[:3, 3])).astype(int)
            arr[tuple(np.clip(ijk, 0, 9))] = value
            return ijk

        ijk_as = put((0, 4, 4), 1)    # anterior, superior
        ijk_r = put((4, 0, 0), 2)     # patient's right (RAS +x)
        sag_axis = int(np.argmax(np.abs(affine[0, :3])))
        sag, _ = display_slice(arr, affine, "sagittal", int(ijk_as[sag_axis]))
        r, c = np.argwhere(sag == 1)[0]
        assert r < sag.shape[0] / 2 and c < sag.shape[1] / 2
        cor_axis = int(np.argmax(np.abs(affine[1, :3])))
        cor, _ = display_slice(arr, affine, "coronal", int(ijk_r[cor_axis]))
        r, c = np.argwhere(cor == 2)[0]
        assert c < cor.shape[1] / 2


def test_csv_rows_are_read_verbatim(scan_dir):
    # the report reads the same strings the tidy writer produced; a malformed value renders as text, not a crash
    with open(scan_dir / "measures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["value"] = "n/a"
    write_csv(rows, scan_dir / "measures.csv")
    assert "n/a" in write_scan_report(scan_dir).read_text()


def test_cohort_report_on_the_cohort_stage_outputs(tmp_path):
    """The report reads cohort.csv / contrasts.csv / transitions.csv / cohort.json as `koaimg cohort` writes them,
    and finds the per-knee rows through cohort.json for the plots."""
    pipeline = pytest.importorskip("koaimg.pipeline")
    if not hasattr(pipeline, "run_cohort"):
        pytest.skip("the cohort stage is not available")
    results = tmp_path / "OUT"
    rows = _cohort_rows(n=5)
    write_csv([{"subject": r["subject"], "arm": r["arm"]} for r in rows], tmp_path / "allocation.csv")
    for r in rows:
        pair = {k: v for k, v in r.items() if k != "arm"} | {"baseline_visit": "baseline", "followup_visit": "month6",
                                                             "sdd": 0.3}
        write_csv([pair], results / r["subject"] / "change_baseline_month6" / "change.csv")
    cohort = pipeline.run_cohort(tmp_path / "allocation.csv", results, results / "cohort")
    html = write_cohort_report(cohort).read_text()
    _assert_self_contained(html)
    for text in ("Per-arm change", "Between arms", "p ANCOVA", "two_dose − ", "data:image/png;base64,", ">15<"):
        assert text in html, text


def test_scan_report_tables_per_subregion_scheme(scan_dir):
    rows = measure_rows()
    rows += [dict(r, scheme="wirth-eckstein", region={"FMC": "cMF", "all": "all"}[r["region"]])
             for r in rows if r["region"] in ("FMC", "all") and not r["metric"].startswith("moaks")]
    write_csv(rows, scan_dir / "measures.csv")
    html = write_scan_report(scan_dir).read_text()
    assert "Femoral cartilage — MOAKS subregions" in html
    assert "Femoral cartilage — Wirth–Eckstein subregions" in html and ">cMF<" in html
    assert "all 14 MOAKS cartilage subregions measured" in html


def test_reports_are_reproducible(scan_dir):
    """No clock or random state in a report: a resumed batch rewrites byte-identical files."""
    first = write_scan_report(scan_dir).read_bytes()
    assert write_scan_report(scan_dir).read_bytes() == first


def test_scan_figures_are_rendered_once_per_unchanged_folder(scan_dir, monkeypatch):
    """report.html and the DICOM secondary captures of one scan share one rendering; a changed input redraws."""
    import koaimg.export._report_scan as report_scan
    from koaimg.core import LabelVolume
    from koaimg.io import write_volume

    calls = []
    real = report_scan._render_figures

    def counting(folder, image):
        calls.append(folder)
        return real(folder, image)

    monkeypatch.setattr(report_scan, "_render_figures", counting)
    monkeypatch.setattr(report_scan, "_LAST_FIGURES", [])
    first = report_scan.scan_figures(scan_dir)
    assert report_scan.scan_figures(scan_dir) == first and len(calls) == 1
    labels = np.zeros((20, 20, 8), np.uint8)
    labels[5:15, 5:15, 2:6] = 1
    write_volume(LabelVolume(labels, np.diag([0.6, 0.6, 1.5, 1.0])), scan_dir / "labels.nii.gz")
    report_scan.scan_figures(scan_dir)
    assert len(calls) == 2, "a rewritten label map is drawn again"
