"""Load the MONAI bundle: configs through MONAI's own ConfigParser, weights only after their sha256 matches."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from ..core import ModelError
from ._bone_growth import BoneGrowth
from ._refine import ArticularRefinement

__all__ = ["DEFAULT_BUNDLE", "Bundle", "load_bundle"]

#: the shipped bundle (repository checkout layout)
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "models" / "knee_mr_seg"
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "models/model.pt", "LICENSE")


@dataclass
class Bundle:
    """A loaded bundle: the network in eval mode plus the settings inference needs."""

    path: Path
    metadata: dict[str, Any]
    config: ConfigParser
    network: torch.nn.Module
    sha256: str
    working_spacing_mm: float
    roi_size: tuple[int, int, int]
    overlap: float
    sw_batch_size: int
    num_classes: int
    labels: dict[int, str]
    postprocessing: dict[str, Any] = field(default_factory=dict)
    #: extra network passes, each on the input mirrored along these working-grid (R, A, S) axes; their softmax is
    #: mirrored back and averaged with the plain pass (only mirrors the training data also holds make sense)
    test_time_mirrors: tuple[tuple[int, ...], ...] = ()
    #: image-driven move of each plate's articular surface after clean-up (None: off)
    articular_refinement: ArticularRefinement | None = None
    #: image-driven growth of each bone into the marrow the network left unlabelled, after the refinement (None: off)
    bone_growth: BoneGrowth | None = None

    @property
    def version(self) -> str:
        """Bundle version from metadata.json (recorded in provenance)."""
        return str(self.metadata.get("version", ""))

    def inferer(self, *, sw_device: torch.device, device: torch.device):  # -> monai.inferers.SlidingWindowInferer
        """The bundle's sliding-window inferer, patches on ``sw_device``, stitched output on ``device``."""
        from monai.inferers import SlidingWindowInferer

        base = self.config.get_parsed_content("inferer", instantiate=True)
        if not isinstance(base, SlidingWindowInferer):
            raise ModelError("configs/inference.json 'inferer' is not a SlidingWindowInferer", path=self.path)
        return SlidingWindowInferer(roi_size=self.roi_size, sw_batch_size=self.sw_batch_size, overlap=self.overlap,
                                    mode=base.mode, sigma_scale=base.sigma_scale, sw_device=sw_device, device=device)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and check a bundle folder (default: ``models/knee_mr_seg``).

    Raises
    ------
    ModelError
        A required file is missing, a config does not parse, the weights' sha256 differs from
        ``metadata.json``'s ``model_sha256``, or the weights do not fit the network.
    """
    root = Path(DEFAULT_BUNDLE if path is None else path)
    if not root.is_dir():
        raise ModelError("segmentation bundle folder not found", path=root,
                         hint="pass --bundle DIR pointing at a MONAI bundle (configs/, models/)")
    missing = [name for name in _REQUIRED if not (root / name).is_file()]
    if missing:
        raise ModelError(f"bundle is incomplete, missing {', '.join(missing)}", path=root,
                         hint="restore the bundle from the repository or re-export it")
    try:
        metadata = json.loads((root / "configs" / "metadata.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"configs/metadata.json does not parse ({exc})", path=root) from None
    expected = str(metadata.get("model_sha256", "")).lower()
    weights = root / "models" / "model.pt"
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if not expected:
        raise ModelError("metadata.json pins no model_sha256, so the weights cannot be verified", path=root,
                         hint="export the bundle with pipelines/train_knee_mr_seg.py export")
    if actual != expected:
        raise ModelError(f"models/model.pt sha256 {actual[:12]}... does not match metadata.json model_sha256 "
                         f"{expected[:12]}...", path=root,
                         hint="the weights are corrupted or were replaced; restore the bundle or re-export it")
    parser = ConfigParser()
    try:
        parser.read_config(str(root / "configs" / "inference.json"))
        parser["bundle_root"] = str(root)
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:
        raise ModelError(f"configs/inference.json cannot build network_def ({type(exc).__name__}: {exc})",
                         path=root) from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"models/model.pt does not fit network_def ({type(exc).__name__})", path=root,
                         hint="configs/inference.json and the weights come from different exports") from None
    network.float().eval()
    cfg = parser.config
    mirrors = _test_time_mirrors(cfg.get("test_time_mirrors", []), root)
    labels = {int(k): str(v) for k, v in cfg.get("labels", {}).items()}
    postprocessing = dict(cfg.get("postprocessing", {}))
    refinement = ArticularRefinement.from_config(postprocessing.get("articular_refinement"), path=root)
    bone_growth = BoneGrowth.from_config(postprocessing.get("bone_growth"), path=root)
    return Bundle(path=root, metadata=metadata, config=parser, network=network, sha256=actual,
                  working_spacing_mm=float(cfg["working_spacing_mm"]),
                  roi_size=tuple(int(r) for r in cfg["roi_size"]), overlap=float(cfg.get("overlap", 0.25)),
                  sw_batch_size=int(cfg.get("sw_batch_size", 1)), num_classes=int(parser.get_parsed_content(
                      "num_classes")), labels=labels, postprocessing=postprocessing,
                  test_time_mirrors=mirrors, articular_refinement=refinement,
                  bone_growth=bone_growth)


def _test_time_mirrors(value: Any, root: Path) -> tuple[tuple[int, ...], ...]:
    """``[[0], ...]`` -> ((0,), ...): each entry one extra pass mirrored along those RAS axes (0 = R, 1 = A, 2 = S)."""
    try:
        mirrors = tuple(tuple(sorted({int(axis) for axis in entry})) for entry in value)
    except (TypeError, ValueError):
        mirrors = None
    if mirrors is None or any(not entry or any(a not in (0, 1, 2) for a in entry) for entry in mirrors):
        raise ModelError(f"configs/inference.json test_time_mirrors must be a list of axis lists from 0, 1, 2; "
                         f"got {value!r}", path=root, hint='e.g. "test_time_mirrors": [[0]] (left/right)')
    return mirrors
