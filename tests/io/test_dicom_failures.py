"""A corrupted set made here: each kind of damage gets its own error class and one line; discovery lists the rest."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from koaimg.core import (
    KoaimgError,
    MissingCodecError,
    MissingSliceError,
    MixedOrientationError,
    UnreadableFileError,
    UnsupportedObjectError,
    UnsupportedTransferSyntaxError,
    Volume,
)
from koaimg.io import MRSeriesTags, discover, load_dicom_file, load_mr_stack, read_header, write_dicom_series

SAG = np.array([[0, 0, -0.7, 0], [0.4, 0, 0, 0], [0, -0.4, 0, 0], [0, 0, 0, 1.0]])


def _series(folder: Path, n: int = 8, number: int = 1) -> list[Path]:
    vol = Volume(np.random.default_rng(number).random((16, 16, n)).astype(np.float32), SAG)
    return write_dicom_series(vol, folder, MRSeriesTags(series_number=number, study_seed=f"s{number}"))


def _sr_dataset(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["sr"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def broken_folder(tmp_path) -> dict[str, Path]:
    root = tmp_path / "export"
    good = _series(root / "good", number=1)
    spare = _series(tmp_path / "spare", n=3, number=9)
    cases: dict[str, Path] = {"good": good[0].parent}
    truncated = root / "truncated.dcm"
    truncated.write_bytes(spare[0].read_bytes()[: int(spare[0].stat().st_size * 0.6)])
    cases["truncated"] = truncated
    (root / "empty.dcm").write_bytes(b"")
    cases["empty"] = root / "empty.dcm"
    (root / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["random"] = root / "random.dcm"
    missing = _series(root / "missing_slice", number=2)
    missing[4].unlink()
    cases["missing_slice"] = missing[0].parent
    mixed = _series(root / "mixed", number=3)
    ds = pydicom.dcmread(mixed[3])
    tilt = Rotation.from_euler("x", 5, degrees=True).as_matrix()
    iop = np.array(ds.ImageOrientationPatient, float)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([tilt @ iop[:3], tilt @ iop[3:]])]
    ds.save_as(mixed[3], enforce_file_format=True)
    cases["mixed"] = mixed[0].parent
    _sr_dataset(root / "report.dcm")
    cases["sr"] = root / "report.dcm"
    ds = pydicom.dcmread(spare[1])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no DICOM pixel decoder exists
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(root / "mpeg2.dcm", enforce_file_format=True)
    cases["mpeg2"] = root / "mpeg2.dcm"
    (root / "README.txt").write_text("not an image")
    shutil.rmtree(tmp_path / "spare")
    return cases


def test_each_damage_has_its_own_error_class(broken_folder):
    with pytest.raises(UnreadableFileError, match="truncated"):
        read_header(broken_folder["truncated"])
    with pytest.raises(UnreadableFileError, match="empty"):
        read_header(broken_folder["empty"])
    with pytest.raises(UnreadableFileError, match="not a DICOM file"):
        read_header(broken_folder["random"])
    with pytest.raises(MissingSliceError, match="1 slice"):
        load_mr_stack(sorted(broken_folder["missing_slice"].iterdir()))
    with pytest.raises(MixedOrientationError, match="1 of 8 slices"):
        load_mr_stack(sorted(broken_folder["mixed"].iterdir()))
    with pytest.raises(UnsupportedObjectError, match="Basic Text SR"):
        load_dicom_file(broken_folder["sr"])
    with pytest.raises(UnsupportedTransferSyntaxError, match="MPEG2"):
        load_dicom_file(broken_folder["mpeg2"])


def test_errors_are_one_line_naming_the_file(broken_folder):
    for name in ("truncated", "empty", "random", "sr", "mpeg2"):
        with pytest.raises(KoaimgError) as info:
            load_dicom_file(broken_folder[name])
        text = str(info.value)
        assert "\n" not in text and str(broken_folder[name]) in text, text


def test_missing_codec_names_the_extra(monkeypatch, tmp_path):
    paths = write_dicom_series(Volume(np.ones((32, 32, 2), np.float32), SAG), tmp_path / "j2k",
                               compression="jpeg2000")

    class _NoDecoder:
        is_available = False
        missing_dependencies = ("pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0",)

    monkeypatch.setattr("koaimg.io._codecs.get_decoder", lambda ts: _NoDecoder())
    with pytest.raises(MissingCodecError, match=r"JPEG 2000.*koaimg\[dicom-codecs\]"):
        load_mr_stack(paths)


def test_discovery_lists_every_good_series_and_every_problem(broken_folder):
    report = discover(broken_folder["good"].parent)
    good = report.good
    assert len(good) == 1 and good[0].n_slices == 8
    codes = sorted(p.code for p in report.all_problems)
    assert codes == sorted(["unreadable_file", "unreadable_file", "unreadable_file", "missing_slice",
                            "mixed_orientation", "unsupported_transfer_syntax"])
    assert [s.code for s in report.skipped] == ["unsupported_object"]
    assert report.ignored == 1


def test_inspect_exits_non_zero_but_lists_good_series(broken_folder):
    from typer.testing import CliRunner

    from koaimg.cli import app
    from koaimg.cli._app import _register

    _register()
    result = CliRunner().invoke(app, ["inspect", str(broken_folder["good"].parent), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    ok = [s for s in data["series"] if s["problem"] is None]
    assert len(ok) == 1 and ok[0]["n_slices"] == 8
    assert len(data["problems"]) == 3  # file-level: truncated, empty, random
    assert sorted(s["problem"]["code"] for s in data["series"] if s["problem"]) == [
        "missing_slice", "mixed_orientation", "unsupported_transfer_syntax"]


def test_cli_prints_one_line_for_a_user_error(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "nope"
    out = subprocess.run([sys.executable, "-c", "from koaimg.cli import main; main()", "inspect", str(bad)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
