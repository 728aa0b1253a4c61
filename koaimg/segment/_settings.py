"""Reading one post-processing step's settings from ``configs/inference.json``: the switch and the key check that
every step shares (each step checks its own ranges)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ..core import ModelError

__all__ = ["step_settings"]


def step_settings(cls: type, value: Any, key: str, path: Path | None = None) -> dict[str, Any] | None:
    """``false``/absent -> None (the step is off); ``true`` -> ``{}`` (its defaults); an object -> a copy of it.

    Any other value, or an object with a key ``cls`` does not have, is a ``ModelError`` naming
    ``postprocessing.<key>``."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    names = {f.name for f in fields(cls)}
    if not isinstance(value, dict) or set(value) - names:
        raise ModelError(f"configs/inference.json postprocessing.{key} must be true/false or an object with keys "
                         f"from {sorted(names)}; got {value!r}", path=path)
    return dict(value)
