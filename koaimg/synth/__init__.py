"""Digital knee phantoms with exact ground truth: procedural MR knees, longitudinal pairs, ultrasound, cohorts,
and domain-randomised images from real label maps (the training source for segmentation)."""

from ._imaging import bias_field, blur, rician_noise, signal_from_fractions
from ._knee_anatomy import MOAKS_REGIONS, REGION_ID, Defect, KneeAnatomy, ThicknessChange
from ._knee_phantom import ACQUISITIONS, Acquisition, KneePhantom, Pose, make_knee_phantom
from ._knee_truth import PlateTruth, knee_truth, moaks_grade, plate_truth, surface_mesh
from ._longitudinal import PhantomPair, make_pair, point_delta
from ._tissues import CONTRASTS, STRUCTURE_TISSUE, Contrast, Tissue
from ._write import interface_rows, region_rows, visit_date, write_knee_phantom, write_pair

__all__ = [
    "ACQUISITIONS",
    "CONTRASTS",
    "MOAKS_REGIONS",
    "REGION_ID",
    "STRUCTURE_TISSUE",
    "Acquisition",
    "Contrast",
    "Defect",
    "KneeAnatomy",
    "KneePhantom",
    "PhantomPair",
    "PlateTruth",
    "Pose",
    "ThicknessChange",
    "Tissue",
    "bias_field",
    "blur",
    "interface_rows",
    "knee_truth",
    "make_knee_phantom",
    "make_pair",
    "moaks_grade",
    "plate_truth",
    "point_delta",
    "region_rows",
    "rician_noise",
    "signal_from_fractions",
    "surface_mesh",
    "visit_date",
    "write_knee_phantom",
    "write_pair",
]
