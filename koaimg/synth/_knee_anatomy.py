"""The procedural knee: bone shapes, cartilage plates, thickness fields, subregions and defects, all analytic.

Everything is defined in a right-knee *knee frame* (mm): x lateral, y anterior, z superior, origin on the common
sagittal axis of the femoral condyles. Left knees are the same anatomy mirrored when placed in the scanner, so names
(medial/lateral) are anatomical by construction. The tibia, fibula and menisci live in a tibial frame rotated by the
flexion angle about the condylar axis, which keeps the femorotibial clearance constant at any flexion.

Cartilage is a normal-offset shell: for a bone-surface point p with outward normal n(p), the cartilage occupies
p + t n(p) for 0 <= t <= h(p). The true thickness at p, measured along the bone normal, is exactly h(p).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._knee_sdf import CAPSULE, ROUND_BOX, SPHERE, TORUS_X, gaussian_bumps

#: MOAKS cartilage subregions used by the phantom truth (TS, the subspinous region, carries no cartilage)
MOAKS_REGIONS = ("FMT", "FLT", "FMC", "FLC", "FMP", "FLP", "TMA", "TMC", "TMP", "TLA", "TLC", "TLP", "PM", "PL")
REGION_ID = {name: i + 1 for i, name in enumerate(MOAKS_REGIONS)}
PLATES = ("femur", "tibia", "patella")


def _row(kind: int, k: float, *values: float) -> list[float]:
    row = [float(kind), float(k), *map(float, values)]
    return row + [0.0] * (12 - len(row))


def _rot_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    out = np.eye(4)
    out[1:3, 1:3] = [[c, -s], [s, c]]
    return out


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    return out


def _translate(x: float, y: float, z: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = (x, y, z)
    return out


@dataclass(frozen=True)
class Defect:
    """A focal cartilage lesion: a disc of the plate (radius on the bone surface) thinned by ``depth`` (0-1).

    ``depth`` 1 (``full_thickness``) leaves denuded bone. The centre is the plate point nearest to the subregion's
    area-weighted centroid, moved by ``offset_mm`` (knee frame) and projected back onto the bone.
    """

    region: str
    radius_mm: float = 4.0
    depth: float = 1.0
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def full_thickness(self) -> bool:
        """bool: the lesion reaches the bone."""
        return self.depth >= 1.0


@dataclass(frozen=True)
class ThicknessChange:
    """Prescribed follow-up change: a global offset plus per-subregion offsets (mm), and defect growth."""

    global_mm: float = 0.0
    per_region_mm: dict[str, float] = field(default_factory=dict)
    #: follow-up defect radius = baseline radius x this factor (>1 grows, <1 repairs)
    defect_radius_factor: float = 1.0

    def delta(self, region_ids: np.ndarray) -> np.ndarray:
        """Δ (mm) for points with the given MOAKS region ids."""
        out = np.full(region_ids.shape, self.global_mm, dtype=np.float64)
        for name, value in self.per_region_mm.items():
            out[region_ids == REGION_ID[name]] += value
        return out


@dataclass(frozen=True)
class KneeAnatomy:
    """Anatomy parameters (mm, degrees). ``random`` draws a plausible variant; defaults are an average adult knee."""

    scale: float = 1.0
    condyle_radius: float = 21.0
    condyle_dx: float = 20.0
    medial_coronal_r: float = 12.0
    lateral_coronal_r: float = 11.0
    trochlea_dx: float = 10.0
    trochlea_y: float = 8.0
    trochlea_r: float = 14.5
    trochlea_top: float = 34.0
    shaft_r: float = 13.0
    flexion_deg: float = 10.0
    clearance_mm: float = 0.8
    #: patellar tilt in the axial plane (about the knee's long axis); real patellae sit tilted a few degrees, and an
    #: untilted phantom puts its flat bone face exactly on a grid plane, where binary labels lose the sub-voxel position
    patella_tilt_deg: float = 6.0
    # thickness field (mm)
    h_trochlea: float = 2.6
    h_central_medial: float = 2.3
    h_central_lateral: float = 2.5
    h_posterior: float = 1.8
    h_tibia_medial: float = 1.9
    h_tibia_lateral: float = 2.5
    h_patella: float = 2.8
    bump_amplitude: float = 0.25
    bump_width_mm: float = 12.0
    bump_seed: int = 0
    defects: tuple[Defect, ...] = ()

    @classmethod
    def random(cls, rng: np.random.Generator, **overrides) -> KneeAnatomy:
        """A random adult knee: size, condyle radii, thickness levels, local bumps, flexion 0-30 deg."""
        params = dict(
            scale=rng.uniform(0.88, 1.12),
            condyle_radius=rng.uniform(19.0, 23.0),
            condyle_dx=rng.uniform(18.5, 21.5),
            medial_coronal_r=rng.uniform(11.0, 13.0),
            lateral_coronal_r=rng.uniform(10.0, 12.0),
            trochlea_dx=rng.uniform(9.0, 11.0),
            trochlea_r=rng.uniform(13.5, 15.5),
            flexion_deg=rng.uniform(0.0, 30.0),
            h_trochlea=rng.uniform(2.2, 3.1),
            h_central_medial=rng.uniform(1.8, 2.7),
            h_central_lateral=rng.uniform(2.0, 2.9),
            h_posterior=rng.uniform(1.4, 2.1),
            h_tibia_medial=rng.uniform(1.5, 2.3),
            h_tibia_lateral=rng.uniform(2.0, 2.9),
            h_patella=rng.uniform(2.3, 3.3),
            bump_seed=int(rng.integers(0, 2**31 - 1)),
        )
        params.update(overrides)
        return cls(**params)

    def with_defects(self, *defects: Defect) -> KneeAnatomy:
        """A copy carrying these lesions."""
        return replace(self, defects=tuple(defects))

    # geometry ---------------------------------------------------------------------------------------------------
    @property
    def tibia_from_knee(self) -> np.ndarray:
        """4x4: knee frame -> tibial frame (origin at the plateau top centre)."""
        return np.linalg.inv(self.knee_from_tibia)

    @property
    def knee_from_tibia(self) -> np.ndarray:
        """4x4: tibial frame -> knee frame (flexion about the condylar axis)."""
        s = self.scale
        drop = s * self.condyle_radius + self.h_central_medial_max + self.tibia_h_max + self.clearance_mm
        return _rot_x(-self.flexion_deg) @ _translate(0.0, 0.0, -drop)

    @property
    def h_central_medial_max(self) -> float:
        """Largest femoral thickness that can face the tibia (sets the joint space)."""
        return max(self.h_central_medial, self.h_central_lateral, self.h_posterior) + self.bump_amplitude * 2.5

    @property
    def tibia_h_max(self) -> float:
        """Largest tibial thickness (centre bump included)."""
        return max(self.h_tibia_medial, self.h_tibia_lateral) + 0.5 + self.bump_amplitude * 2.5

    @property
    def knee_from_patella(self) -> np.ndarray:
        """4x4: patellar frame -> knee frame (patella anterior to the trochlea, clear of its cartilage)."""
        s = self.scale
        ridge_front = s * (self.trochlea_y + np.sqrt(self.trochlea_r**2 - 0.0))
        y = ridge_front + self.h_trochlea + 0.6 + self.bump_amplitude * 2.5 + self.h_patella + 0.8 + 0.8 + \
            self.clearance_mm + s * 8.0
        return _translate(0.0, y, s * 0.62 * self.trochlea_top) @ _rot_z(self.patella_tilt_deg)

    def femur_prims(self) -> np.ndarray:
        """Primitive rows of the femur (knee frame)."""
        s = self.scale
        rs = s * self.condyle_radius
        rm, rl = s * self.medial_coronal_r, s * self.lateral_coronal_r
        dx = s * self.condyle_dx
        tx, ty, tr, top = s * self.trochlea_dx, s * self.trochlea_y, s * self.trochlea_r, s * self.trochlea_top
        return np.array([
            _row(TORUS_X, 0.0, -dx, 0.0, 0.0, rs - rm, rm),
            _row(TORUS_X, 4.0, dx, 0.0, 0.0, rs - rl, rl),
            _row(CAPSULE, 10.0, -tx, ty, 0.0, -tx, ty, top, tr),
            _row(CAPSULE, 10.0, tx, ty, 0.0, tx, ty, top, tr),
            _row(ROUND_BOX, 8.0, 0.0, 0.0, s * 14.0, s * 26.0, s * 13.0, s * 8.0, s * 6.0),
            _row(CAPSULE, 14.0, 0.0, s * 4.0, s * 20.0, 0.0, s * 4.0, s * 120.0, s * self.shaft_r),
        ])

    def tibia_prims(self) -> np.ndarray:
        """Primitive rows of the tibia (tibial frame, plateau top at z = 0)."""
        s = self.scale
        return np.array([
            _row(ROUND_BOX, 0.0, 0.0, 0.0, -s * 10.0, s * 33.0, s * 21.0, s * 6.0, s * 4.0),
            _row(SPHERE, 3.0, -s * 5.0, 0.0, -s * 4.0, s * 5.5),
            _row(SPHERE, 3.0, s * 5.0, 0.0, -s * 4.0, s * 5.5),
            _row(CAPSULE, 12.0, 0.0, -s * 3.0, -s * 14.0, 0.0, -s * 3.0, -s * 120.0, s * 15.0),
        ])

    def fibula_prims(self) -> np.ndarray:
        """Primitive rows of the fibula (tibial frame): lateral and posterior."""
        s = self.scale
        return np.array([
            _row(SPHERE, 0.0, s * 30.0, -s * 17.0, -s * 22.0, s * 8.0),
            _row(CAPSULE, 6.0, s * 30.0, -s * 17.0, -s * 24.0, s * 31.0, -s * 20.0, -s * 120.0, s * 7.0),
        ])

    def patella_prims(self) -> np.ndarray:
        """Primitive rows of the patella (patellar frame, centred)."""
        s = self.scale
        return np.array([_row(ROUND_BOX, 0.0, 0.0, 0.0, 0.0, s * 12.0, s * 2.5, s * 12.0, s * 5.5)])

    def bone_prims(self) -> dict[str, np.ndarray]:
        """All bones' primitive rows, each in its own frame."""
        return {"femur": self.femur_prims(), "tibia": self.tibia_prims(), "patella": self.patella_prims(),
                "fibula": self.fibula_prims()}

    def plate_box(self, bone: str) -> tuple[np.ndarray, np.ndarray]:
        """Bounding box (bone frame, mm) that contains the bone's cartilage plate; none for the fibula."""
        s = self.scale
        if bone == "femur":
            r = s * self.condyle_radius
            w = s * self.condyle_dx + s * max(self.medial_coronal_r, self.lateral_coronal_r) + 2
            return np.array([-w, -(r + 2), -(r + 2)]), np.array([w, s * (self.trochlea_y + self.trochlea_r) + 2,
                                                                  s * self.trochlea_top])
        if bone == "tibia":
            return np.array([-34.0, -22.0, -3.0]) * s, np.array([34.0, 22.0, 3.0]) * s
        if bone == "patella":
            return np.array([-16.0, -12.0, -16.0]) * s, np.array([16.0, 0.0, 16.0]) * s
        return np.zeros(3), np.zeros(3)

    def frame_from_knee(self, bone: str) -> np.ndarray:
        """4x4: knee frame -> the frame a bone's primitives are written in."""
        if bone == "femur":
            return np.eye(4)
        if bone in ("tibia", "fibula"):
            return self.tibia_from_knee
        if bone == "patella":
            return np.linalg.inv(self.knee_from_patella)
        raise KeyError(bone)

    # cartilage plates: membership, thickness, subregions (vectorised over foot points in the bone's frame) -----
    def _bumps(self, bone: str, p: np.ndarray) -> np.ndarray:
        """Smooth random thickness variation (mm): a sum of Gaussian bumps seeded per bone."""
        rng = np.random.default_rng([self.bump_seed, PLATES.index(bone)])
        centres = rng.uniform(-35, 35, size=(10, 3)) * self.scale
        amps = rng.normal(0.0, self.bump_amplitude, size=10)
        return gaussian_bumps(np.ascontiguousarray(p, dtype=np.float64), centres, amps,
                              self.bump_width_mm * self.scale)

    def femur_angles(self, p: np.ndarray) -> np.ndarray:
        """Sagittal angle (deg) around the condylar axis: 0 distal, +90 anterior, -90 posterior."""
        return np.degrees(np.arctan2(p[:, 1], -p[:, 2]))

    def tibial_margin_angles(self) -> dict[str, tuple[float, float]]:
        """Per compartment, femoral sagittal angles (deg) facing the anterior and posterior margins of the tibial
        cartilage plate: they play the part of the meniscal horn margins that MOAKS uses to split trochlea /
        central / posterior, and are what a measurement can find from the tibial labels."""
        s = self.scale
        out = {}
        for name, cx, ay in (("medial", -19.0, 19.0), ("lateral", 19.0, 17.0)):
            ant = self.knee_from_tibia @ np.array([cx * s, ay * s, 0.0, 1.0])
            post = self.knee_from_tibia @ np.array([cx * s, -ay * s, 0.0, 1.0])
            out[name] = (float(np.degrees(np.arctan2(ant[1], -ant[2]))),
                         float(np.degrees(np.arctan2(post[1], -post[2]))))
        return out

    def plate_and_thickness(self, bone: str, p: np.ndarray, n: np.ndarray, *,
                            change: ThicknessChange | None = None, defects: bool = True
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For foot points ``p`` (N, 3) with normals ``n`` in the bone's frame: (in_plate, thickness mm, region id).

        ``in_plate`` marks the cartilage-bearing bone area (tAB); thickness is 0 where a full-thickness defect leaves
        bone denuded. Region ids index ``MOAKS_REGIONS`` (+1); 0 outside the plate.
        """
        if bone == "femur":
            plate, h, region = self._femur(p, n)
        elif bone == "tibia":
            plate, h, region = self._tibia(p, n)
        elif bone == "patella":
            plate, h, region = self._patella(p, n)
        else:
            z = np.zeros(len(p))
            return z.astype(bool), z, z.astype(np.int16)
        h = np.where(plate, np.clip(h + self._bumps(bone, p), 1.0, 4.0), 0.0)
        if change is not None:
            h = np.where(plate, np.maximum(h + change.delta(region), 0.0), 0.0)
        if defects:
            factor = 1.0 if change is None else change.defect_radius_factor
            for centre, d in self.defect_centres(bone):
                inside = plate & (np.linalg.norm(p - centre, axis=1) < d.radius_mm * factor)
                h = np.where(inside, h * (1.0 - min(d.depth, 1.0)), h)
        region = np.where(plate, region, 0).astype(np.int16)
        return plate, h, region

    def _femur(self, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.scale
        alpha = self.femur_angles(p)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        condyle = (np.abs(x) > 8.0 * s) & (alpha > -150.0) & (alpha < 70.0) & (np.abs(n[:, 0]) < 0.6) & \
                  (np.hypot(y, z) < s * self.condyle_radius + 3.0)
        trochlea = (y > s * 4.0) & (z > -s * 6.0) & (z < s * (self.trochlea_top - 4.0)) & (n[:, 1] > 0.35) & \
                   (np.abs(x) < s * 23.0)
        plate = condyle | trochlea
        central_h = np.where(x < 0, self.h_central_medial, self.h_central_lateral)
        # blend posterior -> central -> trochlea with cosine ramps over the sagittal angle
        w_post = np.clip((-40.0 - alpha) / 50.0, 0.0, 1.0)
        w_troch = np.clip((alpha - 25.0) / 40.0, 0.0, 1.0)
        troch_h = self.h_trochlea + np.where(x > 0, 0.3, 0.0)
        h = central_h * (1 - w_post - w_troch) + self.h_posterior * w_post + troch_h * w_troch
        margins = self.tibial_margin_angles()
        lateral = x > 0.0
        a_ant = np.where(lateral, margins["lateral"][0], margins["medial"][0])
        a_post = np.where(lateral, margins["lateral"][1], margins["medial"][1])
        region = np.where(alpha > a_ant, np.where(lateral, REGION_ID["FLT"], REGION_ID["FMT"]),
                          np.where(alpha < a_post, np.where(lateral, REGION_ID["FLP"], REGION_ID["FMP"]),
                                   np.where(lateral, REGION_ID["FLC"], REGION_ID["FMC"])))
        # the trochlear surface above the condyles (y large, z high) is trochlea whatever its angle
        region = np.where(trochlea & ~condyle, np.where(lateral, REGION_ID["FLT"], REGION_ID["FMT"]), region)
        return plate, h, region

    def _tibia(self, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.scale
        x, y = p[:, 0], p[:, 1]
        lateral = x > 0
        cx = np.where(lateral, 19.0, -19.0) * s
        ax = np.where(lateral, 11.0, 12.0) * s
        ay = np.where(lateral, 17.0, 19.0) * s
        r2 = ((x - cx) / ax) ** 2 + (y / ay) ** 2
        plate = (r2 < 1.0) & (n[:, 2] > 0.85)
        h = np.where(lateral, self.h_tibia_lateral, self.h_tibia_medial) + 0.5 * (1.0 - r2)
        third = ay / 3.0
        region = np.where(y > third, np.where(lateral, REGION_ID["TLA"], REGION_ID["TMA"]),
                          np.where(y < -third, np.where(lateral, REGION_ID["TLP"], REGION_ID["TMP"]),
                                   np.where(lateral, REGION_ID["TLC"], REGION_ID["TMC"])))
        return plate, h, region

    def _patella(self, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.scale
        x, z = p[:, 0], p[:, 2]
        r2 = (x / (12.5 * s)) ** 2 + (z / (13.0 * s)) ** 2
        plate = (r2 < 1.0) & (n[:, 1] < -0.8)
        h = self.h_patella + 0.6 * (1.0 - r2) - 0.6
        # the median ridge belongs to the medial facet
        region = np.where(x <= 0.0, REGION_ID["PM"], REGION_ID["PL"])
        return plate, h, region

    def defect_centres(self, bone: str) -> list[tuple[np.ndarray, Defect]]:
        """Bone-frame centres of this bone's defects (cached surface lookup)."""
        return [(c, d) for c, d, b in self._defect_table() if b == bone]

    def _defect_table(self) -> list[tuple[np.ndarray, Defect, str]]:
        cache = _DEFECT_CACHE.get(self)
        if cache is None:
            from ._knee_truth import locate_defects

            cache = locate_defects(self)
            _DEFECT_CACHE[self] = cache
        return cache


_DEFECT_CACHE: dict[KneeAnatomy, list] = {}


def region_bone(region: str) -> str:
    """Which bone a MOAKS subregion lies on."""
    return {"F": "femur", "T": "tibia", "P": "patella"}[region[0]]
