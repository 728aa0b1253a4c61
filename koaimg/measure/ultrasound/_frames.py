"""Best frame of a cine: the sharpest, most perpendicular bone echo, chosen explicitly and recorded.

A sonographer freezes the frame where the bone line is brightest and crispest along its whole visible length: the
probe is then perpendicular to the bone (specular echoes are strongest head-on) and not moving (no blur). The score is
the mean edge strength of the tracked bone echo times the fraction of the image width it covers, so a sharp short
fragment does not beat a complete line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._tracker import track_interfaces

__all__ = ["FrameChoice", "choose_frame", "frame_quality"]

#: cines longer than this are scored on an even subsample first, then around the best subsampled frame
MAX_SCORED = 24


def frame_quality(frame: np.ndarray, spacing_mm: tuple[float, float], *, grey_max: float | None = None) -> float:
    """Mean bone-echo evidence along the tracked line x covered fraction of the width (0 when no bone line)."""
    itf = track_interfaces(frame, spacing_mm, grey_max=grey_max, surface=False)
    cols = itf.bone_columns
    if cols.size == 0:
        return 0.0
    return float(np.mean(itf.bone_score[cols]) * cols.size / frame.shape[1])


@dataclass(frozen=True)
class FrameChoice:
    """Which frame was measured and why: its index and the quality score of every frame scored."""

    index: int
    scores: dict[int, float]
    method: str = "max bone-echo edge strength x coverage"


def choose_frame(frames: np.ndarray, spacing_mm: tuple[float, float], *, grey_max: float | None = None
                 ) -> FrameChoice:
    """Pick the best frame of a (T, rows, cols) cine (T = 1 returns frame 0 unscored)."""
    n = int(frames.shape[0])
    if n == 1:
        return FrameChoice(0, {})
    scores: dict[int, float] = {}
    first = np.unique(np.linspace(0, n - 1, min(n, MAX_SCORED)).round().astype(int))
    for k in first:
        scores[int(k)] = frame_quality(frames[k], spacing_mm, grey_max=grey_max)
    if n > MAX_SCORED:  # refine around the best subsampled frame
        best = max(scores, key=scores.get)
        stride = int(np.ceil((n - 1) / (MAX_SCORED - 1)))
        for k in range(max(0, best - stride + 1), min(n, best + stride)):
            if k not in scores:
                scores[k] = frame_quality(frames[k], spacing_mm, grey_max=grey_max)
    best = max(sorted(scores), key=lambda k: scores[k])
    return FrameChoice(int(best), dict(sorted(scores.items())))
