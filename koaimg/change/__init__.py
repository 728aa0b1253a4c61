"""Longitudinal change: femur-based registration of follow-up to baseline, Δ thickness per point and per subregion,
ordered values, thinning/thickening scores, MOAKS grade transitions, ultrasound site changes and cohort statistics.

Pure computation on arrays and tidy rows (no file I/O); the pipeline reads and writes the files.
"""

from ._compare import CHANGE_COLUMNS, KneeChange, change_row, compare_knees
from ._data import KneeVisit, PlatePoints, visit_from_measurement
from ._precision import SDD_FACTOR, Precision
from ._register import RigidTransform, bone_surface, estimate_normals, register_femur
from ._resample import rigidly_moved_labels
from ._scores import MOAKS_COMPARTMENTS, SUMMARY_FORMULAS, grade_transitions, ordered_values, thinning_thickening
from ._transfer import transfer_thickness

__all__ = [
    "CHANGE_COLUMNS",
    "MOAKS_COMPARTMENTS",
    "SDD_FACTOR",
    "SUMMARY_FORMULAS",
    "KneeChange",
    "KneeVisit",
    "PlatePoints",
    "Precision",
    "RigidTransform",
    "bone_surface",
    "change_row",
    "compare_knees",
    "estimate_normals",
    "grade_transitions",
    "ordered_values",
    "register_femur",
    "rigidly_moved_labels",
    "thinning_thickening",
    "transfer_thickness",
    "visit_from_measurement",
]
