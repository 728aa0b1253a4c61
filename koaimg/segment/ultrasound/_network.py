"""The 2D network and the intensity convention shared by training and inference (one definition, so they agree)."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import UNet

__all__ = ["NETWORK_KWARGS", "PATCH", "build_network", "normalise_frame"]

#: small 2D UNet (~0.2 M parameters, < 1 MB of weights); batch norm, not instance norm, so that statistics do not
#: depend on whether the net sees a training patch or a whole frame
NETWORK_KWARGS: dict = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": (8, 16, 32, 64, 128),
                        "strides": (2, 2, 2, 2), "num_res_units": 1, "norm": "BATCH"}
#: training patch size (pixels); inference runs the fully convolutional net on the whole frame
PATCH = 160


def build_network() -> torch.nn.Module:
    """A fresh (untrained) network with the bundle's architecture."""
    return UNet(**NETWORK_KWARGS)


def normalise_frame(frame: np.ndarray, grey_max: float | None = None) -> np.ndarray:
    """Echo grey values -> float32 in 0..1 by the display full scale (255 for 8-bit), not by image percentiles.

    A fixed scale keeps a dark image dark: percentile stretching would turn a black screenshot border or an empty
    frame into texture the network has never seen. ``grey_max`` defaults to 255 unless the data exceed it.
    """
    arr = np.asarray(frame, dtype=np.float32)
    scale = float(grey_max) if grey_max else (255.0 if float(arr.max(initial=0.0)) <= 255.0 else float(arr.max()))
    return np.clip(arr / max(scale, 1e-6), 0.0, 1.0).astype(np.float32)
