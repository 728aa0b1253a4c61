"""Coded concepts for koaimg's DICOM SEG and SR: which standard code says "femur", "cartilage", "thickness".

Every standard code here is taken from pydicom's copy of DICOM PS3.16 (``pydicom.sr.codedict.codes``), so that
the code value, scheme and meaning come from the standard and not from memory:

- SNOMED CT (SCT): Femur 71341001, Tibia 12611008, Patella 64234005, Fibula 87342007 (CID 7151/7304 "Segmentation
  property type" / musculoskeletal structures), Cartilage 309312004 and Meniscus 74135004 (CID 7151/7166 connective
  tissue types), Knee joint 49076000, Tissue 85756007 and Anatomical Structure 91723000 (CID 7150 categories),
  Right 24028007 / Left 7771000 (CID 244 laterality), Volume 118565006, Area 42798000, Mean 373098007,
  Standard Deviation 386136009, Maximum 56851009 (CID 7464 ROI derivation), Imaging procedure 363679005 (CID 100).
- LOINC (LN): Thickness 59089-3.  UCUM units: mm, mm2, mm3, %.  DCM: Imaging Measurement Report 126000.

Cartilage plates are post-coordinated: segmented property type *Cartilage* (SCT 309312004) with the bone it covers
as the primary anatomic structure (e.g. *Femur*) inside the anatomic region *Knee joint*. This is how PS3.3
C.8.20.2 intends a property type to be refined, and it avoids pre-coordinated "articular cartilage of femur"
concepts whose SNOMED ids we could not verify against PS3.16. MOAKS grades and Eckstein metric names have no
standard codes, so they use the private scheme ``99KOAIMG`` (declared in the SR's Coding Scheme Identification).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..core import Structure
from ._dicom_source import content_hash

PRIVATE_SCHEME = "99KOAIMG"
PRIVATE_SCHEME_NAME = "koaimg knee cartilage measures (MOAKS-style grades, Eckstein nomenclature)"


@dataclass(frozen=True)
class SegmentCoding:
    """How one koaimg structure is described in a DICOM SEG segment."""

    label: str
    category: Code
    property_type: Code
    primary_structure: Code | None = None


SEGMENT_CODING: dict[Structure, SegmentCoding] = {
    Structure.FEMUR: SegmentCoding("femur", codes.SCT.AnatomicalStructure, codes.SCT.Femur),
    Structure.FEMORAL_CARTILAGE: SegmentCoding("femoral cartilage", codes.SCT.Tissue, codes.SCT.Cartilage,
                                               codes.SCT.Femur),
    Structure.TIBIA: SegmentCoding("tibia", codes.SCT.AnatomicalStructure, codes.SCT.Tibia),
    Structure.TIBIAL_CARTILAGE: SegmentCoding("tibial cartilage", codes.SCT.Tissue, codes.SCT.Cartilage,
                                              codes.SCT.Tibia),
    Structure.PATELLA: SegmentCoding("patella", codes.SCT.AnatomicalStructure, codes.SCT.Patella),
    Structure.PATELLAR_CARTILAGE: SegmentCoding("patellar cartilage", codes.SCT.Tissue, codes.SCT.Cartilage,
                                                codes.SCT.Patella),
    Structure.FIBULA: SegmentCoding("fibula", codes.SCT.AnatomicalStructure, codes.SCT.Fibula),
    Structure.MENISCUS: SegmentCoding("meniscus", codes.SCT.Tissue, codes.SCT.Meniscus),
}

KNEE_JOINT = codes.SCT.KneeJoint
CARTILAGE = codes.SCT.Cartilage
LATERALITY = {"right": codes.SCT.Right, "left": codes.SCT.Left}
PROCEDURE = codes.SCT.ImagingProcedure

#: tidy-table structure key -> the bone a plate covers (finding site of its measurements)
PLATE_BONE = {"femoral_cartilage": codes.SCT.Femur, "tibial_cartilage": codes.SCT.Tibia,
              "patellar_cartilage": codes.SCT.Patella, "ultrasound_femoral_cartilage": codes.SCT.Femur}
PLATE_SEGMENT = {"femoral_cartilage": Structure.FEMORAL_CARTILAGE, "tibial_cartilage": Structure.TIBIAL_CARTILAGE,
                 "patellar_cartilage": Structure.PATELLAR_CARTILAGE}

UNITS = {"mm": codes.UCUM.Millimeter, "mm2": codes.UCUM.SquareMillimeter, "mm3": codes.UCUM.CubicMillimeter,
         "%": codes.UCUM.Percent, "1": Code("1", "UCUM", "no units")}

_METRIC_MEANINGS = {
    "ThCtAB.Me": "ThCtAB mean: cartilage thickness over total bone area",
    "ThCtAB.SD": "ThCtAB SD: cartilage thickness over total bone area",
    "ThCtAB.Max": "ThCtAB max: cartilage thickness over total bone area",
    "ThCcAB.Me": "ThCcAB mean: thickness over cartilage-covered bone area",
    "VC": "Cartilage volume (VC)",
    "tAB": "Total area of subchondral bone (tAB)",
    "cAB": "Cartilage-covered area of subchondral bone (cAB)",
    "dAB%": "Denuded area of subchondral bone, percent of tAB (dAB%)",
    "any_loss_area%": "Area of any cartilage loss, percent of subregion",
    "full_thickness_area%": "Area of full-thickness cartilage loss, percent of subregion",
    "thickness": "Ultrasound femoral cartilage thickness",
}
#: code values are at most 16 characters; these metric names are longer
_SHORT_VALUES = {"any_loss_area%": "ANY-LOSS-AREA%", "full_thickness_area%": "FT-LOSS-AREA%",
                 "moaks_any_loss_grade": "MOAKS-ANY-LOSS", "moaks_full_thickness_grade": "MOAKS-FT-LOSS"}

#: measures.csv metric -> (concept name, ROI derivation) using standard codes where one fits
_STANDARD_METRICS = {
    "VC": (codes.SCT.Volume, None),
    "tAB": (codes.SCT.Area, None),
    "thickness": (codes.LN.Thickness, None),
}

GRADE_METRICS = {
    "moaks_any_loss_grade": "MOAKS-style grade of area of any cartilage loss (0-3)",
    "moaks_full_thickness_grade": "MOAKS-style grade of full-thickness cartilage loss (0-3)",
}
_GRADE_MEANINGS = {0: "Grade 0: none", 1: "Grade 1: <10% of subregion surface",
                   2: "Grade 2: 10-75% of subregion surface", 3: "Grade 3: >75% of subregion surface"}

_REGION_MEANINGS = {
    "all": "whole plate", "PM": "Patella, medial facet", "PL": "Patella, lateral facet",
    "FMT": "Femur, medial trochlea", "FLT": "Femur, lateral trochlea", "FMC": "Femur, medial central",
    "FLC": "Femur, lateral central", "FMP": "Femur, medial posterior", "FLP": "Femur, lateral posterior",
    "TMA": "Tibia, medial anterior", "TMC": "Tibia, medial central", "TMP": "Tibia, medial posterior",
    "TLA": "Tibia, lateral anterior", "TLC": "Tibia, lateral central", "TLP": "Tibia, lateral posterior",
    "LC": "Ultrasound site: lateral femoral condyle", "IN": "Ultrasound site: intercondylar notch",
    "MC": "Ultrasound site: medial femoral condyle", "mean": "Mean of the ultrasound sites",
}


def private_code(value: str, meaning: str) -> Code:
    """A concept in koaimg's private coding scheme (code value <= 16 characters, meaning <= 64)."""
    value = _SHORT_VALUES.get(value, value)
    if len(value) > 16:  # a metric koaimg does not know yet: a stable short value; the meaning keeps the name
        value = value[:7] + "-" + content_hash(value)[:8]
    if len(meaning) > 64:
        meaning = meaning[:63] + "…"
    return Code(value, PRIVATE_SCHEME, meaning)


def metric_concept(metric: str) -> tuple[Code, Code | None]:
    """Concept name (and ROI derivation, if any) of a measures.csv metric."""
    if metric in _STANDARD_METRICS:
        return _STANDARD_METRICS[metric]
    if metric in ("ThCtAB.Me", "ThCcAB.Me"):
        return private_code(metric, _METRIC_MEANINGS[metric]), codes.SCT.Mean
    if metric == "ThCtAB.SD":
        return private_code(metric, _METRIC_MEANINGS[metric]), codes.SCT.StandardDeviation
    if metric == "ThCtAB.Max":
        return private_code(metric, _METRIC_MEANINGS[metric]), codes.SCT.Maximum
    return private_code(metric, _METRIC_MEANINGS.get(metric, metric)), None


def grade_concepts(metric: str, grade: int) -> tuple[Code, Code]:
    """Concept name and coded value of a MOAKS-style grade."""
    name = private_code(metric, GRADE_METRICS[metric])
    return name, private_code(f"grade-{int(grade)}", _GRADE_MEANINGS[int(grade)])


def region_concept(region: str) -> Code:
    """Finding-site code of a MOAKS subregion, ultrasound site, whole plate, or ``<scheme>:<subregion>``."""
    scheme, _, name = region.rpartition(":")
    meaning = _REGION_MEANINGS.get(name, name) if not scheme else f"{scheme} subregion {name}"
    value = f"region-{region}" if len(region) <= 9 else "region-" + content_hash(region)[:9]
    return private_code(value, meaning[:64])
