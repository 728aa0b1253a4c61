"""TID 1500 measurement report (Comprehensive 3D SR) of the regional cartilage measures and MOAKS-style grades.

One measurement group per (plate, region) of the tidy ``measures.csv`` rows: numbers become TID 300 measurements
(thickness, volume, areas with UCUM units), MOAKS-style grades become qualitative evaluations in koaimg's private
scheme. With a SEG the groups are volumetric ROI groups that reference the plate's segment; the source series and
the SEG are listed as evidence. The tracking identifier ``<structure>/<region>`` lets ``read_dicom_sr_rows`` turn a
report back into tidy rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from .. import __version__
from ._dicom_codes import (
    GRADE_METRICS,
    LATERALITY,
    PLATE_BONE,
    PLATE_SEGMENT,
    PRIVATE_SCHEME,
    PRIVATE_SCHEME_NAME,
    PROCEDURE,
    UNITS,
    grade_concepts,
    metric_concept,
    region_concept,
)
from ._dicom_source import (
    MANUFACTURER,
    MODEL_NAME,
    content_hash,
    derived_uid,
    finalise,
    quiet_person_names,
    read_source_series,
    save,
)


def _rows(rows: Iterable[Mapping] | str | Path) -> list[dict]:
    if isinstance(rows, (str, Path)):
        with open(rows, newline="") as fh:
            return list(csv.DictReader(fh))
    return [dict(r) for r in rows]


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # drop NaN


def _segment_numbers(seg: Dataset | None) -> dict[str, int]:
    """Plate structure key -> segment number in the SEG (matched by the segment label koaimg writes)."""
    if seg is None:
        return {}
    from ._dicom_codes import SEGMENT_CODING

    by_label = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    return {key: by_label[SEGMENT_CODING[s].label] for key, s in PLATE_SEGMENT.items()
            if SEGMENT_CODING[s].label in by_label}


def build_dicom_sr(rows: Iterable[Mapping] | str | Path, source: str | Path | Sequence[Dataset], *,
                   seg: Dataset | str | Path | None = None, series_number: int = 301) -> Dataset:
    """The Comprehensive 3D SR dataset (not written); see ``write_dicom_sr``."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    table = _rows(rows)
    datasets = read_source_series(source)
    seg_ds = pydicom.dcmread(seg) if isinstance(seg, (str, Path)) else seg
    segments = _segment_numbers(seg_ds)
    src = datasets[0]
    # one group per plate and region; a second subregion scheme (e.g. Wirth-Eckstein) repeats the whole-plate rows,
    # which are kept once; its subregions are named <scheme>:<region>
    groups: dict[tuple[str, str], list[dict]] = {}
    first_scheme: dict[str, str] = {}
    for row in table:
        structure, region = str(row.get("structure", "")), str(row.get("region", ""))
        scheme = str(row.get("scheme", "") or "")
        first_scheme.setdefault(structure, scheme)
        if scheme != first_scheme[structure]:
            if region == "all":
                continue
            region = f"{scheme}:{region}"
        groups.setdefault((structure, region), []).append(row)
    visit = next((str(r["visit"]) for r in table if r.get("visit")), "")
    time_point = hd.sr.TimePointContext(time_point=visit) if visit else None
    algorithm = hd.sr.AlgorithmIdentification(name="koaimg", version=__version__)
    measurement_groups = []
    for (structure, region), members in groups.items():
        side = next((str(r.get("side", "")).lower() for r in members if r.get("side")), "")
        bone = PLATE_BONE.get(structure)
        site = hd.sr.FindingSite(anatomic_location=region_concept(region) if bone is None or region != "all"
                                 else bone, laterality=LATERALITY.get(side))
        measurements, evaluations = [], []
        for row in members:
            metric, value = str(row.get("metric", "")), _number(row.get("value"))
            if value is None:
                continue
            if metric in GRADE_METRICS:
                name, coded = grade_concepts(metric, round(value))
                evaluations.append(hd.sr.QualitativeEvaluation(name=name, value=coded))
                continue
            unit = UNITS.get(str(row.get("unit", "")) or "1", UNITS["1"])
            name, derivation = metric_concept(metric)
            measurements.append(hd.sr.Measurement(name=name, value=value, unit=unit, derivation=derivation))
        if not measurements and not evaluations:
            continue
        tracking = hd.sr.TrackingIdentifier(identifier=f"{structure}/{region}",
                                            uid=derived_uid("sr-group", src.SeriesInstanceUID, structure, region))
        common = dict(tracking_identifier=tracking, time_point_context=time_point, finding_type=codes.SCT.Cartilage,
                      algorithm_id=algorithm, finding_sites=[site], measurements=measurements or None,
                      qualitative_evaluations=evaluations or None)
        if structure in segments:
            # the source series, not every source frame: TID 1411 allows either, and this keeps the SR small
            ref = hd.sr.ReferencedSegment(
                sop_class_uid=seg_ds.SOPClassUID, sop_instance_uid=seg_ds.SOPInstanceUID,
                segment_number=segments[structure],
                source_series=hd.sr.SourceSeriesForSegmentation(src.SeriesInstanceUID))
            measurement_groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=ref, **common))
        else:
            measurement_groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", MANUFACTURER), name=MANUFACTURER, manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE, imaging_measurements=measurement_groups)
    evidence = list(datasets) + ([seg_ds] if seg_ds is not None else [])
    key = content_hash(repr(sorted((k, str(sorted(r.items()))) for k, v in groups.items() for r in v)),
                       seg_ds.SOPInstanceUID if seg_ds is not None else "")
    with quiet_person_names():
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report[0],
            series_instance_uid=derived_uid("sr-series", src.SeriesInstanceUID, key),
            series_number=series_number, sop_instance_uid=derived_uid("sr", src.SeriesInstanceUID, key),
            instance_number=1, manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
            series_description="koaimg cartilage measurements")
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "koaimg project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return finalise(sr, src)


def write_dicom_sr(rows: Iterable[Mapping] | str | Path, source: str | Path | Sequence[Dataset], path: str | Path, *,
                   seg: Dataset | str | Path | None = None, series_number: int = 301) -> Path:
    """Write a TID 1500 Comprehensive 3D SR of tidy measure rows (or a measures.csv path).

    Regional measures become numeric measurements, MOAKS-style grades qualitative evaluations; groups reference the
    plate's segment of ``seg`` (a koaimg DICOM SEG) when given, and the source series is recorded as evidence.
    """
    return save(build_dicom_sr(rows, source, seg=seg, series_number=series_number), path)


def read_dicom_sr_rows(path: str | Path) -> list[dict]:
    """Tidy rows (structure, region, metric, value, unit) back from a koaimg SR, for round-trip checks and users.

    Walks the TID 1500 tree with pydicom (highdicom's generic content search is slow on ~200 measurements).
    """
    import pydicom
    from pydicom.sr.codedict import codes

    sr = pydicom.dcmread(path)
    out = []
    for container in sr.get("ContentSequence", []):
        if container.ConceptNameCodeSequence[0].CodeValue != codes.DCM.ImagingMeasurements.value:
            continue
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            tracking = next((str(i.TextValue) for i in items if i.ValueType == "TEXT"
                             and i.ConceptNameCodeSequence[0].CodeValue == codes.DCM.TrackingIdentifier.value), "")
            structure, _, region = tracking.partition("/")
            for item in items:
                name = item.ConceptNameCodeSequence[0]
                if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
                    value = item.MeasuredValueSequence[0]
                    out.append({"structure": structure, "region": region, "metric": _metric_name(name),
                                "value": float(value.NumericValue),
                                "unit": str(value.MeasurementUnitsCodeSequence[0].CodeValue)})
                elif item.ValueType == "CODE" and name.CodingSchemeDesignator == PRIVATE_SCHEME:
                    grade = str(item.ConceptCodeSequence[0].CodeValue).split("-")[-1]
                    out.append({"structure": structure, "region": region, "metric": _metric_name(name),
                                "value": float(grade), "unit": ""})
    return out


def _metric_name(concept) -> str:
    """Back from a concept to the measures.csv metric name."""
    from ._dicom_codes import _SHORT_VALUES, _STANDARD_METRICS

    reverse = {v: k for k, v in _SHORT_VALUES.items()}
    value, scheme = str(concept.CodeValue), str(concept.CodingSchemeDesignator)
    if scheme == PRIVATE_SCHEME:
        if value in reverse:
            return reverse[value]
        from ._dicom_codes import _METRIC_MEANINGS

        return value if value in _METRIC_MEANINGS else str(concept.CodeMeaning)
    for metric, (code, _) in _STANDARD_METRICS.items():
        if code.value == value and code.scheme_designator == scheme:
            return metric
    return str(concept.CodeMeaning)
