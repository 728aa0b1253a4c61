"""The two cartilage interfaces of a transverse suprapatellar frame, as per-column sub-pixel rows.

Two sources produce the same :class:`Interfaces`: the classical tracker (:mod:`._tracker`: bright bone echo with an
acoustic shadow, then the bright superficial echo above a dark band) and a cartilage probability map from the 2D model
(:func:`interfaces_from_probability`: the 0.5 crossings at the top and bottom of the band). Thickness, sites and the
area ÷ length means are computed from them alone, so both methods are measured by the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interfaces", "interfaces_from_probability", "longest_run"]


@dataclass(frozen=True)
class Interfaces:
    """Cartilage-bone and superficial interfaces, one sub-pixel row per image column (NaN where not found).

    Attributes
    ----------
    bone_row, surface_row : (cols,) float ndarray
        Continuous row (pixel centres at integers) of the cartilage-bone and synovial/soft-tissue-cartilage
        interfaces in each column; NaN outside the tracked bone line or where the surface was not found.
    bone_score, surface_score : (cols,) float ndarray
        Contrast of each echo (normalised grey, 0..1 scale), 0 where not found: the evidence behind each point.
    method : str
        ``"tracker"`` or ``"model"``.
    """

    bone_row: np.ndarray
    surface_row: np.ndarray
    bone_score: np.ndarray
    surface_score: np.ndarray
    method: str

    @property
    def bone_columns(self) -> np.ndarray:
        """(N,) int: columns where the bone line was tracked."""
        return np.flatnonzero(np.isfinite(self.bone_row))

    def cartilage_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """(rows, cols) bool: pixels whose centre lies between the two interfaces (for overlays and Dice)."""
        rows = np.arange(shape[0])[:, None]
        ok = np.isfinite(self.bone_row) & np.isfinite(self.surface_row)
        top = np.where(ok, self.surface_row, np.inf)[None, :]
        bottom = np.where(ok, self.bone_row, -np.inf)[None, :]
        return (rows >= top) & (rows <= bottom)


def longest_run(valid: np.ndarray, max_gap: int) -> tuple[int, int] | None:
    """(first, last) index of the longest run of True, bridging gaps of at most ``max_gap`` False; None if none."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    k = int(np.argmax(idx[ends] - idx[starts]))
    return int(idx[starts[k]]), int(idx[ends[k]])


def _crossing(p0: np.ndarray, p1: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Fraction of the way from sample 0 to sample 1 where a linear profile crosses ``level``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((level - p0) / (p1 - p0), 0.0, 1.0)


def interfaces_from_probability(prob: np.ndarray, spacing_mm: tuple[float, float], *, min_band_mm: float = 0.3,
                                max_gap_mm: float = 1.0, min_length_mm: float = 8.0) -> Interfaces:
    """Interfaces from a cartilage probability map: in each column, the deepest band with p >= 0.5.

    The band's lower 0.5 crossing is the cartilage-bone interface and its upper crossing the superficial interface,
    both linearly interpolated between pixel centres (a calibrated probability is 0.5 where the partial-volume
    fraction is 0.5, i.e. on the interface). Only the longest laterally connected stretch of columns is kept, so a
    stray blob away from the cartilage does not become a piece of bone line.
    """
    p = np.asarray(prob, dtype=np.float64)
    rows, cols = p.shape
    inside = p >= 0.5
    bone = np.full(cols, np.nan)
    surf = np.full(cols, np.nan)
    score = np.zeros(cols)
    min_band = min_band_mm / spacing_mm[0]
    for c in np.flatnonzero(inside.any(axis=0)):
        col = inside[:, c]
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))
        starts = [0] if col[0] else []
        starts += [e + 1 for e in edges if not col[e]]
        ends = [e for e in edges if col[e]] + ([rows - 1] if col[-1] else [])
        runs = [(a, b) for a, b in zip(starts, ends, strict=False) if b - a + 1 >= min_band]
        if not runs:
            continue
        a, b = max(runs, key=lambda ab: (ab[1] - ab[0]) * float(p[ab[0]:ab[1] + 1, c].mean()))
        top = a - 1 + _crossing(p[a - 1, c], p[a, c]) if a > 0 else float(a)
        bot = b + _crossing(p[b, c], p[b + 1, c]) if b < rows - 1 else float(b)
        surf[c], bone[c], score[c] = top, bot, float(p[a:b + 1, c].mean())
    run = longest_run(np.isfinite(bone), max(1, round(max_gap_mm / spacing_mm[1])))
    keep = np.zeros(cols, bool)
    if run is not None and (run[1] - run[0]) * spacing_mm[1] >= min_length_mm:
        keep[run[0]:run[1] + 1] = True
    # columns inside a bridged gap stay NaN: they were not seen, and the geometry interpolates across them
    bone[~keep], surf[~keep], score[~keep] = np.nan, np.nan, 0.0
    return Interfaces(bone, surf, score, score.copy(), "model")
