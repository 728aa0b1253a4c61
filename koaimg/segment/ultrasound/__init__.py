"""2D ultrasound femoral-cartilage segmentation: a small MONAI UNet trained on koaimg's synthetic US phantoms.

Import explicitly as ``koaimg.segment.ultrasound`` (torch and MONAI live here only). Measurement itself is in
:mod:`koaimg.measure.ultrasound`, which takes the probability map this package produces.
"""

from ._inference import DEFAULT_US_BUNDLE, UltrasoundModel, cartilage_probability, load_us_model
from ._network import NETWORK_KWARGS, PATCH, build_network, normalise_frame

__all__ = [
    "DEFAULT_US_BUNDLE",
    "NETWORK_KWARGS",
    "PATCH",
    "UltrasoundModel",
    "build_network",
    "cartilage_probability",
    "load_us_model",
    "normalise_frame",
]
