"""The shipped bundle loads (sha256 verified) and segments a small synthetic knee in seconds on CPU."""

from __future__ import annotations

import numpy as np

from koaimg.core import Structure, Volume
from koaimg.segment import DEFAULT_BUNDLE, load_bundle, segment_volume


def test_shipped_bundle_segments_a_small_phantom(small_phantom) -> None:
    bundle = load_bundle()
    assert bundle.path == DEFAULT_BUNDLE
    assert (DEFAULT_BUNDLE / "models" / "model.pt").stat().st_size < 8_000_000
    image, truth = _central_crop(small_phantom.image), _central_crop(small_phantom.labels)
    result = segment_volume(image, bundle=bundle, device="cpu")
    pred, true = result.labels.array, truth.array
    assert result.labels.same_grid(image)

    def dice(s: Structure) -> float:
        p, t = pred == s, true == s
        return 2 * float((p & t).sum()) / max(1, int(p.sum() + t.sum()))

    # a coarse 1.9 x 1.9 x 4.4 mm grid and a briefly CPU-trained model (docs/README.md): regression floor only
    assert dice(Structure.FEMUR) > 0.7 and dice(Structure.TIBIA) > 0.7
    assert dice(Structure.FEMORAL_CARTILAGE) > 0.4
    assert np.isin([1, 2, 3, 4], np.unique(pred)).all()


def _central_crop(volume: Volume) -> Volume:
    """The joint-centred 70 % of each axis (keeps the test to a few seconds)."""
    shape = np.array(volume.spatial_shape)
    lo = (shape * 0.15).astype(int)
    hi = shape - lo
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_world(lo.astype(float))
    arr = volume.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return type(volume)(np.ascontiguousarray(arr), affine, volume.meta)
