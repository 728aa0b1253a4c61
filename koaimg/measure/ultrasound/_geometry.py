"""From two interfaces to thickness: perpendicular distances along the bone line, the three sites, area ÷ length.

Coordinates are mm with x lateral (columns) and y depth (rows), pixel (row, col) centred at (row·Δr, col·Δc), the
convention of the phantom truth. The bone line is a function of x (one row per column), smoothed slightly for its
normals; thickness at a bone point is the distance along the bone normal (towards the probe) to where that ray meets
the superficial interface, the sonographer's perpendicular caliper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.signal import savgol_filter

from ._interfaces import Interfaces

__all__ = ["BoneProfile", "SiteGeometry", "bone_profile", "find_sites", "site_geometry"]

SITES = ("LC", "IN", "MC")


@dataclass(frozen=True)
class BoneProfile:
    """The tracked bone line in mm with normals, arc length and the perpendicular thickness at every point.

    ``thickness`` is NaN where the normal ray does not meet the surface (not tracked there).
    """

    x: np.ndarray
    y: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    arc: np.ndarray
    thickness: np.ndarray
    spacing_mm: tuple[float, float]
    surface_x: np.ndarray = field(repr=False)
    surface_y: np.ndarray = field(repr=False)

    def at(self, arc_mm: float) -> tuple[float, float, float, float, float]:
        """(x, y, nx, ny, thickness) interpolated at an arc position."""
        vals = [float(np.interp(arc_mm, self.arc, v)) for v in (self.x, self.y, self.nx, self.ny)]
        norm = float(np.hypot(vals[2], vals[3])) or 1.0
        good = np.isfinite(self.thickness)
        h = float(np.interp(arc_mm, self.arc[good], self.thickness[good])) if good.any() else float("nan")
        return vals[0], vals[1], vals[2] / norm, vals[3] / norm, h


def _odd(n: float) -> int:
    k = max(3, round(n))
    return k if k % 2 else k + 1


def bone_profile(interfaces: Interfaces, spacing_mm: tuple[float, float], *, smooth_mm: float = 0.6,
                 normal_smooth_mm: float = 1.5) -> BoneProfile | None:
    """Bone line (mm), its normals and the perpendicular thickness at each tracked column; None if too short."""
    mr, mc = spacing_mm
    cols = interfaces.bone_columns
    if cols.size < 8:
        return None
    c0, c1 = int(cols[0]), int(cols[-1])
    cc = np.arange(c0, c1 + 1)
    rows = np.interp(cc, cols, interfaces.bone_row[cols])  # bridge small gaps
    x = cc * mc
    y = rows * mr
    w = min(_odd(smooth_mm / mc), cc.size - (1 - cc.size % 2))
    y_s = savgol_filter(y, w, 2) if w >= 5 else y
    wn = min(_odd(normal_smooth_mm / mc), cc.size - (1 - cc.size % 2))
    slope = savgol_filter(y, wn, 2, deriv=1, delta=mc) if wn >= 5 else np.gradient(y, mc)
    norm = np.sqrt(1.0 + slope * slope)
    nx, ny = slope / norm, -1.0 / norm
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y_s)))])

    # superficial interface as a polyline y_s(x) over the columns where it was found
    sc = np.flatnonzero(np.isfinite(interfaces.surface_row))
    thickness = np.full(cc.size, np.nan)
    sx, sy = sc * mc, interfaces.surface_row[sc] * mr if sc.size else np.zeros(0)
    if sc.size >= 2:
        sy = savgol_filter(sy, min(w, sc.size - (1 - sc.size % 2)), 2) if sc.size >= 5 and w >= 5 else sy
        gap = np.diff(sc) > max(2, round(1.0 / mc))  # do not interpolate the surface across long gaps
        t = np.linspace(0.0, 8.0, 1601)  # mm along the normal, 0.005 mm steps
        px = x[:, None] + t[None, :] * nx[:, None]
        py = y_s[:, None] + t[None, :] * ny[:, None]
        ys = np.interp(px, sx, sy, left=np.nan, right=np.nan)
        k = np.clip(np.searchsorted(sx, px) - 1, 0, max(sx.size - 2, 0))
        across_gap = gap[np.clip(k, 0, gap.size - 1)] if gap.size else np.zeros_like(px, bool)
        f = py - ys  # > 0 below the surface (deeper), < 0 once the ray has passed it
        f[across_gap] = np.nan
        sign = f <= 0
        first = np.argmax(sign, axis=1)
        hit = sign[np.arange(cc.size), first] & (first > 0)
        i = np.arange(cc.size)[hit]
        j = first[hit]
        f0, f1 = f[i, j - 1], f[i, j]
        ok = np.isfinite(f0) & np.isfinite(f1)
        frac = np.where(ok, f0 / np.where(f0 - f1 == 0, 1.0, f0 - f1), np.nan)
        thickness[i] = t[j - 1] + frac * (t[1] - t[0])
    return BoneProfile(x=x, y=y_s, nx=nx, ny=ny, arc=arc, thickness=thickness, spacing_mm=spacing_mm,
                       surface_x=sx, surface_y=sy)


@dataclass(frozen=True)
class SiteGeometry:
    """Where one site is on the bone line and what the window around it measures."""

    name: str
    arc_mm: float
    window: tuple[float, float]
    thickness_mm: float
    centre_thickness_mm: float
    sd_mm: float
    coverage: float
    area_mm2: float
    midline_length_mm: float
    area_per_length_mm: float
    bone_mm: tuple[float, float]
    surface_mm: tuple[float, float]
    placed: str  # "apex", "notch" or "estimated"


def find_sites(profile: BoneProfile, *, right_knee: bool, window_half_mm: float, fallback_offset_mm: float = 11.0,
               min_groove_mm: float = 0.5, apex_clearance_mm: float = 1.5
               ) -> tuple[dict[str, float], dict[str, str]] | None:
    """Arc positions of LC, IN and MC from the bone-line shape; None when there is no groove.

    IN is the deepest point of the trochlear groove: the bone point that lies deepest below the lower of the two rims
    (the shallowest bone on either side of it). LC and MC are the shallowest points (condylar apexes) on each side.
    Sites keep their window inside the tracked line; when a side rises to the end of the tracked line (no apex in
    view: the shallowest point is within ``apex_clearance_mm`` of the usable end) the site is placed
    ``fallback_offset_mm`` along the bone from the notch (or as far as the line allows) and
    marked ``"estimated"``. For a right knee on the standard view LC is on the image left; a left knee mirrors it.
    """
    y = ndimage.gaussian_filter1d(profile.y, max(1.0, 1.0 / profile.spacing_mm[1]), mode="nearest")
    arc = profile.arc
    n = arc.size
    margin = window_half_mm + 0.3
    inner = (arc >= arc[0] + margin) & (arc <= arc[-1] - margin)
    if inner.sum() < 3:
        return None
    left_rim = np.minimum.accumulate(y)  # shallowest depth at or left of each point
    right_rim = np.minimum.accumulate(y[::-1])[::-1]
    groove = y - np.maximum(left_rim, right_rim)
    groove[~inner] = -np.inf
    i_in = int(np.argmax(groove))
    if not np.isfinite(groove[i_in]) or groove[i_in] < min_groove_mm:
        return None
    placed = {"IN": "notch"}
    arcs = {"IN": float(arc[i_in])}
    for side, sel in (("left", np.arange(n) < i_in), ("right", np.arange(n) > i_in)):
        cand = sel & inner & (np.abs(arc - arc[i_in]) >= 2 * window_half_mm + 0.5)
        name = ("LC" if side == "left" else "MC") if right_knee else ("MC" if side == "left" else "LC")
        if not cand.any():
            return None
        idx = np.flatnonzero(cand)
        k = int(idx[np.argmin(y[idx])])
        end = arc[idx[0]] if side == "left" else arc[idx[-1]]
        edge = abs(arc[k] - end) < apex_clearance_mm  # still rising at the end of the line: no apex seen
        if edge:
            target = arc[i_in] + (fallback_offset_mm if side == "right" else -fallback_offset_mm)
            k = int(idx[np.argmin(np.abs(arc[idx] - target))])
            placed[name] = "estimated"
        else:
            placed[name] = "apex"
        arcs[name] = float(arc[k])
    return arcs, placed


def site_geometry(profile: BoneProfile, name: str, arc_mm: float, window_half_mm: float, placed: str
                  ) -> SiteGeometry:
    """Window mean of the perpendicular thickness and the area ÷ midline-length regional mean around one site."""
    a, b = arc_mm - window_half_mm, arc_mm + window_half_mm
    grid = np.linspace(a, b, 201)
    h_all = profile.thickness
    good = np.isfinite(h_all)
    sel = (profile.arc >= a) & (profile.arc <= b)
    coverage = float((sel & good).sum() / max(sel.sum(), 1))
    if good.sum() < 2 or (sel & good).sum() < 2:
        nan = float("nan")
        xb, yb, *_ = profile.at(arc_mm)
        return SiteGeometry(name, arc_mm, (a, b), nan, nan, nan, coverage, nan, nan, nan, (xb, yb), (nan, nan), placed)
    h = np.interp(grid, profile.arc[good], h_all[good])
    xb = np.interp(grid, profile.arc, profile.x)
    yb = np.interp(grid, profile.arc, profile.y)
    nx = np.interp(grid, profile.arc, profile.nx)
    ny = np.interp(grid, profile.arc, profile.ny)
    nn = np.hypot(nx, ny)
    nx, ny = nx / nn, ny / nn
    xs, ys = xb + h * nx, yb + h * ny
    px, py = np.concatenate([xb, xs[::-1]]), np.concatenate([yb, ys[::-1]])
    area = 0.5 * abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1))))
    mx, my = xb + 0.5 * h * nx, yb + 0.5 * h * ny
    mid_len = float(np.hypot(np.diff(mx), np.diff(my)).sum())
    centre = profile.at(arc_mm)
    hc = centre[4]
    return SiteGeometry(
        name=name, arc_mm=arc_mm, window=(a, b), thickness_mm=float(np.mean(h)), centre_thickness_mm=hc,
        sd_mm=float(np.std(h_all[sel & good])), coverage=coverage, area_mm2=area, midline_length_mm=mid_len,
        area_per_length_mm=area / mid_len if mid_len > 0 else float("nan"), bone_mm=(centre[0], centre[1]),
        surface_mm=(centre[0] + hc * centre[2], centre[1] + hc * centre[3]), placed=placed)
