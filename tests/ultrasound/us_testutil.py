"""Ultrasound phantoms shared by the ultrasound tests (cached: each takes ~0.3 s to build)."""

from __future__ import annotations

import functools

from koaimg.synth import USPhantom, follow_up_spec, make_us_phantom, random_us_spec


@functools.cache
def phantom(seed: int, n_frames: int = 1, **overrides) -> USPhantom:
    """A random single-frame (or cine) phantom, cached."""
    return make_us_phantom(random_us_spec(seed, n_frames=n_frames, **overrides), seed=seed)


@functools.cache
def pair(seed: int, delta: float) -> tuple[USPhantom, USPhantom]:
    """Baseline and follow-up of one knee: thickness changed by ``delta`` mm, probe repositioned, new speckle."""
    spec = random_us_spec(seed, n_frames=1)
    follow = follow_up_spec(spec, delta, seed=seed + 1)
    return make_us_phantom(spec, seed=seed), make_us_phantom(follow, seed=seed + 50)
