"""``koaimg segment`` end to end with a tiny random-weight bundle: outputs written, warnings shown, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from koaimg.cli._app import app, main
from koaimg.io import read_labels, write_volume

runner = CliRunner()


def _register() -> None:
    from koaimg.cli._app import _register as reg

    reg()


def test_segment_command_writes_outputs(tmp_path: Path, tiny_bundle: Path, small_phantom) -> None:
    _register()
    image = write_volume(small_phantom.image, tmp_path / "knee.nii.gz")
    out = tmp_path / "seg"
    result = runner.invoke(app, ["segment", str(image), "--out", str(out), "--bundle", str(tiny_bundle),
                                 "--device", "cpu", "--probabilities"])
    assert result.exit_code in (0, 1), result.output
    labels = read_labels(out / "labels.nii.gz")
    assert labels.same_grid(small_phantom.image)
    info = json.loads((out / "segmentation.json").read_text())
    assert set(info["volumes_ml"]) == {"femur", "femoral_cartilage", "tibia", "tibial_cartilage", "patella",
                                       "patellar_cartilage"}
    assert json.loads((out / "provenance.json").read_text())["model_sha256"] == info["model_sha256"]
    assert (out / "probabilities.nii.gz").exists()


def test_blank_image_exits_with_problems(tmp_path: Path, tiny_bundle: Path, small_phantom) -> None:
    _register()
    blank = small_phantom.image.with_array(np.zeros(small_phantom.image.spatial_shape, np.float32))
    path = write_volume(blank, tmp_path / "blank.nii.gz")
    result = runner.invoke(app, ["segment", str(path), "--out", str(tmp_path / "o"), "--bundle", str(tiny_bundle)])
    assert result.exit_code == 1
    assert "empty or constant" in result.output


def test_bad_bundle_is_one_line_exit_2(tmp_path: Path, small_phantom, monkeypatch, capsys) -> None:
    path = write_volume(small_phantom.image, tmp_path / "knee.nii.gz")
    monkeypatch.setattr("sys.argv", ["koaimg", "segment", str(path), "--bundle", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bundle folder not found" in err and len(err.strip().splitlines()) == 1
