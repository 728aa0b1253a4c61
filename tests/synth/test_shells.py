"""Analytic shell phantoms: the rasterised shell holds the exact analytic volume, and the truth function returns the
prescribed thickness where the geometry says it must (checked against closed-form surface points, not against the
phantom's own foot-point code)."""

import numpy as np
import pytest

from koaimg.core import Structure
from koaimg.synth._shells import (
    CONDYLE_CORONAL_FRACTION,
    CYLINDER_HALF_LENGTH_MM,
    KINDS,
    shell_phantom,
)

RADIUS = 25.0


def _surface_points(kind: str, rng: np.random.Generator, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Local points on the bone surface inside the plate (closed form per kind) and the plate's top point, where
    the defect is centred."""
    if kind == "sphere":
        u = rng.normal(size=(n, 3))
        return RADIUS * u / np.linalg.norm(u, axis=1, keepdims=True), np.array([0.0, 0.0, RADIUS])
    if kind == "cylinder":
        a = rng.uniform(0, 2 * np.pi, n)
        z = rng.uniform(-0.9, 0.9, n) * CYLINDER_HALF_LENGTH_MM
        return np.stack([RADIUS * np.cos(a), RADIUS * np.sin(a), z], axis=1), np.array([0.0, RADIUS, 0.0])
    if kind == "slab":
        r = RADIUS * 0.95 * np.sqrt(rng.uniform(0, 1, n))
        a = rng.uniform(0, 2 * np.pi, n)
        return np.stack([r * np.cos(a), r * np.sin(a), np.zeros(n)], axis=1), np.zeros(3)
    b = CONDYLE_CORONAL_FRACTION * RADIUS
    theta = np.deg2rad(rng.uniform(-55, 55, n))
    phi = np.deg2rad(rng.uniform(-40, 40, n))
    rho = RADIUS - b + b * np.cos(phi)
    return np.stack([rho * np.sin(theta), b * np.sin(phi), rho * np.cos(theta)], axis=1), np.array([0.0, 0.0, RADIUS])


def _to_world(phantom, local: np.ndarray) -> np.ndarray:
    return local @ phantom.world_from_local[:3, :3].T + phantom.world_from_local[:3, 3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("tilt", "defect"), [(0.0, 0.0), (40.0, 5.0)])
def test_partial_volume_equals_analytic_shell_volume(kind, tilt, defect):
    phantom = shell_phantom(kind, thickness_mm=1.5, tilt_deg=tilt, defect_radius_mm=defect, seed=2)
    rasterised = float(phantom.cartilage_fraction.array.sum()) * phantom.labels.voxel_volume_mm3
    assert rasterised == pytest.approx(phantom.volume_mm3, rel=0.005)
    # bone and cartilage never overlap beyond the sub-sampling of one voxel
    total = phantom.cartilage_fraction.array + phantom.bone_fraction.array
    assert float(total.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_truth_on_the_bone_surface_is_the_prescribed_thickness(kind):
    rng = np.random.default_rng(7)
    phantom = shell_phantom(kind, thickness_mm=2.3, tilt_deg=30.0, defect_radius_mm=4.0, seed=1)
    local, top = _surface_points(kind, rng)
    # and points around the defect centre, put on the surface by the phantom's projection
    near_top, _, _ = phantom.project(_to_world(phantom, top + rng.uniform(-3.5, 3.5, (200, 3))))
    world = np.concatenate([_to_world(phantom, local), near_top])
    local = np.concatenate([local, (near_top - phantom.world_from_local[:3, 3]) @ phantom.world_from_local[:3, :3]])
    in_defect = np.linalg.norm(local - top, axis=1) < 4.0
    truth = phantom.truth_thickness(world)
    assert in_defect.sum() > 50
    np.testing.assert_allclose(truth[~in_defect], 2.3)
    np.testing.assert_array_equal(truth[in_defect], 0.0)
    # the truth belongs to the foot point: any point along the bone normal through it has the same value
    feet, normals, distance = phantom.project(world)
    np.testing.assert_allclose(feet, world, atol=1e-9)
    np.testing.assert_allclose(distance, 0.0, atol=1e-9)
    for t in (-0.3, 1.0, 2.2):
        np.testing.assert_allclose(phantom.truth_thickness(world + t * normals), truth)


def test_bare_bone_beyond_the_plate_has_zero_thickness():
    cylinder = shell_phantom("cylinder", thickness_mm=2.0, seed=0)
    beyond = np.array([[RADIUS, 0.0, CYLINDER_HALF_LENGTH_MM + 2.0], [0.0, -RADIUS, -CYLINDER_HALF_LENGTH_MM - 2.0]])
    np.testing.assert_array_equal(cylinder.truth_thickness(_to_world(cylinder, beyond)), 0.0)
    np.testing.assert_allclose(cylinder.edge_distance(_to_world(cylinder, beyond)), 2.0, atol=1e-9)
    slab = shell_phantom("slab", thickness_mm=2.0, seed=0)
    assert slab.truth_thickness(_to_world(slab, np.array([[RADIUS + 1.0, 0.0, 0.0]])))[0] == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_labels_hold_bone_and_cartilage_by_the_voxel_centre_rule(kind):
    phantom = shell_phantom(kind, thickness_mm=2.0, tilt_deg=60.0, seed=3)
    labels = phantom.labels
    assert set(labels.structures) == {Structure.FEMUR, Structure.FEMORAL_CARTILAGE}
    cart = np.argwhere(labels.array == Structure.FEMORAL_CARTILAGE)
    centres = labels.index_to_world(cart[:: max(1, len(cart) // 2000)])
    _, _, distance = phantom.project(centres)
    assert np.all((distance >= 0) & (distance <= 2.0 + 1e-9))
    assert np.all(phantom.truth_thickness(centres) == 2.0)
    # binary labels hold the shell volume to within the staircase error
    binary = float((labels.array == Structure.FEMORAL_CARTILAGE).sum()) * labels.voxel_volume_mm3
    assert binary == pytest.approx(phantom.volume_mm3, rel=0.03)


def test_tilt_sets_the_angle_between_object_axis_and_slice_axis():
    flat = shell_phantom("slab", thickness_mm=2.0, tilt_deg=0.0, seed=5)
    steep = shell_phantom("slab", thickness_mm=2.0, tilt_deg=60.0, seed=5)
    slice_axis = flat.labels.direction[:, int(np.argmax(flat.labels.spacing))]
    for phantom, tilt in ((flat, 0.0), (steep, 60.0)):
        axis = phantom.world_from_local[:3, 2]
        assert np.degrees(np.arccos(abs(axis @ slice_axis))) == pytest.approx(tilt, abs=1e-9)
    assert not np.array_equal(flat.labels.array, steep.labels.array)
    # a plate parallel to the slices covers few slices; tilted, it spans many
    slices = [np.count_nonzero((p.labels.array == Structure.FEMORAL_CARTILAGE).any(axis=(0, 1))) for p in (flat, steep)]
    assert slices[0] <= 5 < slices[1]


def test_same_seed_same_phantom_other_seed_other_phase():
    a = shell_phantom("condyle", thickness_mm=1.8, tilt_deg=20.0, seed=11, defect_radius_mm=3.0)
    b = shell_phantom("condyle", thickness_mm=1.8, tilt_deg=20.0, seed=11, defect_radius_mm=3.0)
    c = shell_phantom("condyle", thickness_mm=1.8, tilt_deg=20.0, seed=12, defect_radius_mm=3.0)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    np.testing.assert_array_equal(a.cartilage_fraction.array, b.cartilage_fraction.array)
    np.testing.assert_array_equal(a.bone_fraction.array, b.bone_fraction.array)
    assert a.volume_mm3 == b.volume_mm3 == c.volume_mm3
    assert not np.array_equal(a.cartilage_fraction.array, c.cartilage_fraction.array)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="kind"):
        shell_phantom("cube", thickness_mm=2.0)
    with pytest.raises(ValueError, match="defect"):
        shell_phantom("cylinder", thickness_mm=2.0, defect_radius_mm=CYLINDER_HALF_LENGTH_MM)
    with pytest.raises(ValueError, match="leaves"):
        shell_phantom("sphere", thickness_mm=2.0, shape=(100, 100, 50))
    with pytest.raises(ValueError, match="positive"):
        shell_phantom("slab", thickness_mm=0.0)
