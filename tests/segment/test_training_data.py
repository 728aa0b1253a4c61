"""Training patches: centred on cartilage, on labelled anatomy, or anywhere in the map (far background, air)."""

from __future__ import annotations

import numpy as np

from koaimg.core import LabelVolume
from koaimg.segment._training import LabelSource, training_pair


def _source() -> LabelSource:
    """A 60 mm cube with a small 'knee' in one corner: most of the map is far from any label."""
    lab = np.zeros((120, 120, 120), np.uint8)
    lab[10:30, 10:30, 10:20] = 1
    lab[10:30, 10:30, 20:23] = 2
    return LabelSource(LabelVolume(lab, np.diag([0.5, 0.5, 0.5, 1.0])), "corner")


def test_anywhere_patches_show_the_far_background_and_anatomy_patches_do_not():
    source = _source()
    far = [training_pair(source, np.random.default_rng(i), patch=16, spacing_mm=0.6, anywhere=1.0)
           for i in range(12)]
    near = [training_pair(source, np.random.default_rng(100 + i), patch=16, spacing_mm=0.6, cartilage_focus=0.5)
            for i in range(6)]
    assert sum(not lab.any() for _, lab in far) >= 4, "anywhere: many patches hold no label at all"
    assert all(lab.any() for _, lab in near), "anatomy patches are centred on labelled voxels"
    for img, lab in far + near:
        assert img.shape == lab.shape == (16, 16, 16) and img.dtype == np.float32
        assert img.min() >= -0.5 and img.max() <= 2.0, "intensities stay in the clipped range inference uses"


def test_focused_patches_are_centred_on_cartilage():
    source, rng = _source(), np.random.default_rng(1)
    for _ in range(10):
        sub = source.crop_around(rng, 5.0, cartilage_focus=1.0)
        assert (sub.array == 2).any()
