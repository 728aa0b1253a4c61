"""Unrolled 2D femoral thickness maps and their colour pictures (PNG), the view readers expect of a thickness map.

The femoral plate is unrolled in the knee frame: columns run medial -> lateral (mm), rows follow the sagittal angle
around the condylar axis from the posterior condyles (bottom) over the weight-bearing zone to the trochlea (top).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_path

# a perceptually ordered blue -> yellow ramp (viridis-like anchors), interpolated linearly
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
_DIVERGING = np.array([[178, 24, 43], [239, 138, 98], [247, 247, 247], [103, 169, 207], [33, 102, 172]], dtype=float)


def colourise(values: np.ndarray, lo: float, hi: float, *, diverging: bool = False) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB; NaN is dark grey (no cartilage plate there)."""
    anchors = _DIVERGING if diverging else _ANCHORS
    t = np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1) * (len(anchors) - 1)
    i = np.clip(np.floor(np.nan_to_num(t)).astype(int), 0, len(anchors) - 2)
    f = np.nan_to_num(t) - i
    rgb = anchors[i] * (1 - f[..., None]) + anchors[i + 1] * f[..., None]
    rgb[~np.isfinite(values)] = (40, 40, 40)
    return rgb.astype(np.uint8)


def unrolled_femoral_map(frame_points: np.ndarray, alpha_deg: np.ndarray, values: np.ndarray, *,
                         mm_per_px: float = 1.0, deg_per_px: float = 2.0,
                         alpha_range: tuple[float, float] = (-150.0, 150.0)) -> tuple[np.ndarray, dict]:
    """Mean value per (sagittal angle, lateral position) cell; returns the (rows, cols) map and its axes."""
    x = frame_points[:, 0]
    x0, x1 = np.floor(np.nanmin(x)), np.ceil(np.nanmax(x))
    cols = int((x1 - x0) / mm_per_px) + 1
    rows = int((alpha_range[1] - alpha_range[0]) / deg_per_px) + 1
    c = np.clip(((x - x0) / mm_per_px).astype(int), 0, cols - 1)
    r = np.clip(((alpha_range[1] - alpha_deg) / deg_per_px).astype(int), 0, rows - 1)  # anterior (trochlea) on top
    ok = np.isfinite(values)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    np.add.at(total, (r[ok], c[ok]), values[ok])
    np.add.at(count, (r[ok], c[ok]), 1)
    with np.errstate(invalid="ignore"):
        grid = np.where(count > 0, total / count, np.nan)
    grid = _fill_gaps(grid)
    axes = {"columns": "lateral position in the right-knee frame (mm), medial on the left",
            "rows": "sagittal angle around the condylar axis (deg), trochlea at the top, posterior at the bottom",
            "x0_mm": float(x0), "mm_per_px": mm_per_px, "alpha_top_deg": alpha_range[1], "deg_per_px": deg_per_px}
    return grid, axes


def thickness_map_png(grid: np.ndarray, path: str | Path, *, lo: float = 0.0, hi: float = 4.0,
                      diverging: bool = False, scale: int = 4, title: str = "", orientation: bool = True) -> Path:
    """Write the unrolled map as an RGB PNG with a colour bar strip on the right (``lo``..``hi`` mm) and, for the
    femoral map's layout, where anterior/posterior and medial/lateral are (a reader should not have to guess)."""
    rgb = colourise(grid, lo, hi, diverging=diverging)
    img = Image.fromarray(rgb).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    bar_h = img.height
    ramp = np.linspace(hi, lo, bar_h)[:, None].repeat(16, axis=1)
    bar = Image.fromarray(colourise(ramp, lo, hi, diverging=diverging))
    top = (14 if title else 0) + (14 if orientation else 0)
    bottom = 14 if orientation else 0
    canvas = Image.new("RGB", (img.width + 60, img.height + top + bottom), (255, 255, 255))
    canvas.paste(img, (0, top))
    canvas.paste(bar, (img.width + 8, top))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    draw.text((img.width + 27, top), f"{hi:g}", fill=(0, 0, 0))
    draw.text((img.width + 27, top + bar_h - 10), f"{lo:g} mm", fill=(0, 0, 0))
    if title:
        draw.text((2, 1), title, fill=(0, 0, 0))
    if orientation:
        draw.text((2, top - 13), "anterior (trochlea)", fill=(0, 0, 0))
        draw.text((2, top + img.height + 1), "medial    posterior", fill=(0, 0, 0))
        draw.text((max(img.width - 40, 90), top + img.height + 1), "lateral", fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def _fill_gaps(grid: np.ndarray, passes: int = 2) -> np.ndarray:
    """Fill empty cells surrounded by data (slice spacing coarser than the map's pixels leaves stripes): an empty
    cell with at least 4 of its 8 neighbours measured gets their mean. The plate's outline is kept."""
    out = grid.copy()
    for _ in range(passes):
        valid = np.isfinite(out)
        padded = np.pad(np.where(valid, out, 0.0), 1)
        pvalid = np.pad(valid, 1).astype(float)
        total = np.zeros_like(out)
        count = np.zeros_like(out)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dr == dc == 0:
                    continue
                sl = (slice(1 + dr, 1 + dr + out.shape[0]), slice(1 + dc, 1 + dc + out.shape[1]))
                total += padded[sl]
                count += pvalid[sl]
        fill = ~valid & (count >= 4)
        out[fill] = total[fill] / count[fill]
    return out
