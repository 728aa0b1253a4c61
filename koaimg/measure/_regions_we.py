"""Wirth–Eckstein cartilage subregions (IEEE TMI 2008;27:737–744), for comparability with Chondrometrics results.

Femur: the weight-bearing central plates cMF/cLF run from the intercondylar notch posteriorly over 60 % of the
notch-to-posterior-condyle distance (measured along the anterior-posterior axis, as CartiMorph does); anterior of
the notch is the anterior femur (aMF/aLF, split at the trochlear groove), beyond the 60 % the posterior femur
(pMF/pLF). cMF/cLF are split medio-laterally into equal thirds of each 1 mm AP row: external (away from the notch),
central, internal. Tibia: per plateau a central ellipse (axes in the plateau's own spread) holding 20 % of the
plateau's total bone area, the rest cut by the ±45° lines into anterior, posterior, external and internal.
Internal/external are relative to the notch, so the scheme is laterality-invariant: it runs in the right-knee frame
(left knees mirrored) and medial/lateral stay anatomical (domain-specs §2.2).

Codes follow DESIGN.md: plate then subregion, ``cMF.e``/``cMF.c``/``cMF.i``, ``MT.c``/``MT.a``/``MT.p``/``MT.e``/
``MT.i``; plates ``cMF``, ``cLF``, ``MT``, ``LT``, ``aMF``, ``aLF``, ``pMF``, ``pLF`` are reported as aggregates.
"""

from __future__ import annotations

import numpy as np

from ._regions import KneeFrame, plateau_axes

#: weight-bearing fraction of the notch -> posterior condyle distance (Wirth & Eckstein 2008)
CENTRAL_FRACTION = 0.60
#: share of each tibial plateau's total bone area inside the central ellipse
TIBIA_CENTRAL_SHARE = 0.20
FEMUR_SUBREGIONS = ("aMF", "aLF", "cMF.e", "cMF.c", "cMF.i", "cLF.e", "cLF.c", "cLF.i", "pMF", "pLF")
TIBIA_SUBREGIONS = tuple(f"{plate}.{part}" for plate in ("MT", "LT") for part in ("c", "a", "p", "e", "i"))
#: aggregate plates: name -> prefix of the subregions it sums
PLATES = {"cMF": "cMF.", "cLF": "cLF.", "MT": "MT.", "LT": "LT."}
WE_REGIONS = FEMUR_SUBREGIONS + TIBIA_SUBREGIONS


def notch_anterior_y(frame: KneeFrame, frame_points: np.ndarray, bin_mm: float = 1.0) -> tuple[float, str]:
    """AP position (frame mm) of the notch's anterior end: in a sagittal band around the notch, walking from the
    trochlea posteriorly, where the femoral interface is first interrupted (CartiMorph's rule)."""
    x, y = frame_points[:, 0], frame_points[:, 1]
    width = np.percentile(x, 98) - np.percentile(x, 2)
    band = np.abs(x - frame.notch_x) < max(2.0, 0.05 * width)
    if band.sum() < 10:
        return float(np.median(y)), "notch band empty: notch placed at the median AP position"
    yb = y[band]
    edges = np.arange(yb.max() + bin_mm, yb.min() - 2 * bin_mm, -bin_mm)[::-1]
    counts, edges = np.histogram(yb, edges)
    occupied = counts > 0
    # from the most anterior bin backwards: the first run of >= 2 empty bins ends the trochlear surface
    for i in range(len(counts) - 1, 0, -1):
        if occupied[i] and not occupied[i - 1] and (i < 2 or not occupied[i - 2]):
            return float(edges[i]), ""
    return float(yb.min()), "no gap found in the notch band: notch placed at its most posterior interface point"


def femur_regions_we(frame: KneeFrame, points_ras: np.ndarray) -> tuple[np.ndarray, dict[str, float], list[str]]:
    """Wirth–Eckstein femoral subregion per point, the landmarks used, and notes."""
    p = frame.apply(points_ras)
    notes: list[str] = []
    y_notch, note = notch_anterior_y(frame, p)
    if note:
        notes.append(note)
    lateral = p[:, 0] > frame.notch_x
    out = np.full(len(p), "", dtype="<U5")
    landmarks = {"notch_anterior_y_mm": y_notch}
    for is_lat, letter in ((False, "M"), (True, "L")):
        sel = lateral == is_lat
        if not sel.any():
            continue
        y_post = float(np.percentile(p[sel, 1], 0.5))
        y_cut = y_notch - CENTRAL_FRACTION * (y_notch - y_post)
        landmarks[f"{letter}_posterior_y_mm"] = y_post
        landmarks[f"{letter}_central_posterior_y_mm"] = y_cut
        yy = p[:, 1]
        out[sel & (yy < y_cut)] = f"p{letter}F"
        central = sel & (yy >= y_cut) & (yy < y_notch)
        # equal thirds of each 1 mm AP row's medio-lateral extent; internal = toward the notch
        rows = np.floor(yy[central]).astype(int)
        xs = p[central, 0]
        idx = np.flatnonzero(central)
        for row in np.unique(rows):
            r = rows == row
            lo, hi = xs[r].min(), xs[r].max()
            u = (xs[r] - lo) / max(hi - lo, 1e-6)  # 0 at the medial-most, 1 at the lateral-most point
            toward_notch = u if not is_lat else 1.0 - u
            part = np.where(toward_notch >= 2 / 3, "i", np.where(toward_notch < 1 / 3, "e", "c"))
            out[idx[r]] = np.char.add(f"c{letter}F.", part)
    anterior = p[:, 1] >= y_notch
    out[anterior] = np.where(p[anterior, 0] > frame.groove_x, "aLF", "aMF")
    return out, landmarks, notes


def tibia_regions_we(frame: KneeFrame, points_ras: np.ndarray, normals_ras: np.ndarray,
                     area: np.ndarray) -> np.ndarray:
    """Wirth–Eckstein tibial subregion per point: central ellipse with 20 % of each plateau's tAB, then ±45° sectors."""
    p = frame.apply(points_ras)
    ml, ap = plateau_axes(frame, normals_ras)
    u_all, v_all = p @ ml, p @ ap
    lateral = p[:, 0] > frame.notch_x
    out = np.full(len(p), "", dtype="<U4")
    for is_lat, plate in ((False, "MT"), (True, "LT")):
        sel = np.flatnonzero(lateral == is_lat)
        if sel.size < 10:
            continue
        w = np.maximum(area[sel], 0) + 1e-12
        u, v = u_all[sel], v_all[sel]
        u0, v0 = np.average(u, weights=w), np.average(v, weights=w)
        su = np.sqrt(np.average((u - u0) ** 2, weights=w))
        sv = np.sqrt(np.average((v - v0) ** 2, weights=w))
        r = np.hypot((u - u0) / su, (v - v0) / sv)
        order = np.argsort(r)
        share = np.cumsum(w[order]) / w.sum()
        central = np.zeros(sel.size, bool)
        central[order[: int(np.searchsorted(share, TIBIA_CENTRAL_SHARE)) + 1]] = True
        # external = away from the notch: medial for the medial plateau, lateral for the lateral one
        outward = (u - u0) * (1.0 if is_lat else -1.0)
        theta = np.degrees(np.arctan2(v - v0, outward))
        part = np.where(np.abs(theta) <= 45.0, "e", np.where(np.abs(theta) >= 135.0, "i",
                                                            np.where(theta > 0, "a", "p")))
        part = np.where(central, "c", part)
        out[sel] = np.char.add(f"{plate}.", part)
    return out
