"""Orientation round trips: Volume -> DICOM / NIfTI / NRRD / SimpleITK -> Volume keep every voxel in place."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from koaimg_testdata import oblique_affine

from koaimg.core import KneeSide, LabelVolume, Volume
from koaimg.io import (
    MRSeriesTags,
    discover,
    from_nibabel,
    from_simpleitk,
    load_series,
    read_image,
    read_labels,
    to_nibabel,
    to_simpleitk,
    write_dicom_series,
    write_volume,
)


def assert_same_physical_voxels(original: Volume, other: Volume, *, atol_mm=1e-4, value_atol=0.0):
    """Every voxel centre of ``original`` lands on a voxel centre of ``other`` holding the same value."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in original.spatial_shape], indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    mapped = other.world_to_index(original.index_to_world(ijk))
    rounded = np.rint(mapped)
    spacing = other.spacing
    assert np.max(np.abs(mapped - rounded) * spacing) < atol_mm
    idx = rounded.astype(int)
    values = other.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    np.testing.assert_allclose(values, original.array.ravel(), atol=value_atol)


def test_nibabel_round_trip_is_exact_to_float32(oblique_volume, tmp_path):
    back = from_nibabel(to_nibabel(oblique_volume))
    # NIfTI stores the sform in float32: exact to ~1e-7 relative
    np.testing.assert_allclose(back.affine, oblique_volume.affine, atol=1e-6)
    write_volume(oblique_volume, tmp_path / "v.nii.gz")
    again = read_image(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(again.affine, oblique_volume.affine, atol=1e-5)
    np.testing.assert_array_equal(again.array, oblique_volume.array)


def test_simpleitk_round_trip_flips_lps_exactly(oblique_volume):
    img = to_simpleitk(oblique_volume)
    # SimpleITK is LPS: x and y of the origin are negated, z is kept
    np.testing.assert_allclose(img.GetOrigin(), [-10, 20, 30])
    # the same physical point, through SimpleITK's own index->point maths
    lps = img.TransformContinuousIndexToPhysicalPoint((3.0, 5.0, 7.0))
    ras = oblique_volume.index_to_world([[3, 5, 7]])[0]
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)
    back = from_simpleitk(img)
    np.testing.assert_allclose(back.affine, oblique_volume.affine, atol=1e-12)
    np.testing.assert_array_equal(back.array, oblique_volume.array)


def test_simpleitk_and_nibabel_agree_through_files(oblique_volume, tmp_path):
    """Written by us as NRRD, read by nibabel-free SimpleITK, then as NIfTI by nibabel: one geometry."""
    write_volume(oblique_volume, tmp_path / "v.nrrd")
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "v.nrrd")), str(tmp_path / "v2.nii.gz"))
    via_sitk_nifti = from_nibabel(nib.load(str(tmp_path / "v2.nii.gz")))
    np.testing.assert_allclose(via_sitk_nifti.affine, oblique_volume.affine, atol=1e-4)
    assert_same_physical_voxels(oblique_volume, read_image(tmp_path / "v.nrrd"))


@pytest.mark.parametrize("handedness", [1, -1])
def test_dicom_oblique_series_round_trip(tmp_path, handedness):
    rng = np.random.default_rng(1)
    vol = Volume((rng.random((20, 24, 12)) * 1000).astype(np.float32), oblique_affine(handedness=handedness))
    write_dicom_series(vol, tmp_path / "series", MRSeriesTags(side=KneeSide.RIGHT))
    report = discover(tmp_path / "series")
    assert len(report.series) == 1 and report.series[0].ok
    loaded = load_series(report.series[0])
    assert loaded.meta.side is KneeSide.RIGHT and loaded.meta.side_source == "Laterality tag"
    # DICOM stores uint16 with a rescale: values survive to range/65535
    assert_same_physical_voxels(vol, loaded, value_atol=1000 / 65535)
    # DICOM -> Volume -> NIfTI -> Volume keeps the affine to 1e-4 mm
    write_volume(loaded, tmp_path / "v.nii.gz")
    again = read_image(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(again.affine, loaded.affine, atol=1e-4)
    assert_same_physical_voxels(vol, again, value_atol=1000 / 65535)


def test_known_point_maps_to_the_same_voxel_on_every_path(oblique_volume, tmp_path):
    point = oblique_volume.index_to_world([[7, 11, 5]])[0]
    expected = oblique_volume.array[7, 11, 5]
    write_dicom_series(oblique_volume, tmp_path / "dcm")
    write_volume(oblique_volume, tmp_path / "v.nii.gz")
    write_volume(oblique_volume, tmp_path / "v.mha")
    paths = {
        "dicom": load_series(discover(tmp_path / "dcm").series[0]),
        "nifti": read_image(tmp_path / "v.nii.gz"),
        "mha": read_image(tmp_path / "v.mha"),
        "sitk": from_simpleitk(to_simpleitk(oblique_volume)),
    }
    for name, vol in paths.items():
        idx = vol.world_to_index([point])[0]
        assert np.allclose(idx, np.rint(idx), atol=1e-4), name
        value = vol.array[tuple(np.rint(idx).astype(int))]
        assert value == pytest.approx(expected, abs=1000 / 65535), name


def test_labels_round_trip_through_nrrd_with_preset(tmp_path):
    arr = np.zeros((6, 6, 6), np.uint8)
    arr[1:3] = 5  # pymskt femur
    arr[3] = 1  # pymskt femoral cartilage
    src = Volume(arr, oblique_affine())
    write_volume(src, tmp_path / "pymskt_labels.nrrd")
    labels = read_labels(tmp_path / "pymskt_labels.nrrd", preset="pymskt")
    assert isinstance(labels, LabelVolume)
    assert labels.mask(1).sum() == 72 and labels.mask(2).sum() == 36
    np.testing.assert_allclose(labels.affine, src.affine, atol=1e-6)
