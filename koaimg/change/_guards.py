"""Checks that two visits may be compared at all: same subject, same knee, same sequence, same voxel size.

Mixing sequences or segmentation methods within a longitudinal comparison shifts thickness by 4-8 % (domain-specs
§2.5), more than the change a trial looks for; a different knee or subject makes Δ meaningless. Each mismatch is
refused (``PairMismatchError``) or, on request, recorded as a flag with its reason; an identity that is not known on
one side is never silently assumed equal: it is listed as not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import PairMismatchError

#: relative voxel-size difference (per axis) beyond which two visits are not the same acquisition
VOXEL_TOLERANCE = 0.05


@dataclass(frozen=True)
class VisitIdentity:
    """What identifies a visit for the pair checks (None = not known)."""

    subject: str | None = None
    side: str | None = None
    modality: str | None = None
    sequence: str | None = None
    spacing: tuple[float, ...] | None = None


@dataclass
class PairCheck:
    """Outcome of the pair checks: mismatches (each with its reason) and what could not be checked."""

    mismatches: list[str]
    unchecked: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing checked differs."""
        return not self.mismatches


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "unknown"))


def check_pair(baseline: VisitIdentity, followup: VisitIdentity, *, voxel_tolerance: float = VOXEL_TOLERANCE,
               on_mismatch: str = "refuse", where: str | None = None) -> PairCheck:
    """Compare two visits' identities; raise ``PairMismatchError`` on a mismatch unless ``on_mismatch="flag"``."""
    if on_mismatch not in ("refuse", "flag"):
        raise ValueError(f"`on_mismatch` must be 'refuse' or 'flag', got {on_mismatch!r}")
    mismatches, unchecked = [], []
    for name, label in (("subject", "subject pseudonym"), ("side", "knee side"), ("modality", "modality"),
                        ("sequence", "sequence")):
        b, f = getattr(baseline, name), getattr(followup, name)
        if _blank(b) or _blank(f):
            unchecked.append(f"{label} not known for {'both visits' if _blank(b) and _blank(f) else 'one visit'}")
        elif str(b).strip().lower() != str(f).strip().lower():
            mismatches.append(f"different {label}: baseline {b!r}, follow-up {f!r}")
    if baseline.spacing is None or followup.spacing is None:
        unchecked.append("voxel size not known for one visit")
    else:
        b, f = np.sort(np.asarray(baseline.spacing, float)), np.sort(np.asarray(followup.spacing, float))
        if b.shape != f.shape:
            mismatches.append(f"different grid dimensionality: baseline {b.tolist()}, follow-up {f.tolist()}")
        else:
            rel = np.abs(b - f) / np.maximum(b, 1e-9)
            if np.any(rel > voxel_tolerance):
                mismatches.append(f"voxel size differs by {100 * rel.max():.0f} % (tolerance "
                                  f"{100 * voxel_tolerance:.0f} %): baseline {np.round(b, 3).tolist()} mm, "
                                  f"follow-up {np.round(f, 3).tolist()} mm")
    if mismatches and on_mismatch == "refuse":
        raise PairMismatchError("baseline and follow-up cannot be compared: " + "; ".join(mismatches),
                                path=where, hint="pair scans of the same knee and protocol, or pass "
                                "--on-mismatch flag to compute the change anyway with the reason recorded")
    return PairCheck(mismatches, unchecked)
