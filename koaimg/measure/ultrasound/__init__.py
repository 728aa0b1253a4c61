"""Ultrasound femoral cartilage thickness at the lateral condyle, intercondylar notch and medial condyle.

Pure computation on calibrated frames (no file I/O, no torch): a classical interface tracker, interfaces from a
model's probability map, site detection from the bone-line shape, perpendicular thickness, area ÷ length means,
best-frame choice for cines and per-site confidence.
"""

from ._frames import FrameChoice, choose_frame, frame_quality
from ._geometry import SITES, BoneProfile, bone_profile, find_sites, site_geometry
from ._interfaces import Interfaces, interfaces_from_probability
from ._measure import (
    DEFAULT_METHOD,
    METHODS,
    STRUCTURE,
    UltrasoundMeasurement,
    UltrasoundSite,
    measure_ultrasound,
)
from ._tracker import TrackerSettings, track_interfaces

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "SITES",
    "STRUCTURE",
    "BoneProfile",
    "FrameChoice",
    "Interfaces",
    "TrackerSettings",
    "UltrasoundMeasurement",
    "UltrasoundSite",
    "bone_profile",
    "choose_frame",
    "find_sites",
    "frame_quality",
    "interfaces_from_probability",
    "measure_ultrasound",
    "site_geometry",
    "track_interfaces",
]
