"""Cartilage measurement: sub-voxel thickness maps, MOAKS subregions, Eckstein metrics, MOAKS-style grades.

Pure computation on arrays and koaimg.core types (no file I/O, no torch), usable on label maps from any source.
"""

from ..core import moaks_grade
from ._knee import METRIC_UNITS, REGION_CODE, SCHEMES, WE_REGION_CODE, KneeMeasurement, PlateMeasurement, measure_knee
from ._moaks import expected_thickness, knee_summary, loss_masks
from ._regions import MOAKS_REGIONS, KneeFrame, femoral_frame, femur_regions, patella_regions, tibia_regions
from ._regions_we import WE_REGIONS, femur_regions_we, tibia_regions_we
from ._thickness import (
    FLAG_OUTSIDE_FOV,
    FLAG_WALL_EXIT,
    PLATE_STRUCTURES,
    ThicknessResult,
    cartilage_thickness,
    plates_cut_by_fov,
)

__all__ = [
    "FLAG_OUTSIDE_FOV",
    "FLAG_WALL_EXIT",
    "METRIC_UNITS",
    "MOAKS_REGIONS",
    "PLATE_STRUCTURES",
    "REGION_CODE",
    "SCHEMES",
    "WE_REGIONS",
    "WE_REGION_CODE",
    "KneeFrame",
    "KneeMeasurement",
    "PlateMeasurement",
    "ThicknessResult",
    "cartilage_thickness",
    "expected_thickness",
    "femoral_frame",
    "femur_regions",
    "femur_regions_we",
    "knee_summary",
    "loss_masks",
    "measure_knee",
    "moaks_grade",
    "patella_regions",
    "plates_cut_by_fov",
    "tibia_regions",
    "tibia_regions_we",
]
