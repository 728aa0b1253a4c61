"""The shipped 2D ultrasound bundle: pinned weights, MONAI config, and accuracy on a held-out phantom."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from us_testutil import phantom

from koaimg.core import ModelError, UltrasoundImage
from koaimg.measure.ultrasound import SITES, measure_ultrasound
from koaimg.segment.ultrasound import DEFAULT_US_BUNDLE, build_network, cartilage_probability, load_us_model


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_us_model()


def test_bundle_is_small_and_pinned(model):
    size = (DEFAULT_US_BUNDLE / "models" / "model.pt").stat().st_size
    assert size < 2_000_000
    meta = json.loads((DEFAULT_US_BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["model_sha256"] == model.sha256 and meta["network_data_format"]["inputs"]["image"]["modality"] == "US"


def test_monai_config_builds_the_same_network():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(DEFAULT_US_BUNDLE / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def", instantiate=True)
    ref = build_network()
    assert [p.shape for p in net.parameters()] == [p.shape for p in ref.parameters()]


def test_tampered_or_missing_weights_are_refused(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_US_BUNDLE, copy)
    weights = copy / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* does not match"):
        load_us_model(copy)
    weights.unlink()
    with pytest.raises(ModelError, match=r"missing configs/metadata\.json or models/model\.pt"):
        load_us_model(copy)


def test_model_on_a_held_out_phantom(model):
    ph = phantom(6)  # evaluation seeds (0..99) are never used for training (1000-1199)
    prob = cartilage_probability(model, ph.frames[0], ph.spacing_mm)
    mask = prob >= 0.5
    assert 2 * (mask & ph.mask).sum() / (mask.sum() + ph.mask.sum()) > 0.9
    m = measure_ultrasound(ph.to_ultrasound_image(), method="model", probability=prob, side=ph.spec.side)
    for s in SITES:
        assert abs(m.sites[s].thickness_mm - ph.truth.sites[s].mean_thickness_mm) <= 0.1
    assert m.cross_check is not None  # the tracker checked it


def test_frames_outside_the_trained_spacing_are_resampled(model):
    ph = phantom(6)
    coarse = ph.frames[0][::2, ::2]  # 0.2 mm/px
    prob = cartilage_probability(model, coarse, (2 * ph.spacing_mm[0],) * 2)
    assert prob.shape == coarse.shape and prob.dtype == np.float32
    truth = ph.mask[::2, ::2]
    assert 2 * ((prob >= 0.5) & truth).sum() / ((prob >= 0.5).sum() + truth.sum()) > 0.7
    black = UltrasoundImage(frames=np.zeros((1, 64, 80)), spacing_mm=(0.1, 0.1))
    assert cartilage_probability(model, black.frames[0], black.spacing_mm).max() < 0.5


def test_pipeline_model_method_and_cross_check_are_recorded(model, tmp_path):
    from koaimg.pipeline import measure_ultrasound_file
    from koaimg.synth import write_us_phantom

    ph = phantom(6)
    files = write_us_phantom(ph, tmp_path / "in", pseudonym="S06", visit="baseline")
    out = measure_ultrasound_file(files["dicom"], tmp_path / "model", method="model")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["method"] == "model" and prov["model"]["sha256"] == model.sha256
    summary = json.loads((out / "ultrasound.json").read_text())
    assert summary["method"] == "model" and summary["cross_check"]["mask_dice"] > 0.9  # the tracker checked it
    out = measure_ultrasound_file(files["dicom"], tmp_path / "auto")  # default: tracker, model as cross-check
    summary = json.loads((out / "ultrasound.json").read_text())
    assert summary["method"] == "tracker" and set(summary["cross_check"]) >= {"LC_model_mm", "IN_model_mm"}
    for s in SITES:
        assert abs(summary["cross_check"][f"{s}_model_mm"] - summary["sites"][s]["thickness_mm"]) < 0.15
