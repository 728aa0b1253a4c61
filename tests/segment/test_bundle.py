"""Bundle loading: MONAI ConfigParser configs, sha256-pinned weights, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from koaimg.core import ModelError
from koaimg.segment import DEFAULT_BUNDLE, load_bundle


def test_tiny_bundle_loads(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert b.num_classes == 7
    assert b.labels[2] == "femoral_cartilage"
    assert len(b.sha256) == 64
    assert not b.network.training


def test_shipped_configs_parse_with_monai() -> None:
    parser = ConfigParser()
    parser.read_config(str(DEFAULT_BUNDLE / "configs" / "inference.json"))
    parser.read_meta(str(DEFAULT_BUNDLE / "configs" / "metadata.json"))
    net = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in net.parameters()) < 3_000_000  # a few MB in float16
    fmt = parser.get("_meta_#network_data_format")
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "image"}
    assert fmt["outputs"]["pred"]["num_channels"] == 7


def test_sha256_mismatch_is_a_clear_error(tiny_bundle: Path) -> None:
    weights = tiny_bundle / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* does not match"):
        load_bundle(tiny_bundle)


def test_unpinned_weights_are_refused(tiny_bundle: Path) -> None:
    meta_path = tiny_bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["model_sha256"] = ""
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="pins no model_sha256"):
        load_bundle(tiny_bundle)


def test_missing_pieces(tmp_path: Path, tiny_bundle: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_bundle(tmp_path / "nowhere")
    (tiny_bundle / "LICENSE").unlink()
    with pytest.raises(ModelError, match="missing LICENSE"):
        load_bundle(tiny_bundle)
