"""The rasterised procedural knee agrees with its analytic truth; pairs carry exactly the prescribed change."""

import hashlib

import numpy as np
import pytest
from skimage.measure import marching_cubes

from koaimg.core import KneeSide, Structure
from koaimg.synth import (
    ACQUISITIONS,
    REGION_ID,
    Defect,
    KneeAnatomy,
    ThicknessChange,
    make_knee_phantom,
    make_pair,
    surface_mesh,
    write_knee_phantom,
)
from koaimg.synth._knee_sdf import foot_points

ACQ = ACQUISITIONS["dess"].scaled(2)  # 0.73 x 0.73 x 1.4 mm, 192 x 192 x 80


@pytest.fixture(scope="module")
def anatomy() -> KneeAnatomy:
    return KneeAnatomy().with_defects(Defect("FMC", radius_mm=5.0, depth=1.0), Defect("FLT", radius_mm=4.0, depth=0.6))


@pytest.fixture(scope="module")
def phantom(anatomy):
    return make_knee_phantom(anatomy, ACQ, seed=4, keep_bone_fraction=True)


def test_cartilage_volume_matches_analytic_truth_within_1_percent(phantom):
    voxel = phantom.labels.voxel_volume_mm3
    for bone, fraction in phantom.cartilage_fraction.items():
        rasterised = float(fraction.array.sum()) * voxel
        truth = phantom.regions[bone].value("all", "VC")
        assert rasterised == pytest.approx(truth, rel=0.01), bone


def test_interface_area_matches_analytic_truth_within_2_percent(phantom, anatomy):
    """Bone surface area under the femoral plate: partial-volume iso-surface vs the analytic tAB."""
    bone_pv = phantom.bone_fraction["femur"]
    verts, faces, _, _ = marching_cubes(bone_pv.array, 0.5)
    world = bone_pv.index_to_world(verts)
    from koaimg.synth._knee_phantom import world_from_knee

    to_knee = np.linalg.inv(world_from_knee(phantom.side, phantom.pose))
    local = world @ to_knee[:3, :3].T + to_knee[:3, 3]
    tri = local[faces]
    feet = foot_points(anatomy.femur_prims(), tri.mean(axis=1))
    plate, _, _ = anatomy.plate_and_thickness("femur", feet[:, :3], feet[:, 3:6])
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert float(area[plate].sum()) == pytest.approx(phantom.regions["femur"].value("all", "tAB"), rel=0.02)


def test_cartilage_shell_is_well_defined(anatomy):
    """Every point p + t n(p), 0 <= t <= h(p), of the plate has p as its foot point: thickness along the bone
    normal is exactly h(p)."""
    for bone, prims in anatomy.bone_prims().items():
        if bone == "fibula":
            continue
        mesh = surface_mesh(anatomy, bone)
        plate, h, _ = anatomy.plate_and_thickness(bone, mesh.centroids, mesh.normals)
        idx = np.flatnonzero(plate & (h > 0))[::7]
        p, n = mesh.centroids[idx], mesh.normals[idx]
        for frac in (0.5, 1.0):
            feet = foot_points(prims, p + (frac * h[idx])[:, None] * n)
            assert np.max(np.linalg.norm(feet[:, :3] - p, axis=1)) < 1e-5, bone


def test_interface_truth_and_labels(phantom):
    labels = phantom.labels
    for structure in (Structure.FEMUR, Structure.FEMORAL_CARTILAGE, Structure.TIBIA, Structure.TIBIAL_CARTILAGE,
                      Structure.PATELLA, Structure.PATELLAR_CARTILAGE, Structure.FIBULA, Structure.MENISCUS):
        assert labels.mask(structure).any(), structure
    femur = phantom.interface["femur"]
    assert len(femur["thickness"]) > 1000
    assert labels.array[tuple(femur["ijk"].T)].tolist() == [Structure.FEMUR] * len(femur["thickness"])
    covered = femur["thickness"] > 0
    assert np.percentile(femur["thickness"][covered], 5) >= 1.0 and femur["thickness"].max() <= 4.0
    assert (femur["thickness"] == 0).sum() > 10  # the full-thickness defect: denuded interface points


def test_regional_truth_and_defect_grades(phantom):
    femur = phantom.regions["femur"]
    fmc = femur.value("FMC", "tAB")
    expected = 100 * np.pi * 5.0**2 / fmc
    assert femur.value("FMC", "full_thickness_area%") == pytest.approx(expected, rel=0.05)
    assert femur.value("FMC", "dAB%") == pytest.approx(femur.value("FMC", "full_thickness_area%"))
    assert femur.value("FLT", "full_thickness_area%") == 0.0 and femur.value("FLT", "any_loss_area%") > 0
    row = next(r for r in femur.rows if r["region"] == "FLT")
    assert row["moaks_any_loss_grade"] == 1 and row["moaks_full_thickness_grade"] == 0
    assert 1.5 < femur.value("all", "ThCcAB.Me") < 3.0


def test_left_knee_is_the_mirror_image(anatomy):
    right = make_knee_phantom(anatomy, ACQUISITIONS["dess"].scaled(4), seed=1, with_image=False)
    left = make_knee_phantom(anatomy, ACQUISITIONS["dess"].scaled(4), seed=1, side="left", with_image=False)

    def fibula_minus_tibia_x(ph):
        lab = ph.labels
        fib = lab.index_to_world(np.argwhere(lab.mask(Structure.FIBULA)).mean(0, keepdims=True))[0, 0]
        tib = lab.index_to_world(np.argwhere(lab.mask(Structure.TIBIA)).mean(0, keepdims=True))[0, 0]
        return fib - tib

    assert fibula_minus_tibia_x(right) > 5 and fibula_minus_tibia_x(left) < -5  # RAS +x is the patient's right
    assert left.side is KneeSide.LEFT
    np.testing.assert_allclose(sorted(left.interface["femur"]["thickness"]),
                               sorted(right.interface["femur"]["thickness"]), atol=0.3)


def test_pair_carries_exactly_the_prescribed_change(anatomy):
    change = ThicknessChange(global_mm=0.1, per_region_mm={"FLC": -0.25, "TMC": 0.05}, defect_radius_factor=1.0)
    pair = make_pair(anatomy, ACQUISITIONS["dess"].scaled(4), change, seed=2)
    for row in pair.delta_regions:
        if row["metric"] != "ThCtAB.Me" or row["region"] in ("all", "FMC", "FLT"):
            continue
        expected = 0.1 + change.per_region_mm.get(row["region"], 0.0)
        assert row["delta"] == pytest.approx(expected, abs=1e-9), row
    femur = pair.baseline.interface["femur"]
    intact = femur["thickness"] > 0
    fmc = femur["region"] == REGION_ID["FMC"]
    delta = pair.delta_points["femur"]
    flc = femur["region"] == REGION_ID["FLC"]
    np.testing.assert_allclose(delta[flc & intact], -0.15, atol=1e-9)
    np.testing.assert_allclose(delta[~flc & ~fmc & intact & (femur["region"] != REGION_ID["FLT"])], 0.1, atol=1e-9)
    # the follow-up was repositioned, within 10 degrees and 10 mm
    from scipy.spatial.transform import Rotation

    moved = pair.followup.pose.matrix() @ np.linalg.inv(pair.baseline.pose.matrix())
    assert 0 < Rotation.from_matrix(moved[:3, :3]).magnitude() <= np.deg2rad(10) + 1e-9
    assert np.linalg.norm(moved[:3, 3]) <= 10 + 1e-9


def test_deterministic_and_byte_identical_dicom(tmp_path, anatomy):
    acq = ACQUISITIONS["dess"].scaled(6)
    digests = []
    for run in range(2):
        ph = make_knee_phantom(anatomy, acq, seed=9)
        out = write_knee_phantom(ph, tmp_path / f"run{run}", pseudonym="SUB-1", formats=("dicom",))
        digests.append(hashlib.sha256(b"".join(p.read_bytes() for p in sorted((out / "dicom").iterdir()))).hexdigest())
        digests.append(hashlib.sha256((out / "truth" / "regions.csv").read_bytes()).hexdigest())
    assert digests[0] == digests[2] and digests[1] == digests[3]


def test_image_shows_cartilage_wherever_the_truth_has_it(phantom):
    """Every plate's fully-cartilage voxels are imaged as cartilage, also where another bone's surroundings reach them
    (the trochlea under the patella, the condyles over the tibia): the image and its truth must describe one knee."""
    from koaimg.synth import CONTRASTS, Tissue

    table = CONTRASTS[phantom.acquisition.contrast].table()
    scale = 1000.0 / float(table.max())
    midway = 0.5 * (table[Tissue.CARTILAGE] + table[Tissue.MUSCLE]) * scale
    for bone, fraction in phantom.cartilage_fraction.items():
        pure = fraction.array > 0.99
        dark = float(np.mean(phantom.image.array[pure] < midway))
        assert dark < 0.01, f"{bone}: {dark:.1%} of pure-cartilage voxels image darker than cartilage"
