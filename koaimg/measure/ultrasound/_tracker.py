"""Classical interface tracker: what a sonographer looks for, as two dynamic-programming paths across the columns.

1. Bone: the cartilage-bone interface is the deepest bright specular echo with an acoustic shadow below it. Every
   pixel scores its (lightly smoothed) brightness minus the brightest echo 0.8-5 mm below it; a superficial echo has
   the bone echo below it and scores low, the bone echo has only shadow below and scores high. A smooth path through
   the columns (bounded slope, small penalty per row of jump) maximises the summed score; columns whose score is
   weak (black screenshot border, lifted probe, no bone) are dropped and the longest connected stretch is kept.
2. Surface: above the bone, the synovial/soft-tissue-cartilage interface is a bright echo with the anechoic
   cartilage directly below it. A second path runs over the distance above the bone (so the thickness, not the
   depth, is what must vary smoothly) and maximises brightness minus the darkness just beneath.
3. Both echoes are then located to a fraction of a pixel at the ridge maximum (parabola through the three samples
   around the peak): a specular interface is the centre of its echo, which is what the phantoms' truth and the
   sonographer's calipers mark.

All lengths are in mm and converted with the frame's pixel size, so the tracker behaves alike at 0.08 and 0.12 mm/px.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ._interfaces import Interfaces, longest_run

__all__ = ["TrackerSettings", "track_interfaces"]


class TrackerSettings:
    """Named constants of the tracker (mm unless stated); the defaults were set on phantoms and one real image."""

    smooth_axial_mm = 0.05
    smooth_lateral_mm = 0.25
    shadow_from_mm = 0.8
    shadow_to_mm = 5.0
    max_slope = 1.6  # |d depth / d lateral| of the bone line
    jump_penalty = 0.01  # per row of jump, in normalised grey units
    bone_min_score = 0.12
    max_gap_mm = 1.0
    min_length_mm = 10.0
    min_thickness_mm = 0.35
    max_thickness_mm = 5.0
    dark_from_mm = 0.15
    dark_to_mm = 0.45
    surface_min_score = 0.05
    thickness_jump_px = 2


def _shifted_max(img: np.ndarray, start: int, stop: int) -> np.ndarray:
    """out[r] = max(img[r + start : r + stop + 1]) per column (0 beyond the bottom)."""
    n = stop - start + 1
    m = ndimage.maximum_filter1d(img, size=n, axis=0, mode="constant", cval=0.0, origin=-(n // 2))
    # with origin -(n//2) the window of m[r] is img[r : r + n]; shift it down by ``start``
    out = np.zeros_like(img)
    out[: img.shape[0] - start] = m[start:]
    return out


def _shifted_mean(img: np.ndarray, start: int, stop: int) -> np.ndarray:
    """out[r] = mean(img[r + start : r + stop + 1]) per column (edge rows repeat)."""
    n = stop - start + 1
    m = ndimage.uniform_filter1d(img, size=n, axis=0, mode="nearest", origin=-(n // 2))
    out = np.empty_like(img)
    k = img.shape[0] - start
    out[:k] = m[start:]
    out[k:] = m[-1]
    return out


def _dp_path(score: np.ndarray, max_jump: int, penalty: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Row per column maximising sum(score[path, col]) - penalty * sum|jumps|, jumps of at most ``max_jump`` rows."""
    n_rows, n_cols = score.shape
    neg = -1e9
    acc = np.where(allowed[:, 0], score[:, 0], neg) if allowed is not None else score[:, 0].copy()
    back = np.zeros((n_rows, n_cols), dtype=np.int32)
    rows = np.arange(n_rows)
    for c in range(1, n_cols):
        best = np.full(n_rows, neg)
        arg = rows.copy()
        for d in range(-max_jump, max_jump + 1):
            src = rows + d
            ok = (src >= 0) & (src < n_rows)
            cand = np.full(n_rows, neg)
            cand[ok] = acc[src[ok]] - penalty * abs(d)
            better = cand > best
            best[better] = cand[better]
            arg[better] = src[better]
        acc = best + score[:, c]
        if allowed is not None:
            acc[~allowed[:, c]] = neg
        back[:, c] = arg
    path = np.empty(n_cols, dtype=np.int64)
    path[-1] = int(np.argmax(acc))
    for c in range(n_cols - 1, 0, -1):
        path[c - 1] = back[path[c], c]
    return path


def _ridge_peak(profile_img: np.ndarray, rows: np.ndarray, cols: np.ndarray, search: int) -> np.ndarray:
    """Sub-pixel row of the brightest sample within ±search rows of ``rows`` in each column (parabolic vertex)."""
    n = profile_img.shape[0]
    offs = np.arange(-search, search + 1)
    rr = np.clip(rows[:, None] + offs[None, :], 0, n - 1)
    vals = profile_img[rr, cols[:, None]]
    k = np.argmax(vals, axis=1)
    k = np.clip(k, 1, 2 * search - 1)
    r0 = rr[np.arange(len(rows)), k]
    y0 = profile_img[np.clip(r0 - 1, 0, n - 1), cols]
    y1 = profile_img[r0, cols]
    y2 = profile_img[np.clip(r0 + 1, 0, n - 1), cols]
    den = y0 - 2.0 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
    return r0 + np.clip(delta, -0.5, 0.5)


def track_interfaces(frame: np.ndarray, spacing_mm: tuple[float, float], *, grey_max: float | None = None,
                     settings: type[TrackerSettings] = TrackerSettings) -> Interfaces:
    """Track the cartilage-bone and superficial interfaces of one grey B-mode frame.

    Parameters
    ----------
    frame : (rows, cols) ndarray
        Grey echo values (0..``grey_max``).
    spacing_mm : (row_mm, col_mm)
        Pixel size, depth first.
    grey_max : float, optional
        Display full scale (default 255, or the frame maximum when larger).

    Returns
    -------
    Interfaces
        NaN rows everywhere when no bone line was found (the caller decides how to refuse).
    """
    s = settings
    img = np.asarray(frame, dtype=np.float64)
    scale = float(grey_max) if grey_max else (255.0 if img.max(initial=0.0) <= 255.0 else float(img.max()))
    img = np.clip(img / max(scale, 1e-6), 0.0, 1.0)
    n_rows, n_cols = img.shape
    mr, mc = spacing_mm
    fine = ndimage.gaussian_filter(img, (s.smooth_axial_mm / mr, s.smooth_lateral_mm / mc))
    coarse = ndimage.gaussian_filter(img, (0.15 / mr, 0.5 / mc))

    # 1. bone: bright, with nothing bright 0.8-5 mm below it
    a, b = max(1, round(s.shadow_from_mm / mr)), max(2, round(s.shadow_to_mm / mr))
    below = _shifted_max(coarse, a, min(b, n_rows - 1))
    bone_score = fine - below
    bone_score[n_rows - a:] = -1.0  # no room below to see a shadow
    max_jump = max(1, math.ceil(s.max_slope * mc / mr))
    path = _dp_path(bone_score, max_jump, s.jump_penalty)
    cols = np.arange(n_cols)
    along = bone_score[path, cols]
    run = longest_run(along > s.bone_min_score, max(1, round(s.max_gap_mm / mc)))
    empty = np.full(n_cols, np.nan)
    if run is None or (run[1] - run[0]) * mc < s.min_length_mm:
        return Interfaces(empty, empty.copy(), np.zeros(n_cols), np.zeros(n_cols), "tracker")
    seen = np.zeros(n_cols, bool)
    seen[run[0]:run[1] + 1] = True
    seen &= along > s.bone_min_score
    bone_row = np.full(n_cols, np.nan)
    bc = cols[seen]
    bone_row[bc] = _ridge_peak(fine, path[bc], bc, max(1, round(0.15 / mr)))

    # 2. surface: a path over the distance above the bone (rows), bright with dark cartilage just below
    d_lo, d_hi = max(1, round(s.min_thickness_mm / mr)), round(s.max_thickness_mm * 1.3 / mr)
    k0, k1 = max(1, round(s.dark_from_mm / mr)), max(2, round(s.dark_to_mm / mr))
    dark = _shifted_mean(coarse, k0, k1)
    surf_img = fine - 1.5 * dark
    dist = np.arange(d_lo, d_hi + 1)
    c0, c1 = run
    sub = np.arange(c0, c1 + 1)
    base = np.where(seen, np.rint(np.nan_to_num(bone_row, nan=0.0)), 0).astype(np.int64)
    # columns inside bridged gaps borrow the nearest tracked bone row
    base_sub = np.interp(sub, bc, base[bc]).round().astype(np.int64)
    rr = base_sub[None, :] - dist[:, None]
    inside = (rr >= 0) & (dist[:, None] <= base_sub[None, :] - 0)
    score = np.where(inside, surf_img[np.clip(rr, 0, n_rows - 1), sub[None, :]], -1.0)
    dpath = _dp_path(score, s.thickness_jump_px, s.jump_penalty, allowed=inside)
    srow_int = base_sub - dist[dpath]
    s_score = score[dpath, np.arange(sub.size)]
    surface_row = np.full(n_cols, np.nan)
    surf_ok = seen[sub] & (s_score > s.surface_min_score)
    sc = sub[surf_ok]
    surface_row[sc] = _ridge_peak(fine, srow_int[surf_ok], sc, max(1, round(0.1 / mr)))
    too_thin = surface_row > bone_row - s.min_thickness_mm / mr
    surface_row[too_thin] = np.nan
    b_score = np.where(seen, along, 0.0)
    s_full = np.zeros(n_cols)
    s_full[sc] = s_score[surf_ok]
    return Interfaces(bone_row, surface_row, b_score, s_full, "tracker")
