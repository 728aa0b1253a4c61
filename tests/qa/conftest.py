"""A small but real batch output folder for the QA app, built once per session and copied per test.

OUT/KOA-001/{baseline,month6}/MR: scan folders written by ``measure_file`` from a coarse procedural knee (the
follow-up with part of the femoral cartilage removed), with ``image.nii.gz`` and ``labels.nii.gz`` beside them;
OUT/KOA-001/change_baseline_month6: the pair written by ``run_change``; OUT/KOA-002/baseline/US: an ultrasound scan.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qa_testutil import build_output


@pytest.fixture(scope="session")
def qa_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the output folder once per session."""
    return build_output(tmp_path_factory.mktemp("qa"))


@pytest.fixture
def qa_out(qa_template: Path, tmp_path: Path) -> Path:
    """A private copy of the output folder for one test."""
    dest = tmp_path / "OUT"
    shutil.copytree(qa_template, dest)
    return dest


@pytest.fixture
def client(qa_out: Path):
    """FastAPI test client on loopback, no token, default reviewer 'dr.a', no HTML reports (2 s each)."""
    from fastapi.testclient import TestClient

    from koaimg.qa import create_app

    app = create_app(qa_out, reviewer="dr.a", max_upload_bytes=8 * 1024 * 1024, reports=False)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c
