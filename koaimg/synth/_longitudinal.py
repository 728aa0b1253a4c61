"""Baseline / follow-up phantom pairs with an exactly known thickness change and a rigid repositioning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import KneeSide
from ._knee_anatomy import PLATES, KneeAnatomy, ThicknessChange
from ._knee_phantom import Acquisition, KneePhantom, Pose, make_knee_phantom

#: the regional metrics whose change is part of the truth
DELTA_METRICS = ("ThCtAB.Me", "ThCcAB.Me", "VC", "tAB", "cAB", "dAB%", "any_loss_area%", "full_thickness_area%")


@dataclass
class PhantomPair:
    """Two visits of one knee and the true change between them (Δ = follow-up - baseline)."""

    baseline: KneePhantom
    followup: KneePhantom
    change: ThicknessChange
    #: per plate: Δ thickness (mm) at each baseline bone-interface point, aligned with ``baseline.interface``
    delta_points: dict[str, np.ndarray]
    #: tidy rows: bone, region, metric, baseline, followup, delta
    delta_regions: list[dict]


def point_delta(anatomy: KneeAnatomy, bone: str, local_feet: np.ndarray, change: ThicknessChange) -> np.ndarray:
    """True Δ thickness at bone-frame foot points (rows p, n) under ``change``."""
    p, n = local_feet[:, :3], local_feet[:, 3:6]
    _, before, _ = anatomy.plate_and_thickness(bone, p, n)
    _, after, _ = anatomy.plate_and_thickness(bone, p, n, change=change)
    return after - before


def make_pair(anatomy: KneeAnatomy, acquisition: Acquisition | str, change: ThicknessChange, *, seed: int,
              side: KneeSide | str = KneeSide.RIGHT, baseline_pose: Pose | None = None,
              followup_pose: Pose | None = None, max_reposition_deg: float = 10.0,
              max_reposition_mm: float = 10.0) -> PhantomPair:
    """Baseline and follow-up scans of the same knee.

    The follow-up has new noise and bias, the prescribed ``change``, and (unless ``followup_pose`` is given) a random
    rigid repositioning of up to ``max_reposition_deg`` and ``max_reposition_mm`` relative to the baseline pose.
    """
    rng = np.random.default_rng([seed, 7])
    baseline_pose = baseline_pose or Pose()
    if followup_pose is None:
        move = Pose.random(rng, max_deg=max_reposition_deg, max_mm=max_reposition_mm)
        matrix = move.matrix() @ baseline_pose.matrix()
        from scipy.spatial.transform import Rotation

        followup_pose = Pose(tuple(Rotation.from_matrix(matrix[:3, :3]).as_euler("xyz", degrees=True)),
                             tuple(matrix[:3, 3]))
    baseline = make_knee_phantom(anatomy, acquisition, seed=seed, side=side, pose=baseline_pose)
    followup = make_knee_phantom(anatomy, acquisition, seed=seed + 1_000_003, side=side, pose=followup_pose,
                                 change=change)
    delta_points = {bone: point_delta(anatomy, bone, baseline.interface[bone]["local"], change) for bone in PLATES}
    rows = []
    for bone in PLATES:
        for before, after in zip(baseline.regions[bone].rows, followup.regions[bone].rows, strict=True):
            for metric in DELTA_METRICS:
                rows.append({"bone": bone, "region": before["region"], "metric": metric,
                             "baseline": before[metric], "followup": after[metric],
                             "delta": after[metric] - before[metric]})
    return PhantomPair(baseline, followup, change, delta_points, rows)
