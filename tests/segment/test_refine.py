"""The articular-surface refinement: grows a plate the network left thin, peels a fluid film it took for cartilage
but not true cartilage on T1 (where fluid does not outshine the marrow), leaves plates alone where the image has no
contrast, never moves a bone, and refuses malformed settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from koaimg.core import ModelError
from koaimg.segment import load_bundle, segment_volume
from koaimg.segment._refine import ArticularRefinement, refine_articular_surfaces

SPACING = np.array([0.5, 0.5, 0.5])
BONE_TOP, CARTILAGE_TOP = 15, 21  # femur below z=15, true cartilage z=15..20 (3 mm), outside from z=21


def _column(values: dict[tuple[int, int], float], shape=(20, 20, 40)) -> np.ndarray:
    """A volume whose value depends on z only: {(z0, z1): value}."""
    out = np.zeros(shape, np.float32)
    for (z0, z1), v in values.items():
        out[:, :, z0:z1] = v
    return out


def _plate_top(labels: np.ndarray) -> set[int]:
    """The first z above the femoral plate in every column (one value when the surface is flat)."""
    plate = labels == 2
    return set(np.unique(plate.shape[2] - np.argmax(plate[:, :, ::-1], axis=2)))


def test_a_plate_left_thin_grows_to_the_image_edge_and_no_further() -> None:
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, CARTILAGE_TOP): 0.6, (CARTILAGE_TOP, 40): 0.05})
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, 18): 2}).astype(np.uint8)  # network: 1.5 mm of 3 mm
    p = _column({(BONE_TOP, 18): 0.9, (18, 22): 0.3, (22, 40): 0.02})  # unsure beyond its plate, even past the edge
    wide = ArticularRefinement(outside_mm=3.0)  # the outside reference lies beyond the network's doubt
    out = refine_articular_surfaces(image, labels, {2: p}, SPACING, wide)
    assert _plate_top(out) == {CARTILAGE_TOP}
    assert np.array_equal(out == 1, labels == 1)
    no_growth = ArticularRefinement(outside_mm=3.0, grow=False)
    assert np.array_equal(refine_articular_surfaces(image, labels, {2: p}, SPACING, no_growth), labels)


def test_a_fluid_film_read_as_cartilage_is_peeled_back_to_the_plate() -> None:
    # 2 mm of cartilage, then fluid; the network took 1 mm of the fluid for cartilage. (The surface must lie within
    # half a window, 2 mm, of the plate's deep layer, or the peel has no plate level to compare with.)
    top = BONE_TOP + 4
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, top): 0.6, (top, 24): 1.0, (24, 40): 0.3})
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, top + 2): 2}).astype(np.uint8)
    p = _column({(BONE_TOP, top + 2): 0.9, (top + 2, 40): 0.02})
    out = refine_articular_surfaces(image, labels, {2: p}, SPACING)
    assert _plate_top(out) == {top}
    no_peel = ArticularRefinement(peel=False)
    assert np.array_equal(refine_articular_surfaces(image, labels, {2: p}, SPACING, no_peel), labels)
    assert np.array_equal(out == 1, labels == 1)


def test_an_articular_layer_darker_than_the_plate_is_peeled_only_when_asked() -> None:
    top = BONE_TOP + 4  # as the film test, with dark fluid (T1-like): by default only bright films are peeled
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, top): 0.6, (top, 24): 0.1, (24, 40): 0.3})
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, top + 2): 2}).astype(np.uint8)
    p = _column({(BONE_TOP, top + 2): 0.9, (top + 2, 40): 0.02})
    assert np.array_equal(refine_articular_surfaces(image, labels, {2: p}, SPACING), labels)
    darker = ArticularRefinement(peel_darker=True)
    assert _plate_top(refine_articular_surfaces(image, labels, {2: p}, SPACING, darker)) == {top}


def test_on_t1_with_the_cortex_read_as_cartilage_true_cartilage_is_not_peeled() -> None:
    # coronal T1 as the network reads it: bright marrow, the dark cortex (z 13-14) labelled cartilage, so the plate's
    # deep layer is cortex; true cartilage (0.4) lies under bright fat (0.45). Without the marrow check the true
    # cartilage, brighter than the "plate" and nearer the outside, was peeled; fluid does not outshine fat here.
    image = _column({(0, 13): 0.9, (13, BONE_TOP): 0.15, (BONE_TOP, 18): 0.4, (18, 40): 0.45})
    labels = _column({(0, 13): 1, (13, 18): 2}).astype(np.uint8)
    p = _column({(13, 18): 0.9, (18, 40): 0.02})
    assert np.array_equal(refine_articular_surfaces(image, labels, {2: p}, SPACING), labels)
    unchecked = ArticularRefinement(marrow_depth_mm=None)
    assert _plate_top(refine_articular_surfaces(image, labels, {2: p}, SPACING, unchecked)) == {BONE_TOP}
    dark_marrow = np.where(image == 0.9, np.float32(0.2), image)  # fat-suppressed: the same layer is a fluid film
    assert _plate_top(refine_articular_surfaces(dark_marrow, labels, {2: p}, SPACING)) == {BONE_TOP}


def test_a_brighter_superficial_layer_is_grown_only_with_the_plate_median_check() -> None:
    # DESS-like: the deep cartilage (0.5) is darker than the superficial (0.65), as on CLAIR; the network found the
    # deep layers and half the superficial ones. Within 2 SDs of the deep layer the rest is not; near the plate's
    # median it is.
    rng = np.random.default_rng(1)
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, 17): 0.5, (17, CARTILAGE_TOP): 0.65, (CARTILAGE_TOP, 40): 0.1})
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, 19): 2}).astype(np.uint8)
    p = _column({(BONE_TOP, 19): 0.9, (19, 22): 0.3, (22, 40): 0.02})
    plain = refine_articular_surfaces(image, labels, {2: p}, SPACING, ArticularRefinement(outside_mm=3.0))
    assert np.median((plain == 2).sum(axis=2)) == 19 - BONE_TOP
    median = ArticularRefinement(outside_mm=3.0, grow_plate_mad=1.0)
    grown = refine_articular_surfaces(image, labels, {2: p}, SPACING, median)
    assert np.median((grown == 2).sum(axis=2)) == CARTILAGE_TOP - BONE_TOP
    assert (grown == 2).sum(axis=2).max() <= CARTILAGE_TOP - BONE_TOP  # not into the dark outside
    assert np.array_equal(grown == 1, labels == 1)


def test_noisy_image_moves_the_surface_to_within_a_voxel() -> None:
    rng = np.random.default_rng(0)
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, CARTILAGE_TOP): 0.6, (CARTILAGE_TOP, 40): 0.05})
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, 18): 2}).astype(np.uint8)
    p = _column({(BONE_TOP, 18): 0.9, (18, 22): 0.3, (22, 40): 0.02})
    out = refine_articular_surfaces(image, labels, {2: p}, SPACING, ArticularRefinement(outside_mm=3.0))
    grown = (out == 2).sum(axis=2) - (labels == 2).sum(axis=2)
    assert np.median(grown) == CARTILAGE_TOP - 18
    assert grown.max() <= CARTILAGE_TOP - 18  # nothing past the edge, where the image is dark
    assert np.mean(np.abs(grown - (CARTILAGE_TOP - 18))) < 0.2


def test_no_contrast_no_change_and_zero_layers_no_change() -> None:
    image = _column({(0, BONE_TOP): 0.2, (BONE_TOP, 40): 0.6})  # plate and outside alike: nothing to judge by
    labels = _column({(0, BONE_TOP): 1, (BONE_TOP, 18): 2}).astype(np.uint8)
    p = _column({(BONE_TOP, 18): 0.9, (18, 22): 0.3, (22, 40): 0.02})
    wide = ArticularRefinement(outside_mm=3.0)
    assert np.array_equal(refine_articular_surfaces(image, labels, {2: p}, SPACING, wide), labels)
    edge = _column({(0, BONE_TOP): 0.2, (BONE_TOP, CARTILAGE_TOP): 0.6, (CARTILAGE_TOP, 40): 0.05})
    off = ArticularRefinement(outside_mm=3.0, layers=0)
    assert np.array_equal(refine_articular_surfaces(edge, labels, {2: p}, SPACING, off), labels)


def test_settings_from_the_config() -> None:
    assert ArticularRefinement.from_config(None) is None
    assert ArticularRefinement.from_config(False) is None
    assert ArticularRefinement.from_config(True) == ArticularRefinement()
    s = ArticularRefinement.from_config({"layers": 2, "reference_depth_mm": [0.3, 1.0]})
    assert s.layers == 2 and s.reference_depth_mm == (0.3, 1.0)
    assert ArticularRefinement.from_config({"marrow_depth_mm": None}).marrow_depth_mm is None
    assert ArticularRefinement.from_config({"marrow_depth_mm": [1, 4]}).marrow_depth_mm == (1.0, 4.0)


@pytest.mark.parametrize("bad", [{"layer": 2}, {"layers": -1}, {"layers": 1.5}, {"grow_min_p": 2},
                                 {"reference_depth_mm": [1.2, 0.4]}, {"window_mm": "wide"}, {"peel": "no"},
                                 {"peel_darker": 1}, {"reference_depth_mm": 5}, [4],
                                 {"marrow_depth_mm": [5, 1]}, {"marrow_depth_mm": 3}, {"grow_plate_mad": 0},
                                 {"grow_plate_mad": "wide"}, {"grow_plate_mad": True}])
def test_malformed_refinement_settings_are_a_clear_error(tiny_bundle: Path, set_postprocessing, bad) -> None:
    set_postprocessing("articular_refinement", bad)
    with pytest.raises(ModelError, match="articular_refinement") as err:
        load_bundle(tiny_bundle)
    assert str(tiny_bundle) in str(err.value)


def test_segment_volume_records_the_refinement_and_it_can_be_switched_off(tiny_bundle: Path, set_postprocessing,
                                                                          small_phantom) -> None:
    set_postprocessing("bone_growth", False)  # the growth reads the background the refinement leaves: kept apart here
    on = segment_volume(small_phantom.image, bundle=tiny_bundle, device="cpu")
    assert on.info["articular_refinement"] == asdict(load_bundle(tiny_bundle).articular_refinement)
    assert on.info["seconds"]["refinement"] >= 0
    set_postprocessing("articular_refinement", False)
    off = segment_volume(small_phantom.image, bundle=tiny_bundle, device="cpu")
    assert off.info["articular_refinement"] is None
    # the refinement only moves cartilage against background: bones are the same either way
    for bone in (1, 3, 5):
        assert np.array_equal(on.labels.array == bone, off.labels.array == bone)
