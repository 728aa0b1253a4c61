"""Tissue classes of the phantoms and MR contrast presets (mean signal per tissue, arbitrary units).

Structures (``koaimg.core.Structure``) are what labels say; tissues are what the scanner sees. Several structures share
a tissue (every bone is marrow inside a cortex), and tissues without a label (fat, muscle, fluid) still shape the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..core import Structure


class Tissue(IntEnum):
    """Image-forming tissue classes (index into fraction maps and contrast tables)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    FLUID = 3
    MARROW = 4
    CARTILAGE = 5
    MENISCUS = 6
    TENDON = 7
    #: subchondral/cortical bone plate: the dark rim around marrow on every MR contrast
    CORTEX = 8


#: tissue of each labelled structure
STRUCTURE_TISSUE = {
    Structure.BACKGROUND: Tissue.MUSCLE,
    Structure.FEMUR: Tissue.MARROW,
    Structure.TIBIA: Tissue.MARROW,
    Structure.PATELLA: Tissue.MARROW,
    Structure.FIBULA: Tissue.MARROW,
    Structure.FEMORAL_CARTILAGE: Tissue.CARTILAGE,
    Structure.TIBIAL_CARTILAGE: Tissue.CARTILAGE,
    Structure.PATELLAR_CARTILAGE: Tissue.CARTILAGE,
    Structure.MENISCUS: Tissue.MENISCUS,
}


@dataclass(frozen=True)
class Contrast:
    """Mean signal per tissue for one sequence type, plus the spread used when randomising it."""

    name: str
    description: str
    means: dict[Tissue, float]
    #: relative standard deviation applied per tissue when a random variant is drawn
    spread: float = 0.15
    #: typical acquisition parameters written into DICOM headers
    tags: dict[str, object] = field(default_factory=dict)

    def table(self) -> np.ndarray:
        """(n_tissues,) float32 array of means in ``Tissue`` order."""
        return np.array([self.means[t] for t in Tissue], dtype=np.float32)

    def randomised(self, rng: np.random.Generator) -> np.ndarray:
        """A random variant of ``table()`` (each tissue scaled independently), for domain randomisation."""
        scale = rng.normal(1.0, self.spread, size=len(Tissue)).clip(0.5, 1.6)
        table = self.table() * scale.astype(np.float32)
        table[Tissue.AIR] = 0.0
        return table


CONTRASTS: dict[str, Contrast] = {
    "dess": Contrast(
        "dess", "3D DESS with water excitation (OAI): bright cartilage and fluid, dark fat-suppressed marrow",
        {Tissue.AIR: 0.0, Tissue.FAT: 0.12, Tissue.MUSCLE: 0.22, Tissue.FLUID: 0.95, Tissue.MARROW: 0.10,
         Tissue.CARTILAGE: 0.62, Tissue.MENISCUS: 0.05, Tissue.TENDON: 0.04, Tissue.CORTEX: 0.03},
        tags={"series_description": "SAG 3D DESS WE", "echo_time_ms": 4.7, "repetition_time_ms": 16.3,
              "flip_angle_deg": 25.0, "mr_acquisition_type": "3D", "scanning_sequence": "GR", "scan_options": "WE"}),
    "pdfs": Contrast(
        "pdfs", "2D/3D proton-density fat-suppressed: intermediate cartilage, bright fluid, dark marrow",
        {Tissue.AIR: 0.0, Tissue.FAT: 0.10, Tissue.MUSCLE: 0.30, Tissue.FLUID: 0.90, Tissue.MARROW: 0.15,
         Tissue.CARTILAGE: 0.50, Tissue.MENISCUS: 0.06, Tissue.TENDON: 0.05, Tissue.CORTEX: 0.03},
        tags={"series_description": "SAG PD FS", "echo_time_ms": 30.0, "repetition_time_ms": 3200.0,
              "flip_angle_deg": 90.0, "mr_acquisition_type": "2D", "scanning_sequence": "SE", "scan_options": "FS"}),
    "t1": Contrast(
        "t1", "T1-weighted (FLASH-like, no fat suppression): bright fat and marrow, grey cartilage, dark fluid",
        {Tissue.AIR: 0.0, Tissue.FAT: 0.95, Tissue.MUSCLE: 0.35, Tissue.FLUID: 0.15, Tissue.MARROW: 0.85,
         Tissue.CARTILAGE: 0.45, Tissue.MENISCUS: 0.05, Tissue.TENDON: 0.05, Tissue.CORTEX: 0.03},
        tags={"series_description": "COR T1 3D FLASH", "echo_time_ms": 7.57, "repetition_time_ms": 20.0,
              "flip_angle_deg": 12.0, "mr_acquisition_type": "3D", "scanning_sequence": "GR", "scan_options": ""}),
}


def keep_apart(means: np.ndarray, anchor: int, movable: tuple[int, ...], gap: float) -> np.ndarray:
    """``means`` with every ``movable`` class at least ``gap`` x the brightest mean away from the ``anchor`` class.

    Why: every cartilage protocol separates cartilage from synovial fluid (fluid brighter on DESS, PD-FS and T2,
    darker on T1). A randomised contrast that makes them equal hides the articular surface; trained on such samples
    a model can only guess where the surface is and learns a thickness prior instead of reading the image. A class
    too close moves away on the side it already lies (above the anchor: up), or up when the anchor is too dark."""
    out = np.array(means, copy=True)
    if gap <= 0:
        return out
    a = float(out[anchor])
    for _ in range(8):  # a class moved above the brightest raises the scale of the gap: repeat until none is close
        d = gap * max(float(out.max()), 1e-3)
        close = [c for c in movable if abs(float(out[c]) - a) < d * (1 - 1e-6)]
        if not close:
            break
        for c in close:
            out[c] = a - d if (out[c] < a and a - d >= 0.0) else max(a + d, a / (1.0 - gap))
    return out
