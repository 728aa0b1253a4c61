"""Measurement precision per metric and the smallest detectable difference (SDD) it implies.

SDD (= MDC95) = 1.96 x sqrt(2) x SEM ~= 2.77 x SEM (domain-specs §2.5). The MR default is the worked example there:
an RMS-CV of 3 % (the 3T OAI test-retest range is 2.3-8.2 %) applied to the baseline value, i.e. about 0.17 mm on a
2 mm plate. Ultrasound has no retrieved SEM (domain-specs §4.2 lists ICCs only); the default 0.10 mm is a design
value (ICC ~0.96 with a between-knee SD of ~0.5 mm) and should be replaced by the site's own test-retest SEM.
Metrics with no stated precision (percentages of area, grades) get no SDD and an empty ``beyond_sdd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SDD_FACTOR = 1.96 * math.sqrt(2.0)

#: relative precision (RMS-CV, %) of MR morphometry metrics (domain-specs §2.5 worked example)
MR_RMS_CV_PCT = 3.0
#: absolute precision (SEM, mm) of ultrasound thickness at one site [D]
US_SEM_MM = 0.10
MR_CV_METRICS = ("ThCtAB.Me", "ThCcAB.Me", "VC", "tAB", "cAB")


@dataclass(frozen=True)
class Precision:
    """Test-retest precision used to flag detectable change: relative (RMS-CV %) or absolute (SEM in the unit).

    ``relative`` maps metric -> RMS-CV %; ``absolute`` maps metric -> SEM. An absolute SEM wins over a relative one.
    """

    relative: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MR_CV_METRICS, MR_RMS_CV_PCT))
    absolute: dict[str, float] = field(default_factory=lambda: {"thickness": US_SEM_MM})

    def sem(self, metric: str, baseline: float) -> float | None:
        """SEM of ``metric`` at a baseline value, or None when no precision is known."""
        if metric in self.absolute:
            return float(self.absolute[metric])
        if metric in self.relative and math.isfinite(baseline) and baseline > 0:
            return self.relative[metric] / 100.0 * float(baseline)
        return None

    def sdd(self, metric: str, baseline: float) -> float | None:
        """Smallest detectable difference (2.77 x SEM) of ``metric`` at ``baseline``, or None."""
        sem = self.sem(metric, baseline)
        return None if sem is None else SDD_FACTOR * sem

    @classmethod
    def from_options(cls, *, rms_cv_pct: float | None = None, sem_mm: float | None = None) -> Precision:
        """Defaults with the MR RMS-CV and/or the thickness SEM (mm, applied to every thickness metric) replaced."""
        relative = dict.fromkeys(MR_CV_METRICS, MR_RMS_CV_PCT if rms_cv_pct is None else float(rms_cv_pct))
        absolute = {"thickness": US_SEM_MM}
        if sem_mm is not None:
            absolute = dict.fromkeys(("thickness", "ThCtAB.Me", "ThCcAB.Me"), float(sem_mm))
        return cls(relative, absolute)

    def describe(self) -> dict:
        """Plain description for provenance files."""
        return {"sdd_formula": "SDD = 1.96 x sqrt(2) x SEM (2.77 x SEM)",
                "rms_cv_pct": dict(self.relative), "sem_abs": dict(self.absolute)}
