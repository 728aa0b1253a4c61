"""Every command answers --help; doctor reports what it promises; errors are one line with exit code 2."""

import json

import pytest
from typer.testing import CliRunner

from koaimg.cli import app
from koaimg.cli._app import _register

_register()
runner = CliRunner()


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def test_every_command_has_help():
    assert {"inspect", "doctor"} <= set(_commands())
    for name in _commands():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("koaimg ")


def test_doctor_json_lists_codecs_cuda_and_cache():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["packages"]["pydicom"] and report["packages"]["numba"]
    names = {row["name"]: row["available"] for row in report["dicom_codecs"]}
    assert names["JPEG 2000 Image Compression (Lossless Only)"] is True
    assert report["cuda_torch"]["available"] in (True, False)
    assert "cache_dir" in report["numba"] and report["numba"]["fastmath"] is False


def test_doctor_text():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "DICOM codecs" in result.stdout and "CUDA (torch)" in result.stdout and "numba cache" in result.stdout


@pytest.mark.realdata
def test_inspect_real_multi_echo_folder():
    from koaimg_testdata import realdata

    result = runner.invoke(app, ["inspect", str(realdata("pymskt_mese_t2"))])
    assert result.exit_code == 0
    assert result.stdout.count("T2 mapping echo") == 8
