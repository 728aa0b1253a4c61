"""The committed sample_data/ is what ``make sample-data`` builds from today's generator.

The demo's truth and images come from the phantom generator; when the generator changes and sample_data/ is not
rebuilt, the demo quietly shows an older knee (it did: no patella tilt, the imaging fault of overlapping bone bands).
Compared by content with tolerances, not bytes, so that floating-point differences between CPUs do not fail CI."""

import csv
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "pipelines" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("sample") / "sample_data"
    module.build(out)
    return out


def test_same_files(rebuilt):
    committed = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    assert committed == sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file()), \
        "sample_data/ is stale: run `make sample-data` and commit the result"


def test_same_truth_labels_and_regional_values(rebuilt):
    for path in SAMPLE.glob("ground_truth/*/*/MR/labels.nii.gz"):
        a = np.asarray(nib.load(path).dataobj)
        b = np.asarray(nib.load(rebuilt / path.relative_to(SAMPLE)).dataobj)
        assert a.shape == b.shape and np.mean(a != b) < 1e-4, f"{path}: run `make sample-data` and commit"
    for path in SAMPLE.glob("ground_truth/*/*/MR/regions.csv"):
        a = list(csv.DictReader(path.read_text().splitlines()))
        b = list(csv.DictReader((rebuilt / path.relative_to(SAMPLE)).read_text().splitlines()))
        assert [r["metric"] for r in a] == [r["metric"] for r in b]
        np.testing.assert_allclose([float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-3,
                                   atol=1e-3, err_msg=f"{path}: run `make sample-data` and commit")


def test_same_mr_images(rebuilt):
    for path in sorted(SAMPLE.glob("SAMPLE-01/*/MR/*.dcm")):
        a = pydicom.dcmread(path).pixel_array.astype(np.float64)
        b = pydicom.dcmread(rebuilt / path.relative_to(SAMPLE)).pixel_array.astype(np.float64)
        assert np.mean(np.abs(a - b) > 2) < 1e-3, f"{path}: run `make sample-data` and commit"
