"""Inference path with a tiny random-weight bundle: native grid, metadata, probabilities, warnings, devices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from koaimg.core import ModelError, Structure, Volume
from koaimg.segment import clean_labels, field_of_view_warnings, load_bundle, resolve_device, segment_volume
from koaimg.segment._infer import _channel_argmax


def test_tiny_bundle_segments_on_the_native_grid(tiny_bundle: Path, small_phantom) -> None:
    image = small_phantom.image
    result = segment_volume(image, bundle=tiny_bundle, device="cpu", probabilities=True)
    assert result.labels.same_grid(image)
    assert result.labels.meta.side == image.meta.side
    assert set(np.unique(result.labels.array)) <= set(range(7))
    assert set(result.probabilities) == {Structure(i) for i in range(1, 7)}
    total = sum(result.probabilities.values())
    assert total.shape == image.spatial_shape and float(total.max()) <= 1.0 + 1e-5
    assert result.info["model_sha256"] and result.info["device"] == "cpu"


def test_constant_image_warns_instead_of_silent_zeros(tiny_bundle: Path, small_phantom) -> None:
    blank = small_phantom.image.with_array(np.zeros(small_phantom.image.spatial_shape, np.float32))
    result = segment_volume(blank, bundle=tiny_bundle, device="cpu")
    assert any("empty or constant" in w for w in result.warnings)


def test_label_map_input_is_refused(tiny_bundle: Path, small_phantom) -> None:
    with pytest.raises(ModelError, match="not a label map"):
        segment_volume(small_phantom.labels, bundle=tiny_bundle)


def test_cuda_request_without_gpu_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")


def _blob(shape, centre, radius):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return np.linalg.norm(ijk - np.asarray(centre), axis=-1) < radius


def test_clean_labels_keeps_both_tibial_plates_and_one_femur() -> None:
    shape = (60, 30, 30)
    lab = np.zeros(shape, np.uint8)
    lab[15:45, 5:25, 0:19] = Structure.TIBIA
    lab[20:26, 10:20, 19:21] = Structure.TIBIAL_CARTILAGE  # medial plate on the tibia top
    lab[34:40, 10:20, 19:21] = Structure.TIBIAL_CARTILAGE  # lateral plate
    lab[55:57, 2:4, 2:4] = Structure.TIBIAL_CARTILAGE  # speck off the bone
    lab[_blob(shape, (10, 15, 25), 4)] = Structure.FEMUR
    lab[_blob(shape, (50, 15, 25), 2)] = Structure.FEMUR  # smaller second femur piece
    out = clean_labels(lab, voxel_ml=0.001)
    assert (out[20:26, 10:20, 19:21] == Structure.TIBIAL_CARTILAGE).any()
    assert (out[34:40, 10:20, 19:21] == Structure.TIBIAL_CARTILAGE).any()
    assert not (out[55:57, 2:4, 2:4] == Structure.TIBIAL_CARTILAGE).any()
    assert not (out[48:53, 13:18, 23:28] == Structure.FEMUR).any() and (out[8:12, 13:17, 23:27] == 1).any()


def test_clean_labels_keeps_the_bone_its_cartilage_sits_on_not_a_larger_false_one() -> None:
    shape = (80, 40, 40)
    lab = np.zeros(shape, np.uint8)
    lab[_blob(shape, (15, 20, 20), 8)] = Structure.FEMUR  # the real femur, with its cartilage cap
    cap = _blob(shape, (15, 20, 20), 10) & ~_blob(shape, (15, 20, 20), 8) & (np.arange(40)[None, None, :] < 18)
    lab[cap] = Structure.FEMORAL_CARTILAGE
    lab[50:78, 5:35, 5:35] = Structure.FEMUR  # larger false "femur" (air far from the joint), no cartilage
    out = clean_labels(lab, voxel_ml=0.001)
    assert (out[15, 20, 20] == Structure.FEMUR) and not (out[50:78, 5:35, 5:35] == Structure.FEMUR).any()
    assert (out == Structure.FEMORAL_CARTILAGE).sum() == cap.sum()


def test_clean_labels_fills_the_pockets_a_bone_encloses_but_not_its_notch() -> None:
    shape = (40, 40, 40)
    lab = np.zeros(shape, np.uint8)
    lab[5:35, 5:35, 0:30] = Structure.FEMUR  # the shaft runs out of the field of view at k = 0
    lab[12:18, 12:18, 12:18] = 0  # enclosed marrow pocket
    lab[20:28, 20:28, 0:10] = 0  # marrow cavity open at the field-of-view edge: open in 3D, closed in axial slices
    lab[22:26, 8:12, 20:24] = Structure.FEMORAL_CARTILAGE  # a pocket holding another label keeps it
    lab[15:25, 0:20, 25:30] = 0  # a notch open to the outside stays background
    lab[5:35, 5:35, 30:32] = Structure.FEMORAL_CARTILAGE
    out = clean_labels(lab, voxel_ml=0.001)
    assert (out[12:18, 12:18, 12:18] == Structure.FEMUR).all()
    assert (out[20:28, 20:28, 0:10] == Structure.FEMUR).all()
    assert (out[22:26, 8:12, 20:24] == Structure.FEMORAL_CARTILAGE).all()
    assert (out[15:25, 0:20, 25:30] == 0).all()
    assert (out[:5] == 0).all() and (out[35:] == 0).all(), "nothing outside the bone is claimed"


def test_bilateral_and_empty_fields_of_view_warn() -> None:
    shape = (200, 40, 40)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    assert any("no knee" in w for w in field_of_view_warnings(lab, affine, image))
    for cx in (40, 160):
        lab[_blob(shape, (cx, 20, 20), 12)] = Structure.FEMUR
        lab[cx - 10:cx + 10, 10:30, 31:33] = Structure.FEMORAL_CARTILAGE  # on the femur's top
    warnings = field_of_view_warnings(lab, affine, image)
    assert any("both knees" in w for w in warnings)
    assert any("not found" in w and "patella" in w for w in warnings)
    lab[160 - 10:160 + 10, 10:30, 31:33] = 0  # the second "femur" has no cartilage: a false blob, not a knee
    assert not any("both knees" in w for w in field_of_view_warnings(lab, affine, image))


def test_any_orientation_gives_the_same_labels(tiny_bundle: Path, small_phantom) -> None:
    """Flipping the array axes and the affine together is the same image: labels must follow exactly."""
    image = small_phantom.image
    a = segment_volume(image, bundle=tiny_bundle, device="cpu").labels.array
    flipped_affine = image.affine.copy()
    flipped_affine[:3, 0] *= -1
    flipped_affine[:3, 3] = image.affine[:3, 3] + image.affine[:3, 0] * (image.spatial_shape[0] - 1)
    other = Volume(image.array[::-1].copy(), flipped_affine, image.meta)
    b = segment_volume(other, bundle=tiny_bundle, device="cpu").labels.array[::-1]
    assert np.mean(a == b) > 0.999


def test_channel_argmax_is_argmax_ties_included() -> None:
    probs = torch.rand(7, 9, 8, 5)
    probs[3, 0, 0, 0] = probs[5, 0, 0, 0] = 2.0  # a tie: the first channel wins, as with argmax
    probs[:, 1, 1, 1] = 0.5
    expected = probs.argmax(0).to(torch.uint8)
    assert torch.equal(_channel_argmax(probs), expected) and int(expected[0, 0, 0]) == 3


def _with_mirrors(bundle_dir: Path, mirrors) -> Path:
    path = bundle_dir / "configs" / "inference.json"
    cfg = json.loads(path.read_text())
    cfg["test_time_mirrors"] = mirrors
    path.write_text(json.dumps(cfg))
    return bundle_dir


def _mirror_pair(small_phantom) -> tuple[Volume, Volume]:
    """The phantom's pixels on a plain RAS grid, and the same pixels mirrored left/right on the same grid."""
    array = np.asarray(small_phantom.image.array, np.float32)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    return Volume(array, affine), Volume(np.ascontiguousarray(array[::-1]), affine)


def test_left_right_test_time_mirror_makes_the_result_mirror_symmetric(tiny_bundle: Path, small_phantom) -> None:
    """Averaging a pass with its left/right mirror makes segmenting a mirrored knee give the mirrored answer
    (a random-weight network alone does not)."""
    plain, mirrored = _mirror_pair(small_phantom)

    def asymmetry() -> float:
        a = segment_volume(plain, bundle=tiny_bundle, device="cpu", probabilities=True).probabilities
        b = segment_volume(mirrored, bundle=tiny_bundle, device="cpu", probabilities=True).probabilities
        return max(float(np.abs(a[s][::-1] - b[s]).max()) for s in a)

    _with_mirrors(tiny_bundle, [])  # the tiny bundle copies the shipped settings, which mirror
    without = asymmetry()
    _with_mirrors(tiny_bundle, [[0]])
    assert load_bundle(tiny_bundle).test_time_mirrors == ((0,),)
    with_mirror = asymmetry()
    assert without > 1e-3
    assert with_mirror < 1e-4
    result = segment_volume(plain, bundle=tiny_bundle, device="cpu")
    assert result.info["test_time_mirrors"] == [[0]]


@pytest.mark.parametrize("bad", [[0], [[3]], [[]], "R", [["x"]]])
def test_malformed_test_time_mirrors_are_a_clear_error(tiny_bundle: Path, bad) -> None:
    _with_mirrors(tiny_bundle, bad)
    with pytest.raises(ModelError, match="test_time_mirrors must be a list of axis lists"):
        load_bundle(tiny_bundle)
