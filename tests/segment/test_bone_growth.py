"""The bone growth: a femoral shaft the network left unlabelled is given back to the femur as far as it looks like
the femur's marrow and lies within reach, never into tissue of another level, never over cartilage, and malformed
settings are refused."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from koaimg.core import ModelError
from koaimg.segment import load_bundle, segment_volume
from koaimg.segment._bone_growth import BoneGrowth, grow_bones

SPACING = np.array([1.0, 1.0, 1.0])
SHAPE = (40, 40, 60)
FOUND_TOP = 30  # the network labelled the femur below z = 30 only
MARROW, CORTEX, MUSCLE = 0.8, 0.1, 0.4


def _shaft() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A vertical femoral shaft (marrow radius 8 mm, 2 mm of cortex) in muscle; image, truth and the network's
    labels (femur below ``FOUND_TOP``)."""
    i, j = np.ogrid[:SHAPE[0], :SHAPE[1]]
    r = np.hypot(i - 20, j - 20)[:, :, None] * np.ones(SHAPE)
    image = np.where(r <= 8, MARROW, np.where(r <= 10, CORTEX, MUSCLE)).astype(np.float32)
    truth = (r <= 10).astype(np.uint8)
    labels = truth.copy()
    labels[:, :, FOUND_TOP:] = 0
    return image, truth, labels


def test_an_unlabelled_shaft_is_grown_through_its_marrow_to_the_reach() -> None:
    image, truth, labels = _shaft()
    p = {1: np.full(SHAPE, 0.3, np.float32)}  # unsure everywhere, muscle too
    out = grow_bones(image, labels, p, SPACING, BoneGrowth(reach_mm=8.0, bones=(1,)))
    grown = (out == 1) & (labels == 0)
    assert grown.any()
    assert not (grown & (image != MARROW)).any()  # neither muscle nor the (dark) cortex
    top = np.nonzero(grown.any(axis=(0, 1)))[0].max()
    assert top == FOUND_TOP + 7  # the reach: 8 mm from the labelled bone, which ends at z = 29
    assert np.array_equal(out[labels > 0], labels[labels > 0])  # nothing taken away
    far = grow_bones(image, labels, p, SPACING, BoneGrowth(reach_mm=50.0, bones=(1,)))
    assert np.array_equal(far == 1, (truth == 1) & ((labels == 1) | (image == MARROW)))


def test_fat_as_bright_as_marrow_outside_a_labelled_cortex_is_not_grown() -> None:
    image, truth, labels = _shaft()
    image[image == MUSCLE] = MARROW  # periosteal fat, as bright as the marrow (no fat suppression)
    labels = truth.copy()  # the whole shaft, cortex included, is labelled
    p = {1: np.full(SHAPE, 0.3, np.float32)}
    assert np.array_equal(grow_bones(image, labels, p, SPACING, BoneGrowth(bones=(1,))), labels)
    # where the network stopped inside the marrow, the marrow is continued (and only the marrow)
    labels[:, :, FOUND_TOP:] = 0
    out = grow_bones(image, labels, p, SPACING, BoneGrowth(bones=(1,)))
    grown = (out == 1) & (labels == 0)
    assert grown.any() and not (grown & (truth == 0)).any()


def test_no_growth_where_the_network_gave_the_bone_no_chance() -> None:
    image, _, labels = _shaft()
    p = {1: np.full(SHAPE, 0.05, np.float32)}
    assert np.array_equal(grow_bones(image, labels, p, SPACING, BoneGrowth(bones=(1,))), labels)
    # and a bone without probabilities, or not in the settings, is left alone
    assert np.array_equal(grow_bones(image, labels, {}, SPACING, BoneGrowth(bones=(1,))), labels)
    assert np.array_equal(grow_bones(image, labels, {1: p[1] + 0.5}, SPACING, BoneGrowth(bones=(3,))), labels)


def test_cartilage_and_other_labels_are_never_overwritten() -> None:
    image, _, labels = _shaft()
    labels[15:25, 15:25, 33] = 2  # a "cartilage" slab across the shaft
    labels[18:22, 18:22, 31] = 3
    p = {1: np.full(SHAPE, 0.9, np.float32)}
    out = grow_bones(image, labels, p, SPACING, BoneGrowth(reach_mm=50.0, bones=(1,)))
    assert np.array_equal(out[(labels != 0) & (labels != 1)], labels[(labels != 0) & (labels != 1)])
    assert ((out == 1) & (labels == 0)).any()


def test_a_sliver_of_bone_without_deep_marrow_is_not_grown() -> None:
    image, _, labels = _shaft()
    sliver = np.zeros_like(labels)
    sliver[20, 20, 10] = 1  # one voxel: no marrow 2 mm deep to compare with
    p = {1: np.full(SHAPE, 0.9, np.float32)}
    assert np.array_equal(grow_bones(image, sliver, p, SPACING, BoneGrowth(bones=(1,))), sliver)


def test_settings_from_the_config() -> None:
    assert BoneGrowth.from_config(None) is None
    assert BoneGrowth.from_config(False) is None
    assert BoneGrowth.from_config(True) == BoneGrowth()
    s = BoneGrowth.from_config({"min_p": 0.2, "bones": [1, 3]})
    assert s.min_p == 0.2 and s.bones == (1, 3)


@pytest.mark.parametrize("bad", [{"min": 0.2}, {"min_p": 1.5}, {"min_p": True}, {"marrow_mad": 0},
                                 {"reach_mm": -1}, {"marrow_depth_mm": "deep"}, {"bones": [2]}, {"bones": [1.5]},
                                 {"bones": [True]}, {"bones": 1}, [1]])
def test_malformed_bone_growth_settings_are_a_clear_error(tiny_bundle: Path, set_postprocessing, bad) -> None:
    set_postprocessing("bone_growth", bad)
    with pytest.raises(ModelError, match="bone_growth") as err:
        load_bundle(tiny_bundle)
    assert str(tiny_bundle) in str(err.value)


def test_segment_volume_records_the_growth_and_it_only_adds_bone(tiny_bundle: Path, set_postprocessing,
                                                                  small_phantom) -> None:
    set_postprocessing("bone_growth", {"min_p": 0.0, "marrow_mad": 100.0})  # grows wherever it can reach
    on = segment_volume(small_phantom.image, bundle=tiny_bundle, device="cpu")
    assert on.info["bone_growth"] == asdict(load_bundle(tiny_bundle).bone_growth)
    assert on.info["seconds"]["bone_growth"] >= 0
    set_postprocessing("bone_growth", False)
    off = segment_volume(small_phantom.image, bundle=tiny_bundle, device="cpu")
    assert off.info["bone_growth"] is None
    changed = on.labels.array != off.labels.array
    assert changed.any()
    assert (off.labels.array[changed] == 0).all() and np.isin(on.labels.array[changed], (1, 3, 5)).all()
