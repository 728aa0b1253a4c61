"""Femur-based registration recovers the phantom repositioning."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

from koaimg.change import register_femur


def _error(matrix: np.ndarray, truth: np.ndarray, at: np.ndarray) -> tuple[float, float]:
    """(rotation error deg, largest displacement error mm over the points ``at``)."""
    err = matrix @ np.linalg.inv(truth)
    moved = at @ err[:3, :3].T + err[:3, 3]
    return float(np.degrees(Rotation.from_matrix(err[:3, :3]).magnitude())), float(np.abs(moved - at).max())


def test_registration_recovers_repositioning(thickening_pair):
    transform = register_femur(thickening_pair.baseline, thickening_pair.followup)
    truth = thickening_pair.true_transform()
    assert np.degrees(Rotation.from_matrix(truth[:3, :3]).magnitude()) > 1.0  # the pair was really moved
    rot, shift = _error(transform.matrix, truth, thickening_pair.baseline.femoral.points)
    assert rot < 0.3 and shift < 0.15, (rot, shift)
    assert transform.rms_mm < 0.3 and not transform.notes


def test_registration_of_a_left_knee(zero_pair):
    transform = register_femur(zero_pair.baseline, zero_pair.followup)
    rot, shift = _error(transform.matrix, zero_pair.true_transform(), zero_pair.baseline.femoral.points)
    assert rot < 0.3 and shift < 0.15, (rot, shift)


def test_registration_from_interface_points_only(thickening_pair):
    """Without label maps the measured femoral interface points are the surfaces (looser, but sub-voxel)."""
    b = dataclasses.replace(thickening_pair.baseline, femur_surface=None, femur_normals=None)
    f = dataclasses.replace(thickening_pair.followup, femur_surface=None, femur_normals=None)
    transform = register_femur(b, f)
    rot, shift = _error(transform.matrix, thickening_pair.true_transform(), b.femoral.points)
    assert rot < 0.5 and shift < 0.3, (rot, shift)
    assert any("interface" in n for n in transform.notes)


def test_visit_against_itself_is_identity(zero_pair):
    transform = register_femur(zero_pair.baseline, zero_pair.baseline)
    assert transform.rotation_deg < 0.01 and transform.translation_mm < 0.01
