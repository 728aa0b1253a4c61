"""Knee side from text and from anatomy, and the rule that combines the evidence (conflicts are reported)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ._enums import KneeSide

_RIGHT = re.compile(r"(?<![a-z])(right|rt|rechts|droit[e]?|dx)(?![a-z])|(?<![a-z])r(?=[_\s\-]*knee)", re.IGNORECASE)
_LEFT = re.compile(r"(?<![a-z])(left|lt|links|gauche|sx)(?![a-z])|(?<![a-z])l(?=[_\s\-]*knee)", re.IGNORECASE)


def side_from_text(text: str | None) -> KneeSide:
    """RIGHT/LEFT when a description names exactly one side ("SAG DESS RT", "left knee"), else UNKNOWN."""
    if not text:
        return KneeSide.UNKNOWN
    right, left = bool(_RIGHT.search(text)), bool(_LEFT.search(text))
    if right and not left:
        return KneeSide.RIGHT
    if left and not right:
        return KneeSide.LEFT
    return KneeSide.UNKNOWN


def side_from_anatomy(fibula_centroid_ras: np.ndarray, tibia_centroid_ras: np.ndarray,
                      *, min_offset_mm: float = 5.0) -> KneeSide:
    """The fibula is lateral: in RAS (+x = patient's right) it lies at larger x in a right knee.

    Only meaningful when the affine is a true scanner affine; returns UNKNOWN when the offset is too small to tell.
    """
    dx = float(fibula_centroid_ras[0] - tibia_centroid_ras[0])
    if abs(dx) < min_offset_mm:
        return KneeSide.UNKNOWN
    return KneeSide.RIGHT if dx > 0 else KneeSide.LEFT


@dataclass(frozen=True)
class SideDecision:
    """The side koaimg will use, where it came from, and any disagreement among the sources."""

    side: KneeSide
    source: str
    conflicts: tuple[str, ...] = ()

    @property
    def conflicting(self) -> bool:
        """bool: True when two sources named different sides."""
        return bool(self.conflicts)


def decide_side(evidence: list[tuple[str, KneeSide]]) -> SideDecision:
    """Take the first informative source in priority order; report every source that disagrees with it."""
    informative = [(src, s) for src, s in evidence if s in (KneeSide.RIGHT, KneeSide.LEFT, KneeSide.BILATERAL)]
    if not informative:
        return SideDecision(KneeSide.UNKNOWN, "not determined")
    source, side = informative[0]
    conflicts = tuple(f"{src} says {s.value}" for src, s in informative[1:] if s != side)
    if conflicts:
        conflicts = (f"{source} says {side.value}", *conflicts)
    return SideDecision(side, source, conflicts)
