"""MOAKS-style cartilage grades from a thickness map, and the knee-level summaries with their formulas.

Loss is detected against an expected thickness. By default the expectation is self-referenced: a smooth, lesion-
robust local mean of the knee's own cartilage (Gaussian-weighted over ``REFERENCE_SIGMA_MM``, recomputed once with
the first-pass lesions left out). A point is "any loss" when its thickness is below ``LOSS_FRACTION`` of the
expectation, "full-thickness loss" when the bone is denuded. Per subregion, the area of each as a percentage of the
subregion's bone area (tAB) is graded with the MOAKS cut-points: 0 none, 1 <10 %, 2 10-75 %, 3 >75 % (domain-specs
§1.3; the Q-MOAKS idea of Ray et al. 2025 with a self-reference instead of a normative atlas when none is given).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

REFERENCE_SIGMA_MM = 6.0
LOSS_FRACTION = 0.7
#: partial loss is not called within this distance of the plate's outer margin, where cartilage thins naturally
#: (a denuded hole is always counted: it is enclosed by cartilage by construction)
MARGIN_MM = 2.0


def expected_thickness(points: np.ndarray, thickness: np.ndarray, *, sigma_mm: float = REFERENCE_SIGMA_MM,
                       exclude: np.ndarray | None = None, cell_mm: float = 1.5) -> np.ndarray:
    """Gaussian-weighted local mean of covered thickness around each point (normalised convolution).

    The values are binned on a ``cell_mm`` grid in physical space (the reference is smooth on a 6 mm scale, so a
    1.5 mm grid, a quarter of sigma, loses nothing and costs a fraction of the voxel grid). ``exclude`` marks points
    left out of the reference (denuded points always are).
    """
    use = np.isfinite(thickness) & (thickness > 0)
    if exclude is not None:
        use &= ~exclude
    pad = 3.0 * sigma_mm
    origin = points.min(axis=0) - pad
    cells = np.floor((points - origin) / cell_mm).astype(int)
    shape = tuple(int(v) for v in cells.max(axis=0) + int(np.ceil(pad / cell_mm)) + 2)
    flat = np.ravel_multi_index(tuple(cells[use].T), shape)
    size = int(np.prod(shape))
    values = np.bincount(flat, weights=thickness[use], minlength=size).reshape(shape)
    weights = np.bincount(flat, minlength=size).astype(np.float64).reshape(shape)
    sigma = sigma_mm / cell_mm
    sv = ndimage.gaussian_filter(values, sigma, mode="constant", truncate=3.0)
    sw = ndimage.gaussian_filter(weights, sigma, mode="constant", truncate=3.0)
    at = tuple(cells.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw[at] > 1e-9, sv[at] / sw[at], np.nan)


def loss_masks(points: np.ndarray, thickness: np.ndarray, denuded: np.ndarray, *,
               reference: np.ndarray | None = None, edge_distance: np.ndarray | None = None,
               loss_fraction: float = LOSS_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(any_loss, full_thickness_loss, expected thickness) per point. ``reference`` overrides the self-reference
    (a normative thickness per point, e.g. from an atlas); ``edge_distance`` (mm to the plate margin) keeps the
    naturally thin margin from being called partial loss."""
    if reference is None:
        first = expected_thickness(points, thickness)
        with np.errstate(invalid="ignore"):
            suspect = thickness < loss_fraction * first
        reference = expected_thickness(points, thickness, exclude=suspect)
    full = denuded.copy()
    with np.errstate(invalid="ignore"):
        partial = np.isfinite(thickness) & (thickness < loss_fraction * reference)
    if edge_distance is not None:
        partial &= edge_distance >= MARGIN_MM
    return partial | full, full, reference


def knee_summary(region_rows: list[dict]) -> dict[str, float | str]:
    """Knee-level MOAKS summaries with their formulas and directions (domain-specs §1.9).

    ``region_rows`` hold per subregion: ``tAB``, ``any_loss_area%``, ``moaks_any_loss_grade``,
    ``moaks_full_thickness_grade``.
    """
    graded = [r for r in region_rows if r.get("moaks_any_loss_grade") is not None]
    summed = sum(r["moaks_any_loss_grade"] + r["moaks_full_thickness_grade"] for r in graded)
    maximum = 6 * len(graded)
    area = sum(r["tAB"] for r in graded)
    loss_area = sum(r["tAB"] * r["any_loss_area%"] / 100.0 for r in graded)
    return {
        "moaks_summed_score_pos_worse": float(summed),
        "moaks_summed_score_formula": "sum over subregions of (area-of-any-loss grade + full-thickness grade)",
        "moaks_damage_score_0_100_pos_worse": 100.0 * summed / maximum if maximum else 0.0,
        "moaks_damage_score_formula": "100 x summed score / (6 x number of graded subregions)",
        "defect_area_pct_pos_worse": 100.0 * loss_area / area if area else 0.0,
        "defect_area_formula": "100 x area of any loss / total bone area (tAB) over graded subregions",
        "n_subregions_graded": float(len(graded)),
    }
