"""Test helpers shared across test folders: where the real data lives, and affines with known geometry.

A plain module (not ``conftest``): every test folder may have its own conftest.py, and ``from conftest import``
would pick whichever was imported first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def realdata(*parts: str) -> Path:
    """Path under ../shared/realdata, skipping the test with a reason when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (tests read ../shared/realdata beside the checkout)")
    return path


def oblique_affine(spacing=(0.365, 0.4, 0.7), angles=(10.0, -20.0, 30.0), origin=(10.0, -20.0, 30.0),
                   handedness: int = 1) -> np.ndarray:
    """A RAS affine with rotated, anisotropic voxel axes."""
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([spacing[0], spacing[1], spacing[2] * handedness])
    affine[:3, 3] = origin
    return affine
