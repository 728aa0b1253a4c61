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


def moaks_grade(percent: float) -> int:
    """MOAKS area grade: 0 none, 1 <10 %, 2 10-75 %, 3 >75 %."""
    if percent <= 0.0:
        return 0
    if percent < 10.0:
        return 1
    if percent <= 75.0:
        return 2
    return 3


def expected_thickness(ijk: np.ndarray, thickness: np.ndarray, shape: tuple[int, int, int], spacing: np.ndarray,
                       *, sigma_mm: float = REFERENCE_SIGMA_MM, exclude: np.ndarray | None = None) -> np.ndarray:
    """Gaussian-weighted local mean of covered thickness around each point (normalised convolution on the grid).

    ``exclude`` marks points left out of the reference (denuded points always are).
    """
    use = np.isfinite(thickness) & (thickness > 0)
    if exclude is not None:
        use &= ~exclude
    lo = ijk.min(axis=0)
    hi = ijk.max(axis=0) + 1
    pad = np.ceil(3 * sigma_mm / spacing).astype(int)
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, np.array(shape))
    local = ijk - lo
    grid_shape = tuple(int(v) for v in hi - lo)
    values = np.zeros(grid_shape, np.float32)
    weights = np.zeros(grid_shape, np.float32)
    np.add.at(values, tuple(local[use].T), thickness[use].astype(np.float32))
    np.add.at(weights, tuple(local[use].T), 1.0)
    sigma = sigma_mm / spacing
    sv = ndimage.gaussian_filter(values, sigma, mode="constant", truncate=3.0)
    sw = ndimage.gaussian_filter(weights, sigma, mode="constant", truncate=3.0)
    at = tuple(local.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw[at] > 1e-6, sv[at] / sw[at], np.nan)


def loss_masks(ijk: np.ndarray, thickness: np.ndarray, denuded: np.ndarray, shape: tuple[int, int, int],
               spacing: np.ndarray, *, reference: np.ndarray | None = None, edge_distance: np.ndarray | None = None,
               loss_fraction: float = LOSS_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(any_loss, full_thickness_loss, expected thickness) per point. ``reference`` overrides the self-reference
    (a normative thickness per point, e.g. from an atlas); ``edge_distance`` (mm to the plate margin) keeps the
    naturally thin margin from being called partial loss."""
    if reference is None:
        first = expected_thickness(ijk, thickness, shape, spacing)
        suspect = thickness < loss_fraction * first
        reference = expected_thickness(ijk, thickness, shape, spacing, exclude=suspect)
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
