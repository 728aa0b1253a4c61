"""measure_ultrasound_file and ``koaimg us-measure``: outputs, provenance, cine frame choice and clear refusals."""

from __future__ import annotations

import csv
import json
import re
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner
from us_testutil import phantom

from koaimg.cli._app import _register, app
from koaimg.core import UltrasoundImage
from koaimg.core._errors import CalibrationError, NoEchoError, OptionError, UltrasoundContentError
from koaimg.export import MEASURE_COLUMNS
from koaimg.io import write_ultrasound_dicom
from koaimg.measure.ultrasound import choose_frame, measure_ultrasound
from koaimg.pipeline import measure_ultrasound_file
from koaimg.synth import write_us_phantom

DOPPLER = {"RegionSpatialFormat": 1, "RegionDataType": 2, "RegionLocationMinX0": 0, "RegionLocationMinY0": 0,
           "RegionLocationMaxX1": 30, "RegionLocationMaxY1": 20, "PhysicalUnitsXDirection": 3,
           "PhysicalUnitsYDirection": 3, "PhysicalDeltaX": 0.01, "PhysicalDeltaY": 0.01}


@pytest.fixture(scope="module")
def cine_folder(tmp_path_factory):
    ph = phantom(4, n_frames=5)
    folder = tmp_path_factory.mktemp("us")
    write_us_phantom(ph, folder, pseudonym="SUBJ01", visit="baseline")
    return folder, ph


def test_dicom_cine_outputs(cine_folder, tmp_path):
    folder, ph = cine_folder
    out = measure_ultrasound_file(folder / "us.dcm", tmp_path / "o", subject="SUBJ01", visit="baseline",
                                  cross_check=False)
    assert sorted(p.name for p in out.iterdir()) == ["measures.csv", "overlay.png", "provenance.json",
                                                     "ultrasound.json"]
    with (out / "measures.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == MEASURE_COLUMNS and len(rows) == 8
    by = {(r["region"], r["metric"]): float(r["value"]) for r in rows}
    for s in ("LC", "IN", "MC"):
        assert abs(by[(s, "thickness")] - ph.truth.sites[s].mean_thickness_mm) <= 0.1
    assert rows[0]["side"] == ph.spec.side  # from the DICOM Laterality the phantom writer stores
    summary = json.loads((out / "ultrasound.json").read_text())
    assert summary["frame_index"] == ph.best_frame and summary["side_source"] == "DICOM Laterality"
    assert set(summary["frame_choice"]["scores"]) == {str(k) for k in range(5)}
    prov = json.loads((out / "provenance.json").read_text())
    cfg = prov["config"]
    assert cfg["frame_index"] == ph.best_frame and cfg["method"] == "tracker" and cfg["speed_of_sound_factor"] == 1
    assert cfg["calibration"].startswith("DICOM ultrasound region") and len(prov["inputs"]["us.dcm"]) == 64
    from PIL import Image

    with Image.open(out / "overlay.png") as im:
        assert im.mode == "RGB" and im.size[0] >= ph.frames.shape[2]


def test_png_with_sidecar_or_option(cine_folder, tmp_path):
    folder, ph = cine_folder
    out = measure_ultrasound_file(folder / "us.png", tmp_path / "a", cross_check=False)  # spacing from us.png.json
    summary = json.loads((out / "ultrasound.json").read_text())
    assert summary["calibration"] == "sidecar us.png.json" and summary["side_source"] == "assumed"
    lone = tmp_path / "lone.png"
    lone.write_bytes((folder / "us.png").read_bytes())
    with pytest.raises(CalibrationError, match=r"lone\.png: PNG/JPEG screenshots carry no calibration"):
        measure_ultrasound_file(lone, tmp_path / "b")
    out = measure_ultrasound_file(lone, tmp_path / "c", pixel_spacing_mm=ph.spacing_mm[0], side=ph.spec.side,
                                  speed_of_sound_factor=1.05, cross_check=False)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["speed_of_sound_factor"] == 1.05 and prov["config"]["side_source"] == "given"


def test_best_frame_is_the_sharpest():
    for seed in (0, 2):
        ph = phantom(seed, n_frames=8)
        assert choose_frame(ph.frames, ph.spacing_mm).index == ph.best_frame


# refusals -----------------------------------------------------------------------------------------------------
def test_uncalibrated_dicom_is_refused(tmp_path):
    path = write_ultrasound_dicom(phantom(0).frames[0], tmp_path / "x.dcm", mm_per_pixel=0.1)
    ds = pydicom.dcmread(path)
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CalibrationError, match=r"x\.dcm: no Sequence of Ultrasound Regions"):
        measure_ultrasound_file(path, tmp_path / "o")


def test_doppler_only_dicom_is_refused(tmp_path):
    path = write_ultrasound_dicom(phantom(0).frames[0], tmp_path / "d.dcm", mm_per_pixel=0.1,
                                  extra_regions=[DOPPLER])
    ds = pydicom.dcmread(path)
    ds.SequenceOfUltrasoundRegions = pydicom.Sequence([ds.SequenceOfUltrasoundRegions[1]])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CalibrationError, match="found Doppler/colour-flow only"):
        measure_ultrasound_file(path, tmp_path / "o")


def test_all_black_frame_is_refused(tmp_path):
    path = write_ultrasound_dicom(np.zeros((200, 300), np.uint8), tmp_path / "black.dcm", mm_per_pixel=0.1)
    with pytest.raises(NoEchoError, match=r"black\.dcm: the ultrasound frame is all black"):
        measure_ultrasound_file(path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_images_without_a_knee_view_are_refused():
    rng = np.random.default_rng(0)
    noise = UltrasoundImage(frames=rng.integers(0, 120, (1, 300, 400)), spacing_mm=(0.1, 0.1))
    with pytest.raises(UltrasoundContentError, match="no bone line found"):
        measure_ultrasound(noise)
    flat = np.full((300, 400), 60, np.uint8)  # a flat bright bone line with shadow: no groove
    flat[150:153] = 250
    flat[153:] = 5
    with pytest.raises(UltrasoundContentError, match="no trochlear groove"):
        measure_ultrasound(UltrasoundImage(frames=flat[None], spacing_mm=(0.1, 0.1)))


def test_bad_options_are_refused():
    img = phantom(0).to_ultrasound_image()
    with pytest.raises(OptionError, match="unknown ultrasound method 'deep'"):
        measure_ultrasound(img, method="deep")
    with pytest.raises(OptionError, match="needs the model's probability map"):
        measure_ultrasound(img, method="model")
    with pytest.raises(OptionError, match="speed-of-sound factor"):
        measure_ultrasound(img, speed_of_sound_factor=0.0)


@pytest.mark.parametrize(("name", "error", "message"), [
    ("examples_ybr_color.dcm", CalibrationError, "extends beyond the 320×240 image"),  # resized after calibration
    ("examples_palette.dcm", CalibrationError, "extends beyond the 800×350 image"),
    ("examples_rgb_color.dcm", CalibrationError, "no Sequence of Ultrasound Regions"),
    ("examples_jpeg2k.dcm", CalibrationError, "no Sequence of Ultrasound Regions"),
])
def test_pydicom_ultrasound_files_are_refused_with_a_reason(tmp_path, name, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom's own notes on these old files
        path = get_testdata_file(name)
        with pytest.raises(error, match=re.escape(message)):
            measure_ultrasound_file(path, tmp_path / "o")


@pytest.mark.parametrize(("name", "message"), [("examples_ybr_color.dcm", "no bone line found"),
                                               ("examples_palette.dcm", "no trochlear groove")])
def test_pydicom_files_trusted_anyway_are_not_knees(tmp_path, name, message):
    """Told to trust the calibration, they load and are refused for their content: they are not knee views."""
    with pytest.raises(UltrasoundContentError, match=message):
        measure_ultrasound_file(get_testdata_file(name), tmp_path / "o", trust_region_overflow=True)


# CLI ----------------------------------------------------------------------------------------------------------
def test_cli_us_measure(cine_folder, tmp_path):
    folder, _ = cine_folder
    _register()
    runner = CliRunner()
    res = runner.invoke(app, ["us-measure", str(folder / "us.dcm"), "--out", str(tmp_path / "o"),
                              "--no-cross-check", "--subject", "SUBJ01"])
    assert res.exit_code == 0, res.output
    assert "IN" in res.output and (tmp_path / "o" / "overlay.png").is_file()
    assert runner.invoke(app, ["us-measure", "--help"]).exit_code == 0


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from koaimg.cli._app import main

    path = write_ultrasound_dicom(np.zeros((50, 60), np.uint8), tmp_path / "black.dcm", mm_per_pixel=0.1)
    import sys

    argv = sys.argv
    sys.argv = ["koaimg", "us-measure", str(path), "--out", str(tmp_path / "o")]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all black" in err[0]
