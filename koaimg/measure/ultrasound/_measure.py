"""Femoral cartilage thickness at LC, IN and MC on a transverse suprapatellar frame (domain-specs §4).

``measure_ultrasound`` refuses what cannot be measured (no echo, suspect calibration, no bone line, no groove), picks
the cine frame, gets the two interfaces from the chosen method, and measures the perpendicular thickness over a
window at each site plus the area ÷ length regional mean. Everything else (file reading, the network) happens in the
pipeline: the model's probability map comes in as an array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core import KneeSide, OptionError, UltrasoundImage
from ...core._errors import CalibrationError, NoEchoError, UltrasoundContentError
from ._frames import FrameChoice, choose_frame
from ._geometry import SITES, BoneProfile, SiteGeometry, bone_profile, find_sites, site_geometry
from ._interfaces import Interfaces, interfaces_from_probability
from ._tracker import track_interfaces

__all__ = ["DEFAULT_METHOD", "METHODS", "STRUCTURE", "UltrasoundMeasurement", "UltrasoundSite", "measure_ultrasound"]

#: the method ``"auto"`` resolves to: the tracker, more accurate than the model on the phantoms (see
#: models/knee_us_seg/docs/README.md and pipelines/eval_us.py)
DEFAULT_METHOD = "tracker"
METHODS = ("auto", "tracker", "model")
#: ``structure`` value of the tidy rows (DESIGN.md)
STRUCTURE = "ultrasound_femoral_cartilage"
SCHEME = "us_sites"

#: per-site confidence rules
MIN_COVERAGE = 0.8
MAX_CV = 0.25
PLAUSIBLE_MM = (0.5, 4.5)
MIN_SURFACE_EVIDENCE = 0.05
MAX_METHOD_DIFF_MM = 0.3
#: where LC/MC go when their condylar apex is not in view: this far along the bone from the notch (typical apex
#: distance on the phantoms and in Naredo 2009's images, about 11-15 mm)
FALLBACK_OFFSET_MM = 11.0
#: an all-black frame: every pixel at or below 1 % of the display full scale
BLACK_FRACTION = 0.01


@dataclass(frozen=True)
class UltrasoundSite:
    """One site's measurement (mm, after the speed-of-sound factor) with its confidence and the reasons for it.

    ``thickness_mm`` is the mean perpendicular thickness over the window (±``window_half_mm`` along the bone),
    ``area_per_length_mm`` the cartilage area between the window's end normals ÷ the cartilage midline length,
    ``centre_thickness_mm`` the single perpendicular caliper at the site. Positions are (row, col) pixels.
    """

    name: str
    thickness_mm: float
    area_per_length_mm: float
    centre_thickness_mm: float
    sd_mm: float
    coverage: float
    window_half_mm: float
    placed: str
    confidence: str
    reasons: tuple[str, ...]
    bone_px: tuple[float, float]
    surface_px: tuple[float, float]
    window_px: tuple[tuple[float, float], tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.name, "thickness_mm": _r(self.thickness_mm),
                "area_per_length_mm": _r(self.area_per_length_mm),
                "centre_thickness_mm": _r(self.centre_thickness_mm), "sd_mm": _r(self.sd_mm),
                "coverage": _r(self.coverage), "window_half_mm": self.window_half_mm, "placed": self.placed,
                "confidence": self.confidence, "reasons": list(self.reasons),
                "bone_px": [_r(v) for v in self.bone_px], "surface_px": [_r(v) for v in self.surface_px],
                "window_px": [[_r(v) for v in p] for p in self.window_px]}


def _r(v: float, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


@dataclass(frozen=True, eq=False)
class UltrasoundMeasurement:
    """Per-site thickness of one frame, how it was obtained, and everything the overlay needs."""

    sites: dict[str, UltrasoundSite]
    method: str
    frame_index: int
    frame_choice: FrameChoice
    speed_of_sound_factor: float
    spacing_mm: tuple[float, float]
    side: KneeSide
    side_source: str
    flags: tuple[str, ...]
    interfaces: Interfaces
    shape: tuple[int, int]
    cross_check: dict[str, float] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mean_mm(self) -> float:
        """float: mean of the three site thicknesses (NaN if one is missing)."""
        return float(np.mean([self.sites[s].thickness_mm for s in SITES]))

    @property
    def mean_area_per_length_mm(self) -> float:
        """float: mean of the three sites' area ÷ length values."""
        return float(np.mean([self.sites[s].area_per_length_mm for s in SITES]))

    @property
    def confident(self) -> bool:
        """bool: every site has high confidence."""
        return all(site.confidence == "high" for site in self.sites.values())

    def cartilage_mask(self) -> np.ndarray:
        """(rows, cols) bool: the cartilage band between the two interfaces of the measured frame."""
        return self.interfaces.cartilage_mask(self.shape)

    def rows(self, *, subject: str = "", visit: str = "") -> list[dict]:
        """Tidy rows (DESIGN.md measures.csv schema): LC, IN, MC and mean; thickness and area ÷ length."""
        out = []
        base = {"subject": subject, "visit": visit, "modality": "US", "side": self.side.value,
                "structure": STRUCTURE, "scheme": SCHEME}
        for region, thick, al in [*((s, self.sites[s].thickness_mm, self.sites[s].area_per_length_mm) for s in SITES),
                                  ("mean", self.mean_mm, self.mean_area_per_length_mm)]:
            for metric, value in (("thickness", thick), ("thickness_area_length", al)):
                if math.isfinite(value):
                    out.append({**base, "region": region, "metric": metric, "value": round(float(value), 4),
                                "unit": "mm"})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (ultrasound.json)."""
        return {
            "structure": STRUCTURE, "method": self.method, "frame_index": self.frame_index,
            "frame_choice": {"method": self.frame_choice.method,
                             "scores": {str(k): round(v, 5) for k, v in self.frame_choice.scores.items()}},
            "speed_of_sound_factor": self.speed_of_sound_factor, "assumed_speed_of_sound_m_s": 1540.0,
            "spacing_mm": list(self.spacing_mm), "side": self.side.value, "side_source": self.side_source,
            "site_order_on_image": _site_order(self.side), "flags": list(self.flags), "confident": self.confident,
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
            "mean_mm": _r(self.mean_mm), "mean_area_per_length_mm": _r(self.mean_area_per_length_mm),
            "cross_check": self.cross_check, "notes": list(self.notes),
        }


def _site_order(side: KneeSide) -> str:
    return "LC, IN, MC from image left to right" if side != KneeSide.LEFT else "MC, IN, LC from image left to right"


def _refuse_empty(frames: np.ndarray, grey_max: float) -> None:
    if float(np.max(frames)) <= BLACK_FRACTION * grey_max:
        raise NoEchoError("the ultrasound frame is all black (no echo above 1 % of full scale): nothing to measure",
                          hint="check the export or the frame chosen from the cine")


def _grey_max(image: UltrasoundImage) -> float:
    gm = image.meta.get("grey_max")
    if gm:
        return float(gm)
    return 255.0 if float(image.frames.max()) <= 255.0 else float(image.frames.max())


def _confidence(g: SiteGeometry, surface_evidence: float) -> tuple[str, tuple[str, ...]]:
    reasons = []
    if not math.isfinite(g.thickness_mm):
        reasons.append("no thickness in window")
    else:
        if g.coverage < MIN_COVERAGE:
            reasons.append(f"surface found over {100 * g.coverage:.0f} % of the window")
        if g.thickness_mm > 0 and g.sd_mm / g.thickness_mm > MAX_CV:
            reasons.append(f"thickness varies in the window (SD {g.sd_mm:.2f} mm)")
        if not PLAUSIBLE_MM[0] <= g.thickness_mm <= PLAUSIBLE_MM[1]:
            reasons.append(f"implausible thickness {g.thickness_mm:.2f} mm")
        if surface_evidence < MIN_SURFACE_EVIDENCE:
            reasons.append("weak superficial interface echo")
    return ("high" if not reasons else "low"), tuple(reasons)


def _measure_interfaces(itf: Interfaces, spacing: tuple[float, float], *, right_knee: bool, window_half_mm: float,
                        factor: float) -> tuple[dict[str, UltrasoundSite], BoneProfile]:
    profile = bone_profile(itf, spacing)
    if profile is None:
        raise UltrasoundContentError("no bone line found: no continuous bright echo with an acoustic shadow over "
                                     "10 mm or more", hint="this is not a transverse suprapatellar knee view, or the "
                                     "probe is not perpendicular to the trochlea")
    found = find_sites(profile, right_knee=right_knee, window_half_mm=window_half_mm,
                       fallback_offset_mm=FALLBACK_OFFSET_MM)
    if found is None:
        raise UltrasoundContentError(
            f"bone line found ({profile.arc[-1]:.0f} mm) but no trochlear groove with room for the LC, IN and MC "
            f"windows (±{window_half_mm} mm)", hint="centre the intercondylar notch in a transverse suprapatellar view")
    arcs, placed = found
    mr, mc = spacing
    sites = {}
    for name in SITES:
        g = site_geometry(profile, name, arcs[name], window_half_mm, placed[name])
        sel = (profile.arc >= g.window[0]) & (profile.arc <= g.window[1])
        cols = np.rint(profile.x[sel] / mc).astype(int)
        evidence = float(np.mean(itf.surface_score[cols])) if cols.size else 0.0
        conf, reasons = _confidence(g, evidence)
        ends = [profile.at(a)[:2] for a in g.window]
        sites[name] = UltrasoundSite(
            name=name, thickness_mm=g.thickness_mm * factor, area_per_length_mm=g.area_per_length_mm * factor,
            centre_thickness_mm=g.centre_thickness_mm * factor, sd_mm=g.sd_mm * factor, coverage=g.coverage,
            window_half_mm=window_half_mm, placed=g.placed, confidence=conf, reasons=reasons,
            bone_px=(g.bone_mm[1] / mr, g.bone_mm[0] / mc), surface_px=(g.surface_mm[1] / mr, g.surface_mm[0] / mc),
            window_px=((ends[0][1] / mr, ends[0][0] / mc), (ends[1][1] / mr, ends[1][0] / mc)))
    return sites, profile


def measure_ultrasound(image: UltrasoundImage, *, method: str = "auto", speed_of_sound_factor: float = 1.0,
                       probability: np.ndarray | None = None, side: KneeSide | str | None = None,
                       window_half_mm: float = 2.5, frame: int | None = None,
                       trust_region_overflow: bool = False) -> UltrasoundMeasurement:
    """Measure femoral cartilage thickness at LC, IN and MC on one frame of a calibrated ultrasound image.

    Parameters
    ----------
    image : UltrasoundImage
        Calibrated grey frames (a cine or one frame).
    method : {"auto", "tracker", "model"}
        Interface source; ``"auto"`` = :data:`DEFAULT_METHOD`. ``"model"`` needs ``probability``.
    speed_of_sound_factor : float
        True / assumed (1540 m/s) speed of sound in cartilage; thicknesses are multiplied by it (1.0 = none;
        published cartilage values suggest 1.02-1.23, domain-specs §4.4). Recorded in every output.
    probability : (rows, cols) ndarray, optional
        Cartilage probability of the measured frame from :func:`koaimg.segment.ultrasound.cartilage_probability`.
        With the tracker method it is used as an independent cross-check.
    side : KneeSide or str, optional
        Knee side; decides which condyle is LC (right knee: image left). None assumes right and flags it.
    window_half_mm : float
        Half-width along the bone of the averaging window at each site.
    frame : int, optional
        Measure this frame of a cine instead of choosing the best one.
    trust_region_overflow : bool
        Measure although the reader flagged the calibration region as larger than the pixels (only valid when
        the image is known to be cropped, not resized).

    Raises
    ------
    NoEchoError
        The frame is all black.
    CalibrationError
        The reader flagged the calibration as suspect and ``trust_region_overflow`` is False.
    UltrasoundContentError
        No bone line, or no groove with room for the three windows.
    OptionError
        Unknown method, model method without a probability map, or a bad factor.
    """
    if method not in METHODS:
        raise OptionError(f"unknown ultrasound method {method!r}; choose one of {', '.join(METHODS)}")
    if not (math.isfinite(speed_of_sound_factor) and 0.5 <= speed_of_sound_factor <= 2.0):
        raise OptionError(f"speed-of-sound factor must be between 0.5 and 2.0, got {speed_of_sound_factor!r}")
    if not (math.isfinite(window_half_mm) and 0.5 <= window_half_mm <= 10.0):
        raise OptionError(f"site window half-width must be 0.5-10 mm, got {window_half_mm!r}")
    resolved = DEFAULT_METHOD if method == "auto" else method
    if resolved == "model" and probability is None:
        raise OptionError("method 'model' needs the model's probability map (koaimg.segment.ultrasound)")
    warning = image.meta.get("calibration_warning")
    if warning and not trust_region_overflow:
        raise CalibrationError(warning, hint="measure it only if the image is known to be cropped, not resized "
                                             "(--trust-region-overflow)")
    grey_max = _grey_max(image)
    spacing = image.spacing_mm

    if frame is not None:
        one = image.select_frame(frame)
        choice = FrameChoice(one.selected_frame or 0, {}, "given")
    else:
        _refuse_empty(image.frames, grey_max)
        choice = choose_frame(image.frames, spacing, grey_max=grey_max)
        one = image.select_frame(choice.index) if image.n_frames > 1 else image
    pixels = one.frames[0]
    _refuse_empty(pixels, grey_max)
    frame_index = one.selected_frame if one.selected_frame is not None else 0
    if probability is not None and np.shape(probability) != pixels.shape:
        raise OptionError(f"probability map shape {np.shape(probability)} differs from the frame {pixels.shape}")

    side_enum = KneeSide(side) if side is not None else KneeSide.RIGHT
    side_source = "given" if side is not None else "assumed"
    if side_enum not in (KneeSide.RIGHT, KneeSide.LEFT):
        side_enum, side_source = KneeSide.RIGHT, "assumed"
    flags = []
    if side_source == "assumed":
        flags.append("side assumed right: LC is on the image left (swap LC/MC if the probe marker was reversed)")
    if warning:
        flags.append(f"calibration trusted despite: {warning}")
    if speed_of_sound_factor != 1.0:
        flags.append(f"thicknesses scaled by speed-of-sound factor {speed_of_sound_factor:g}")

    right = side_enum == KneeSide.RIGHT
    if resolved == "model":
        itf = interfaces_from_probability(probability, spacing)
    else:
        itf = track_interfaces(pixels, spacing, grey_max=grey_max)
    sites, _ = _measure_interfaces(itf, spacing, right_knee=right, window_half_mm=window_half_mm,
                                   factor=speed_of_sound_factor)
    estimated = [s for s in SITES if sites[s].placed == "estimated"]
    if estimated:
        flags.append(f"no condylar apex in view for {', '.join(estimated)}: site placed "
                     f"{FALLBACK_OFFSET_MM:g} mm along the bone from the notch")

    cross = None
    notes = []
    if probability is not None:  # the other method, as an independent check of every site
        other = track_interfaces(pixels, spacing, grey_max=grey_max) if resolved == "model" else \
            interfaces_from_probability(probability, spacing)
        other_name = "tracker" if resolved == "model" else "model"
        try:
            other_sites, _ = _measure_interfaces(other, spacing, right_knee=right, window_half_mm=window_half_mm,
                                                 factor=speed_of_sound_factor)
        except UltrasoundContentError as exc:
            notes.append(f"cross-check by {other_name} failed: {exc.problem}")
        else:
            cross = {f"{s}_{other_name}_mm": _r(other_sites[s].thickness_mm) for s in SITES}
            m1, m2 = itf.cartilage_mask(pixels.shape), other.cartilage_mask(pixels.shape)
            cross["mask_dice"] = _r(2.0 * (m1 & m2).sum() / max(int(m1.sum() + m2.sum()), 1))
            for s in SITES:
                diff = abs(sites[s].thickness_mm - other_sites[s].thickness_mm)
                if math.isfinite(diff) and diff > MAX_METHOD_DIFF_MM:
                    site = sites[s]
                    sites[s] = UltrasoundSite(**{**site.__dict__, "confidence": "low",
                                                 "reasons": (*site.reasons,
                                                             f"{other_name} differs by {diff:.2f} mm")})
    return UltrasoundMeasurement(sites=sites, method=resolved, frame_index=int(frame_index), frame_choice=choice,
                                 speed_of_sound_factor=float(speed_of_sound_factor), spacing_mm=spacing,
                                 side=side_enum, side_source=side_source, flags=tuple(flags), interfaces=itf,
                                 shape=pixels.shape, cross_check=cross, notes=tuple(notes))
