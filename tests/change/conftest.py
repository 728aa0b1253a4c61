"""Small phantom pairs with exact Δ, measured once per session (the sample grid keeps each pair to a few seconds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from koaimg.change import KneeVisit, visit_from_measurement
from koaimg.measure import measure_knee
from koaimg.synth import KneeAnatomy, PhantomPair, ThicknessChange, make_pair

STRUCTURE_BONE = {"femoral_cartilage": "femur", "tibial_cartilage": "tibia", "patellar_cartilage": "patella"}


@dataclass
class MeasuredPair:
    pair: PhantomPair
    baseline: KneeVisit
    followup: KneeVisit
    measurements: tuple

    def truth(self, metric: str = "ThCtAB.Me") -> dict[tuple[str, str], float]:
        """(structure, MOAKS region) -> true Δ."""
        inverse = {v: k for k, v in STRUCTURE_BONE.items()}
        return {(inverse[r["bone"]], r["region"]): r["delta"] for r in self.pair.delta_regions
                if r["metric"] == metric}

    def true_transform(self) -> np.ndarray:
        """Follow-up RAS -> baseline RAS from the phantom poses."""
        from koaimg.synth._knee_phantom import world_from_knee

        b, f = self.pair.baseline, self.pair.followup
        return world_from_knee(b.side, b.pose) @ np.linalg.inv(world_from_knee(f.side, f.pose))


def measured_pair(change: ThicknessChange, *, seed: int, side: str = "right") -> MeasuredPair:
    pair = make_pair(KneeAnatomy(), "sample", change, seed=seed, side=side)
    mb, mf = measure_knee(pair.baseline.labels), measure_knee(pair.followup.labels)
    return MeasuredPair(pair, visit_from_measurement(mb, pair.baseline.labels, subject="P", visit="baseline"),
                        visit_from_measurement(mf, pair.followup.labels, subject="P", visit="month6"), (mb, mf))


@pytest.fixture(scope="session")
def thickening_pair() -> MeasuredPair:
    """+0.10 mm everywhere and +0.15 mm more in FMC, right knee, random repositioning up to 10 deg / 10 mm."""
    return measured_pair(ThicknessChange(0.10, {"FMC": 0.15}), seed=3)


@pytest.fixture(scope="session")
def zero_pair() -> MeasuredPair:
    """No change, left knee, repositioned."""
    return measured_pair(ThicknessChange(0.0), seed=11, side="left")
