"""Classical interface tracker: what a sonographer looks for, as two dynamic-programming paths.

1. Bone: the cartilage-bone interface is the deepest strong dark-to-bright edge (the top of the bone echo) with an
   acoustic shadow below it. Every pixel scores its edge strength (gradient magnitude where the image brightens with
   depth, so steep flanks count like flat apexes) minus the strongest edge 0.5-5 mm below it and minus the mean
   brightness there; a superficial echo has the bone edge below it and scores low, and a long bright bone echo has
   no edge inside it, so the path sits on its top. A smooth path through the columns (bounded slope, small penalty per
   row of jump) maximises the summed score; columns whose evidence (averaged over 1.5 mm) is weak (black screenshot
   border, lifted probe, no bone) are dropped and the longest connected stretch is kept. Rows within 3 mm of the first
   echo in each column (probe-skin contact line) are never bone.
2. Surface, in the bone's own frame: the image is resampled along the bone normals (t = 0 on the bone echo, growing
   towards the probe), so the cartilage band runs straight and can be smoothed along its length without smearing a
   thin dark band on a steep flank. The surface is a smooth path over t through the strongest brightening with t
   (dark cartilage below, echogenic tissue above).
3. Sub-pixel position: a specular echo (the bone echo; a thin bright surface line) marks its interface at its crest
   (parabola through the three samples around the maximum); a plain bright-to-dark step (echogenic fat or synovium
   resting on the cartilage) marks it at the step. The offsets of the two crests (half a pixel from sampling, a
   little from blur) are alike and cancel in the thickness: +0.02 mm mean bias on the phantoms.

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
    edge_sigma_mm = 0.08
    shadow_from_mm = 0.5
    shadow_weight = 0.3
    below_weight = 0.6
    skin_mm = 3.0
    shadow_to_mm = 5.0
    max_slope = 1.6  # |d depth / d lateral| of the bone line
    jump_penalty = 0.01  # per row of jump, in normalised grey units
    bone_min_score = 0.03
    max_gap_mm = 3.0
    min_length_mm = 10.0
    min_thickness_mm = 0.35
    max_thickness_mm = 5.0
    dark_from_mm = 0.15
    dark_to_mm = 0.45
    surface_min_score = 0.03
    crest_contrast = 0.08
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


def _ridge_peak(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, up: int, down: int) -> np.ndarray:
    """Sub-pixel row of the brightest sample within [row - up, row + down] per column (parabola through 3 samples).

    A specular interface is the centre of its echo: the phantoms' truth puts it there, and the offsets of the two
    echoes (half a pixel from sampling, a little from blur) are the same for both, so they cancel in the thickness.
    """
    n = img.shape[0]
    offs = np.arange(-up, down + 1)
    rr = np.clip(rows[:, None] + offs[None, :], 1, n - 2)
    vals = img[rr, cols[:, None]]
    k = np.argmax(vals, axis=1)
    r0 = rr[np.arange(len(rows)), k]
    y0, y1, y2 = img[r0 - 1, cols], img[r0, cols], img[r0 + 1, cols]
    den = y0 - 2.0 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
    return r0 + np.clip(delta, -0.5, 0.5)


def _track_surface(img: np.ndarray, bone_row: np.ndarray, seen: np.ndarray, spacing_mm: tuple[float, float],
                   s: type[TrackerSettings]) -> tuple[np.ndarray, np.ndarray]:
    """Superficial interface row per column (NaN where not found) and its evidence, from the straightened image."""
    from scipy.signal import savgol_filter

    mr, mc = spacing_mm
    n_cols = bone_row.size
    surface_row = np.full(n_cols, np.nan)
    score_out = np.zeros(n_cols)
    cols = np.flatnonzero(seen)
    c0, c1 = int(cols[0]), int(cols[-1])
    cc = np.arange(c0, c1 + 1)
    x = cc * mc
    y = np.interp(cc, cols, bone_row[cols]) * mr
    win = max(5, round(1.5 / mc) | 1)
    if cc.size <= win:
        return surface_row, score_out
    slope = savgol_filter(y, win, 2, deriv=1, delta=mc)
    norm = np.sqrt(1.0 + slope * slope)
    nx, ny = slope / norm, -1.0 / norm
    dt = min(mr, mc) / 2.0
    t = np.arange(-0.5, s.max_thickness_mm + 1.0, dt)
    px = (x[None, :] + t[:, None] * nx[None, :]) / mc
    py = (y[None, :] + t[:, None] * ny[None, :]) / mr
    prof = ndimage.map_coordinates(img, [py, px], order=1, mode="nearest")
    step = np.hypot(np.diff(x), np.diff(y)).mean()
    prof = ndimage.gaussian_filter1d(prof, s.smooth_lateral_mm / step, axis=1, mode="nearest")
    # the surface is where the band turns bright going up: the strongest rise of the profile with t, with dark
    # cartilage just below it
    d = max(1, round(0.15 / dt))
    rise = np.zeros_like(prof)
    rise[d:-d] = prof[2 * d:] - prof[:-2 * d]
    k0, k1 = max(1, round(s.dark_from_mm / dt)), max(2, round(s.dark_to_mm / dt))
    dark = _shifted_mean(prof[::-1], k0, k1)[::-1]  # mean 0.15-0.45 mm below (smaller t)
    q = rise - 0.3 * dark
    valid_t = (t >= s.min_thickness_mm) & (t <= s.max_thickness_mm + 0.5)
    allowed = np.broadcast_to(valid_t[:, None], q.shape).copy()
    jump = max(1, round(s.thickness_jump_px * mr / dt))
    path = _dp_path(np.where(allowed, q, -1.0), jump, s.jump_penalty, allowed=allowed)
    i = np.arange(cc.size)
    along = ndimage.uniform_filter1d(q[path, i], max(1, round(1.0 / step)), mode="nearest")
    edge = _ridge_peak(rise, path, i, max(1, round(0.15 / dt)), max(1, round(0.15 / dt)))
    # a thin bright surface echo (specular line) is the interface at its crest, like the bone echo; a plain
    # bright-to-dark step (echogenic fat or synovium on the cartilage) is the interface at the step
    e0 = np.rint(edge).astype(np.int64)
    reach = max(2, round(0.35 / dt))
    crest = _ridge_peak(prof, e0 + reach // 2, i, reach // 2 + 1, reach // 2)
    ci = np.clip(np.rint(crest).astype(np.int64), 0, t.size - 1)
    beyond = prof[np.clip(ci + max(2, round(0.3 / dt)), 0, t.size - 1), i]
    distinct = (prof[ci, i] - beyond > s.crest_contrast) & (ci > e0)
    t_idx = np.where(distinct, crest, edge)
    h = np.interp(t_idx, np.arange(t.size), t)
    ok = seen[cc] & (along > s.surface_min_score)
    xs, ys = x + h * nx, y + h * ny
    order = np.argsort(xs[ok])
    if ok.sum() >= 2:
        xo, yo = xs[ok][order], ys[ok][order]
        target = cc[ok] * mc
        rows = np.interp(target, xo, yo) / mr
        surface_row[cc[ok]] = rows
        score_out[cc[ok]] = along[ok]
    return surface_row, score_out


def track_interfaces(frame: np.ndarray, spacing_mm: tuple[float, float], *, grey_max: float | None = None,
                     surface: bool = True, settings: type[TrackerSettings] = TrackerSettings) -> Interfaces:
    """Track the cartilage-bone and superficial interfaces of one grey B-mode frame.

    Parameters
    ----------
    frame : (rows, cols) ndarray
        Grey echo values (0..``grey_max``).
    spacing_mm : (row_mm, col_mm)
        Pixel size, depth first.
    grey_max : float, optional
        Display full scale (default 255, or the frame maximum when larger).
    surface : bool
        Also track the superficial interface (False: bone only, for scoring cine frames).

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
    fine_axial = ndimage.gaussian_filter(img, (s.smooth_axial_mm / mr, 0.05 / mc))

    # 1. bone: the deepest strong dark-to-bright rise (leading edge of the bone echo), with no strong rise in the
    #    shadow 0.5-5 mm below it; a long bright bone echo has no rise inside it, so the path sits on its top
    # edge strength: gradient magnitude (so a steep flank counts as much as a flat apex) where it brightens with
    # depth, expressed as the grey rise over 0.2 mm
    sig = (s.edge_sigma_mm / mr, s.edge_sigma_mm * 1.5 / mc)
    gy = ndimage.gaussian_filter(img, sig, order=(1, 0)) / mr
    gx = ndimage.gaussian_filter(img, sig, order=(0, 1)) / mc
    rise = np.where(gy > 0, np.hypot(gx, gy), 0.0) * 0.2
    a, b = max(1, round(s.shadow_from_mm / mr)), max(2, round(s.shadow_to_mm / mr))
    below = _shifted_max(np.clip(rise, 0.0, None), a, min(b, n_rows - 1))
    shadow = _shifted_mean(fine_axial, a, min(b, n_rows - 1))  # the shadow is dark, not just free of edges
    bone_score = rise - s.below_weight * below - s.shadow_weight * shadow
    bone_score[n_rows - a:] = -1.0  # no room below to see a shadow
    # the probe-skin contact line (the first echo under a black screenshot border or at the top of the region)
    # is a strong rise too, but bone is never within a few mm of the skin
    first = np.argmax(fine_axial > 0.05, axis=0)
    bone_score[np.arange(n_rows)[:, None] < (first + round(s.skin_mm / mr))[None, :]] = -1.0
    max_jump = max(1, math.ceil(s.max_slope * mc / mr))
    path = _dp_path(bone_score, max_jump, s.jump_penalty)
    cols = np.arange(n_cols)
    # evidence along the path, averaged over ~1.5 mm: speckle makes single columns of a real bone echo weak
    along = ndimage.uniform_filter1d(bone_score[path, cols], max(1, round(1.5 / mc)), mode="nearest")
    run = longest_run(along > s.bone_min_score, max(1, round(s.max_gap_mm / mc)))
    empty = np.full(n_cols, np.nan)
    if run is None or (run[1] - run[0]) * mc < s.min_length_mm:
        return Interfaces(empty, empty.copy(), np.zeros(n_cols), np.zeros(n_cols), "tracker")
    seen = np.zeros(n_cols, bool)
    seen[run[0]:run[1] + 1] = True
    seen &= along > s.bone_min_score
    bone_row = np.full(n_cols, np.nan)
    bc = cols[seen]
    # the crest just below the rise: the centre of the specular echo
    bone_row[bc] = _ridge_peak(fine, path[bc], bc, 1, max(2, round(0.45 / mr)))

    # 2. surface, in the bone's own frame: the image is resampled along the bone normals (t = 0 on the bone echo,
    #    growing towards the probe), so the cartilage band runs straight along the arc and can be smoothed along it
    #    without smearing a thin dark band on a steep flank; the surface is then a smooth path over t
    if not surface:
        return Interfaces(bone_row, np.full(n_cols, np.nan), np.where(seen, along, 0.0), np.zeros(n_cols), "tracker")
    surface_row, s_full = _track_surface(fine_axial, bone_row, seen, spacing_mm, s)
    surface_row[seen & (surface_row > bone_row - s.min_thickness_mm / mr)] = np.nan
    b_score = np.where(seen, along, 0.0)
    return Interfaces(bone_row, surface_row, b_score, s_full, "tracker")
