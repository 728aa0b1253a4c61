"""DICOM MR: compressed and big-endian series, enhanced multi-frame objects, and real files nobody here wrote."""

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pydicom.data
import pytest
from koaimg_testdata import oblique_affine, realdata
from test_round_trips import assert_same_physical_voxels

from koaimg.core import LPS_TO_RAS, KoaimgError, Plane, Volume
from koaimg.io import (
    FileKind,
    MRSeriesTags,
    discover,
    load_dicom_file,
    load_mr_stack,
    load_series,
    read_labels,
    sniff,
    write_dicom_series,
)


@pytest.fixture
def integer_volume() -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.integers(0, 4000, (40, 36, 6)).astype(np.float32), oblique_affine())


@pytest.mark.parametrize("compression", ["rle", "jpeg2000", "jpegls"])
def test_lossless_compressed_series_load_exactly(integer_volume, tmp_path, compression):
    paths = write_dicom_series(integer_volume, tmp_path / compression, compression=compression)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    assert_same_physical_voxels(integer_volume, load_mr_stack(paths))


@pytest.mark.parametrize("handedness", [1, -1])
def test_stack_assembly_matches_highdicom(tmp_path, handedness):
    """koaimg assembles single-frame stacks itself (7x faster); highdicom is the reference for the geometry."""
    vol = Volume(np.random.default_rng(5).integers(0, 999, (12, 10, 7)).astype(np.float32),
                 oblique_affine(handedness=handedness))
    paths = write_dicom_series(vol, tmp_path / "s")
    ours = load_mr_stack(paths[::-1])  # file order must not matter
    reference = hd.get_volume_from_series([pydicom.dcmread(p) for p in paths], dtype=np.float32)
    ref_affine = LPS_TO_RAS @ reference.affine[:, [2, 1, 0, 3]]
    ref_array = np.asarray(reference.array).transpose(2, 1, 0)
    if np.dot(ref_affine[:3, 2], ours.affine[:3, 2]) < 0:  # highdicom may stack the other way round
        ref_affine = ref_affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, ref_array.shape[2] - 1],
                                            [0, 0, 0, 1.0]])
        ref_array = ref_array[:, :, ::-1]
    np.testing.assert_allclose(ours.affine, ref_affine, atol=1e-6)
    np.testing.assert_array_equal(ours.array, ref_array)


def test_big_endian_series_loads(integer_volume, tmp_path):
    paths = write_dicom_series(integer_volume, tmp_path / "be", big_endian=True)
    assert_same_physical_voxels(integer_volume, load_mr_stack(paths))


def test_enhanced_multiframe_mr(integer_volume, tmp_path):
    paths = write_dicom_series(integer_volume, tmp_path / "single")
    legacy = [pydicom.dcmread(p) for p in paths]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=7, sop_instance_uid=hd.UID(),
        instance_number=1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    report = discover(tmp_path / "enhanced.dcm")
    assert report.series[0].n_slices == 6 and report.series[0].ok
    assert_same_physical_voxels(integer_volume, load_dicom_file(tmp_path / "enhanced.dcm"))


def test_echoes_and_series_are_split(tmp_path):
    """Two echoes in one SeriesInstanceUID become two stacks, ordered by echo time."""
    vol = Volume(np.ones((8, 8, 6), np.float32), oblique_affine())
    for te in (30.0, 10.0):
        write_dicom_series(vol, tmp_path / f"te{te:g}", MRSeriesTags(echo_time_ms=te, mr_acquisition_type="2D"))
    # same series UID for both echoes: the writer derives it from the echo time, so rewrite one to match
    first = pydicom.dcmread(next((tmp_path / "te10").iterdir()))
    for p in (tmp_path / "te30").iterdir():
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = first.SeriesInstanceUID
        ds.save_as(p, enforce_file_format=True)
    report = discover(tmp_path)
    assert [s.echo_time_ms for s in report.series] == [10.0, 30.0]
    assert all(s.ok and s.n_slices == 6 for s in report.series)


@pytest.mark.realdata
def test_real_multi_echo_t2_series():
    report = discover(realdata("pymskt_mese_t2", "dicom"))
    assert not report.all_problems
    assert len(report.series) == 8
    echo_times = [s.echo_time_ms for s in report.series]
    assert echo_times == sorted(echo_times) and echo_times[0] == pytest.approx(6.312)
    for info in report.series:
        assert (info.n_slices, info.plane, info.matrix) == (24, "sagittal", (256, 256))
        assert info.pixel_spacing_mm == pytest.approx((0.625, 0.625))
        assert info.slice_spacing_mm == pytest.approx(4.0, abs=1e-3)
    vol = load_series(report.series[0])
    assert vol.spatial_shape == (256, 256, 24) and vol.plane is Plane.SAGITTAL
    np.testing.assert_allclose(vol.spacing, [0.625, 0.625, 4.0], atol=1e-3)
    assert vol.meta.acquisition["transfer_syntax"] == "Explicit VR Big Endian"
    assert vol.array.max() > 1000  # real signal, not an empty decode


def _is_file(path: str) -> bool:
    return Path(path).is_file()


def test_every_pydicom_test_file_loads_or_gives_one_clear_error():
    """Real files nobody here wrote: zero tracebacks, every error one line naming its file."""
    outcomes = {"loaded": 0, "refused": 0}
    for name in pydicom.data.get_testdata_files():
        if not _is_file(name) or sniff(name) != FileKind.DICOM:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                load_dicom_file(name)
                outcomes["loaded"] += 1
            except KoaimgError as exc:
                assert "\n" not in str(exc) and Path(name).name in str(exc), str(exc)
                outcomes["refused"] += 1
    assert outcomes["loaded"] >= 30 and outcomes["refused"] >= 30, outcomes


@pytest.mark.realdata
def test_every_realdata_file_loads_or_gives_one_clear_error():
    root = realdata()
    report = discover(root)
    assert not report.all_problems, [p.message for p in report.all_problems]
    presets = {"pymskt_dess_labels": "pymskt", "woo_oai_labels": "woo-oai", "cartimorph_clair_template": "clair"}
    loaded = 0
    for info in report.series:
        folder = Path(info.files[0]).relative_to(root).parts[0]
        try:
            if info.role == "label map" and folder in presets and "atlas" not in info.files[0]:
                read_labels(info.files[0], preset=presets[folder])
            else:
                load_series(info, pixel_spacing_mm=0.0852)
            loaded += 1
        except KoaimgError as exc:
            assert "\n" not in str(exc)
    assert loaded >= len(report.series) - 1
