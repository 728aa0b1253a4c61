"""The real Clarius screenshot (kimbowa_knee_us, MIT): cartilage band vs the provided mask, plausible thickness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from koaimg_testdata import realdata
from PIL import Image

from koaimg.io import read_ultrasound_screenshot
from koaimg.measure.ultrasound import SITES, measure_ultrasound
from koaimg.pipeline import measure_ultrasound_file

pytestmark = pytest.mark.realdata
SPACING_MM = 0.0852  # SOURCE.md: from the on-screen depth ticks (117.3 px/cm)


def test_clarius_band_overlaps_the_provided_mask_and_thickness_is_plausible():
    folder = realdata("kimbowa_knee_us")
    img = read_ultrasound_screenshot(folder / "clarius.png", pixel_spacing_mm=SPACING_MM)
    m = measure_ultrasound(img)  # default method
    with Image.open(folder / "clarius_pred.png") as im:  # 512x512 model prediction of the whole 800x800 screenshot
        ref = np.asarray(im.resize(img.shape[::-1], Image.NEAREST)) > 127
    mask = m.cartilage_mask()
    dice = 2 * (mask & ref).sum() / (mask.sum() + ref.sum())
    assert dice >= 0.7, dice  # measured 0.83
    for s in SITES:
        assert 1.0 <= m.sites[s].thickness_mm <= 3.0, (s, m.sites[s])
    # notch deepest, LC/MC on the flanks either side of it
    assert m.sites["LC"].bone_px[1] < m.sites["IN"].bone_px[1] < m.sites["MC"].bone_px[1]
    assert m.sites["IN"].bone_px[0] > max(m.sites["LC"].bone_px[0], m.sites["MC"].bone_px[0])


def test_clarius_outputs(tmp_path):
    folder = realdata("kimbowa_knee_us")
    out = measure_ultrasound_file(folder / "clarius.png", tmp_path, pixel_spacing_mm=SPACING_MM, subject="REAL",
                                  visit="v1", cross_check=False)
    summary = json.loads((out / "ultrasound.json").read_text())
    assert summary["calibration"] == "option --pixel-spacing" and summary["side_source"] == "assumed"
    with Image.open(out / "overlay.png") as im:
        assert im.size == (800, 800)
