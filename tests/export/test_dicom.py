"""DICOM SEG / TID 1500 SR / Secondary Capture: re-read with highdicom, reference the source, carry no extra PHI."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from koaimg.core import GeometryError, LabelVolume, Structure
from koaimg.export import (
    read_dicom_sr_rows,
    write_dicom_outputs,
    write_dicom_seg,
    write_dicom_sr,
    write_secondary_capture,
)
from koaimg.export._dicom_codes import PRIVATE_SCHEME
from koaimg.export._dicom_source import read_source_series

from .conftest import SAMPLE, measure_rows


def femoral_rows() -> list[dict]:
    """The femoral plate's rows only: 7 measurement groups keep the SR tests fast."""
    return [r for r in measure_rows() if r["structure"] == "femoral_cartilage"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _seg_labels(seg, labels: LabelVolume) -> np.ndarray:
    """The SEG's segments back on the label map's grid, as koaimg structure values."""
    number_to_structure = {}
    for item in seg.SegmentSequence:
        key = item.SegmentLabel.replace(" ", "_")
        number_to_structure[int(item.SegmentNumber)] = int(Structure.from_key(key))
    vol = seg.get_volume(combine_segments=True)
    target = hd.Volume(np.zeros(labels.shape, np.uint8), _RAS_TO_LPS @ labels.affine, "PATIENT")
    arr = vol.match_geometry(target).array
    out = np.zeros_like(arr)
    for number, value in number_to_structure.items():
        out[arr == number] = value
    return out


def test_seg_round_trips_exactly_with_coded_anatomy(tiny_series, tmp_path):
    folder, labels = tiny_series
    path = write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    assert np.array_equal(_seg_labels(seg, labels), labels.array)
    by_label = {d.SegmentLabel: d for d in seg.SegmentSequence}
    femoral = by_label["femoral cartilage"]
    assert femoral.SegmentedPropertyTypeCodeSequence[0].CodeValue == "309312004"  # SCT Cartilage
    assert femoral.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # SCT Tissue
    assert femoral.PrimaryAnatomicStructureSequence[0].CodeValue == "71341001"  # SCT Femur
    assert femoral.AnatomicRegionSequence[0].CodeValue == "49076000"  # SCT Knee joint
    assert by_label["tibia"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "12611008"
    assert by_label["patella"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64234005"
    assert "meniscus" not in by_label  # empty structures are left out
    source = read_source_series(folder)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID


def test_seg_accepts_permuted_axes_and_rejects_another_grid(tiny_series, tmp_path):
    folder, labels = tiny_series
    # the same grid with the array axes reordered and one flipped: still exactly the source grid
    arr = np.flip(np.transpose(labels.array, (2, 0, 1)), axis=1)
    aff = labels.affine.copy()[:, [2, 0, 1, 3]]
    aff[:3, 3] += aff[:3, 1] * (labels.shape[0] - 1)
    aff[:3, 1] *= -1
    permuted = LabelVolume(np.ascontiguousarray(arr), aff)
    seg = hd.seg.segread(write_dicom_seg(permuted, folder, tmp_path / "perm.dcm"))
    assert np.array_equal(_seg_labels(seg, labels), labels.array)
    shifted = LabelVolume(labels.array, labels.affine @ np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(GeometryError, match="not on the source series"):
        write_dicom_seg(shifted, folder, tmp_path / "bad.dcm")
    assert not (tmp_path / "bad.dcm").exists()


def test_fractional_seg_from_probabilities(tiny_series, tmp_path):
    folder, labels = tiny_series
    structures = [Structure.FEMORAL_CARTILAGE, Structure.TIBIAL_CARTILAGE]
    probs = {s: (labels.array == int(s)).astype(np.float32) * 0.8 for s in structures}
    seg = hd.seg.segread(write_dicom_seg(labels, folder, tmp_path / "frac.dcm", probabilities=probs,
                                         structures=structures))
    assert seg.SegmentationType == "FRACTIONAL"
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["femoral cartilage", "tibial cartilage"]
    vol = seg.get_volume(combine_segments=False, rescale_fractional=True)
    assert np.isclose(vol.array.max(), 0.8, atol=1 / 255)


def test_derived_objects_carry_no_extra_identifiers_and_are_reproducible(tiny_series, tmp_path):
    folder, labels = tiny_series
    datasets = read_source_series(folder)
    for ds in datasets:  # a source that carries more than the pseudonym
        ds.PatientBirthDate = "19500101"
        ds.ReferringPhysicianName = "Doe^Jane"
        ds.InstitutionName = "General Hospital"
        ds.AccessionNumber = "ACC123"
    a = write_dicom_seg(labels, datasets, tmp_path / "a.dcm")
    sr = write_dicom_sr(femoral_rows(), datasets, tmp_path / "sr.dcm", seg=a)
    sc = write_secondary_capture(np.zeros((8, 8, 3), np.uint8), datasets, tmp_path / "sc.dcm")
    # re-running an export (e.g. after a crash and --resume) writes the same bytes
    assert write_dicom_seg(labels, datasets, tmp_path / "a2.dcm").read_bytes() == a.read_bytes()
    assert write_dicom_sr(femoral_rows(), datasets, tmp_path / "sr2.dcm", seg=a).read_bytes() == sr.read_bytes()
    sc2 = write_secondary_capture(np.zeros((8, 8, 3), np.uint8), datasets, tmp_path / "sc2.dcm")
    assert sc2.read_bytes() == sc.read_bytes()
    for path in (a, sr, sc):
        ds = pydicom.dcmread(path)
        assert str(ds.PatientID) == "SUBJ-001"
        assert ds.get("PatientBirthDate", "") == ""
        assert ds.get("ReferringPhysicianName", "") == ""
        assert ds.get("AccessionNumber", "") == ""
        assert "InstitutionName" not in ds
        assert ds.StudyInstanceUID == datasets[0].StudyInstanceUID


def test_sr_round_trips_measures_and_grades(tiny_series, tmp_path):
    folder, labels = tiny_series
    seg_path = write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    rows = femoral_rows()
    path = write_dicom_sr(rows, folder, tmp_path / "sr.dcm", seg=seg_path)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    back = {(r["structure"], r["region"], r["metric"]): r["value"] for r in read_dicom_sr_rows(path)}
    expected = {(r["structure"], r["region"], r["metric"]): float(r["value"]) for r in rows if r["value"] != ""}
    assert back.keys() == expected.keys()
    for key, value in expected.items():
        assert back[key] == pytest.approx(value, abs=1e-6), key
    assert back[("femoral_cartilage", "FMC", "moaks_any_loss_grade")] == 2
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 7  # whole plate + 6 femoral subregions
    seg = pydicom.dcmread(seg_path)
    ref = groups[0].referenced_segment
    assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
    evidence = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence}
    assert evidence == {read_source_series(folder)[0].SeriesInstanceUID, seg.SeriesInstanceUID}
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME


def test_sr_for_ultrasound_sites_references_the_us_object(tmp_path):
    source = SAMPLE / "SAMPLE-01" / "baseline" / "US"
    rows = [{"subject": "SAMPLE-01", "visit": "baseline", "modality": "US", "side": "right",
             "structure": "ultrasound_femoral_cartilage", "scheme": "us", "region": site, "metric": "thickness",
             "value": v, "unit": "mm"} for site, v in (("LC", 2.1), ("IN", 2.6), ("MC", 1.9), ("mean", 2.2))]
    path = write_dicom_sr(rows, source, tmp_path / "us_sr.dcm")
    back = read_dicom_sr_rows(path)
    assert {(r["region"], r["value"]) for r in back} == {("LC", 2.1), ("IN", 2.6), ("MC", 1.9), ("mean", 2.2)}
    us = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    sr = hd.sr.srread(path)
    refs = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
            for s in study.ReferencedSeriesSequence}
    assert refs == {us.SeriesInstanceUID}


def test_secondary_capture_keeps_pixels_and_study(tiny_series, tmp_path):
    folder, _ = tiny_series
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    ds = pydicom.dcmread(write_secondary_capture(rgb, folder, tmp_path / "sc.dcm", description="test figure"))
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert np.array_equal(ds.pixel_array, rgb)
    assert ds.Laterality == "R"
    assert isinstance(hd.imread(tmp_path / "sc.dcm"), hd.Image)


def test_dicom_outputs_of_a_measured_scan(measured_sample, tmp_path):
    paths = write_dicom_outputs(measured_sample, SAMPLE / "SAMPLE-01" / "baseline" / "MR", out_dir=tmp_path / "dcm")
    names = sorted(p.name for p in paths)
    assert names == ["sc_1.dcm", "sc_2.dcm", "sc_3.dcm", "seg.dcm", "sr.dcm"]
    seg = hd.seg.segread(tmp_path / "dcm" / "seg.dcm")
    assert seg.number_of_segments == 8
    rows = read_dicom_sr_rows(tmp_path / "dcm" / "sr.dcm")
    assert any(r["region"] == "FMC" and r["metric"] == "ThCtAB.Me" for r in rows)


def test_sr_keeps_a_second_scheme_without_duplicating_the_plate(tiny_series, tmp_path):
    folder, _ = tiny_series
    rows = [r for r in femoral_rows() if r["region"] in ("all", "FMC")]
    extra = [dict(r, scheme="wirth-eckstein", region="cMF.e" if r["region"] == "FMC" else "all")
             for r in rows if r["metric"] in ("ThCtAB.Me", "VC")]
    back = read_dicom_sr_rows(write_dicom_sr(rows + extra, folder, tmp_path / "sr.dcm"))
    regions = sorted({r["region"] for r in back})
    assert regions == ["FMC", "all", "wirth-eckstein:cMF.e"]
    assert sum(1 for r in back if r["region"] == "all" and r["metric"] == "VC") == 1


def test_seg_from_an_enhanced_multiframe_source(tiny_series, tmp_path):
    folder, labels = tiny_series
    single = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(single, series_instance_uid=hd.UID(), series_number=9,
                                                        sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "EMR").mkdir()
    enhanced.save_as(tmp_path / "EMR" / "mf.dcm")
    seg = hd.seg.segread(write_dicom_seg(labels, tmp_path / "EMR", tmp_path / "seg.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == enhanced.SeriesInstanceUID
    assert np.array_equal(_seg_labels(seg, labels), labels.array)
