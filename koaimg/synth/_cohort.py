"""A simulated trial cohort: subjects in arms, baseline and 6-month MR + US, exported like a real trial.

The default design follows the published phase IIb trial (two-dose AdMSC vs single-dose AdMSC vs hyaluronic acid,
73 subjects, 6 months): ultrasound femoral cartilage thickness change +0.25 ± 0.18 mm (two-dose) and -0.06 ± 0.14 mm
(HA), single dose in between; MRI thickness and defect changes in the same directions, smaller, as MRI measures the
whole plate. Each subject's effect is drawn from its arm's distribution and recorded as truth, so the cohort analysis
can be checked against the *realised* effects as well as the design.
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes, atomic_write_text
from ._knee_anatomy import MOAKS_REGIONS, Defect, KneeAnatomy, ThicknessChange
from ._knee_phantom import ACQUISITIONS, Acquisition
from ._longitudinal import make_pair
from ._write import write_knee_phantom

VISITS = ("baseline", "month6")


@dataclass(frozen=True)
class Arm:
    """One treatment arm: size and the distribution of per-subject 6-month effects."""

    name: str
    n: int
    us_delta_mean: float
    us_delta_sd: float
    mri_delta_mean: float
    mri_delta_sd: float
    #: follow-up / baseline defect radius (below 1 = repair, above 1 = growth)
    defect_factor_mean: float = 1.0
    defect_factor_sd: float = 0.08


DEFAULT_ARMS = (
    Arm("two_dose_admsc", 24, 0.25, 0.18, 0.10, 0.08, 0.85, 0.08),
    Arm("single_dose_admsc", 24, 0.10, 0.16, 0.04, 0.08, 0.95, 0.08),
    Arm("hyaluronic_acid", 25, -0.06, 0.14, -0.03, 0.06, 1.08, 0.08),
)


@dataclass(frozen=True)
class SubjectPlan:
    """Everything drawn for one subject (the truth of the simulated trial)."""

    subject: str
    arm: str
    side: str
    seed: int
    us_delta_mm: float
    mri_delta_mm: float
    defect_factor: float
    defects: tuple[tuple[str, float, float], ...]


def plan_cohort(arms: tuple[Arm, ...] = DEFAULT_ARMS, *, seed: int = 0, prefix: str = "KOA") -> list[SubjectPlan]:
    """Draw subjects (randomised order of allocation, per-subject effects, sides and lesions)."""
    rng = np.random.default_rng([seed, 2024])
    allocation = [arm for arm in arms for _ in range(arm.n)]
    order = rng.permutation(len(allocation))
    plans = []
    femoral = [r for r in MOAKS_REGIONS if r.startswith("F")]
    for number, index in enumerate(order, start=1):
        arm = allocation[index]
        n_defects = int(rng.integers(0, 3))
        defects = tuple((str(rng.choice(femoral)), float(round(rng.uniform(2.5, 6.0), 2)),
                         float(round(rng.choice([0.5, 0.7, 1.0]), 2))) for _ in range(n_defects))
        plans.append(SubjectPlan(
            subject=f"{prefix}-{number:03d}", arm=arm.name, side=str(rng.choice(["right", "left"])),
            seed=int(rng.integers(0, 2**31 - 1)),
            us_delta_mm=float(rng.normal(arm.us_delta_mean, arm.us_delta_sd)),
            mri_delta_mm=float(rng.normal(arm.mri_delta_mean, arm.mri_delta_sd)),
            defect_factor=float(np.clip(rng.normal(arm.defect_factor_mean, arm.defect_factor_sd), 0.5, 1.6)),
            defects=defects))
    return plans


def _subject_rows(plan: SubjectPlan, pair, us_truth: tuple[dict, dict] | None) -> list[dict]:
    rows = []
    for r in pair.delta_regions:
        rows.append({"subject": plan.subject, "arm": plan.arm, "modality": "MR",
                     "structure": {"femur": "femoral_cartilage", "tibia": "tibial_cartilage",
                                   "patella": "patellar_cartilage"}[r["bone"]],
                     "region": r["region"], "metric": r["metric"], "baseline": round(r["baseline"], 6),
                     "followup": round(r["followup"], 6), "delta": round(r["delta"], 6)})
    if us_truth is not None:
        base, follow = us_truth
        for site in ("LC", "IN", "MC"):
            b = base["sites"][site]["mean_thickness_mm"]
            f = follow["sites"][site]["mean_thickness_mm"]
            rows.append({"subject": plan.subject, "arm": plan.arm, "modality": "US",
                         "structure": "ultrasound_femoral_cartilage", "region": site, "metric": "thickness",
                         "baseline": round(b, 6), "followup": round(f, 6), "delta": round(f - b, 6)})
    return rows


def make_subject(plan: SubjectPlan, out: str | Path, *, mr_scale: float = 3.0, with_us: bool = True,
                 acquisition: Acquisition | None = None, anatomy: KneeAnatomy | None = None,
                 truth_formats: tuple[str, ...] = (), us_frames: int | None = None) -> list[dict]:
    """Generate and write one subject's visits; returns its truth rows.

    ``acquisition`` overrides the DESS grid scaled by ``mr_scale``; ``anatomy`` overrides the random knee drawn from
    the plan's seed; ``truth_formats`` may add ``"labels"`` (the true label map as NIfTI) to the truth folder.
    """
    from ._us import follow_up_spec, make_us_phantom, random_us_spec, write_us_phantom

    out = Path(out)
    rng = np.random.default_rng(plan.seed)
    if anatomy is None:
        anatomy = KneeAnatomy.random(rng)
    anatomy = anatomy.with_defects(*(Defect(r, rad, d) for r, rad, d in plan.defects))
    change = ThicknessChange(global_mm=plan.mri_delta_mm, defect_radius_factor=plan.defect_factor)
    if acquisition is None:
        acquisition = ACQUISITIONS["dess"] if mr_scale == 1 else ACQUISITIONS["dess"].scaled(mr_scale)
    pair = make_pair(anatomy, acquisition, change, seed=plan.seed % 1_000_000, side=plan.side)
    truth_root = out / "ground_truth" / plan.subject
    for visit, phantom in zip(VISITS, (pair.baseline, pair.followup), strict=True):
        write_knee_phantom(phantom, truth_root / visit / "MR", pseudonym=plan.subject, visit=visit,
                           formats=("dicom", *truth_formats), dicom_dir=out / plan.subject / visit / "MR",
                           truth_dir=truth_root / visit / "MR")
    us_truth = None
    if with_us:
        extra = {} if us_frames is None else {"n_frames": us_frames}
        base_spec = random_us_spec(plan.seed % 1_000_000, side=plan.side, **extra)
        # keep the follow-up physical: a subject cannot lose more cartilage than they have
        delta = max(plan.us_delta_mm, -0.9 * min(base_spec.thickness_mm))
        follow = follow_up_spec(base_spec, delta, seed=plan.seed % 1_000_000 + 1)
        us_truth = []
        for visit, spec, seed in ((VISITS[0], base_spec, 1), (VISITS[1], follow, 2)):
            phantom = make_us_phantom(spec, seed=plan.seed % 1_000_000 + seed)
            folder = out / plan.subject / visit / "US"
            written = write_us_phantom(phantom, folder, pseudonym=plan.subject, visit=visit, formats=("dicom",))
            target = truth_root / visit / "US" / "truth.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written["truth"], target)
            us_truth.append(json.loads(target.read_text()))
        us_truth = tuple(us_truth)
    return _subject_rows(plan, pair, us_truth)


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_cohort(out: str | Path, arms: tuple[Arm, ...] = DEFAULT_ARMS, *, seed: int = 0, mr_scale: float = 3.0,
                 with_us: bool = True, workers: int = 1, with_labels: bool = False) -> Path:
    """Write the whole simulated trial: scans per subject/visit/modality, ``allocation.csv`` and the truth.

    Layout: ``OUT/<subject>/<visit>/{MR,US}/`` (DICOM only, as a trial export), ``OUT/allocation.csv`` (subject, arm),
    ``OUT/ground_truth/`` (per-subject phantom truth, ``subjects.csv`` with each subject's drawn effects,
    ``truth.csv`` tidy per-subject per-region true values and ``design.json``). ``with_labels`` adds each MR scan's
    true label map (``ground_truth/<subject>/<visit>/MR/labels.nii.gz``, what ``koaimg batch --labels-dir`` reads),
    so the trial can be run end to end without a segmentation model.
    """
    truth_formats = ("labels",) if with_labels else ()
    out = Path(out)
    plans = plan_cohort(arms, seed=seed)
    rows: list[dict] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(make_subject, plan, out, mr_scale=mr_scale, with_us=with_us,
                                       truth_formats=truth_formats) for plan in plans]
            for future in futures:
                rows.extend(future.result())
    else:
        for plan in plans:
            rows.extend(make_subject(plan, out, mr_scale=mr_scale, with_us=with_us, truth_formats=truth_formats))
    atomic_write_bytes(out / "allocation.csv", _csv([{"subject": p.subject, "arm": p.arm} for p in plans]))
    truth = out / "ground_truth"
    atomic_write_bytes(truth / "subjects.csv", _csv([
        {"subject": p.subject, "arm": p.arm, "side": p.side, "us_delta_mm": round(p.us_delta_mm, 6),
         "mri_delta_mm": round(p.mri_delta_mm, 6), "defect_factor": round(p.defect_factor, 6),
         "defects": ";".join(f"{r}:{rad}:{d}" for r, rad, d in p.defects)} for p in plans]))
    atomic_write_bytes(truth / "truth.csv", _csv(rows))
    atomic_write_text(truth / "design.json", json.dumps({"arms": [asdict(a) for a in arms], "seed": seed,
                                                         "mr_scale": mr_scale, "with_us": with_us,
                                                         "with_labels": with_labels,
                                                         "visits": list(VISITS)}, indent=2))
    return out
