"""Working grid: exact RAS reorientation and faithful resampling there and back on oblique anisotropic grids."""

from __future__ import annotations

import numpy as np
import torch
from koaimg_testdata import oblique_affine

from koaimg.segment import WorkingGrid
from koaimg.segment._geometry import _matching_axes, _sample, ras_affine, ras_transform, to_ras_array


def _smooth(world: np.ndarray) -> np.ndarray:
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    return np.sin(x / 9.0) + np.cos(y / 7.0) + 0.02 * z


def _world_grid(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_reorientation_is_exact_and_keeps_world_positions() -> None:
    affine = np.array([[0, 0, 0.7, -20], [-0.365, 0, 0, 30], [0, -0.365, 0, 40], [0, 0, 0, 1.0]])  # P I R
    shape = (20, 18, 9)
    arr = np.random.default_rng(0).random(shape)
    perm, flip = ras_transform(affine)
    ras = to_ras_array(arr, perm, flip)
    a2 = ras_affine(affine, shape, perm, flip)
    assert np.all(np.diag(a2[:3, :3]) > 0) and np.allclose(a2[:3, :3], np.diag(np.diag(a2[:3, :3])))
    w1 = _world_grid(affine, shape)
    w2 = _world_grid(a2, ras.shape)
    # the same voxel value sits at the same world position
    idx = (3, 4, 5)
    hit = np.argwhere(np.all(np.isclose(w2, w1[idx]), axis=-1))
    assert len(hit) == 1 and ras[tuple(hit[0])] == arr[idx]


def test_oblique_round_trip() -> None:
    affine = oblique_affine(spacing=(0.5, 0.55, 1.4))
    shape = (40, 36, 16)
    native = _smooth(_world_grid(affine, shape)).astype(np.float32)
    grid = WorkingGrid(affine, shape, 0.8)
    work = grid.to_working(native)
    assert work.shape == grid.shape and np.allclose(grid.spacing, 0.8, rtol=0.1)
    # forward: working values follow the same world function (inside the field of view, away from the edges)
    expected = _smooth(_world_grid(grid.affine, grid.shape))
    inner = tuple(slice(4, n - 4) for n in grid.shape)
    assert np.abs(work[inner] - expected[inner]).mean() < 0.03
    # back: sampling the working map at native centres reproduces the native map
    back = np.concatenate([s.numpy()[0] for _, _, s in grid.native_slabs(torch.from_numpy(expected[None]))], axis=2)
    assert back.shape == shape
    inner_n = tuple(slice(3, n - 3) for n in shape)
    assert np.abs(back[inner_n] - native[inner_n]).max() < 0.02


def test_separable_sampling_equals_grid_sample_on_axis_matched_grids() -> None:
    """Grids that differ by a permutation, flips, scales and a shift (the working grid and its input, always) are
    sampled axis by axis; the values are grid_sample's (border clamp included) to float rounding."""
    rng = np.random.default_rng(1)
    src = torch.rand(7, 23, 31, 19)
    for _ in range(6):
        perm, sign, scale = rng.permutation(3), rng.choice([-1.0, 1.0], 3), rng.uniform(0.3, 2.0, 3)
        to_src = np.eye(4)
        to_src[:3, :3] = 0.0
        for dst_axis, src_axis in enumerate(perm):
            to_src[src_axis, dst_axis] = sign[dst_axis] * scale[dst_axis]
        to_src[:3, 3] = rng.uniform(-3.0, 25.0, 3)  # reaches past both ends: the border clamp
        axes = _matching_axes(to_src)
        assert axes is not None and np.array_equal(axes, perm)
        fast = _sample(src, to_src, (17, 29, 11), k0=3)
        reference = _sample(src, to_src, (17, 29, 11), k0=3, mode="bilinear", separable=False)
        assert fast.shape == reference.shape == (7, 17, 29, 11)
        assert float((fast - reference).abs().max()) < 1e-5
    rotated = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rotated[:2, :2] = [[c, -s], [s, c]]
    assert _matching_axes(rotated) is None  # a rotation goes through grid_sample
