"""Thickness, subregions and MOAKS-style grades against the phantoms' exact truth, mirror images and real anatomy."""

import csv

import numpy as np
import pytest
from koaimg_testdata import realdata
from scipy.spatial import cKDTree

from koaimg.core import KneeSide, LabelSchemaError, LabelVolume, LateralityError, Structure
from koaimg.measure import cartilage_thickness, measure_knee
from koaimg.measure._regions_we import FEMUR_SUBREGIONS, TIBIA_SUBREGIONS
from koaimg.measure._thickness import FLAG_OUTSIDE_FOV, FLAG_WALL_EXIT
from koaimg.synth import Acquisition, Defect, KneeAnatomy, Pose, make_knee_phantom, surface_mesh
from koaimg.synth._knee_phantom import world_from_knee
from koaimg.synth._knee_sdf import foot_points

#: OAI DESS voxels over a field of view that holds the femoral plate (smaller than 384 x 384 x 160 to keep CI fast)
DESS_CROP = Acquisition("dess_crop", (256, 256, 128), (0.3646, 0.3646, 0.7), "PIR", "dess")


@pytest.fixture(scope="module")
def anatomy():
    return KneeAnatomy().with_defects(Defect("FMC", 5.0, 1.0), Defect("FLT", 4.0, 0.6), Defect("TLC", 4.0, 1.0))


@pytest.fixture(scope="module")
def phantom(anatomy):
    # a few degrees off the scanner axes, like a real knee: grid-aligned flat surfaces would give every voxel the
    # same partial-volume phase and a systematic half-voxel error no method can undo
    pose = Pose((3.0, -4.0, 2.0), (1.5, -2.0, 1.0))
    return make_knee_phantom(anatomy, DESS_CROP, seed=3, pose=pose, keep_bone_fraction=True, with_image=False)


def _truth(phantom, anatomy, points):
    """Exact thickness at the foot point of each RAS point, and its distance to a thickness step (plate edge or
    lesion wall) along the surface."""
    to_knee = np.linalg.inv(world_from_knee(phantom.side, phantom.pose))
    feet = foot_points(anatomy.femur_prims(), points @ to_knee[:3, :3].T + to_knee[:3, 3])
    plate, h, _ = anatomy.plate_and_thickness("femur", feet[:, :3], feet[:, 3:6])
    mesh = surface_mesh(anatomy, "femur")
    mplate, mh, _ = anatomy.plate_and_thickness("femur", mesh.centroids, mesh.normals)
    edge, _ = cKDTree(mesh.centroids[~mplate | (mh == 0)]).query(feet[:, :3])
    return plate, h, edge


@pytest.mark.parametrize(("source", "interior_mae"), [("binary", 0.04), ("probability", 0.02)])
def test_pointwise_accuracy_on_dess_grid(phantom, anatomy, source, interior_mae):
    probabilities = None
    if source == "probability":
        probabilities = {Structure.FEMUR: phantom.bone_fraction["femur"].array,
                         Structure.FEMORAL_CARTILAGE: phantom.cartilage_fraction["femur"].array}
    result = cartilage_thickness(phantom.labels, probabilities=probabilities)
    plate, h, edge = _truth(phantom, anatomy, result.points)
    scored = plate & (h >= 1.0) & np.isfinite(result.thickness)
    err = result.thickness - h
    interior = scored & (edge >= 1.0)
    assert interior.sum() > 5000
    assert np.abs(err[interior]).mean() <= interior_mae
    assert abs(err[interior].mean()) <= 0.01
    # next to a step in thickness (plate edge, lesion wall) a voxel grid cannot place the step: larger error, kept
    # visible here so a regression shows
    assert np.abs(err[scored]).mean() <= 0.05


def test_denuded_bone_counts_as_zero(phantom, anatomy):
    result = cartilage_thickness(phantom.labels)
    _, h, _ = _truth(phantom, anatomy, result.points)
    assert result.denuded.sum() > 50
    assert np.all(result.thickness[result.denuded] == 0)
    assert np.mean(h[result.denuded] == 0) > 0.9  # denuded points lie in the true full-thickness lesion


def test_regions_and_moaks_grades_match_truth(phantom):
    measurement = measure_knee(phantom.labels)
    graded = 0
    for plate_name, plate in measurement.plates.items():
        truth = {r["region"]: r for r in phantom.regions[plate_name].rows}
        for row in (r for r in plate.rows if r["scheme"] == "moaks"):
            if row["region"] == "all":
                assert row["VC"] == pytest.approx(truth["all"]["VC"], rel=0.03)
                continue
            t = truth[row["region"]]
            assert row["moaks_any_loss_grade"] == t["moaks_any_loss_grade"], row["region"]
            assert row["moaks_full_thickness_grade"] == t["moaks_full_thickness_grade"], row["region"]
            assert row["tAB"] == pytest.approx(t["tAB"], rel=0.25), row["region"]
            # regions come from landmarks (notch, groove, tibial margins) found on the labels, so a little of
            # this is boundary placement; the plate outline itself is sub-voxel (tAB within a few %)
            assert row["ThCtAB.Me"] == pytest.approx(t["ThCtAB.Me"], abs=0.05), row["region"]
            assert row["dAB%"] == pytest.approx(t["dAB%"], abs=2.0), row["region"]
            graded += 1
    assert graded == 14
    assert measurement.summary["moaks_summed_score_pos_worse"] == 2 + 2 + 1 + 2 + 2  # FMC 2.2, FLT 1.0, TLC 2.2


def test_mirror_image_gives_identical_values_under_anatomical_names(phantom):
    right = measure_knee(phantom.labels, side="right")
    axis = phantom.labels.axcodes.index("R")
    flipped = LabelVolume(np.flip(phantom.labels.array, axis=axis), phantom.labels.affine)
    left = measure_knee(flipped, side="left")
    for plate in ("femur", "tibia", "patella"):
        r, m = right.plates[plate], left.plates[plate]
        # the same points in the right-knee frame, the same thickness and the same anatomical subregion names
        order_r = np.lexsort(np.round(right.frame.apply(r.result.points), 4).T)
        order_m = np.lexsort(np.round(left.frame.apply(m.result.points), 4).T)
        np.testing.assert_allclose(m.result.thickness[order_m], r.result.thickness[order_r], atol=1e-6)
        assert (m.regions[order_m] == r.regions[order_r]).all()
        # the tibial central ellipse holds 20 % of the area, and areas differ slightly between mirror meshes
        assert np.mean(m.we_regions[order_m] == r.we_regions[order_r]) > 0.99
        a = {(row["scheme"], row["region"]): row for row in r.rows}
        b = {(row["scheme"], row["region"]): row for row in m.rows}
        assert a.keys() == b.keys()
        for name in a:
            assert b[name]["moaks_any_loss_grade"] == a[name]["moaks_any_loss_grade"]
            # the Wirth-Eckstein tibial ellipse is sized by area, which moves its rim by a point or two
            tol = 0.04 if name[1] in ("MT.c", "LT.c") else 0.02
            assert b[name]["ThCtAB.Me"] == pytest.approx(a[name]["ThCtAB.Me"], abs=tol), name
            # areas come from a marching-cubes mesh, whose triangulation is not mirror-symmetric
            assert b[name]["tAB"] == pytest.approx(a[name]["tAB"], rel=0.03)


def test_wirth_eckstein_subregions(phantom):
    measurement = measure_knee(phantom.labels, schemes=("wirth-eckstein",))
    femur, tibia = measurement.plates["femur"], measurement.plates["tibia"]
    rows = {r["region"]: r for r in measurement.scheme_rows("wirth-eckstein")}
    assert all(r["moaks_any_loss_grade"] is None for r in rows.values())  # grades belong to MOAKS only
    assert not any(r["scheme"] == "moaks" for r in femur.rows)
    for plate in ("cMF", "cLF"):
        thirds = [rows[f"{plate}.{part}"]["tAB"] for part in "eci"]
        # equal-width thirds of each AP row: comparable areas, and the plate is their sum
        assert min(thirds) > 0.5 * max(thirds)
        assert rows[plate]["tAB"] == pytest.approx(sum(thirds), rel=1e-9)
        assert rows[plate]["VC"] == pytest.approx(sum(rows[f"{plate}.{p}"]["VC"] for p in "eci"), rel=1e-9)
    for name in FEMUR_SUBREGIONS:
        assert rows[name]["tAB"] > 50, name
    # the weight-bearing femur lies between the anterior and posterior femur along AP
    p = measurement.frame.apply(femur.result.points)
    y = {name: np.median(p[femur.we_regions == name, 1]) for name in ("aMF", "cMF.c", "pMF")}
    assert y["aMF"] > y["cMF.c"] > y["pMF"]
    for plate in ("MT", "LT"):
        share = rows[f"{plate}.c"]["tAB"] / rows[plate]["tAB"]
        assert share == pytest.approx(0.20, abs=0.01)
        for part in "apei":
            assert rows[f"{plate}.{part}"]["tAB"] > 0.08 * rows[plate]["tAB"], (plate, part)
    # the medial plateau's external sector is on the medial side (anatomical names, right knee: medial = -x)
    q = measurement.frame.apply(tibia.result.points)
    assert np.median(q[tibia.we_regions == "MT.e", 0]) < np.median(q[tibia.we_regions == "MT.i", 0])
    assert np.median(q[tibia.we_regions == "LT.e", 0]) > np.median(q[tibia.we_regions == "LT.i", 0])
    with pytest.raises(ValueError, match="schemes"):
        measure_knee(phantom.labels, schemes=("womac",))


def test_nearest_method_is_a_lower_bound_cross_check(phantom):
    normal = cartilage_thickness(phantom.labels)
    nearest = cartilage_thickness(phantom.labels, method="nearest")
    index = {tuple(v): n for n, v in enumerate(nearest.ijk)}
    pairs = np.array([(n, index[tuple(v)]) for n, v in enumerate(normal.ijk)
                      if tuple(v) in index and not normal.denuded[n]])
    assert len(pairs) > 0.9 * len(normal.ijk)
    # nearest-neighbour thickness is never longer than the normal ray, and near plate edges and lesion walls it
    # finds the side wall (the known low bias of the method); in the plate's interior the two agree
    # away from plate edges, and not where the normal ray left through a lesion wall (its value then comes from
    # the top surface beside it, while the nearest point is on the wall)
    interior = (normal.edge_distance[pairs[:, 0]] >= 4.0) & ((normal.flags[pairs[:, 0]] & FLAG_WALL_EXIT) == 0)
    a, b = normal.thickness[pairs[:, 0]], nearest.thickness[pairs[:, 1]]
    assert np.median(b - a) <= 0.02
    # both surfaces are sub-voxel, so away from walls the independent method agrees to a few hundredths of a mm
    assert abs(np.median(b[interior] - a[interior])) < 0.05
    assert np.corrcoef(a[interior], b[interior])[0, 1] > 0.9


def test_plate_cut_by_the_field_of_view_is_noted_and_not_measured_past_the_edge(phantom):
    cart = np.argwhere(phantom.labels.array == int(Structure.FEMORAL_CARTILAGE))
    end = int(cart[:, 0].max()) - 10  # drop the last slices along the first axis: the plate now runs off the image
    cut = LabelVolume(phantom.labels.array[:end].copy(), phantom.labels.affine, phantom.labels.meta)
    result = cartilage_thickness(cut)
    assert any("field of view" in note for note in result.notes)
    at_edge = (result.flags & FLAG_OUTSIDE_FOV) > 0
    assert at_edge.any() and np.isnan(result.thickness[at_edge]).all()
    assert not cartilage_thickness(phantom.labels).notes


def test_refusals(phantom):
    empty = LabelVolume(np.where(phantom.labels.array == 2, 0, phantom.labels.array), phantom.labels.affine)
    with pytest.raises(LabelSchemaError, match="no femoral_cartilage"):
        cartilage_thickness(empty)
    unknown = LabelVolume(phantom.labels.array, phantom.labels.affine)
    assert unknown.meta.side is KneeSide.UNKNOWN
    with pytest.raises(LateralityError, match="side"):
        measure_knee(unknown)


@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "preset", "side"), [("pymskt_dess_labels", "pymskt", None),
                                                        ("woo_oai_labels", "woo-oai", "right")])
def test_real_anatomy_is_plausible(folder, preset, side, tmp_path):
    from koaimg.pipeline._measure import measure_file

    for path in sorted(realdata(folder).glob("*.n*")):
        out = tmp_path / path.name.split(".")[0][:20]
        measurement = measure_file(path, out, preset=preset, side=side)
        femur = {r["region"]: r for r in measurement.plates["femur"].rows}
        assert 1.5 <= femur["all"]["ThCcAB.Me"] <= 3.0
        for name in ("FMT", "FLT", "FMC", "FLC", "FMP", "FLP", *FEMUR_SUBREGIONS):
            assert femur[name]["tAB"] > 20, name
        if "tibia" in measurement.plates:
            tibia = {r["region"]: r for r in measurement.plates["tibia"].rows}
            for name in TIBIA_SUBREGIONS:
                assert tibia[name]["tAB"] > 5, name
        with (out / "measures.csv").open() as fh:
            header = next(csv.reader(fh))
        assert header == ["subject", "visit", "modality", "side", "structure", "scheme", "region", "metric",
                          "value", "unit"]
        assert (out / "thickness.nii.gz").exists() and (out / "femoral_thickness_map.png").exists()
