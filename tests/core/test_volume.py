import numpy as np
import pytest

from koaimg.core import GeometryError, KneeSide, LabelSchemaError, LabelVolume, Plane, Volume, VolumeMeta


def test_geometry_is_derived_from_the_affine(oblique_volume):
    np.testing.assert_allclose(oblique_volume.spacing, [0.365, 0.4, 0.7])
    np.testing.assert_allclose(oblique_volume.direction.T @ oblique_volume.direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(oblique_volume.origin, [10, -20, 30])
    assert oblique_volume.voxel_volume_mm3 == pytest.approx(0.365 * 0.4 * 0.7)


def test_index_world_round_trip(oblique_volume):
    ijk = np.array([[0, 0, 0], [3.5, 7.25, 11], [19, 23, 0]])
    np.testing.assert_allclose(oblique_volume.world_to_index(oblique_volume.index_to_world(ijk)), ijk, atol=1e-9)


def test_affine_is_read_only(oblique_volume):
    with pytest.raises(ValueError):
        oblique_volume.affine[0, 0] = 5


@pytest.mark.parametrize(("affine", "match"), [
    (np.eye(3), "4x4"),
    (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "last row"),
    (np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float), "orthogonal"),
    (np.diag([1, 0, 1, 1.0]), "zero-length"),
    (np.diag([1, np.nan, 1, 1.0]), "NaN"),
])
def test_invalid_affines_are_refused(affine, match):
    with pytest.raises(GeometryError, match=match):
        Volume(np.zeros((2, 2, 2)), affine)


def test_array_must_be_3d():
    with pytest.raises(GeometryError, match="at least 3D"):
        Volume(np.zeros((4, 4)), np.eye(4))


def test_with_array_keeps_geometry_and_refuses_a_new_shape(oblique_volume):
    out = oblique_volume.with_array(np.zeros(oblique_volume.shape))
    assert out.same_grid(oblique_volume)
    with pytest.raises(GeometryError, match="differs"):
        oblique_volume.with_array(np.zeros((2, 2, 2)))


def test_plane_and_axcodes():
    sag = Volume(np.zeros((4, 4, 4)), np.array([[0, 0, -0.7, 0], [0.365, 0, 0, 0], [0, -0.365, 0, 0], [0, 0, 0, 1.0]]))
    assert sag.plane == Plane.SAGITTAL
    assert sag.axcodes == "AIL"


def test_meta_coerces_enums():
    meta = VolumeMeta(modality="MR", side="R")
    assert meta.side is KneeSide.RIGHT
    assert meta.replace(side="left").side is KneeSide.LEFT


def test_label_volume_refuses_foreign_values_and_floats():
    with pytest.raises(LabelSchemaError, match=r"\[9\]"):
        LabelVolume(np.full((2, 2, 2), 9, np.uint8), np.eye(4))
    with pytest.raises(LabelSchemaError, match="integer dtype"):
        LabelVolume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    labels = LabelVolume(np.array([[[0, 1], [2, 2]]] * 2, np.int16), np.eye(4))
    assert labels.array.dtype == np.uint8
    assert [s.key for s in labels.structures] == ["femur", "femoral_cartilage"]
    assert labels.mask(2).sum() == 4
