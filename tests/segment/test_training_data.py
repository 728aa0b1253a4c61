"""Training patches: centred on cartilage, on any labelled voxel, or anywhere in the map (far background)."""

from __future__ import annotations

import numpy as np

from koaimg.core import LabelVolume
from koaimg.segment._training import LabelSource


def _source() -> LabelSource:
    """A 60 mm cube with a small 'knee' in one corner: most of the map is far from any label."""
    lab = np.zeros((120, 120, 120), np.uint8)
    lab[10:30, 10:30, 10:20] = 1
    lab[10:30, 10:30, 20:23] = 2
    return LabelSource(LabelVolume(lab, np.diag([0.5, 0.5, 0.5, 1.0])), "corner")


def test_anywhere_patches_reach_far_from_the_anatomy_but_always_hold_some_of_it():
    source, rng = _source(), np.random.default_rng(0)
    far = 0
    for _ in range(40):
        sub = source.crop_around(rng, 12.0, cartilage_focus=0.0, anywhere=1.0)
        assert sub.array.any(), "the renderer needs labelled anatomy in every crop"
        centre = sub.index_to_world(np.array(sub.spatial_shape, float)[None] / 2).ravel()
        far += bool(np.linalg.norm(centre - np.array([10.0, 10.0, 10.0])) > 12.0)
    assert far >= 10, "centres anywhere in the map, not only on labelled voxels"


def test_focused_patches_are_centred_on_cartilage():
    source, rng = _source(), np.random.default_rng(1)
    for _ in range(10):
        sub = source.crop_around(rng, 5.0, cartilage_focus=1.0)
        assert (sub.array == 2).any()
