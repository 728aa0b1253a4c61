"""Ultrasound ingestion: calibration from DICOM US regions (or a stated screenshot spacing), grey frames, refusals."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import convert_color_space

from koaimg.core._errors import (
    CalibrationError,
    GeometryError,
    UnreadableFileError,
    UnsupportedObjectError,
)
from koaimg.core._ultrasound import UltrasoundImage, UltrasoundRegion
from koaimg.io._dicom_us import (
    choose_bmode_region,
    describe_ultrasound,
    parse_ultrasound_regions,
    read_ultrasound_dicom,
)
from koaimg.io._dicom_us_write import write_ultrasound_dicom
from koaimg.io._us_screenshot import read_ultrasound_screenshot

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

# facts of pydicom's bundled real ultrasound files (inspected with pydicom 3.0.2)
YBR_DELTA_CM = 0.05104970559477806  # SonoSite Turbo, one B-mode region x 84..595, y 31..414 on a 320×240 cine
PALETTE_DELTA_CM = 0.02622878766196998  # Philips CX50, B-mode x 120..800, y 60..518 + ECG waveform region, 800×350

DOPPLER = {"RegionSpatialFormat": 1, "RegionDataType": 2, "RegionLocationMinX0": 0, "RegionLocationMinY0": 0,
           "RegionLocationMaxX1": 30, "RegionLocationMaxY1": 20, "PhysicalUnitsXDirection": 3,
           "PhysicalUnitsYDirection": 3, "PhysicalDeltaX": 0.01, "PhysicalDeltaY": 0.01}


def frames_u8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def rewrite(path: Path, edit: Callable[[pydicom.Dataset], None]) -> Path:
    """Read a written file, change its dataset, save it back (to build broken inputs)."""
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def region(index=0, fmt=1, dtype=1, units=(3, 3), delta=(0.01, 0.01), bounds=(0, 0, 99, 99)) -> UltrasoundRegion:
    return UltrasoundRegion(index, fmt, dtype, 0, *bounds, *units, *delta)


# round trips -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mm", [0.0852, 0.1, 0.2622878766196998, 0.3])
def test_multiframe_round_trip_is_exact(tmp_path, mm):
    frames = frames_u8((5, 33, 47))
    path = write_ultrasound_dicom(frames, tmp_path / "cine.dcm", mm_per_pixel=mm, frame_time_ms=33.3)
    img = read_ultrasound_dicom(path)
    assert np.array_equal(img.frames, frames.astype(np.float32))
    assert img.frames.dtype == np.float32 and not img.frames.flags.writeable
    assert img.spacing_mm == (mm, mm)
    assert img.frame_time_ms == pytest.approx(33.3)
    assert img.selected_frame is None
    assert img.source == "DICOM US multi-frame"
    assert img.region is not None and img.region.is_bmode_tissue
    assert pydicom.dcmread(path).SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"


@pytest.mark.parametrize("rgb", [False, True])
def test_single_frame_round_trip_is_exact(tmp_path, rgb):
    frames = frames_u8((31, 47), seed=1)  # odd byte count: exercises PixelData padding
    path = write_ultrasound_dicom(frames, tmp_path / "still.dcm", mm_per_pixel=0.0852, rgb=rgb)
    img = read_ultrasound_dicom(path)
    assert img.frames.shape == (1, 31, 47)
    assert np.array_equal(img.frames[0], frames.astype(np.float32))
    assert img.spacing_mm == (0.0852, 0.0852)
    assert img.source == "DICOM US single-frame"
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
    assert ds.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    assert img.meta["photometric_interpretation"] == ds.PhotometricInterpretation


def test_writer_is_deterministic_pseudonymous_and_atomic(tmp_path):
    frames = frames_u8((3, 20, 24))
    a = write_ultrasound_dicom(frames, tmp_path / "a.dcm", mm_per_pixel=0.1, frame_time_ms=20, pseudonym="sub-01")
    b = write_ultrasound_dicom(frames, tmp_path / "b.dcm", mm_per_pixel=0.1, frame_time_ms=20, pseudonym="sub-01")
    c = write_ultrasound_dicom(frames, tmp_path / "c.dcm", mm_per_pixel=0.1, frame_time_ms=20, pseudonym="sub-02")
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm", "b.dcm", "c.dcm"]  # no temporary leftovers
    da, dc = pydicom.dcmread(a), pydicom.dcmread(c)
    assert da.PatientName == "sub-01" and da.PatientID == "sub-01"
    assert da.StudyDate == "20000101" and "PatientBirthDate" in da and da.PatientBirthDate == ""
    assert da.StudyInstanceUID != dc.StudyInstanceUID and da.SOPInstanceUID != dc.SOPInstanceUID
    assert da.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    item = da.SequenceOfUltrasoundRegions[0]
    assert (item.RegionSpatialFormat, item.RegionDataType, item.PhysicalUnitsXDirection) == (1, 1, 3)
    assert item.PhysicalDeltaX == pytest.approx(0.01)
    assert (item.RegionLocationMaxX1, item.RegionLocationMaxY1) == (23, 19)


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(GeometryError, match="needs a positive frame_time_ms"):
        write_ultrasound_dicom(frames_u8((2, 8, 8)), tmp_path / "x.dcm", mm_per_pixel=0.1)
    with pytest.raises(GeometryError, match=r"0\.\.255"):
        write_ultrasound_dicom(np.full((8, 8), 300.0), tmp_path / "x.dcm", mm_per_pixel=0.1)
    with pytest.raises(CalibrationError, match="positive"):
        write_ultrasound_dicom(frames_u8((8, 8)), tmp_path / "x.dcm", mm_per_pixel=0.0)
    assert not list(tmp_path.iterdir())


def test_frame_selection(tmp_path):
    frames = frames_u8((6, 10, 12))
    path = write_ultrasound_dicom(frames, tmp_path / "cine.dcm", mm_per_pixel=0.1, frame_time_ms=25)
    img = read_ultrasound_dicom(path, frame=2)
    assert img.frames.shape == (1, 10, 12) and img.selected_frame == 2
    assert np.array_equal(img.frames[0], frames[2])
    assert read_ultrasound_dicom(path, frame=-1).selected_frame == 5
    assert read_ultrasound_dicom(path).select_frame(4).selected_frame == 4
    with pytest.raises(GeometryError, match=r"frame 6 does not exist: the file has 6 frame\(s\)"):
        read_ultrasound_dicom(path, frame=6)


def test_frame_time_vector(tmp_path):
    path = write_ultrasound_dicom(frames_u8((4, 8, 8)), tmp_path / "cine.dcm", mm_per_pixel=0.1, frame_time_ms=25)

    def to_vector(ds):
        del ds.FrameTime
        ds.FrameIncrementPointer = 0x00181065
        ds.FrameTimeVector = ["0", "20", "30", "40"]

    img = read_ultrasound_dicom(rewrite(path, to_vector))
    assert img.frame_time_ms == pytest.approx(30.0)
    assert img.meta["frame_time_vector_ms"] == [0.0, 20.0, 30.0, 40.0]


def test_crop_to_region_and_extra_regions(tmp_path):
    frames = frames_u8((40, 50))
    path = write_ultrasound_dicom(frames, tmp_path / "x.dcm", mm_per_pixel=0.1)

    def shrink(ds):
        item = ds.SequenceOfUltrasoundRegions[0]
        item.RegionLocationMinX0, item.RegionLocationMinY0 = 5, 3
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = 44, 29

    rewrite(path, shrink)
    assert np.array_equal(read_ultrasound_dicom(path).frames[0], frames[3:30, 5:45])
    assert read_ultrasound_dicom(path, crop_to_region=False).frames.shape == (1, 40, 50)

    both = write_ultrasound_dicom(frames, tmp_path / "both.dcm", mm_per_pixel=0.1, extra_regions=[DOPPLER])
    img = read_ultrasound_dicom(both)
    assert [r.data_type for r in parse_ultrasound_regions(pydicom.dcmread(both))] == [1, 2]
    assert img.region.index == 0 and img.frames.shape == (1, 40, 50)


# pydicom's real ultrasound files ---------------------------------------------------------------------------------
def test_pydicom_ybr_color_cine():
    path = get_testdata_file("examples_ybr_color.dcm")
    regions = parse_ultrasound_regions(pydicom.dcmread(path, stop_before_pixels=True))
    assert regions == [UltrasoundRegion(0, 1, 1, 2, 84, 31, 595, 414, 3, 3, YBR_DELTA_CM, YBR_DELTA_CM)]
    # the file is a 2x downsample that kept its 640x480 regions: the spacing does not fit these pixels
    with pytest.raises(CalibrationError, match=re.escape("(x 84..595, y 31..414) extends beyond the 320×240 image")):
        read_ultrasound_dicom(path, allow_region_overflow=False)
    img = read_ultrasound_dicom(path)  # loads, with the suspect calibration stated for measurement to refuse
    assert "extends beyond the 320×240 image" in img.meta["calibration_warning"]
    assert img.spacing_mm == (0.5104970559477806, 0.5104970559477806)
    assert img.frames.shape == (30, 209, 236)  # rows 31..239, cols 84..319
    assert img.frame_time_ms == pytest.approx(33.333)
    assert img.meta["region_clipped"] is True and img.meta["photometric_interpretation"] == "YBR_FULL_422"
    assert img.meta["manufacturer_model"] == "Turbo" and img.source == "DICOM US multi-frame"
    assert 0 < float(img.frames.max()) <= 255 and not img.meta["all_black"]
    one = read_ultrasound_dicom(path, frame=3, allow_region_overflow=True)
    assert one.selected_frame == 3 and np.array_equal(one.frames[0], img.frames[3])


def test_pydicom_palette_still():
    path = get_testdata_file("examples_palette.dcm")
    regions = parse_ultrasound_regions(pydicom.dcmread(path, stop_before_pixels=True))
    assert [(r.spatial_format, r.data_type, r.units_x, r.units_y) for r in regions] == [(1, 1, 3, 3), (4, 10, 4, 0)]
    assert regions[1].describe() == "region 1: waveform ECG trace in s/none"
    with pytest.raises(CalibrationError, match=re.escape("(x 120..800, y 60..518) extends beyond the 800×350")):
        read_ultrasound_dicom(path, allow_region_overflow=False)
    img = read_ultrasound_dicom(path)  # cropped (not resized): 11 cm depth label fits
    assert img.spacing_mm == (0.2622878766196998, 0.2622878766196998)
    assert img.frames.shape == (1, 290, 680)  # rows 60..349, cols 120..799 (X1 = Columns is the usual off-by-one)
    assert img.region.index == 0 and img.meta["photometric_interpretation"] == "PALETTE COLOR"
    assert img.source == "DICOM US single-frame" and img.frame_time_ms is None
    assert 0 < float(img.frames.max()) <= 255


# refusals ----------------------------------------------------------------------------------------------------------
def test_no_regions_is_refused(tmp_path):
    path = write_ultrasound_dicom(frames_u8((8, 8)), tmp_path / "x.dcm", mm_per_pixel=0.1)
    rewrite(path, lambda ds: delattr(ds, "SequenceOfUltrasoundRegions"))
    with pytest.raises(CalibrationError, match=r"x\.dcm: no Sequence of Ultrasound Regions \(0018,6011\)"):
        read_ultrasound_dicom(path)


def test_doppler_only_is_refused(tmp_path):
    path = write_ultrasound_dicom(frames_u8((30, 40)), tmp_path / "x.dcm", mm_per_pixel=0.1, extra_regions=[DOPPLER])

    def drop_bmode(ds):
        ds.SequenceOfUltrasoundRegions = pydicom.Sequence([ds.SequenceOfUltrasoundRegions[1]])

    rewrite(path, drop_bmode)
    with pytest.raises(CalibrationError, match=r"none is a calibrated 2D tissue \(B-mode\) region in cm: "
                                               r"found Doppler/colour-flow only"):
        read_ultrasound_dicom(path)


def test_uncalibrated_units_and_anisotropy_are_refused():
    with pytest.raises(CalibrationError, match=r"found region 0: 2D tissue in none/none"):
        choose_bmode_region([region(units=(0, 0))], path="a.dcm")
    with pytest.raises(CalibrationError, match=r"zero/invalid Physical Delta"):
        choose_bmode_region([region(delta=(0.0, 0.0))], path="a.dcm")
    with pytest.raises(CalibrationError, match=r"non-square pixels: .* differ by 5\.0 %"):
        choose_bmode_region([region(delta=(0.0100, 0.0095))], path="a.dcm")
    assert choose_bmode_region([region(delta=(0.0100, 0.0099))], path="a.dcm").index == 0  # 1 % is fine
    with pytest.raises(CalibrationError, match="not cm on both axes"):
        _ = region(units=(4, 0)).mm_per_pixel


def test_largest_bmode_region_wins():
    small = region(0, bounds=(0, 0, 49, 99), delta=(0.02, 0.02))
    large = region(1, bounds=(50, 0, 199, 99), delta=(0.01, 0.01))
    doppler = region(2, dtype=2, bounds=(0, 0, 399, 399))
    chosen = choose_bmode_region([small, large, doppler], path=None)
    assert chosen.index == 1 and chosen.mm_per_pixel == (0.1, 0.1)


def test_not_ultrasound_and_unreadable(tmp_path):
    with pytest.raises(UnsupportedObjectError, match="not an ultrasound image"):
        read_ultrasound_dicom(get_testdata_file("CT_small.dcm"))
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFileError, match=r"empty\.dcm"):
        read_ultrasound_dicom(empty)
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom at all\n" * 20)
    with pytest.raises(UnreadableFileError):
        read_ultrasound_dicom(text)
    with pytest.raises(UnreadableFileError):
        read_ultrasound_dicom(tmp_path / "missing.dcm")
    cut = write_ultrasound_dicom(frames_u8((3, 30, 30)), tmp_path / "cut.dcm", mm_per_pixel=0.1, frame_time_ms=10)
    cut.write_bytes(cut.read_bytes()[:-1500])
    with pytest.raises(UnreadableFileError, match=r"cut\.dcm: pixel data cannot be decoded"):
        read_ultrasound_dicom(cut)


def test_all_black_frame_loads_with_flag(tmp_path):
    path = write_ultrasound_dicom(np.zeros((20, 30), np.uint8), tmp_path / "black.dcm", mm_per_pixel=0.1)
    img = read_ultrasound_dicom(path)
    assert img.meta["all_black"] is True and float(img.frames.max()) == 0.0
    assert read_ultrasound_dicom(
        write_ultrasound_dicom(frames_u8((20, 30)), tmp_path / "ok.dcm", mm_per_pixel=0.1)).meta["all_black"] is False


# other photometric interpretations ---------------------------------------------------------------------------------
def test_monochrome1_is_inverted(tmp_path):
    frames = frames_u8((10, 12))
    path = write_ultrasound_dicom(frames, tmp_path / "m1.dcm", mm_per_pixel=0.1)
    rewrite(path, lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"))
    assert np.array_equal(read_ultrasound_dicom(path).frames[0], 255 - frames.astype(np.float32))


def test_ybr_full_grey_is_its_luma(tmp_path):
    frames = frames_u8((10, 12))
    path = write_ultrasound_dicom(frames, tmp_path / "ybr.dcm", mm_per_pixel=0.1, rgb=True)

    def to_ybr(ds):
        rgb = ds.pixel_array
        ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
        ds.PhotometricInterpretation = "YBR_FULL"

    rewrite(path, to_ybr)
    assert np.array_equal(read_ultrasound_dicom(path).frames[0], frames.astype(np.float32))


# screenshots -------------------------------------------------------------------------------------------------------
def test_screenshot_without_spacing_is_refused(tmp_path):
    path = tmp_path / "shot.png"
    Image.fromarray(frames_u8((20, 30))).save(path)
    expected = "PNG/JPEG screenshots carry no calibration; pass --pixel-spacing MM (e.g. 0.0852)"
    with pytest.raises(CalibrationError, match=re.escape(expected)):
        read_ultrasound_screenshot(path, pixel_spacing_mm=None)
    with pytest.raises(CalibrationError, match="positive"):
        read_ultrasound_screenshot(path, pixel_spacing_mm=-0.1)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_screenshot_with_spacing(tmp_path, mode):
    grey = frames_u8((20, 30))
    pixels = {"L": grey, "RGB": np.dstack([grey] * 3), "RGBA": np.dstack([grey] * 3 + [np.full_like(grey, 255)])}
    path = tmp_path / "shot.png"
    Image.fromarray(pixels[mode]).save(path)  # mode inferred from the array shape
    img = read_ultrasound_screenshot(path, pixel_spacing_mm=(0.08, 0.09))
    assert img.frames.shape == (1, 20, 30) and np.array_equal(img.frames[0], grey.astype(np.float32))
    assert img.spacing_mm == (0.08, 0.09) and img.region is None and img.source == "PNG screenshot"


def test_screenshot_unreadable(tmp_path):
    path = tmp_path / "shot.png"
    path.write_bytes(b"\x89PNG broken")
    with pytest.raises(UnreadableFileError, match=r"shot\.png: not a readable PNG/JPEG image"):
        read_ultrasound_screenshot(path, pixel_spacing_mm=0.1)


@pytest.mark.realdata
def test_real_clarius_screenshot():
    path = REALDATA / "kimbowa_knee_us" / "clarius.png"
    if not path.exists():
        pytest.skip(f"real data not available: {path} (tests read ../shared/realdata beside the checkout)")
    img = read_ultrasound_screenshot(path, pixel_spacing_mm=0.0852)
    assert img.frames.shape == (1, 800, 800)
    assert img.spacing_mm == (0.0852, 0.0852)
    assert img.extent_mm == pytest.approx((68.16, 68.16))
    assert not img.meta["all_black"] and img.meta["mode"] == "RGB"


# discovery listing -------------------------------------------------------------------------------------------------
def test_describe_header_only(tmp_path):
    path = write_ultrasound_dicom(frames_u8((4, 30, 40)), tmp_path / "cine.dcm", mm_per_pixel=0.0852, frame_time_ms=40)
    info = describe_ultrasound(pydicom.dcmread(path, stop_before_pixels=True))
    assert (info["frames"], info["rows"], info["cols"]) == (4, 30, 40)
    assert info["mm_per_pixel"] == (0.0852, 0.0852) and info["calibration_problem"] is None
    assert info["frame_time_ms"] == 40.0

    rewrite(path, lambda ds: delattr(ds, "SequenceOfUltrasoundRegions"))
    info = describe_ultrasound(pydicom.dcmread(path, stop_before_pixels=True))
    assert info["mm_per_pixel"] is None and "no Sequence of Ultrasound Regions" in info["calibration_problem"]

    info = describe_ultrasound(pydicom.dcmread(get_testdata_file("examples_palette.dcm"), stop_before_pixels=True))
    assert info["n_regions"] == 2 and info["calibration_problem"] is None
    assert "extends beyond" in info["calibration_warning"]


# the type itself ---------------------------------------------------------------------------------------------------
def test_ultrasound_image_validation():
    with pytest.raises(GeometryError, match=r"\(T, rows, cols\)"):
        UltrasoundImage(np.zeros((4, 4)), (0.1, 0.1))
    with pytest.raises(CalibrationError, match="positive finite"):
        UltrasoundImage(np.zeros((1, 4, 4)), (0.1, float("nan")))
    with pytest.raises(CalibrationError, match="positive finite"):
        UltrasoundImage(np.zeros((1, 4, 4)), (0.1,))
    with pytest.raises(GeometryError, match="selected_frame"):
        UltrasoundImage(np.zeros((2, 4, 4)), (0.1, 0.1), selected_frame=1)
    src = np.ones((1, 4, 4), np.float32)
    img = UltrasoundImage(src, [0.1, 0.2])
    assert img.spacing_mm == (0.1, 0.2) and img.extent_mm == pytest.approx((0.4, 0.8))
    assert src.flags.writeable and not img.frames.flags.writeable  # the caller's buffer is left alone
    assert "\n" not in str(CalibrationError("x", path="a.dcm", hint="y"))
