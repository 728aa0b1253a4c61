"""Anatomical frame of the knee from its labels, and MOAKS cartilage subregions of every interface point.

The frame is built in a right-knee convention (left knees are mirrored here, internally): lateral = patient-right
for a right knee, anterior and superior from the scanner axes. From the femoral cartilage-bone interface: the notch
(the gap between the two condylar clusters of distal points), the condylar sagittal centre (circle fit to the distal
and posterior points), the trochlear groove (the least anterior point of the trochlear surface between the facets).
From the tibial cartilage: the anterior and posterior margins of each plateau, seen from the condylar centre, play
the part of the meniscal horn margins of the MOAKS definitions (domain-specs §1.2). Medial/lateral are anatomical
and never swap; every region function is tested on a knee and its mirror image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import KneeSide, LateralityError

FEMUR_REGIONS = ("FMT", "FLT", "FMC", "FLC", "FMP", "FLP")
TIBIA_REGIONS = ("TMA", "TMC", "TMP", "TLA", "TLC", "TLP")
PATELLA_REGIONS = ("PM", "PL")
MOAKS_REGIONS = FEMUR_REGIONS + TIBIA_REGIONS + PATELLA_REGIONS
#: used when the tibial cartilage is not labelled: typical margin angles (deg) from the condylar centre
DEFAULT_MARGINS = (38.0, -48.0)


@dataclass
class KneeFrame:
    """Right-knee-convention frame: ``to_frame`` maps RAS mm to (lateral, anterior, superior) mm."""

    side: KneeSide
    to_frame: np.ndarray
    notch_x: float = 0.0
    groove_x: float = 0.0
    condyle_centre: tuple[float, float] = (0.0, 0.0)
    condyle_radius: float = 0.0
    #: per compartment ('medial', 'lateral'): (anterior, posterior) margin angles in degrees
    margins: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: further landmarks (frame mm) found by other schemes, e.g. the Wirth–Eckstein notch and posterior ends
    landmarks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def apply(self, points_ras: np.ndarray) -> np.ndarray:
        """RAS mm (N, 3) -> frame mm (N, 3)."""
        return points_ras @ self.to_frame[:3, :3].T + self.to_frame[:3, 3]

    def direction(self, vectors_ras: np.ndarray) -> np.ndarray:
        """RAS directions (N, 3) -> frame directions."""
        return vectors_ras @ self.to_frame[:3, :3].T

    def sagittal_angle(self, frame_points: np.ndarray) -> np.ndarray:
        """Angle (deg) around the condylar axis: 0 distal, +90 anterior, -90 posterior."""
        yc, zc = self.condyle_centre
        return np.degrees(np.arctan2(frame_points[:, 1] - yc, -(frame_points[:, 2] - zc)))


def base_frame(side: KneeSide | str) -> np.ndarray:
    """RAS -> right-knee frame: a left knee is mirrored across the sagittal plane."""
    side = KneeSide(side)
    if side not in (KneeSide.RIGHT, KneeSide.LEFT):
        raise LateralityError(f"knee side is {side.value}: medial and lateral subregions need a right or left knee",
                              hint="pass --side right|left, or add a Laterality tag / fibula label")
    out = np.eye(4)
    out[0, 0] = 1.0 if side == KneeSide.RIGHT else -1.0
    return out


def _circle_fit(y: np.ndarray, z: np.ndarray) -> tuple[float, float, float]:
    """Algebraic least-squares circle (Kasa): centre (y, z) and radius."""
    a = np.column_stack([y, z, np.ones_like(y)])
    b = y * y + z * z
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    yc, zc = sol[0] / 2, sol[1] / 2
    return float(yc), float(zc), float(np.sqrt(sol[2] + yc * yc + zc * zc))


def _gap_between_clusters(x: np.ndarray, bin_mm: float = 1.0) -> float:
    """Centre of the emptiest bin between the two most populated halves of a 1D point distribution."""
    lo, hi = np.percentile(x, 2), np.percentile(x, 98)
    edges = np.arange(lo, hi + bin_mm, bin_mm)
    counts, edges = np.histogram(x, edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    mid = np.median(x)
    left = counts[centres < mid]
    right = counts[centres >= mid]
    if left.size == 0 or right.size == 0:
        return float(mid)
    i_left = int(np.argmax(left))
    i_right = int(np.flatnonzero(centres >= mid)[0] + np.argmax(right))
    if i_right - i_left < 2:
        return float(mid)
    between = np.arange(i_left, i_right + 1)
    low = between[counts[between] == counts[between].min()]
    return float(centres[low].mean())


def femoral_frame(points_ras: np.ndarray, normals_ras: np.ndarray, side: KneeSide | str,
                  tibial_points_ras: np.ndarray | None = None) -> KneeFrame:
    """The knee frame and MOAKS landmarks from femoral interface points (and tibial ones when available)."""
    frame = KneeFrame(KneeSide(side), base_frame(side))
    p = frame.apply(points_ras)
    n = frame.direction(normals_ras)
    distal = n[:, 2] < -0.5
    if distal.sum() < 20:
        distal = n[:, 2] < 0
    frame.notch_x = _gap_between_clusters(p[distal, 0])
    back_or_down = (n[:, 2] < -0.3) | (n[:, 1] < -0.3)
    yc, zc, r = _circle_fit(p[back_or_down, 1], p[back_or_down, 2])
    frame.condyle_centre, frame.condyle_radius = (yc, zc), r
    alpha = frame.sagittal_angle(p)
    frame.margins = {"medial": DEFAULT_MARGINS, "lateral": DEFAULT_MARGINS}
    if tibial_points_ras is not None and len(tibial_points_ras) > 20:
        t = frame.apply(tibial_points_ras)
        for name, sel in (("medial", t[:, 0] <= frame.notch_x), ("lateral", t[:, 0] > frame.notch_x)):
            if sel.sum() < 10:
                frame.notes.append(f"{name} tibial plateau not found: default MOAKS margins used")
                continue
            ang = frame.sagittal_angle(t[sel])
            frame.margins[name] = (float(ang.max()), float(ang.min()))
    else:
        frame.notes.append("tibial cartilage not labelled: default MOAKS trochlea/central/posterior margins used")
    troch = (alpha > max(m[0] for m in frame.margins.values())) & (n[:, 1] > 0.3)
    frame.groove_x = _groove(p[troch]) if troch.sum() > 50 else frame.notch_x
    return frame


def _groove(p: np.ndarray, bin_mm: float = 1.0) -> float:
    """Lateral position of the deepest point of the trochlear groove.

    Per 1 mm lateral bin, the most anterior extent of the trochlear bone surface (90th percentile of y, within the
    middle half of the trochlea's height); the groove
    lies between the two highest ridges (the medial and lateral facets) on either side of the middle, at the
    depth-weighted centroid of the depression below the line joining them.
    """
    # one height band of the trochlea: the facets' anterior extent changes with height, and mixing heights in a
    # bin blurs a shallow groove
    z = p[:, 2]
    band = (z >= np.percentile(z, 25)) & (z <= np.percentile(z, 75))
    if band.sum() >= 50:
        p = p[band]
    x = p[:, 0]
    edges = np.arange(np.percentile(x, 2), np.percentile(x, 98) + bin_mm, bin_mm)
    if edges.size < 6:
        return float(np.median(x))
    idx = np.digitize(x, edges)
    heights = np.array([np.percentile(p[idx == i, 1], 90) if np.count_nonzero(idx == i) >= 5 else np.nan
                        for i in range(1, edges.size)])
    centres = 0.5 * (edges[1:] + edges[:-1])
    mid = float(np.median(x))
    left = np.flatnonzero((centres < mid) & np.isfinite(heights))
    right = np.flatnonzero((centres >= mid) & np.isfinite(heights))
    if left.size == 0 or right.size == 0:
        return mid
    ridge_l = left[np.argmax(heights[left])]
    ridge_r = right[np.argmax(heights[right])]
    between = np.arange(ridge_l, ridge_r + 1)
    between = between[np.isfinite(heights[between])]
    if between.size < 3:
        return float(centres[between[np.argmin(heights[between])]])
    # a shallow groove has a flat, noisy bottom: take the centroid of the depth below the line joining the ridges
    # rather than the single lowest bin
    line = np.interp(centres[between], centres[[ridge_l, ridge_r]], heights[[ridge_l, ridge_r]])
    depth = np.clip(line - heights[between], 0.0, None) ** 2
    if depth.sum() <= 0:
        return float(centres[between].mean())
    return float((centres[between] * depth).sum() / depth.sum())


def femur_regions(frame: KneeFrame, points_ras: np.ndarray) -> np.ndarray:
    """MOAKS femoral subregion code per point."""
    p = frame.apply(points_ras)
    alpha = frame.sagittal_angle(p)
    lateral = p[:, 0] > frame.notch_x
    a_ant = np.where(lateral, frame.margins["lateral"][0], frame.margins["medial"][0])
    a_post = np.where(lateral, frame.margins["lateral"][1], frame.margins["medial"][1])
    troch_lateral = p[:, 0] > frame.groove_x
    out = np.where(lateral, "FLC", "FMC").astype("<U3")
    out = np.where(alpha < a_post, np.where(lateral, "FLP", "FMP"), out)
    out = np.where(alpha > a_ant, np.where(troch_lateral, "FLT", "FMT"), out)
    return out


def plateau_axes(frame: KneeFrame, normals_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tibial plateau's own lateral and anterior unit axes in the frame (perpendicular to its mean normal), so
    knee flexion does not skew tibial subregions."""
    up = frame.direction(normals_ras).mean(axis=0)
    up /= np.linalg.norm(up)
    ap = np.cross(up, np.array([1.0, 0.0, 0.0]))
    ap /= np.linalg.norm(ap)
    if ap[1] < 0:
        ap = -ap
    ml = np.cross(ap, up)
    return (ml if ml[0] >= 0 else -ml), ap


def tibia_regions(frame: KneeFrame, points_ras: np.ndarray, normals_ras: np.ndarray) -> np.ndarray:
    """MOAKS tibial subregions: each plateau in anterior / central / posterior thirds of its AP extent, measured
    along the plateau's own AP axis (perpendicular to its mean normal), so knee flexion does not skew them."""
    p = frame.apply(points_ras)
    _, ap = plateau_axes(frame, normals_ras)
    lateral = p[:, 0] > frame.notch_x
    out = np.empty(len(p), dtype="<U3")
    coord = p @ ap
    for is_lat, prefix in ((False, "TM"), (True, "TL")):
        sel = lateral == is_lat
        if not sel.any():
            continue
        lo, hi = coord[sel].min(), coord[sel].max()
        third = (hi - lo) / 3.0
        c = coord[sel]
        out[sel] = np.where(c > hi - third, prefix + "A", np.where(c < lo + third, prefix + "P", prefix + "C"))
    return out


def patella_regions(frame: KneeFrame, points_ras: np.ndarray) -> np.ndarray:
    """MOAKS patellar facets: medial (with the median ridge) vs lateral, split at the plate's median position."""
    p = frame.apply(points_ras)
    ridge = float(np.median(p[:, 0]))
    return np.where(p[:, 0] <= ridge, "PM", "PL").astype("<U3")
