"""Digital knee phantoms with exact ground truth: procedural MR knees, longitudinal pairs, ultrasound, cohorts,
and domain-randomised images from real label maps (the training source for segmentation)."""

from ._cohort import DEFAULT_ARMS, Arm, SubjectPlan, make_subject, plan_cohort, write_cohort
from ._from_labels import RandomisationSpec, SynthesisSpecError, synthesize_from_labels
from ._imaging import bias_field, blur, rician_noise, signal_from_fractions
from ._knee_anatomy import MOAKS_REGIONS, REGION_ID, Defect, KneeAnatomy, ThicknessChange
from ._knee_phantom import ACQUISITIONS, Acquisition, KneePhantom, Pose, make_knee_phantom
from ._knee_truth import PlateTruth, knee_truth, moaks_grade, plate_truth, surface_mesh
from ._longitudinal import PhantomPair, make_pair, point_delta
from ._shells import ShellPhantom, shell_phantom
from ._tissues import CONTRASTS, STRUCTURE_TISSUE, Contrast, Tissue, keep_apart
from ._us import USPhantom, USPhantomSpec, follow_up_spec, make_us_phantom, random_us_spec, write_us_phantom
from ._write import interface_rows, region_rows, visit_date, write_knee_phantom, write_pair

__all__ = [
    "ACQUISITIONS",
    "CONTRASTS",
    "DEFAULT_ARMS",
    "MOAKS_REGIONS",
    "REGION_ID",
    "STRUCTURE_TISSUE",
    "Acquisition",
    "Arm",
    "Contrast",
    "Defect",
    "KneeAnatomy",
    "KneePhantom",
    "PhantomPair",
    "PlateTruth",
    "Pose",
    "RandomisationSpec",
    "ShellPhantom",
    "SubjectPlan",
    "SynthesisSpecError",
    "ThicknessChange",
    "Tissue",
    "USPhantom",
    "USPhantomSpec",
    "bias_field",
    "blur",
    "follow_up_spec",
    "interface_rows",
    "keep_apart",
    "knee_truth",
    "make_knee_phantom",
    "make_pair",
    "make_subject",
    "make_us_phantom",
    "moaks_grade",
    "plan_cohort",
    "plate_truth",
    "point_delta",
    "random_us_spec",
    "region_rows",
    "rician_noise",
    "shell_phantom",
    "signal_from_fractions",
    "surface_mesh",
    "synthesize_from_labels",
    "visit_date",
    "write_cohort",
    "write_knee_phantom",
    "write_pair",
    "write_us_phantom",
]
