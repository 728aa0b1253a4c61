"""Fixtures: a tiny random-weight bundle (built in seconds, exercises the whole inference path) and a small phantom."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from koaimg.synth import ACQUISITIONS, KneeAnatomy, make_knee_phantom

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "knee_mr_seg"


def build_tiny_bundle(root: Path, *, seed: int = 0, spacing_mm: float = 1.5) -> Path:
    """Copy the shipped bundle's metadata/licence, shrink the network, write random weights and pin their sha256."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    shutil.copy(SHIPPED / "LICENSE", root / "LICENSE")
    cfg = json.loads((SHIPPED / "configs" / "inference.json").read_text())
    cfg.update(working_spacing_mm=spacing_mm, roi_size=[32, 32, 32])
    cfg["network_def"].update(channels=[4, 8], strides=[2], num_res_units=0)
    (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    (root / "models" / "model.pt").write_bytes(buf.getvalue())
    meta = json.loads((SHIPPED / "configs" / "metadata.json").read_text())
    meta["model_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    return build_tiny_bundle(tmp_path / "tiny_bundle")


@pytest.fixture
def set_postprocessing(tiny_bundle: Path):
    """A function writing one key of ``tiny_bundle``'s ``postprocessing`` block (configs/inference.json)."""

    def write(key: str, value) -> None:
        path = tiny_bundle / "configs" / "inference.json"
        cfg = json.loads(path.read_text())
        cfg["postprocessing"][key] = value
        path.write_text(json.dumps(cfg))

    return write


@pytest.fixture(scope="session")
def small_phantom():
    """A procedural knee on a coarse sagittal grid (~1.9 x 1.9 x 4.5 mm, 48 x 43 x 17 voxels): fast to segment."""
    acq = ACQUISITIONS["sample"].scaled(3.0)
    return make_knee_phantom(KneeAnatomy.random(np.random.default_rng(7)), acq, seed=3)
