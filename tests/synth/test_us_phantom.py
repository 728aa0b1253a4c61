"""Ultrasound phantom: exact, reproducible cartilage truth that independent measurements of its masks agree with."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.draw import polygon2mask

from koaimg.core._errors import GeometryError
from koaimg.io._dicom_us import read_ultrasound_dicom
from koaimg.io._us_screenshot import read_ultrasound_screenshot
from koaimg.synth._us import (
    SITES,
    US_TISSUES,
    USPhantom,
    USPhantomSpec,
    follow_up_spec,
    make_us_phantom,
    random_us_spec,
    write_us_phantom,
)

TOL_MM = 0.02


@pytest.fixture(scope="module")
def cine() -> USPhantom:
    """The default 480 x 640, 8-frame right-knee phantom."""
    return make_us_phantom(USPhantomSpec(), seed=11)


@pytest.fixture(scope="module")
def random_phantoms() -> list[USPhantom]:
    return [make_us_phantom(random_us_spec(s, n_frames=1), seed=s) for s in range(6)]


# independent measurements --------------------------------------------------------------------------------------------
def window_area_thickness(ph: USPhantom, site: str, *, binary: bool) -> float:
    """Cartilage area between the normals at the window ends / midline length, from the mask or partial volumes.

    A pixel belongs to the window by the arc position of its foot point on the truth bone line (nearest point of a
    0.005 mm resampling); pixels within 0.15 mm of a window end are split into 10 x 10 sub-points classified alike.
    """
    t = ph.truth
    k = t.best_frame  # truth polylines are given in the best frame
    s = t.sites[site]
    mpp = t.spacing_mm[0]
    w = s.window_half_mm
    arc = t.arc_mm
    fine = np.arange(s.arc_mm - w - 3.0, s.arc_mm + w + 3.0, 0.005)
    dense = np.stack([np.interp(fine, arc, t.bone_line_px[:, 0]), np.interp(fine, arc, t.bone_line_px[:, 1])], 1)
    tree = cKDTree(dense)
    value = (ph.masks[k] if binary else ph.fractions[k]).astype(np.float64)
    r0, c0 = (int(v) for v in s.bone_px)
    half = int(np.ceil((w + 4.0) / mpp))
    rr, cc = np.mgrid[max(r0 - half, 0):r0 + half, max(c0 - half, 0):c0 + half]
    inside = value[rr, cc] > 0
    rr, cc, vv = rr[inside], cc[inside], value[rr, cc][inside]
    dist = np.abs(fine[tree.query(np.stack([rr, cc], 1))[1]] - s.arc_mm) - w
    area = float(vv[dist < -0.15].sum())
    edge = np.abs(dist) <= 0.15
    sub = (np.arange(10) + 0.5) / 10 - 0.5
    pr = (rr[edge][:, None, None] + sub[None, :, None]).repeat(10, axis=2).ravel()
    pc = (cc[edge][:, None, None] + sub[None, None, :]).repeat(10, axis=1).ravel()
    in_window = np.abs(fine[tree.query(np.stack([pr, pc], 1))[1]] - s.arc_mm) <= w
    area += float(np.repeat(vv[edge], 100)[in_window].sum()) / 100
    return area * mpp * mpp / s.midline_length_mm


def ray_thickness(fraction: np.ndarray, bone_px, normal, h_mm: float, mpp: float) -> float:
    """Integral of the partial-volume fraction along the normal through the site (bilinear samples)."""
    step = 0.01
    t = np.arange(-2.0, h_mm / mpp + 2.0, step)
    pts = np.asarray(bone_px)[:, None] + np.asarray(normal)[:, None] * t[None, :]
    return float(ndimage.map_coordinates(fraction.astype(np.float64), pts, order=1).sum() * step * mpp)


def rerasterised_thickness(ph: USPhantom, site: str, up: int = 10) -> tuple[float, float]:
    """Re-rasterise the truth polylines at ``up``x with skimage; return (ray length along the truth normal in mm,
    mean |fraction difference| to the phantom's own partial volumes) around the site."""
    t = ph.truth
    s = t.sites[site]
    mpp = t.spacing_mm[0]
    r0, c0 = (round(v) for v in s.bone_px)
    half = int(np.ceil((s.thickness_mm + 1.5) / mpp))
    ra, ca = r0 - half, c0 - half
    near = np.abs(t.arc_mm - s.arc_mm) < 6.0  # polygon reaches past the crop on both sides
    poly = np.concatenate([t.bone_line_px[near], t.surface_line_px[near][::-1]]) - [ra - 0.5, ca - 0.5]
    fine = polygon2mask((2 * half * up, 2 * half * up), poly * up - 0.5)
    step = 0.05
    tt = np.arange(-1.0, s.thickness_mm / mpp + 1.0, step / up)
    pts = ((np.asarray(s.bone_px) - [ra - 0.5, ca - 0.5])[:, None] + np.asarray(s.normal)[:, None] * tt) * up - 0.5
    inside = ndimage.map_coordinates(fine.astype(np.uint8), pts, order=0)
    ray_mm = float(inside.sum() * step / up * mpp)
    block = fine.reshape(2 * half, up, 2 * half, up).mean(axis=(1, 3))
    own = ph.fractions[t.best_frame][ra:ra + 2 * half, ca:ca + 2 * half]
    return ray_mm, float(np.abs(block - own).mean())


# tests ----------------------------------------------------------------------------------------------------------------
def test_deterministic_per_seed():
    spec = USPhantomSpec(n_frames=2, rows=160, cols=640)
    a, b = make_us_phantom(spec, seed=3), make_us_phantom(spec, seed=3)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.fractions, b.fractions)
    assert json.dumps(a.truth.to_dict()) == json.dumps(b.truth.to_dict())
    c = make_us_phantom(spec, seed=4)
    assert not np.array_equal(a.frames, c.frames)
    # same knee and pose, new scan: cartilage and soft-tissue layout repeat, speckle does not
    assert np.array_equal(a.fractions[a.best_frame], c.fractions[c.best_frame])
    assert np.array_equal(a.labels[a.best_frame], c.labels[c.best_frame])


def test_cine_shape_and_best_frame(cine):
    t = cine.truth
    assert cine.frames.shape == (8, 480, 640) and cine.frames.dtype == np.uint8
    assert cine.masks.shape == cine.frames.shape and t.frame_time_ms == 40.0
    poses = [f["probe_shift_mm"] + [f["probe_tilt_deg"]] for f in t.frames]
    assert poses[t.best_frame] == [0.0, 0.0, 0.0] and len({tuple(p) for p in poses}) == 8

    def sharpness(img):
        return float(np.mean(ndimage.sobel(img.astype(float), axis=1) ** 2))

    scores = [sharpness(f) for f in cine.frames]
    assert int(np.argmax(scores)) == t.best_frame


@pytest.mark.parametrize("site", SITES)
def test_truth_matches_independent_measurement(cine, site):
    t = cine.truth
    s = t.sites[site]
    mpp = t.spacing_mm[0]
    assert s.thickness_mm == USPhantomSpec().thickness()[site]
    assert s.mean_thickness_mm == pytest.approx(s.thickness_mm, abs=1e-9)  # plateau over the window
    assert s.regional_mean_mm == pytest.approx(s.thickness_mm, abs=1e-5)
    assert s.bone_length_mm == pytest.approx(2 * s.window_half_mm, abs=1e-9)
    # surface point = bone point + h along the unit normal, which points towards the probe
    assert np.hypot(*s.normal) == pytest.approx(1.0) and s.normal[0] < 0
    assert np.hypot(*np.subtract(s.surface_px, s.bone_px)) * mpp == pytest.approx(s.thickness_mm, abs=1e-9)

    assert abs(window_area_thickness(cine, site, binary=True) - s.regional_mean_mm) < TOL_MM
    assert abs(window_area_thickness(cine, site, binary=False) - s.regional_mean_mm) < 0.005
    ray, frac_err = rerasterised_thickness(cine, site)
    assert abs(ray - s.thickness_mm) < TOL_MM
    assert frac_err < 0.01
    for frame in t.frames:  # every cine frame, tilted and shifted, holds the same cartilage
        fs = frame["sites"][site]
        got = ray_thickness(cine.fractions[frame["index"]], fs["bone_px"], fs["normal"], s.thickness_mm, mpp)
        assert abs(got - s.thickness_mm) < TOL_MM


def test_random_specs_span_thickness_and_stay_exact(random_phantoms):
    values = []
    for ph in random_phantoms:
        for site, s in ph.truth.sites.items():
            values.append(s.thickness_mm)
            assert 1.0 <= s.thickness_mm <= 3.5
            assert abs(window_area_thickness(ph, site, binary=True) - s.regional_mean_mm) < TOL_MM
    assert min(values) < 1.5 and max(values) > 3.0
    assert {ph.truth.side for ph in random_phantoms} == {"right", "left"}
    assert len({ph.truth.spacing_mm for ph in random_phantoms}) > 1


def test_smooth_profile_window_differs_from_centre():
    ph = make_us_phantom(USPhantomSpec(n_frames=1, site_plateau_mm=0.0, thickness_mm=(1.2, 3.4, 1.5)), seed=0)
    s = ph.truth.sites["IN"]
    assert s.thickness_mm == 3.4 and s.mean_thickness_mm < 3.4 - 0.01
    assert abs(window_area_thickness(ph, "IN", binary=True) - s.regional_mean_mm) < TOL_MM


@pytest.mark.parametrize("delta", [{"LC": -0.3, "IN": 0.15, "MC": -0.1}, -0.25])
def test_follow_up_delta_exact(delta):
    base = USPhantomSpec(n_frames=1)
    fu_spec = follow_up_spec(base, delta, seed=5)
    want = {k: (delta.get(k, 0.0) if isinstance(delta, dict) else delta) for k in SITES}
    assert fu_spec.probe_shift_mm != base.probe_shift_mm and abs(fu_spec.probe_tilt_deg) >= 1.0
    bl, fu = make_us_phantom(base, seed=1), make_us_phantom(fu_spec, seed=2)
    for site in SITES:
        sb, sf = bl.truth.sites[site], fu.truth.sites[site]
        assert sf.delta_mm == want[site] and sb.delta_mm is None
        assert sf.thickness_mm - sb.thickness_mm == pytest.approx(want[site], abs=1e-12)
        assert sf.regional_mean_mm - sb.regional_mean_mm == pytest.approx(want[site], abs=1e-5)
        measured = (window_area_thickness(fu, site, binary=True) - window_area_thickness(bl, site, binary=True))
        assert abs(measured - want[site]) < TOL_MM
    # repositioned probe: the sites moved in the image although the anatomy did not
    assert np.hypot(*np.subtract(fu.truth.sites["IN"].bone_px, bl.truth.sites["IN"].bone_px)) > 5


def test_left_knee_mirrors_and_swaps_condyles():
    right = make_us_phantom(USPhantomSpec(n_frames=1), seed=0)
    left = make_us_phantom(USPhantomSpec(n_frames=1, side="left"), seed=0)
    cols = right.truth.shape[1]
    r, l_ = right.truth.sites, left.truth.sites
    assert r["LC"].bone_px[1] < r["IN"].bone_px[1] < r["MC"].bone_px[1]
    assert l_["MC"].bone_px[1] < l_["IN"].bone_px[1] < l_["LC"].bone_px[1]
    for site in SITES:
        assert l_[site].bone_px[0] == pytest.approx(r[site].bone_px[0], abs=1e-6)
        assert l_[site].bone_px[1] == pytest.approx(cols - 1 - r[site].bone_px[1], abs=1e-6)
        assert l_[site].thickness_mm == r[site].thickness_mm
    assert np.allclose(left.fractions[0], right.fractions[0][:, ::-1], atol=1e-6)


def test_image_statistics_look_like_ultrasound(cine):
    k = cine.best_frame
    img = cine.frames[k].astype(np.float64)
    labels = cine.labels[k]
    cart = img[ndimage.binary_erosion(cine.fractions[k] > 0.99, iterations=2)]
    bone = cine.truth.bone_line_px
    normal = cine.truth.normal_px
    line = ndimage.map_coordinates(img, (bone - 1.5 * normal).T, order=1)  # 0.15 mm into the bone
    below = ndimage.map_coordinates(img, (bone - 40 * normal).T, order=1)  # 4 mm under the bone line
    fat = img[labels == US_TISSUES["subcutaneous_fat"]]
    assert cart.mean() < 40 and line.mean() > 4 * cart.mean()
    assert below.mean() < 15 and below.mean() < 0.2 * line.mean()
    assert fat.std() / fat.mean() > 0.3
    assert img[labels == US_TISSUES["tendon"]].mean() > fat.mean()
    for name, code in US_TISSUES.items():
        assert (labels == code).any(), name


def test_written_files_read_back_and_are_byte_identical(tmp_path):
    ph = make_us_phantom(random_us_spec(7, n_frames=3, rows=200, cols=300), seed=7)
    mpp = ph.spacing_mm[0]
    a = write_us_phantom(ph, tmp_path / "a", pseudonym="KOA-001", visit="baseline", formats=("dicom", "png", "mask"))
    b = write_us_phantom(make_us_phantom(ph.spec, seed=7), tmp_path / "b", pseudonym="KOA-001", visit="baseline",
                         formats=("dicom", "png", "mask"))
    assert sorted(p.name for p in a.values()) == ["mask.png", "truth.json", "us.dcm", "us.png", "us.png.json"]
    for kind, path in a.items():
        assert path.read_bytes() == b[kind].read_bytes(), kind

    img = read_ultrasound_dicom(a["dicom"])
    assert img.spacing_mm == (mpp, mpp)
    assert np.array_equal(img.frames, ph.frames) and img.frame_time_ms == ph.spec.frame_time_ms

    side = json.loads(a["png_sidecar"].read_text())
    shot = read_ultrasound_screenshot(a["png"], pixel_spacing_mm=tuple(side["pixel_spacing_mm"]))
    assert shot.spacing_mm == (mpp, mpp)
    assert np.array_equal(shot.frames[0], ph.frames[side["frame_index"]])

    truth = json.loads(a["truth"].read_text())
    assert truth["visit"] == "baseline" and truth["best_frame"] == ph.best_frame
    assert truth["sites"]["IN"]["thickness_mm"] == ph.truth.sites["IN"].thickness_mm
    assert truth["spec"] == json.loads(json.dumps(dataclasses.asdict(ph.spec)))


def test_single_frame_writes_us_image(tmp_path):
    ph = make_us_phantom(USPhantomSpec(n_frames=1, rows=300), seed=0)
    paths = write_us_phantom(ph, tmp_path, pseudonym="P", visit="v0", formats=("dicom",))
    img = read_ultrasound_dicom(paths["dicom"])
    assert img.n_frames == 1 and img.frame_time_ms is None and np.array_equal(img.frames, ph.frames)


def test_refusals():
    with pytest.raises(GeometryError, match="does not fit the groove"):
        make_us_phantom(USPhantomSpec(thickness_mm=(2.0, 4.0, 2.0), condyle_spacing_mm=(9.0, 9.0),
                                      condyle_width_mm=(4.5, 4.5), site_plateau_mm=1.0, site_window_mm=1.0), seed=0)
    with pytest.raises(GeometryError, match="unknown sites"):
        follow_up_spec(USPhantomSpec(), {"LFC": 0.1}, seed=0)
    with pytest.raises(GeometryError, match="thinner than 0"):
        follow_up_spec(USPhantomSpec(), -2.5, seed=0)
    with pytest.raises(GeometryError, match="right or left"):
        USPhantomSpec(side="unknown")
