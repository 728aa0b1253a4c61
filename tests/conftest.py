"""Shared fixtures: where the real data lives, and small synthetic volumes with known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from koaimg_testdata import REALDATA, REPO, oblique_affine, realdata  # noqa: F401  (re-exported)

from koaimg.core import Volume


@pytest.fixture
def oblique_volume() -> Volume:
    """20 x 24 x 12 random float volume on an oblique anisotropic grid."""
    rng = np.random.default_rng(0)
    return Volume((rng.random((20, 24, 12)) * 1000).astype(np.float32), oblique_affine())
