"""numba settings in one place (stumpy's rule): kernels take these, never hard-coded flags.

fastmath stays off so measurements reproduce bit for bit across machines; caching is on so a CLI start does not pay
the compile cost again (warm the cache once before forking workers: concurrent writers can collide).
"""

from __future__ import annotations

import os
from pathlib import Path

FASTMATH = False
CACHE = True


def cache_dir() -> str:
    """Where compiled kernels are cached: ``NUMBA_CACHE_DIR`` when set, else beside the package's ``__pycache__``."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return configured
    return str(Path(__file__).resolve().parent / "**" / "__pycache__") + " (numba default, beside the sources)"
