"""Intensity normalisation shared by training and inference (one definition, so the two can never drift)."""

from __future__ import annotations

import numpy as np

__all__ = ["normalise_intensity"]

#: percentiles mapped to 0 and 1; MR has no absolute scale, so only the ordering of grey values can carry over
LOW_PCT, HIGH_PCT = 0.5, 99.5


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """Map the 0.5th/99.5th percentiles to 0/1 and clip to [-0.5, 2] (robust to bright vessels and noise)."""
    a = np.asarray(image, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    sub = finite[:: max(1, finite.size // 2_000_000)]
    lo, hi = np.percentile(sub, [LOW_PCT, HIGH_PCT])
    scale = float(hi - lo) if hi > lo else 1.0
    out = (np.nan_to_num(a, nan=float(lo)) - np.float32(lo)) / np.float32(scale)
    return np.clip(out, -0.5, 2.0).astype(np.float32, copy=False)
