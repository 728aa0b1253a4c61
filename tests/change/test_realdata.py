"""A real knee label map paired with its own rigidly moved, re-gridded copy reports no change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from koaimg.change import compare_knees, rigidly_moved_labels, visit_from_measurement
from koaimg.io import read_labels
from koaimg.measure import measure_knee

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_real_label_map_against_its_moved_copy():
    path = REALDATA / "pymskt_dess_labels" / "SAG_3D_DESS_RIGHT_bones_cart_men_fib-label.nrrd"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} (tests read ../shared/realdata beside the checkout)")
    labels = read_labels(path, preset="pymskt")
    move = np.eye(4)
    axis = np.array([0.6, 0.3, 0.74]) / np.linalg.norm([0.6, 0.3, 0.74])
    move[:3, :3] = Rotation.from_rotvec(np.deg2rad(5.0) * axis).as_matrix()
    centre = labels.index_to_world(np.array(labels.spatial_shape)[None, :] / 2.0).ravel()
    move[:3, 3] = centre - move[:3, :3] @ centre + np.array([3.0, -2.4, 3.2])
    moved = rigidly_moved_labels(labels, move)
    before, after = measure_knee(labels), measure_knee(moved)
    change = compare_knees(visit_from_measurement(before, labels), visit_from_measurement(after, moved))
    error = change.transform.matrix @ move
    assert np.degrees(Rotation.from_matrix(error[:3, :3]).magnitude()) < 0.1
    femoral = [r for r in change.rows() if r["structure"] == "femoral_cartilage" and r["metric"] == "ThCtAB.Me"]
    assert len(femoral) >= 7
    worst = max(femoral, key=lambda r: abs(r["delta"]))
    assert abs(worst["delta"]) <= 0.03, worst
    assert not any(r["beyond_sdd"] for r in femoral)
