"""Training patches: centred on cartilage, on labelled anatomy, or anywhere in the map (far background, air)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koaimg.core import LabelVolume
from koaimg.segment import WorkingGrid
from koaimg.segment._training import (
    CheckpointMismatchError,
    LabelSource,
    average_weights,
    cartilage_surface_band,
    rendered_pair,
    rendered_phantom,
    surface_weighted_ce,
    training_pair,
    training_spec,
    vary_cartilage_thickness,
)
from koaimg.synth import Acquisition


def _source() -> LabelSource:
    """A 60 mm cube with a small 'knee' in one corner: most of the map is far from any label."""
    lab = np.zeros((120, 120, 120), np.uint8)
    lab[10:30, 10:30, 10:20] = 1
    lab[10:30, 10:30, 20:23] = 2
    return LabelSource(LabelVolume(lab, np.diag([0.5, 0.5, 0.5, 1.0])), "corner")


def test_anywhere_patches_show_the_far_background_and_anatomy_patches_do_not():
    source = _source()
    far = [training_pair(source, np.random.default_rng(i), patch=16, spacing_mm=0.6, anywhere=1.0)
           for i in range(12)]
    near = [training_pair(source, np.random.default_rng(100 + i), patch=16, spacing_mm=0.6, cartilage_focus=0.5)
            for i in range(6)]
    assert sum(not lab.any() for _, lab in far) >= 4, "anywhere: many patches hold no label at all"
    assert all(lab.any() for _, lab in near), "anatomy patches are centred on labelled voxels"
    for img, lab in far + near:
        assert img.shape == lab.shape == (16, 16, 16) and img.dtype == np.float32
        assert img.min() >= -0.5 and img.max() <= 2.0, "intensities stay in the clipped range inference uses"


def test_focused_patches_are_centred_on_cartilage():
    source, rng = _source(), np.random.default_rng(1)
    for _ in range(10):
        sub = source.crop_around(rng, 5.0, cartilage_focus=1.0)
        assert (sub.array == 2).any()


def test_labels_reach_the_working_grid_by_nearest_neighbour():
    """Interpolating label values would invent structures at their borders (1 | 3 -> 2); nearest never does."""
    lab = np.zeros((40, 40, 12), np.uint8)
    lab[5:20, 5:30, 2:10] = 1
    lab[20:35, 5:30, 2:10] = 3
    affine = np.diag([0.35, 0.35, 1.5, 1.0])
    grid = WorkingGrid(affine, lab.shape, 0.6)
    out = grid.labels_to_working(lab)
    assert out.shape == grid.shape
    assert set(np.unique(out)) == {0, 1, 3}
    # the same structure volume (mm^3) on both grids, within the boundary's partial voxels
    for s in (1, 3):
        native = (lab == s).sum() * 0.35 * 0.35 * 1.5
        working = (out == s).sum() * float(np.prod(grid.spacing))
        assert abs(working - native) / native < 0.15


SMALL = {"small": Acquisition("small", (96, 96, 40), (0.8, 0.8, 1.5), "PIR", "dess")}


def test_rendered_knee_images_align_with_their_labels_and_are_reproducible():
    src = rendered_phantom(5, spacing_mm=1.0, acquisitions=SMALL)
    again = rendered_phantom(5, spacing_mm=1.0, acquisitions=SMALL)
    assert src.image.shape == src.labels.shape and src.image.dtype == np.float16
    np.testing.assert_array_equal(src.image, again.image)
    assert set(np.unique(src.labels)) <= set(range(7)) and (src.labels == 2).any(), "femoral cartilage is in view"
    img = src.image.astype(np.float32)
    assert np.percentile(img, 0.5) == pytest.approx(0.0, abs=0.05), "normalised as inference normalises a volume"
    assert np.percentile(img, 99.5) == pytest.approx(1.0, abs=0.05)
    # the labels sit on the image: in DESS, cartilage is bright and fat-suppressed marrow dark (a flip or a
    # 3-4 voxel shift of the labels mixes them: femoral cartilage mean <= 0.50)
    dess = rendered_phantom(5, spacing_mm=1.0, acquisitions=SMALL, contrast="dess")
    grey = dess.image.astype(np.float32)
    for cartilage in (2, 4):
        assert grey[dess.labels == cartilage].mean() > 0.6
    for bone in (1, 3):
        assert grey[dess.labels == bone].mean() < 0.2
    far = [rendered_pair(src, np.random.default_rng(i), patch=24, anywhere=1.0) for i in range(6)]
    near = [rendered_pair(src, np.random.default_rng(50 + i), patch=24, cartilage_focus=1.0) for i in range(6)]
    assert all(np.isin(lab, (2, 4, 6)).any() for _, lab in near), "cartilage-focused crops hold cartilage"
    for im, lab in far + near:
        assert im.shape == lab.shape == (24, 24, 24) and im.dtype == np.float32
        assert im.min() >= -0.5 and im.max() <= 2.0


def _slab(spacing: tuple[float, float, float]) -> LabelVolume:
    """Bone below, 6 voxels of femoral cartilage, background above (along axis 2)."""
    lab = np.zeros((20, 20, 30), np.uint8)
    lab[:, :, :10] = 1
    lab[:, :, 10:16] = 2
    return LabelVolume(lab, np.diag([*spacing, 1.0]))


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (1.0, 1.0, 0.4)])
def test_cartilage_thickness_moves_the_articular_surface_only(spacing):
    base = _slab(spacing)
    seen = set()
    for seed in range(12):
        out = vary_cartilage_thickness(base, np.random.default_rng(seed), change_mm=(0.8, 0.8))
        arr = out.array
        assert np.array_equal(arr == 1, base.array == 1), "bone never changes"
        assert set(np.unique(arr)) <= {0, 1, 2}, "no other label is invented"
        column = arr[10, 10]
        thickness = int((column == 2).sum())
        assert column[10] == 2 and (column[10:10 + thickness] == 2).all(), "cartilage stays on the bone, in one piece"
        assert np.array_equal(out.affine, base.affine)
        seen.add(thickness)
    step = 2  # 0.8 mm at 0.4 mm (the finest axis is the one the surface moves along)
    assert seen == {6 - step, 6 + step}, seen


def test_thickness_change_never_moves_a_surface_by_a_thick_slice():
    lab = np.zeros((20, 20, 30), np.uint8)
    lab[:10] = 1
    lab[10:14] = 2  # cartilage stacked along axis 0, sampled by 2 mm slices
    base = LabelVolume(lab, np.diag([2.0, 0.5, 0.5, 1.0]))
    for seed in range(6):
        out = vary_cartilage_thickness(base, np.random.default_rng(seed), change_mm=(0.5, 0.5))
        assert np.array_equal(out.array, lab), "surfaces only move along finely sampled axes"


def test_thickness_change_is_off_by_default_so_validation_samples_stay_as_they_were():
    source = _source()
    a = training_pair(source, np.random.default_rng(3), patch=16, spacing_mm=0.6)
    b = training_pair(source, np.random.default_rng(3), patch=16, spacing_mm=0.6, thickness_change=0.0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = training_pair(source, np.random.default_rng(3), patch=16, spacing_mm=0.6, thickness_change=1.0)
    assert c[0].shape == (16, 16, 16)


def test_scale_jitter_sets_the_voxel_size_range_and_defaults_to_the_old_ten_percent():
    wide = training_spec(16, 0.6, scale_jitter=0.25)
    assert wide.in_plane_mm == pytest.approx((0.45, 0.75)) and wide.slice_mm == pytest.approx((0.45, 0.75))
    assert training_spec(16, 0.6).in_plane_mm == pytest.approx((0.54, 0.66))
    source = _source()
    a = training_pair(source, np.random.default_rng(5), patch=16, spacing_mm=0.6)
    b = training_pair(source, np.random.default_rng(5), patch=16, spacing_mm=0.6, scale_jitter=0.1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "the default keeps earlier sample streams"
    c = training_pair(source, np.random.default_rng(5), patch=16, spacing_mm=0.6, scale_jitter=0.25)
    assert not np.array_equal(a[0], c[0]), "the jitter reaches the renderer: the same draw gives another patch"
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="scale_jitter"):
            training_spec(16, 0.6, scale_jitter=bad)


def _slab_target() -> torch.Tensor:
    """Bone below, a 4-voxel femoral cartilage plate (label 2), background above, along the last axis."""
    lab = torch.zeros((1, 1, 6, 6, 12), dtype=torch.int64)
    lab[..., :4] = 1
    lab[..., 4:8] = 2
    return lab


def test_surface_band_holds_the_voxels_each_side_of_every_cartilage_boundary():
    band = cartilage_surface_band(_slab_target())[0, 0]
    assert band.shape == (6, 6, 12)
    expected = torch.zeros(12)
    expected[[3, 4, 7, 8]] = 1  # bone | cartilage and cartilage | background, one voxel each side
    assert torch.equal(band, expected.expand(6, 6, 12)), "the volume's own faces are not boundaries"
    assert cartilage_surface_band(torch.ones((1, 1, 4, 4, 4), dtype=torch.int64)).sum() == 0, "no cartilage, no band"


def test_articular_band_leaves_the_bone_side_alone():
    band = cartilage_surface_band(_slab_target(), side="articular")[0, 0]
    expected = torch.zeros(12)
    expected[[7, 8]] = 1  # cartilage | background only
    assert torch.equal(band, expected.expand(6, 6, 12))
    with pytest.raises(ValueError, match="side"):
        cartilage_surface_band(_slab_target(), side="bone")


def _logits_for(labels: torch.Tensor, confidence: float = 10.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels[:, 0], 7).permute(0, 4, 1, 2, 3).float() * confidence


def test_surface_loss_is_large_when_the_articular_surface_is_one_voxel_out():
    target = _slab_target()
    right = surface_weighted_ce(_logits_for(target), target)
    thicker = target.clone()
    thicker[..., 8] = 2  # the articular surface one voxel out: fluid over the cartilage read as cartilage
    wrong = surface_weighted_ce(_logits_for(thicker), target)
    assert float(right) < 0.01
    assert float(wrong) > 1.0, "a quarter of the band is now confidently wrong"
    no_cartilage = torch.ones((1, 1, 4, 4, 4), dtype=torch.int64)
    assert float(surface_weighted_ce(_logits_for(torch.zeros_like(no_cartilage)), no_cartilage)) == 0.0


def test_average_weights_is_the_weighted_mean_and_keeps_counters():
    a = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 6.0]), "b": torch.tensor([3.0], dtype=torch.float16), "n": torch.tensor(7)}
    mean = average_weights([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert mean["b"].dtype == torch.float16 and float(mean["b"]) == 2.0, "cast back to each tensor's own dtype"
    assert int(mean["n"]) == 7, "integer tensors are not averaged: taken from the last checkpoint"
    assert torch.allclose(average_weights([a, b], [3.0, 1.0])["w"], torch.tensor([1.0, 3.0])), "weights normalised"


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]])
def test_average_weights_rejects_weights_that_make_no_mean(weights):
    state = {"w": torch.zeros(2)}
    with pytest.raises(CheckpointMismatchError, match="weights"):
        average_weights([state, state], weights)


def test_average_weights_rejects_checkpoints_of_another_network():
    with pytest.raises(CheckpointMismatchError, match="other tensors"):
        average_weights([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(CheckpointMismatchError, match="no checkpoints"):
        average_weights([])
