"""Load the ultrasound cartilage bundle (weights checked against their pinned sha256) and predict a frame.

The network is fully convolutional, so a whole frame is predicted in one pass; frames whose pixel size is outside the
range the model was trained on are resampled to the bundle's working spacing and the probabilities mapped back.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ...core import ModelError
from ._network import build_network, normalise_frame

__all__ = ["DEFAULT_US_BUNDLE", "UltrasoundModel", "cartilage_probability", "load_us_model"]

#: the shipped bundle (repository checkout layout)
DEFAULT_US_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "knee_us_seg"


@dataclass
class UltrasoundModel:
    """A loaded bundle: network in eval mode, its sha256 and the pixel-size range it was trained on."""

    path: Path
    network: torch.nn.Module
    sha256: str
    metadata: dict[str, Any]
    spacing_range_mm: tuple[float, float]
    working_spacing_mm: float

    @property
    def version(self) -> str:
        """str: bundle version from metadata.json (recorded in provenance)."""
        return str(self.metadata.get("version", ""))


def load_us_model(path: str | Path | None = None) -> UltrasoundModel:
    """Read ``models/knee_us_seg`` (or ``path``) and verify ``models/model.pt`` against ``model_sha256``.

    Raises
    ------
    ModelError
        Folder or files missing, metadata unreadable, sha256 mismatch, or weights that do not fit the network.
    """
    root = Path(DEFAULT_US_BUNDLE if path is None else path)
    meta_path, weights = root / "configs" / "metadata.json", root / "models" / "model.pt"
    if not meta_path.is_file() or not weights.is_file():
        raise ModelError("ultrasound cartilage bundle is missing configs/metadata.json or models/model.pt", path=root,
                         hint="use --method tracker, or restore models/knee_us_seg from the repository")
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"configs/metadata.json does not parse ({exc})", path=root) from None
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    expected = str(metadata.get("model_sha256", "")).lower()
    if actual != expected:
        raise ModelError(f"models/model.pt sha256 {actual[:12]}... does not match metadata.json model_sha256 "
                         f"{expected[:12] or 'none'}...", path=root,
                         hint="the weights are corrupted or were replaced; restore the bundle or re-export it")
    net = build_network()
    try:
        net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as exc:  # any mismatch is a broken bundle
        raise ModelError(f"models/model.pt does not fit the network ({type(exc).__name__})", path=root) from None
    net.float().eval()
    lo, hi = metadata.get("spacing_range_mm", [0.07, 0.13])
    return UltrasoundModel(root, net, actual, metadata, (float(lo), float(hi)),
                           float(metadata.get("working_spacing_mm", 0.1)))


def cartilage_probability(model: UltrasoundModel, frame: np.ndarray, spacing_mm: tuple[float, float], *,
                          grey_max: float | None = None) -> np.ndarray:
    """(rows, cols) float32 cartilage probability of one grey frame, on the frame's own pixel grid."""
    frame = np.asarray(frame, dtype=np.float32)
    if frame.ndim != 2:
        raise ValueError(f"`frame` must be 2D (rows, cols), got shape {frame.shape}")
    lo, hi = model.spacing_range_mm
    zoom = (1.0, 1.0)
    x = normalise_frame(frame, grey_max)
    if not all(lo <= s <= hi for s in spacing_mm):
        zoom = (spacing_mm[0] / model.working_spacing_mm, spacing_mm[1] / model.working_spacing_mm)
        x = ndimage.zoom(x, zoom, order=1, mode="nearest", grid_mode=False)
    rows, cols = x.shape
    pr, pc = (-rows) % 16, (-cols) % 16
    xp = np.pad(x, ((0, pr), (0, pc)), mode="edge")
    with torch.inference_mode():
        logits = model.network(torch.from_numpy(np.ascontiguousarray(xp))[None, None])
    prob = torch.sigmoid(logits)[0, 0, :rows, :cols].numpy().astype(np.float32)
    if zoom != (1.0, 1.0):
        rr = np.arange(frame.shape[0]) * (rows - 1) / max(frame.shape[0] - 1, 1)
        cc = np.arange(frame.shape[1]) * (cols - 1) / max(frame.shape[1] - 1, 1)
        prob = ndimage.map_coordinates(prob, np.meshgrid(rr, cc, indexing="ij"), order=1, mode="nearest")
    return prob.astype(np.float32)
