"""Phantom recipes the CLI calls: parse user-level options into koaimg.synth objects and write to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import KoaimgError
from ..synth import ACQUISITIONS, MOAKS_REGIONS, Acquisition, Defect, KneeAnatomy, ThicknessChange


class SynthOptionError(KoaimgError, ValueError):
    """A phantom option could not be understood."""

    code = "bad_option"


def parse_defect(text: str) -> Defect:
    """``REGION:RADIUS_MM[:DEPTH]`` e.g. ``FMC:5:1`` (full thickness) or ``FLT:4:0.5``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in MOAKS_REGIONS:
        raise SynthOptionError(f"defect {text!r} is not REGION:RADIUS_MM[:DEPTH]",
                               hint=f"REGION is one of {', '.join(MOAKS_REGIONS)}; e.g. FMC:5:1")
    try:
        radius = float(parts[1])
        depth = float(parts[2]) if len(parts) == 3 else 1.0
    except ValueError:
        raise SynthOptionError(f"defect {text!r}: radius and depth must be numbers") from None
    if not (0 < radius <= 20 and 0 < depth <= 1):
        raise SynthOptionError(f"defect {text!r}: radius must be in (0, 20] mm and depth in (0, 1]")
    return Defect(parts[0], radius, depth)


def parse_region_deltas(items: list[str]) -> dict[str, float]:
    """``REGION=MM`` items into a dict."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in MOAKS_REGIONS or not value:
            raise SynthOptionError(f"regional change {item!r} is not REGION=MM", hint="e.g. FLC=-0.2")
        try:
            out[name] = float(value)
        except ValueError:
            raise SynthOptionError(f"regional change {item!r}: {value!r} is not a number") from None
    return out


def acquisition_for(name: str, scale: float) -> Acquisition:
    """A named acquisition, optionally with fewer voxels over the same field of view."""
    if name not in ACQUISITIONS:
        raise SynthOptionError(f"unknown acquisition {name!r}", hint=f"choose one of {sorted(ACQUISITIONS)}")
    if scale < 1:
        raise SynthOptionError("scale must be >= 1 (it divides the number of voxels per axis)")
    acq = ACQUISITIONS[name]
    return acq if scale == 1 else acq.scaled(scale)


def anatomy_for(seed: int, *, random_anatomy: bool, defects: list[str]) -> KneeAnatomy:
    """Default or random anatomy carrying the given defects."""
    anatomy = KneeAnatomy.random(np.random.default_rng([seed, 11])) if random_anatomy else KneeAnatomy()
    return anatomy.with_defects(*(parse_defect(d) for d in defects))


def synth_knee(out: Path, *, acquisition: str = "dess", scale: float = 1.0, side: str = "right", seed: int = 0,
               random_anatomy: bool = False, defects: list[str] = (), formats: tuple[str, ...] = ("dicom", "nifti"),
               pseudonym: str = "PHANTOM") -> Path:
    """One knee scan with truth."""
    from ..synth import make_knee_phantom, write_knee_phantom

    anatomy = anatomy_for(seed, random_anatomy=random_anatomy, defects=list(defects))
    phantom = make_knee_phantom(anatomy, acquisition_for(acquisition, scale), seed=seed, side=side)
    return write_knee_phantom(phantom, out, pseudonym=pseudonym, formats=formats)


def synth_pair(out: Path, *, acquisition: str = "dess", scale: float = 1.0, side: str = "right", seed: int = 0,
               random_anatomy: bool = False, defects: list[str] = (), delta_mm: float = 0.0,
               region_deltas: list[str] = (), defect_growth: float = 1.0, max_deg: float = 10.0,
               max_mm: float = 10.0, formats: tuple[str, ...] = ("dicom", "nifti"), pseudonym: str = "PHANTOM") -> Path:
    """Baseline + 6-month scans with a prescribed change and repositioning."""
    from ..synth import make_pair, write_pair

    anatomy = anatomy_for(seed, random_anatomy=random_anatomy, defects=list(defects))
    change = ThicknessChange(delta_mm, parse_region_deltas(list(region_deltas)), defect_growth)
    pair = make_pair(anatomy, acquisition_for(acquisition, scale), change, seed=seed, side=side,
                     max_reposition_deg=max_deg, max_reposition_mm=max_mm)
    return write_pair(pair, out, pseudonym=pseudonym, formats=formats)


def synth_us(out: Path, *, seed: int = 0, side: str = "right", frames: int = 8, delta_mm: float | None = None,
             formats: tuple[str, ...] = ("dicom", "png"), pseudonym: str = "PHANTOM") -> Path:
    """One ultrasound phantom (and its 6-month follow-up when ``delta_mm`` is given) with truth."""
    from ..synth import follow_up_spec, make_us_phantom, random_us_spec, write_us_phantom

    spec = random_us_spec(seed, side=side, n_frames=frames, frame_time_ms=33.3 if frames > 1 else None)
    if delta_mm is None:
        write_us_phantom(make_us_phantom(spec, seed=seed), out, pseudonym=pseudonym, visit="baseline",
                         formats=formats)
        return out
    write_us_phantom(make_us_phantom(spec, seed=seed), out / "baseline", pseudonym=pseudonym, visit="baseline",
                     formats=formats)
    follow = follow_up_spec(spec, delta_mm, seed=seed + 1)
    write_us_phantom(make_us_phantom(follow, seed=seed + 2), out / "month6", pseudonym=pseudonym, visit="month6",
                     formats=formats)
    return out


def synth_cohort(out: Path, *, seed: int = 0, n_per_arm: int | None = None, scale: float = 3.0,
                 with_us: bool = True, workers: int = 1, with_labels: bool = False) -> Path:
    """The simulated trial (default: the published phase IIb design) exported like a real trial."""
    from dataclasses import replace

    from ..synth import DEFAULT_ARMS, write_cohort

    arms = DEFAULT_ARMS if n_per_arm is None else tuple(replace(a, n=n_per_arm) for a in DEFAULT_ARMS)
    if any(a.n < 1 for a in arms):
        raise SynthOptionError("each arm needs at least one subject")
    return write_cohort(out, arms, seed=seed, mr_scale=scale, with_us=with_us, workers=workers,
                        with_labels=with_labels)
