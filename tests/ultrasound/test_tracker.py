"""Classical tracker and site geometry against exact phantom truth (domain-specs §4, issue 7 targets)."""

from __future__ import annotations

import numpy as np
import pytest
from us_testutil import pair, phantom

from koaimg.core import KneeSide
from koaimg.measure.ultrasound import (
    SITES,
    bone_profile,
    find_sites,
    interfaces_from_probability,
    measure_ultrasound,
    track_interfaces,
)

SEEDS = (0, 3, 9, 14, 21, 29)  # 0.083-0.115 mm/px, both sides, thickness 1.0-3.5 mm, thin cartilage on a steep flank


@pytest.mark.parametrize("seed", SEEDS)
def test_site_thickness_within_0_1_mm(seed):
    ph = phantom(seed)
    m = measure_ultrasound(ph.to_ultrasound_image(), side=ph.spec.side, method="tracker")
    assert m.frame_index == 0 and m.method == "tracker" and m.side == KneeSide(ph.spec.side)
    for name in SITES:
        truth = ph.truth.sites[name]
        site = m.sites[name]
        assert abs(site.thickness_mm - truth.mean_thickness_mm) <= 0.1, (name, site.thickness_mm, truth)
        assert abs(site.area_per_length_mm - truth.regional_mean_mm) <= 0.1
        assert abs(site.bone_px[1] - truth.bone_px[1]) * ph.spacing_mm[1] < 1.0  # site found within 1 mm
        assert site.confidence == "high", site.reasons


def test_mean_absolute_error_over_phantoms():
    errors = []
    for seed in SEEDS:
        ph = phantom(seed)
        m = measure_ultrasound(ph.to_ultrasound_image(), side=ph.spec.side)
        errors += [m.sites[s].thickness_mm - ph.truth.sites[s].mean_thickness_mm for s in SITES]
    assert np.mean(np.abs(errors)) <= 0.05  # issue target 0.10; measured 0.02 (pipelines/eval_us.py)


@pytest.mark.parametrize("seed", [5, 11])
def test_follow_up_delta_within_0_05_mm(seed):
    base, follow = pair(seed, 0.25)
    mb = measure_ultrasound(base.to_ultrasound_image(), side=base.spec.side)
    mf = measure_ultrasound(follow.to_ultrasound_image(), side=follow.spec.side)
    for s in SITES:
        delta = mf.sites[s].thickness_mm - mb.sites[s].thickness_mm
        true = follow.truth.sites[s].mean_thickness_mm - base.truth.sites[s].mean_thickness_mm
        assert abs(delta - true) <= 0.05, (s, delta, true)


def test_left_knee_names_sites_anatomically():
    ph = phantom(1)  # a left knee: LC on the image right
    assert ph.spec.side == "left"
    m = measure_ultrasound(ph.to_ultrasound_image(), side="left")
    assert m.sites["LC"].bone_px[1] > m.sites["IN"].bone_px[1] > m.sites["MC"].bone_px[1]
    wrong = measure_ultrasound(ph.to_ultrasound_image())  # side unknown: assumed right, and said so
    assert wrong.side_source == "assumed" and any("side assumed" in f for f in wrong.flags)
    assert wrong.sites["LC"].thickness_mm == pytest.approx(m.sites["MC"].thickness_mm)


def test_mirrored_image_gives_mirrored_sites():
    ph = phantom(3)
    img = ph.to_ultrasound_image()
    from koaimg.core import UltrasoundImage

    mirror = UltrasoundImage(frames=img.frames[:, :, ::-1], spacing_mm=img.spacing_mm)
    a = measure_ultrasound(img, side="right")
    b = measure_ultrasound(mirror, side="left")
    for s in SITES:
        assert b.sites[s].thickness_mm == pytest.approx(a.sites[s].thickness_mm, abs=0.02)


def test_speed_of_sound_factor_scales_and_is_recorded():
    ph = phantom(0)
    a = measure_ultrasound(ph.to_ultrasound_image(), side="right")
    b = measure_ultrasound(ph.to_ultrasound_image(), side="right", speed_of_sound_factor=1.1)
    assert b.sites["IN"].thickness_mm == pytest.approx(1.1 * a.sites["IN"].thickness_mm)
    assert b.to_dict()["speed_of_sound_factor"] == 1.1 and any("speed-of-sound" in f for f in b.flags)


def test_rows_follow_the_tidy_schema():
    ph = phantom(0)
    rows = measure_ultrasound(ph.to_ultrasound_image(), side="right").rows(subject="S01", visit="baseline")
    assert {r["region"] for r in rows} == {"LC", "IN", "MC", "mean"}
    assert {r["metric"] for r in rows} == {"thickness", "thickness_area_length"}
    assert all(r["modality"] == "US" and r["structure"] == "ultrasound_femoral_cartilage" and r["unit"] == "mm"
               and r["subject"] == "S01" and r["side"] == "right" for r in rows)
    mean = next(r["value"] for r in rows if r["region"] == "mean" and r["metric"] == "thickness")
    sites = [r["value"] for r in rows if r["region"] in SITES and r["metric"] == "thickness"]
    assert mean == pytest.approx(np.mean(sites), abs=1e-3)


def test_model_path_geometry_is_exact_on_true_fractions():
    """Interfaces from a perfect probability map (the true fractions) measure the truth: the model path's geometry
    adds no error of its own."""
    ph = phantom(14)
    m = measure_ultrasound(ph.to_ultrasound_image(), side=ph.spec.side, method="model",
                           probability=ph.fractions[0])
    for s in SITES:
        assert m.sites[s].thickness_mm == pytest.approx(ph.truth.sites[s].mean_thickness_mm, abs=0.03)
    assert m.cross_check is not None and m.cross_check["mask_dice"] > 0.9  # tracker agrees


def test_tracker_interfaces_lie_on_the_truth():
    ph = phantom(21)
    itf = track_interfaces(ph.frames[0], ph.spacing_mm)
    mask = itf.cartilage_mask(ph.frames[0].shape)
    dice = 2 * (mask & ph.mask).sum() / (mask.sum() + ph.mask.sum())
    assert dice > 0.9
    profile = bone_profile(itf, ph.spacing_mm)
    _arcs, placed = find_sites(profile, right_knee=ph.spec.side == "right", window_half_mm=2.5)
    assert placed == {"IN": "notch", "LC": "apex", "MC": "apex"}
    assert interfaces_from_probability(np.zeros((50, 60)), ph.spacing_mm).bone_columns.size == 0
