"""MOAKS cartilage cut-points: one definition for the phantom truth and for the measurement (domain-specs §1.3)."""

from __future__ import annotations

#: upper bounds (%, exclusive for grade 1, inclusive for grade 2) of the area grades; above the last is grade 3
MOAKS_CUTPOINTS = (10.0, 75.0)


def moaks_grade(percent: float) -> int:
    """MOAKS area grade of a subregion: 0 none, 1 <10 %, 2 10-75 %, 3 >75 % of its surface."""
    if percent <= 0.0:
        return 0
    if percent < MOAKS_CUTPOINTS[0]:
        return 1
    if percent <= MOAKS_CUTPOINTS[1]:
        return 2
    return 3
