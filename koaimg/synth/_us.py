"""Ultrasound phantom: a transverse suprapatellar B-mode cine of the femoral trochlea with exact cartilage truth.

The view is the standard one for femoral cartilage thickness (docs/domain-specs.md §4.1): knee in maximal flexion,
linear probe transverse above the patella. From the probe down the image shows skin, subcutaneous fat, the quadriceps
tendon, the suprapatellar (prefemoral) fat pad, the near-anechoic cartilage band with a sharp bright superficial
interface, the hyperechoic subchondral bone line (lateral condyle hump, intercondylar notch/groove dipping deeper,
medial condyle hump) and the acoustic shadow below it.

Geometry is built first, image formation second, so the truth never depends on the rendering: the bone line is a
dense polyline (0.01 mm vertices), the cartilage surface is its normal offset by the thickness ``h(s)`` (thickness is
the distance perpendicular to the bone line, the sonographer's convention), and the partial-volume cartilage fraction
of every pixel is the exact area of that polygon inside the pixel (vertical extent exact, 16 sub-columns per pixel).

Coordinates: depth ``y`` runs down the rows, lateral ``x`` along the columns, both in mm with pixel ``(row, col)``
centred at ``(row, col) * mm_per_pixel``. Pixel positions in the truth are continuous ``(row, col)`` with integers at
pixel centres (the ``scipy.ndimage.map_coordinates`` convention). Depths are displayed depths at 1540 m/s.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from ..core._enums import KneeSide
from ..core._errors import GeometryError, KoaimgError
from ..core._ultrasound import UltrasoundImage
from ..io._atomic import atomic_path, atomic_write_text
from ..io._dicom_us_write import write_ultrasound_dicom
from ._write import visit_date

#: measurement sites in anatomical order (lateral condyle, intercondylar notch, medial condyle)
SITES = ("LC", "IN", "MC")

#: tissue codes of ``USPhantom.labels``
US_TISSUES = {"skin": 1, "subcutaneous_fat": 2, "tendon": 3, "fat_pad": 4, "cartilage": 5, "bone": 6}

#: the speed of sound the displayed depths assume (scanner convention, domain-specs §4.4)
SPEED_OF_SOUND_M_S = 1540.0

_DX_MM = 0.01  # bone polyline vertex spacing (chord error < 1e-5 mm at the tightest curvature allowed)
_CANVAS_MARGIN_MM = 8.0  # soft-tissue canvas reaches this far beyond the field (probe motion)
_MARGIN_MM = 25.0  # the bone line runs this far beyond each side of the field, so its ends are never seen
_SUBCOLS = 16  # x samples per pixel in the coverage rasteriser (y is exact)
_TRUTH_STEP = 5  # truth polylines keep every 5th vertex (0.05 mm)
_MIN_JACOBIAN = 0.2  # 1 + h·curvature must stay above this: the surface never folds in the groove
_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))

# echogenicity (relative backscatter amplitude) and interface reflectivity; tuned by eye against clinical images
_E_SKIN, _E_FAT, _E_SEPTA, _E_TENDON, _E_PAD, _E_CART, _E_BONE = 0.6, 0.06, 0.5, 0.55, 0.15, 0.012, 1.6
_R_SURFACE, _R_BONE, _R_LAYER = 4.0, 26.0, 0.25
_ALPHA_BONE_DB_MM = 10.0  # one-way bone attenuation: the bright line fades into shadow within ~0.5 mm
_REF_AMPLITUDE = 2.5  # amplitude displayed at full white before gain
_DISPLAY_SMOOTH_PX = 0.5  # scan-conversion interpolation of the displayed image
_SPECKLE_RHO = 0.6  # frame-to-frame correlation of the speckle pattern in a cine


def _pair(value: Any, name: str) -> tuple[float, float]:
    vals = tuple(float(v) for v in np.ravel(value))
    if len(vals) != 2:
        raise GeometryError(f"{name} must be two numbers (LC, MC), got {value!r}")
    return vals  # type: ignore[return-value]


def _per_site(value: float | Mapping[str, float] | tuple[float, ...], name: str) -> tuple[float, float, float]:
    """(LC, IN, MC) from one number, a mapping by site name (missing sites = 0) or a 3-sequence."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(SITES))
        if unknown:
            raise GeometryError(f"{name} names unknown sites {unknown}; use {list(SITES)}")
        vals = tuple(float(value.get(s, 0.0)) for s in SITES)
    elif np.isscalar(value):
        vals = (float(value),) * 3  # type: ignore[arg-type]
    else:
        vals = tuple(float(v) for v in value)  # type: ignore[union-attr]
        if len(vals) != 3:
            raise GeometryError(f"{name} must be one number, a dict by site or three values (LC, IN, MC), "
                                f"got {value!r}")
    if not all(math.isfinite(v) for v in vals):
        raise GeometryError(f"{name} must be finite, got {value!r}")
    return vals  # type: ignore[return-value]


@dataclass(frozen=True)
class USPhantomSpec:
    """Everything that shapes one ultrasound phantom; draw random ones with :func:`random_us_spec`.

    Anatomy is given for a right knee on a transverse view with the probe marker towards the patient's right, where
    the lateral condyle (LC) appears on the image left and the medial condyle (MC) on the right. ``side="left"``
    mirrors the image left-right, so a left knee shows MC on the left and LC on the right; site names stay anatomical.

    The bone line is a broad arch (curving away from the probe on both sides of the groove) from which two Gaussian
    condylar humps rise; the dip between them is the intercondylar notch/trochlear groove (IN, the deepest point
    between the humps, where the bone line is concave), the hump apexes (shallowest points) are LC and MC, and
    ``bone_depth_mm`` is the depth of the shallowest bone point.
    Thickness is perpendicular to the bone line: ``thickness_mm`` holds at the site centres and over a plateau of
    ``±site_plateau_mm`` along the bone, and blends smoothly (C2) between sites, so with the default plateau equal
    to the window every per-site definition (centre, window mean, area / length) gives the same number.

    Parameters
    ----------
    All lengths are in mm.

    mm_per_pixel, rows, cols : square pixel size and image size (480 x 640 at 0.1 mm = 48 x 64 mm field)
    side : "right" or "left" (knee side; left mirrors the image)
    bone_depth_mm : depth of the shallowest bone point
    groove_offset_mm : lateral position of the groove relative to the field centre, positive towards the MC side
    condyle_spacing_mm, condyle_height_mm, condyle_width_mm : (LC, MC) distance of each hump from the groove, its
        height and its Gaussian width
    arch_mm : how much deeper the underlying arch is 20 mm to either side of the groove
    thickness_mm : (LC, IN, MC) true cartilage thickness
    site_window_mm : half-width along the bone line of the window the per-site means and areas use
    site_plateau_mm : half-width of the constant-thickness plateau around each site (0 = smooth blend only)
    delta_mm : (LC, IN, MC) prescribed change from the baseline this follow-up was made from (None for a baseline)
    skin_mm, subcut_fat_mm, tendon_mm, tendon_width_mm : soft-tissue layers (tendon is a lens over the groove)
    frequency_mhz, psf_axial_fwhm_mm, psf_lateral_fwhm_mm : transducer and its point-spread function
    attenuation_db_cm_mhz : soft-tissue attenuation; the time-gain compensation assumes 0.5 dB/cm/MHz
    tgc_error_db : peak imperfection of the time-gain compensation over depth
    dynamic_range_db, gain_db, noise_floor_db : log compression, overall gain and the electronic noise level at the
        image bottom relative to full white
    n_frames, frame_time_ms : cine length and frame interval
    motion_mm, motion_tilt_deg : per-frame random-walk probe motion (lateral mm, tilt degrees; axial is a third)
    blur_px : typical extra motion blur of the frames other than the best (sharpest) one
    probe_shift_mm, probe_tilt_deg : probe pose of the best frame relative to the anatomy ((lateral, axial) shift and
        in-plane tilt about the probe-face centre); follow-ups move it to model repositioning
    anatomy_seed : draws the soft-tissue layout (septa, tendon, fat-pad texture), which belongs to the knee and so is
        kept by follow-ups; speckle, noise, TGC error and cine motion come from the seed of :func:`make_us_phantom`
    """

    mm_per_pixel: float = 0.1
    rows: int = 480
    cols: int = 640
    side: str = "right"
    bone_depth_mm: float = 17.0
    groove_offset_mm: float = 0.0
    condyle_spacing_mm: tuple[float, float] = (13.5, 12.5)
    condyle_height_mm: tuple[float, float] = (8.0, 7.0)
    condyle_width_mm: tuple[float, float] = (7.0, 6.5)
    arch_mm: float = 2.0
    thickness_mm: tuple[float, float, float] = (2.0, 2.6, 1.9)
    site_window_mm: float = 2.5
    site_plateau_mm: float = 2.5
    delta_mm: tuple[float, float, float] | None = None
    skin_mm: float = 1.8
    subcut_fat_mm: float = 4.0
    tendon_mm: float = 4.5
    tendon_width_mm: float = 34.0
    frequency_mhz: float = 12.0
    psf_axial_fwhm_mm: float = 0.2
    psf_lateral_fwhm_mm: float = 0.4
    attenuation_db_cm_mhz: float = 0.5
    tgc_error_db: float = 3.0
    dynamic_range_db: float = 45.0
    gain_db: float = 0.0
    noise_floor_db: float = -42.0
    n_frames: int = 8
    frame_time_ms: float = 40.0
    motion_mm: float = 0.15
    motion_tilt_deg: float = 0.3
    blur_px: float = 1.0
    probe_shift_mm: tuple[float, float] = (0.0, 0.0)
    probe_tilt_deg: float = 0.0
    anatomy_seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "side", KneeSide(self.side).value)
        except ValueError:
            raise GeometryError(f"an ultrasound phantom shows one knee, right or left, got side={self.side!r}") \
                from None
        if self.side not in ("right", "left"):
            raise GeometryError(f"an ultrasound phantom shows one knee, right or left, got side={self.side!r}")
        for name in ("condyle_spacing_mm", "condyle_height_mm", "condyle_width_mm", "probe_shift_mm"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        object.__setattr__(self, "thickness_mm", _per_site(self.thickness_mm, "thickness_mm"))
        if self.delta_mm is not None:
            object.__setattr__(self, "delta_mm", _per_site(self.delta_mm, "delta_mm"))
        for name in ("rows", "cols", "n_frames", "anatomy_seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if not (math.isfinite(self.mm_per_pixel) and self.mm_per_pixel > 0):
            raise GeometryError(f"mm_per_pixel must be positive, got {self.mm_per_pixel!r}")
        if self.rows < 32 or self.cols < 32 or self.n_frames < 1:
            raise GeometryError(f"phantom needs at least 32 x 32 pixels and one frame, got {self.rows} x {self.cols} "
                                f"x {self.n_frames}")
        if min(self.thickness_mm) < 0 or max(self.thickness_mm) > 6:
            raise GeometryError(f"cartilage thickness must be 0..6 mm per site, got {self.thickness_mm}")
        if min(*self.condyle_height_mm, *self.condyle_width_mm, *self.condyle_spacing_mm) <= 0:
            raise GeometryError("condyle spacing, height and width must be positive")
        if self.site_window_mm <= 0 or self.site_plateau_mm < 0:
            raise GeometryError(f"site window must be positive and plateau >= 0, got {self.site_window_mm}, "
                                f"{self.site_plateau_mm}")
        if self.n_frames > 1 and not self.frame_time_ms > 0:
            raise GeometryError(f"a cine needs a positive frame_time_ms, got {self.frame_time_ms!r}")

    @property
    def field_mm(self) -> tuple[float, float]:
        """tuple of 2 float: (depth, width) of the image in mm."""
        return self.rows * self.mm_per_pixel, self.cols * self.mm_per_pixel

    def thickness(self) -> dict[str, float]:
        """dict: true thickness by site name."""
        return dict(zip(SITES, self.thickness_mm, strict=True))


def random_us_spec(seed: int, **overrides: Any) -> USPhantomSpec:
    """A randomised but anatomically plausible spec (thickness 1.0-3.5 mm), for domain randomisation and tests.

    Draws are redone (deterministically) until the groove is wide enough for the drawn cartilage, so every result
    builds. ``anatomy_seed`` is ``seed``; ``overrides`` replace drawn fields.
    """
    rng = np.random.default_rng(seed)
    for _ in range(100):
        mpp = round(float(rng.uniform(0.08, 0.12)), 3)
        fields: dict[str, Any] = {
            "mm_per_pixel": mpp, "rows": round(48.0 / mpp), "cols": round(64.0 / mpp),
            "side": "right" if rng.random() < 0.5 else "left",
            "bone_depth_mm": rng.uniform(13.0, 20.0), "groove_offset_mm": rng.uniform(-4.0, 4.0),
            "condyle_spacing_mm": (rng.uniform(12.0, 15.0), rng.uniform(11.0, 14.0)),
            "condyle_height_mm": (rng.uniform(6.5, 9.5), rng.uniform(5.5, 8.5)),
            "condyle_width_mm": (rng.uniform(6.0, 8.0), rng.uniform(5.5, 7.5)), "arch_mm": rng.uniform(1.0, 3.5),
            "thickness_mm": (rng.uniform(1.0, 3.0), rng.uniform(1.4, 3.5), rng.uniform(1.0, 2.9)),
            "skin_mm": rng.uniform(1.2, 2.2), "subcut_fat_mm": rng.uniform(2.5, 6.0),
            "tendon_mm": rng.uniform(3.0, 6.0), "tendon_width_mm": rng.uniform(25.0, 40.0),
            "frequency_mhz": rng.uniform(10.0, 15.0),
            "psf_axial_fwhm_mm": rng.uniform(0.15, 0.3), "psf_lateral_fwhm_mm": rng.uniform(0.3, 0.6),
            "attenuation_db_cm_mhz": rng.uniform(0.4, 0.7), "tgc_error_db": rng.uniform(1.0, 4.0),
            "dynamic_range_db": rng.uniform(45.0, 60.0), "gain_db": rng.uniform(-4.0, 4.0),
            "noise_floor_db": rng.uniform(-48.0, -36.0), "anatomy_seed": int(seed),
        }
        fields.update(overrides)
        spec = USPhantomSpec(**fields)
        try:
            _geometry(spec)
        except GeometryError:
            continue
        return spec
    raise GeometryError("no valid random ultrasound spec in 100 draws; the overrides leave no room for the cartilage")


def follow_up_spec(spec: USPhantomSpec, delta_mm: float | Mapping[str, float], *, seed: int,
                   shift_mm: tuple[float, float] = (1.0, 3.0), tilt_deg: tuple[float, float] = (1.0, 3.0),
                   ) -> USPhantomSpec:
    """The same knee at a later visit: thickness changed by ``delta_mm`` per site, probe placed again.

    Parameters
    ----------
    spec : USPhantomSpec
        The baseline.
    delta_mm : float or dict
        Change Δ = follow-up − baseline (positive = thickening), one number for all sites or by site name
        (``{"LC": -0.2, "MC": -0.1}``; missing sites do not change). Recorded exactly in the follow-up truth.
    seed : int
        Draws the repositioning. Pass a different ``seed`` to :func:`make_us_phantom` for new speckle and noise.
    shift_mm, tilt_deg : (low, high)
        Range of the lateral probe shift (either direction) and tilt (either sign); axial shift is within ±0.5 mm.
    """
    delta = _per_site(delta_mm, "delta_mm")
    new = tuple(t + d for t, d in zip(spec.thickness_mm, delta, strict=True))
    if min(new) < 0:
        raise GeometryError(f"thickness change {delta} would make cartilage thinner than 0 mm (baseline "
                            f"{spec.thickness_mm})")
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=2)
    lateral = float(sign[0] * rng.uniform(*shift_mm))
    axial = float(rng.uniform(-0.5, 0.5))
    tilt = float(sign[1] * rng.uniform(*tilt_deg))
    return dataclasses.replace(
        spec, thickness_mm=new, delta_mm=delta,
        probe_shift_mm=(spec.probe_shift_mm[0] + lateral, spec.probe_shift_mm[1] + axial),
        probe_tilt_deg=spec.probe_tilt_deg + tilt)


# geometry -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    """Bone polyline, normals, thickness and cartilage surface in the anatomy frame (mm), plus the site indices."""

    x: np.ndarray
    y: np.ndarray
    nx: np.ndarray  # unit normal from bone towards the skin
    ny: np.ndarray
    s: np.ndarray  # arc length along the polyline, 0 at the IN site, increasing with x
    h: np.ndarray
    site_index: dict[str, int]

    @property
    def surface(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x + self.h * self.nx, self.y + self.h * self.ny


def _smootherstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * u * (u * (6.0 * u - 15.0) + 10.0)


def _thickness_profile(s: np.ndarray, centres: list[float], values: list[float], plateau: float) -> np.ndarray:
    """Constant ``values`` within ±plateau of each centre, C2 blends between; centres ascending."""
    h = np.full_like(s, values[0])
    for (c0, v0), (c1, v1) in zip(zip(centres, values, strict=True), zip(centres[1:], values[1:], strict=True),
                                  strict=False):
        a, b = c0 + plateau, c1 - plateau
        seg = s > a
        w = _smootherstep((s[seg] - a) / (b - a))
        h[seg] = v0 * (1.0 - w) + v1 * w  # exactly v0 / v1 at the ends (v0 + (v1 - v0) * w is not)
    return h


def _geometry(spec: USPhantomSpec) -> _Geometry:
    mpp = spec.mm_per_pixel
    xc = (spec.cols - 1) / 2.0 * mpp  # field centre; mirroring about it maps column c to cols-1-c exactly
    half = (spec.cols - 1) / 2.0 * mpp + _MARGIN_MM
    n = math.ceil(half / _DX_MM)
    x = xc + np.arange(-n, n + 1) * _DX_MM
    right = spec.side == "right"
    u = x if right else 2.0 * xc - x  # right-knee lateral coordinate
    du = 1.0 if right else -1.0
    xg = xc + spec.groove_offset_mm
    y = np.zeros_like(x)
    y1 = np.zeros_like(x)
    y2 = np.zeros_like(x)
    hump = {}
    for name, centre, a, w in (("LC", xg - spec.condyle_spacing_mm[0], spec.condyle_height_mm[0],
                                spec.condyle_width_mm[0]),
                               ("MC", xg + spec.condyle_spacing_mm[1], spec.condyle_height_mm[1],
                                spec.condyle_width_mm[1])):
        z = (u - centre) / w
        g = np.exp(-0.5 * z * z)
        y -= a * g
        y1 += a * g * z / w * du
        y2 -= a * g * (z * z - 1.0) / (w * w)
        hump[name] = centre
    k = spec.arch_mm / 400.0  # the whole trochlea arches away from the probe: arch_mm deeper 20 mm from the groove
    y += k * (u - xg) ** 2
    y1 += 2.0 * k * (u - xg) * du
    y2 += 2.0 * k
    y += spec.bone_depth_mm - y.min()

    # sites: hump apexes (shallowest) and the deepest point between them
    ul, um = hump["LC"], hump["MC"]
    between = (u > ul) & (u < um)
    lc_side, mc_side = u < xg, u > xg
    i_lc = int(np.flatnonzero(lc_side)[np.argmin(y[lc_side])])
    i_mc = int(np.flatnonzero(mc_side)[np.argmin(y[mc_side])])
    idx_between = np.flatnonzero(between)
    i_in = int(idx_between[np.argmax(y[between])])
    if not (min(i_lc, i_mc) < i_in < max(i_lc, i_mc)) or y[i_in] - max(y[i_lc], y[i_mc]) < 0.5:
        raise GeometryError("condyles too close or too flat: the bone line has no intercondylar groove between them")

    norm = np.sqrt(1.0 + y1 * y1)
    nx, ny = y1 / norm, -1.0 / norm
    chord = np.hypot(np.diff(x), np.diff(y))
    s = np.concatenate([[0.0], np.cumsum(chord)])
    s -= s[i_in]
    sites = {"LC": i_lc, "IN": i_in, "MC": i_mc}
    order = sorted(SITES, key=lambda k: s[sites[k]])
    centres = [float(s[sites[k]]) for k in order]
    values = [spec.thickness()[k] for k in order]
    gaps = np.diff(centres) - 2.0 * spec.site_plateau_mm
    if gaps.min() < 2.0 or spec.site_window_mm > min(np.diff(centres)) / 2.0:
        raise GeometryError(f"sites {dict(zip(order, np.round(centres, 2), strict=True))} mm along the bone are too "
                            f"close for plateaus of ±{spec.site_plateau_mm} mm and windows of ±{spec.site_window_mm} "
                            "mm; spread the condyles or shrink the plateau")
    h = _thickness_profile(s, centres, values, spec.site_plateau_mm)
    curvature = y2 / norm**3  # > 0 on the convex humps, < 0 in the concave groove (centre of curvature above)
    jac = 1.0 + h * curvature
    if jac.min() < _MIN_JACOBIAN:
        raise GeometryError(f"cartilage of {h[np.argmin(jac)]:.2f} mm does not fit the groove (radius of curvature "
                            f"{1 / abs(curvature[np.argmin(jac)]):.2f} mm): widen the condyles or thin the cartilage")
    return _Geometry(x=x, y=y, nx=nx, ny=ny, s=s, h=h, site_index=sites)


# exact partial-volume rasterisation -----------------------------------------------------------------------------------
def coverage(poly_rc: np.ndarray, shape: tuple[int, int], *, subcols: int = _SUBCOLS) -> np.ndarray:
    """Fraction of each pixel inside a closed simple polygon, exact along rows and sampled at ``subcols`` per column.

    ``poly_rc`` is (N, 2) continuous (row, col) with pixel centres at integers. Crossings of the polygon with every
    sub-column are paired even-odd; each interval adds its exact overlap with every pixel row it spans.
    """
    rows, cols = shape
    r = poly_rc[:, 0].astype(np.float64)
    c = poly_rc[:, 1].astype(np.float64)
    r0, r1 = r, np.roll(r, -1)
    c0, c1 = c, np.roll(c, -1)
    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
    n_sub = cols * subcols
    # sub-column j sits at col -0.5 + (j + 0.5) / subcols; half-open [lo, hi) so vertices count once
    j_lo = np.clip(np.ceil((lo + 0.5) * subcols - 0.5), 0, n_sub).astype(np.int64)
    j_hi = np.clip(np.ceil((hi + 0.5) * subcols - 0.5), 0, n_sub).astype(np.int64)
    count = np.where(hi > lo, j_hi - j_lo, 0)
    edge = np.repeat(np.arange(r.size), count)
    if edge.size == 0:
        return np.zeros(shape, dtype=np.float64)
    start = np.repeat(j_lo - np.concatenate([[0], np.cumsum(count)[:-1]]), count)
    j = start + np.arange(edge.size)
    xs = -0.5 + (j + 0.5) / subcols
    t = (xs - c0[edge]) / (c1[edge] - c0[edge])
    ys = r0[edge] + t * (r1[edge] - r0[edge])
    order = np.lexsort((ys, j))
    j, ys = j[order], ys[order]
    if j.size % 2 or np.any(j[0::2] != j[1::2]):
        raise GeometryError("coverage polygon is not closed or not simple; cannot rasterise it")
    col = j[0::2] // subcols
    ua = np.clip(ys[0::2] + 0.5, 0.0, rows)  # pixel row k spans [k, k + 1] in u
    ub = np.clip(ys[1::2] + 0.5, 0.0, rows)
    keep = ub > ua
    col, ua, ub = col[keep], ua[keep], ub[keep]
    ia = np.minimum(np.floor(ua).astype(np.int64), rows - 1)
    ib = np.floor(ub).astype(np.int64)  # may equal rows (then its partial part is 0)
    same = ia == ib
    size = (rows + 1) * cols
    direct = np.bincount(ia * cols + col, weights=np.where(same, ub - ua, ia + 1 - ua), minlength=size)
    direct += np.bincount(ib[~same] * cols + col[~same], weights=ub[~same] - ib[~same], minlength=size)
    full = ~same & (ib > ia + 1)
    diff = np.bincount((ia[full] + 1) * cols + col[full], minlength=size).astype(np.float64)
    diff -= np.bincount(ib[full] * cols + col[full], minlength=size)
    cov = direct.reshape(rows + 1, cols) + np.cumsum(diff.reshape(rows + 1, cols), axis=0)
    return np.clip(cov[:rows] / subcols, 0.0, 1.0)


# truth ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class USSiteTruth:
    """Ground truth of one measurement site (LC, IN or MC); positions are in the best frame.

    ``regional_mean_mm`` = cartilage cross-sectional area between the normals at the window ends / length of the
    cartilage midline (the curve at half thickness), which equals the thickness exactly wherever it is uniform.
    """

    name: str
    thickness_mm: float
    delta_mm: float | None
    window_half_mm: float
    mean_thickness_mm: float
    area_mm2: float
    bone_length_mm: float
    surface_length_mm: float
    midline_length_mm: float
    regional_mean_mm: float
    arc_mm: float
    bone_px: tuple[float, float]
    surface_px: tuple[float, float]
    normal: tuple[float, float]
    window_bone_px: tuple[tuple[float, float], tuple[float, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class USTruth:
    """Everything known exactly about a phantom: sites, bone line, cartilage surface, frames' probe poses.

    Polylines are (N, 2) continuous (row, col) in the best frame, 0.05 mm apart along the bone, covering the field;
    ``normal_px`` are unit (d_row, d_col) from bone towards skin; ``arc_mm`` is arc length along the bone line from
    the IN site, increasing towards the image right. ``frames`` gives each frame's probe pose (lateral and axial
    shift in mm, tilt in degrees, relative to the anatomy), its extra blur, and the site positions in that frame.
    """

    side: str
    spacing_mm: tuple[float, float]
    shape: tuple[int, int]
    n_frames: int
    best_frame: int
    frame_time_ms: float | None
    speed_of_sound_m_s: float
    seed: int
    sites: dict[str, USSiteTruth]
    bone_line_px: np.ndarray
    surface_line_px: np.ndarray
    normal_px: np.ndarray
    thickness_along_mm: np.ndarray
    arc_mm: np.ndarray
    frames: list[dict[str, Any]]
    cartilage_area_in_field_mm2: float
    spec: dict[str, Any]
    convention: str = ("pixel (row, col) centred at (row, col) * mm_per_pixel; thickness perpendicular to the bone "
                       "line; LC on the image left for a right knee (probe marker to the patient's right)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as nested lists; polylines rounded to 1e-6 px)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = np.round(value, 6).tolist()
            elif f.name == "sites":
                value = {k: v.to_dict() for k, v in value.items()}
            out[f.name] = value
        return json.loads(json.dumps(out))  # tuples -> lists: the dict equals what truth.json reads back as


@dataclass(frozen=True, eq=False)
class USPhantom:
    """One ultrasound phantom: 8-bit frames, calibration, exact truth and the true cartilage per frame.

    ``fractions`` is the cartilage partial-volume fraction (T, rows, cols); ``masks`` the true cartilage mask
    (fraction >= 0.5); ``labels`` the tissue map (codes in ``US_TISSUES``).
    """

    frames: np.ndarray
    spacing_mm: tuple[float, float]
    frame_time_ms: float | None
    truth: USTruth
    masks: np.ndarray
    fractions: np.ndarray
    labels: np.ndarray
    spec: USPhantomSpec

    @property
    def best_frame(self) -> int:
        """int: index of the sharpest frame, taken at the spec's probe pose."""
        return self.truth.best_frame

    @property
    def mask(self) -> np.ndarray:
        """(rows, cols) bool: true cartilage mask of the best frame."""
        return self.masks[self.best_frame]

    def to_ultrasound_image(self) -> UltrasoundImage:
        """The frames as koaimg's calibrated ultrasound type (what the readers return)."""
        return UltrasoundImage(frames=self.frames, spacing_mm=self.spacing_mm,
                               frame_time_ms=self.frame_time_ms if self.frames.shape[0] > 1 else None,
                               source="koaimg US phantom", meta={"phantom_seed": self.truth.seed})


# image formation ------------------------------------------------------------------------------------------------------
def _rot(theta_deg: float) -> tuple[float, float]:
    t = math.radians(theta_deg)
    return math.cos(t), math.sin(t)


def _anat_to_img(x: np.ndarray, y: np.ndarray, pose: tuple[float, float, float], xc: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy mm -> image mm for a probe pose (tx, ty, tilt): p_img = R(-tilt)(p - c - t) + c, c = probe centre."""
    cs, sn = _rot(pose[2])
    dx, dy = x - xc - pose[0], y - pose[1]
    return cs * dx + sn * dy + xc, -sn * dx + cs * dy


def _img_to_anat(x: np.ndarray, y: np.ndarray, pose: tuple[float, float, float], xc: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    cs, sn = _rot(pose[2])
    dx = x - xc
    return cs * dx - sn * y + xc + pose[0], sn * dx + cs * y + pose[1]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: tuple[float, float]) -> np.ndarray:
    """Unit-variance Gaussian random field with Gaussian correlation (sigma in pixels per axis), by FFT."""
    fast = (sp_fft.next_fast_len(shape[0], real=True), sp_fft.next_fast_len(shape[1], real=True))
    noise = rng.standard_normal(fast, dtype=np.float32)
    ky = np.fft.fftfreq(fast[0])[:, None]
    kx = np.fft.rfftfreq(fast[1])[None, :]
    filt = np.exp(-2.0 * math.pi**2 * ((sigma_px[0] * ky) ** 2 + (sigma_px[1] * kx) ** 2)).astype(np.float32)
    out = sp_fft.irfft2(sp_fft.rfft2(noise) * filt, s=fast)[: shape[0], : shape[1]].astype(np.float64)
    return out / (out.std() + 1e-12)


def _wobble(rng: np.random.Generator, amplitude: float, periods_mm: tuple[float, ...]):
    amps = rng.uniform(0.3, 1.0, len(periods_mm))
    amps *= amplitude / amps.sum()
    phases = rng.uniform(0, 2 * math.pi, len(periods_mm))

    def f(x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x, dtype=np.float64)
        for a, p, ph in zip(amps, periods_mm, phases, strict=True):
            out += a * np.sin(2 * math.pi * x / p + ph)
        return out

    return f


@dataclass
class _Canvas:
    """Soft-tissue echogenicity and tissue codes in the anatomy frame (everything above the cartilage)."""

    x0: float
    y0: float
    step: float
    echo: np.ndarray
    tissue: np.ndarray


def _soft_tissue(spec: USPhantomSpec, geo: _Geometry, bounds: tuple[float, float, float, float],
                 rng: np.random.Generator) -> _Canvas:
    step = spec.mm_per_pixel
    x0, x1, y0, y1 = bounds
    nx, ny = math.ceil((x1 - x0) / step) + 2, math.ceil((y1 - y0) / step) + 2
    xs = x0 + np.arange(nx) * step
    ys = (y0 + np.arange(ny) * step)[:, None]
    xg = float(geo.x[geo.site_index["IN"]])

    fat_bottom = spec.skin_mm + spec.subcut_fat_mm + _wobble(rng, 0.6, (9.0, 17.0, 31.0))(xs)
    xt = xg + rng.uniform(-3.0, 3.0)
    lens = np.sqrt(np.clip(1.0 - ((xs - xt) / (spec.tendon_width_mm / 2.0)) ** 2, 0.0, None))
    tendon_bottom = fat_bottom + spec.tendon_mm * lens * (1.0 + 0.08 * _wobble(rng, 1.0, (7.0, 13.0))(xs))

    tissue = np.full((ny, nx), US_TISSUES["fat_pad"], dtype=np.uint8)
    tissue[ys < tendon_bottom] = US_TISSUES["tendon"]
    tissue[ys < fat_bottom] = US_TISSUES["subcutaneous_fat"]

    mpp = step
    lob = _smooth_noise(rng, (ny, nx), (0.8 / mpp, 1.2 / mpp))
    septa_f = _smooth_noise(rng, (ny, nx), (0.7 / mpp, 3.0 / mpp))
    septa = np.exp(-((septa_f / 0.12) ** 2))
    fib = 0.5 + 0.5 * np.tanh(1.5 * _smooth_noise(rng, (ny, nx), (0.1 / mpp, 5.0 / mpp)))
    pad = _smooth_noise(rng, (ny, nx), (1.5 / mpp, 2.0 / mpp))

    echo = np.empty((ny, nx), dtype=np.float64)
    fat = tissue == US_TISSUES["subcutaneous_fat"]
    echo[fat] = _E_FAT * (1.0 + 0.25 * lob[fat]) + _E_SEPTA * septa[fat]
    ten = tissue == US_TISSUES["tendon"]
    echo[ten] = _E_TENDON * (0.5 + 0.5 * fib[ten])
    padm = tissue == US_TISSUES["fat_pad"]
    echo[padm] = _E_PAD * (1.0 + 0.3 * pad[padm] + 0.15 * lob[padm])
    # bright tendon borders (fascia)
    for boundary in (fat_bottom, np.where(lens > 0, tendon_bottom, np.nan)):
        echo += np.nan_to_num(_R_LAYER * np.exp(-(((ys - boundary) / 0.08) ** 2)))
    np.clip(echo, 0.02, None, out=echo)
    return _Canvas(x0=x0, y0=y0, step=step, echo=echo, tissue=tissue)


def _frame_poses(spec: USPhantomSpec, rng: np.random.Generator) -> tuple[list[tuple[float, float, float]], int,
                                                                          np.ndarray]:
    n = spec.n_frames
    best = int(rng.integers(n))
    steps = rng.normal(0.0, 1.0, (n, 3)) * np.array([spec.motion_mm, spec.motion_mm / 3.0, spec.motion_tilt_deg])
    walk = np.cumsum(steps, axis=0)
    walk -= walk[best]
    base = np.array([spec.probe_shift_mm[0], spec.probe_shift_mm[1], spec.probe_tilt_deg])
    poses = [tuple(float(v) for v in base + walk[k]) for k in range(n)]
    blur = rng.uniform(0.6, 1.4, n) * spec.blur_px
    blur[best] = 0.0
    return poses, best, blur  # type: ignore[return-value]


def _psf_sigma_px(spec: USPhantomSpec) -> tuple[float, float]:
    return spec.psf_axial_fwhm_mm / _FWHM / spec.mm_per_pixel, spec.psf_lateral_fwhm_mm / _FWHM / spec.mm_per_pixel


def _speckle_norm(sigma: tuple[float, float]) -> float:
    """Std of white noise after the PSF filter, so the speckle field has unit mean power."""
    delta = np.zeros((41, 41))
    delta[20, 20] = 1.0
    k = ndimage.gaussian_filter(delta, sigma, mode="constant")
    return float(np.sqrt((k * k).sum()))


def _render_frame(spec: USPhantomSpec, frac_s: np.ndarray, frac_b: np.ndarray, canvas: _Canvas,
                  pose: tuple[float, float, float], xc: float, speckle: np.ndarray, noise: np.ndarray,
                  tgc_err_db: np.ndarray, alpha_db_mm: float, blur: float, sigma: tuple[float, float]
                  ) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = spec.rows, spec.cols
    mpp = spec.mm_per_pixel
    yi = (np.arange(rows) * mpp)[:, None]
    xi = (np.arange(cols) * mpp)[None, :]
    xa, ya = _img_to_anat(xi, yi, pose, xc)
    coords = np.stack([(ya - canvas.y0) / canvas.step, (xa - canvas.x0) / canvas.step])
    soft = ndimage.map_coordinates(canvas.echo, coords, order=1, mode="nearest")
    tissue = ndimage.map_coordinates(canvas.tissue, coords, order=0, mode="nearest")
    skin = np.broadcast_to(yi < spec.skin_mm, (rows, cols))
    soft = np.where(skin, _E_SKIN, soft)
    tissue = np.where(skin, US_TISSUES["skin"], tissue).astype(np.uint8)

    frac_c = frac_s - frac_b
    echo = soft * (1.0 - frac_s) + _E_CART * frac_c + _E_BONE * frac_b
    # specular interfaces: the part of each boundary facing the beam (row derivative of the fraction, i.e. |n_y|)
    d_s = np.diff(frac_s, axis=0, prepend=0.0)
    d_b = np.diff(frac_b, axis=0, prepend=0.0)
    spec_map = _R_SURFACE * np.clip(d_s, 0.0, None) + _R_BONE * np.clip(d_b, 0.0, None)
    spec_map[0] += 1.5  # probe-skin contact
    spec_map = ndimage.gaussian_filter(spec_map, sigma, mode="nearest")
    amp = echo * speckle + spec_map * (0.8 + 0.2 * speckle)

    alpha = alpha_db_mm + _ALPHA_BONE_DB_MM * frac_b  # one-way dB/mm
    travelled = (np.cumsum(alpha, axis=0) - 0.5 * alpha) * mpp
    amp = amp * 10.0 ** (-2.0 * travelled / 20.0)

    nominal = spec.attenuation_db_cm_mhz / 10.0 * spec.frequency_mhz  # TGC assumes the nominal attenuation
    depth = np.arange(rows) * mpp
    tgc_db = 2.0 * nominal * depth + tgc_err_db + spec.gain_db
    bottom_gain = 2.0 * nominal * depth[-1]
    sigma_n = _REF_AMPLITUDE * 10.0 ** ((spec.noise_floor_db - bottom_gain) / 20.0)
    received = np.abs(amp + sigma_n * noise)
    level_db = 20.0 * np.log10(np.maximum(received, 1e-12) / _REF_AMPLITUDE) + tgc_db[:, None]
    grey = 255.0 * np.clip(1.0 + level_db / spec.dynamic_range_db, 0.0, 1.0)
    # scan conversion smooths a little; motion blurs the frames other than the best one, mostly laterally
    smooth = (math.hypot(_DISPLAY_SMOOTH_PX, 0.5 * blur), math.hypot(_DISPLAY_SMOOTH_PX, blur))
    grey = ndimage.gaussian_filter(grey, smooth, mode="nearest")
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8), tissue


def _site_truth(spec: USPhantomSpec, geo: _Geometry, name: str, to_px) -> USSiteTruth:
    i = geo.site_index[name]
    w = spec.site_window_mm
    sc = geo.s[i]
    a, b = sc - w, sc + w
    inner = np.flatnonzero((geo.s > a) & (geo.s < b))

    def at(sv: float) -> tuple[float, float, float, float, float]:
        xv = float(np.interp(sv, geo.s, geo.x))
        yv = float(np.interp(sv, geo.s, geo.y))
        nxv = float(np.interp(sv, geo.s, geo.nx))
        nyv = float(np.interp(sv, geo.s, geo.ny))
        nn = math.hypot(nxv, nyv)
        hv = float(np.interp(sv, geo.s, geo.h))
        return xv, yv, nxv / nn, nyv / nn, hv

    ea, eb = at(a), at(b)
    xb = np.concatenate([[ea[0]], geo.x[inner], [eb[0]]])
    yb = np.concatenate([[ea[1]], geo.y[inner], [eb[1]]])
    nxw = np.concatenate([[ea[2]], geo.nx[inner], [eb[2]]])
    nyw = np.concatenate([[ea[3]], geo.ny[inner], [eb[3]]])
    hw = np.concatenate([[ea[4]], geo.h[inner], [eb[4]]])
    sw = np.concatenate([[a], geo.s[inner], [b]])
    xs, ys = xb + hw * nxw, yb + hw * nyw
    xm, ym = xb + 0.5 * hw * nxw, yb + 0.5 * hw * nyw
    px, py = np.concatenate([xb, xs[::-1]]), np.concatenate([yb, ys[::-1]])
    area = 0.5 * abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1))))

    def length(xv: np.ndarray, yv: np.ndarray) -> float:
        return float(np.hypot(np.diff(xv), np.diff(yv)).sum())

    mid_len = length(xm, ym)
    mean_h = float(np.sum(0.5 * (hw[1:] + hw[:-1]) * np.diff(sw)) / (b - a))
    bone_r, bone_c, nr, nc = to_px(geo.x[i], geo.y[i], geo.nx[i], geo.ny[i])
    h = float(geo.h[i])
    ends = [to_px(e[0], e[1], e[2], e[3])[:2] for e in (ea, eb)]
    delta = None if spec.delta_mm is None else spec.delta_mm[SITES.index(name)]
    return USSiteTruth(
        name=name, thickness_mm=h, delta_mm=delta, window_half_mm=w, mean_thickness_mm=mean_h, area_mm2=area,
        bone_length_mm=length(xb, yb), surface_length_mm=length(xs, ys), midline_length_mm=mid_len,
        regional_mean_mm=area / mid_len, arc_mm=float(sc),
        bone_px=(bone_r, bone_c), surface_px=(bone_r + h * nr / spec.mm_per_pixel, bone_c + h * nc / spec.mm_per_pixel),
        normal=(nr, nc), window_bone_px=(ends[0], ends[1]))


def make_us_phantom(spec: USPhantomSpec, *, seed: int) -> USPhantom:
    """Render a phantom cine and its exact truth; the same spec and seed give identical frames and truth.

    The best frame (sharpest, no motion blur) is taken at the spec's probe pose; other frames wander around it by
    ``motion_mm``/``motion_tilt_deg`` and carry extra blur. Speckle, noise, TGC error, cine motion and the choice of
    best frame come from ``seed``; the soft-tissue layout comes from ``spec.anatomy_seed`` (it is the same knee).

    Raises
    ------
    GeometryError
        The spec's cartilage does not fit its bone shape (groove too tight, sites too close).
    """
    geo = _geometry(spec)
    rng = np.random.default_rng(seed)
    mpp = spec.mm_per_pixel
    rows, cols = spec.rows, spec.cols
    xc = (cols - 1) / 2.0 * mpp
    poses, best, blurs = _frame_poses(spec, rng)

    # anatomy-frame depth reached by any frame: the bone and surface polygons close well below it
    cy = np.array([0.0, 0.0, rows - 1, rows - 1]) * mpp
    cx = np.array([0.0, cols - 1, 0.0, cols - 1]) * mpp
    corners = [_img_to_anat(cx, cy, p, xc) for p in poses]
    ay = np.concatenate([c[1] for c in corners])
    # soft tissue belongs to the knee, not the scan: fixed bounds and its own seed, so a follow-up shows the same
    # septa and tendon seen through a moved probe (poses beyond the margin repeat the canvas edge)
    depth_mm, width_mm = spec.field_mm
    bounds = (-_CANVAS_MARGIN_MM, width_mm + _CANVAS_MARGIN_MM, -_CANVAS_MARGIN_MM, depth_mm + _CANVAS_MARGIN_MM)
    canvas = _soft_tissue(spec, geo, bounds, np.random.default_rng(spec.anatomy_seed))

    sigma = _psf_sigma_px(spec)
    norm = _speckle_norm(sigma) * math.sqrt(2.0)
    depth = np.arange(rows) * mpp
    phases = rng.uniform(0, 2 * math.pi, 3)
    tgc_err = sum(np.cos(2 * math.pi * depth * k / (depth[-1] * 1.7) + phases[k - 1]) / k for k in (1, 2, 3))
    tgc_err = spec.tgc_error_db * tgc_err / (np.abs(tgc_err).max() + 1e-12)
    alpha = spec.attenuation_db_cm_mhz / 10.0 * spec.frequency_mhz * rng.uniform(0.9, 1.1)

    sx, sy = geo.surface
    far = float(ay.max()) + 100.0
    frames = np.empty((spec.n_frames, rows, cols), dtype=np.uint8)
    fractions = np.empty((spec.n_frames, rows, cols), dtype=np.float32)
    labels = np.empty((spec.n_frames, rows, cols), dtype=np.uint8)
    white = None
    frame_truth: list[dict[str, Any]] = []
    for k, pose in enumerate(poses):
        polys = []
        for px_, py_ in ((sx, sy), (geo.x, geo.y)):
            xs_ = np.concatenate([px_, [px_[-1], px_[0]]])
            ys_ = np.concatenate([py_, [far, far]])
            xi, yi = _anat_to_img(xs_, ys_, pose, xc)
            polys.append(np.stack([yi / mpp, xi / mpp], axis=1))
        frac_s = coverage(polys[0], (rows, cols))
        frac_b = np.minimum(coverage(polys[1], (rows, cols)), frac_s)
        w_new = (rng.standard_normal((rows, cols), dtype=np.float32)
                 + 1j * rng.standard_normal((rows, cols), dtype=np.float32))
        white = w_new if white is None else _SPECKLE_RHO * white + math.sqrt(1 - _SPECKLE_RHO**2) * w_new
        field_ = (ndimage.gaussian_filter(white.real, sigma, mode="wrap")
                  + 1j * ndimage.gaussian_filter(white.imag, sigma, mode="wrap"))
        speckle = np.abs(field_) / norm
        noise = (rng.standard_normal((rows, cols)) + 1j * rng.standard_normal((rows, cols))) / math.sqrt(2.0)
        frames[k], tissue = _render_frame(spec, frac_s, frac_b, canvas, pose, xc, speckle, noise, tgc_err, alpha,
                                          float(blurs[k]), sigma)
        frac_c = frac_s - frac_b
        fractions[k] = frac_c
        tissue[frac_c >= 0.5] = US_TISSUES["cartilage"]
        tissue[frac_b >= 0.5] = US_TISSUES["bone"]
        labels[k] = tissue
        to_px = _to_px_fn(pose, xc, mpp)
        sites_k = {}
        for name in SITES:
            i = geo.site_index[name]
            r, c, nr, nc = to_px(geo.x[i], geo.y[i], geo.nx[i], geo.ny[i])
            hh = float(geo.h[i]) / mpp
            sites_k[name] = {"bone_px": [r, c], "surface_px": [r + hh * nr, c + hh * nc], "normal": [nr, nc]}
        frame_truth.append({"index": k, "probe_shift_mm": [pose[0], pose[1]], "probe_tilt_deg": pose[2],
                            "blur_px": float(blurs[k]), "sites": sites_k})

    to_px = _to_px_fn(poses[best], xc, mpp)
    sites = {name: _site_truth(spec, geo, name, to_px) for name in SITES}
    br, bc, nr, nc = to_px(geo.x, geo.y, geo.nx, geo.ny)
    keep = (bc >= -0.5) & (bc <= cols - 0.5) & (br >= -0.5) & (br <= rows - 0.5)
    keep_idx = np.flatnonzero(keep)
    keep_idx = keep_idx[(keep_idx - keep_idx[0]) % _TRUTH_STEP == 0] if keep_idx.size else keep_idx
    hpx = geo.h[keep_idx] / mpp
    bone = np.stack([br[keep_idx], bc[keep_idx]], axis=1)
    normals = np.stack([nr[keep_idx], nc[keep_idx]], axis=1)
    masks = fractions >= 0.5
    truth = USTruth(
        side=spec.side, spacing_mm=(mpp, mpp), shape=(rows, cols), n_frames=spec.n_frames, best_frame=best,
        frame_time_ms=spec.frame_time_ms if spec.n_frames > 1 else None, speed_of_sound_m_s=SPEED_OF_SOUND_M_S,
        seed=int(seed), sites=sites, bone_line_px=bone, surface_line_px=bone + hpx[:, None] * normals,
        normal_px=normals, thickness_along_mm=geo.h[keep_idx].copy(), arc_mm=geo.s[keep_idx].copy(),
        frames=frame_truth, cartilage_area_in_field_mm2=float(fractions[best].sum(dtype=np.float64) * mpp * mpp),
        spec=json.loads(json.dumps(dataclasses.asdict(spec))))
    return USPhantom(frames=frames, spacing_mm=(mpp, mpp), frame_time_ms=truth.frame_time_ms, truth=truth,
                     masks=masks, fractions=fractions, labels=labels, spec=spec)


def _to_px_fn(pose: tuple[float, float, float], xc: float, mpp: float):
    cs, sn = _rot(pose[2])

    def to_px(x, y, nx, ny):
        xi, yi = _anat_to_img(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), pose, xc)
        nxi, nyi = cs * nx + sn * ny, -sn * nx + cs * ny
        if np.ndim(xi) == 0:
            return float(yi) / mpp, float(xi) / mpp, float(nyi), float(nxi)
        return yi / mpp, xi / mpp, nyi, nxi

    return to_px


# writing --------------------------------------------------------------------------------------------------------------
_FORMATS = ("dicom", "png", "mask")


def write_us_phantom(phantom: USPhantom, folder: str | Path, *, pseudonym: str, visit: str,
                     formats: tuple[str, ...] = ("dicom", "png")) -> dict[str, Path]:
    """Write a phantom as a scanner would export it, plus its truth; same phantom, same bytes.

    Files in ``folder``: ``us.dcm`` (calibrated US Image, or US Multi-frame with Frame Time for a cine), ``us.png``
    (best frame, 8-bit grey) with ``us.png.json`` (``pixel_spacing_mm`` as [row, col], since PNG has no
    calibration), ``mask.png`` (best-frame true cartilage, 0/255, with ``"mask"`` in ``formats``) and always
    ``truth.json``.

    Returns
    -------
    dict
        Path of each written file by kind (``dicom``, ``png``, ``png_sidecar``, ``mask``, ``truth``).
    """
    from PIL import Image

    unknown = sorted(set(formats) - set(_FORMATS))
    if unknown:
        raise KoaimgError(f"unknown phantom output formats {unknown}; choose from {list(_FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    mpp = phantom.spacing_mm[0]
    best = phantom.best_frame
    if "dicom" in formats:
        multi = phantom.frames.shape[0] > 1
        out["dicom"] = write_ultrasound_dicom(phantom.frames, folder / "us.dcm", mm_per_pixel=mpp,
                                              frame_time_ms=phantom.frame_time_ms if multi else None,
                                              pseudonym=pseudonym, seed=str(visit), side=phantom.spec.side,
                                              study_date=visit_date(visit))
    for kind, name, image in (("png", "us.png", phantom.frames[best]),
                              ("mask", "mask.png", phantom.mask.astype(np.uint8) * 255)):
        if kind in formats:
            with atomic_path(folder / name) as tmp:
                Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")
            out[kind] = folder / name
    if "png" in formats:
        side = {"pixel_spacing_mm": list(phantom.spacing_mm), "frame_index": best}
        out["png_sidecar"] = atomic_write_text(folder / "us.png.json", json.dumps(side, indent=1) + "\n")
    truth = {"pseudonym": pseudonym, "visit": str(visit), **phantom.truth.to_dict()}
    out["truth"] = atomic_write_text(folder / "truth.json", json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return out


__all__ = [
    "SITES",
    "SPEED_OF_SOUND_M_S",
    "US_TISSUES",
    "USPhantom",
    "USPhantomSpec",
    "USSiteTruth",
    "USTruth",
    "coverage",
    "follow_up_spec",
    "make_us_phantom",
    "random_us_spec",
    "write_us_phantom",
]
