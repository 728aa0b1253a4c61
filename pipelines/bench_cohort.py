"""The simulated phase IIb trial end to end from label maps: generate, measure every visit, compare every pair,
analyse the cohort; check the per-arm Δ against the truth and print the time of each stage.

    nice -n 10 python pipelines/bench_cohort.py --out /tmp/koaimg_trial              # default design, MR x3 grid
    nice -n 10 python pipelines/bench_cohort.py --n-per-arm 6 --out /tmp/small_trial  # quick look

Subjects are drawn by ``koaimg.synth.plan_cohort`` (the ``koaimg synth cohort`` design) and written by
``make_subject`` with the true label maps kept (``truth_formats=("labels",)``); measurement runs on those label maps,
so the check isolates measurement + change + statistics from segmentation. Ultrasound pairs are included when the
ultrasound measurement (``koaimg.pipeline.measure_ultrasound_file``) is installed; otherwise the run says so.
Writes ``bench_cohort.json`` and the cohort tables under ``OUT/results/cohort``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from koaimg.pipeline import run_change, run_cohort
from koaimg.pipeline._measure import measure_file
from koaimg.synth import DEFAULT_ARMS, make_subject, plan_cohort
from koaimg.synth._cohort import VISITS

ENDPOINTS = (("femoral_cartilage", "all"), ("tibial_cartilage", "all"), ("ultrasound_femoral_cartilage", "mean"))


def _us_measurer():
    try:
        from koaimg.pipeline import measure_ultrasound_file
    except ImportError:
        return None
    return measure_ultrasound_file


def one_subject(plan, root: Path, scale: float, with_us: bool) -> tuple[dict, list[dict]]:
    """Generate, measure both visits and compare them for one subject; returns stage timings and the truth rows."""
    times = {}
    t0 = time.perf_counter()
    truth = make_subject(plan, root / "trial", mr_scale=scale, with_us=with_us, truth_formats=("labels",))
    times["generate"] = time.perf_counter() - t0
    results = root / "results" / plan.subject
    t0 = time.perf_counter()
    labels = {}
    for visit in VISITS:
        labels[visit] = root / "trial" / "ground_truth" / plan.subject / visit / "MR" / "labels.nii.gz"
        measure_file(labels[visit], results / visit / "MR", subject=plan.subject, visit=visit)
    times["measure_mr"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_change(results / VISITS[0] / "MR", results / VISITS[1] / "MR", results / f"change_{VISITS[0]}_{VISITS[1]}",
               subject=plan.subject, baseline_visit=VISITS[0], followup_visit=VISITS[1],
               baseline_labels=labels[VISITS[0]], followup_labels=labels[VISITS[1]])
    times["change_mr"] = time.perf_counter() - t0
    measure_us = _us_measurer() if with_us else None
    if measure_us is not None:
        t0 = time.perf_counter()
        for visit in VISITS:
            scan = sorted((root / "trial" / plan.subject / visit / "US").glob("*.dcm"))[0]
            measure_us(scan, results / visit / "US", subject=plan.subject, visit=visit)
        run_change(results / VISITS[0] / "US", results / VISITS[1] / "US", results / f"change_{VISITS[0]}_{VISITS[1]}",
                   subject=plan.subject, baseline_visit=VISITS[0], followup_visit=VISITS[1])
        times["us"] = time.perf_counter() - t0
    return times, truth


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def check_against_truth(root: Path, arms: list[str]) -> list[dict]:
    """Per arm and endpoint: mean measured Δ vs mean true Δ (the realised per-subject truth)."""
    rows = _read(root / "trial" / "ground_truth" / "truth.csv")
    truth = {(r["subject"], r["structure"], r["region"]): float(r["delta"])
             for r in rows if r["modality"] == "MR" and r["metric"] == "ThCtAB.Me"}
    sites: dict[str, list[float]] = {}
    for r in rows:
        if r["modality"] == "US" and r["metric"] == "thickness":
            sites.setdefault(r["subject"], []).append(float(r["delta"]))
    for subject, values in sites.items():
        truth[(subject, "ultrasound_femoral_cartilage", "mean")] = float(np.mean(values))
    arm_of = {r["subject"]: r["arm"] for r in _read(root / "trial" / "allocation.csv")}
    measured = {}
    for path in sorted((root / "results").glob("*/change_baseline_month6/change.csv")):
        for r in _read(path):
            wanted = (r["scheme"] == "moaks" and r["metric"] == "ThCtAB.Me") or (
                r["modality"] == "US" and r["region"] == "mean" and r["metric"] == "thickness")
            if wanted and r["delta"]:
                measured[(r["subject"], r["structure"], r["region"])] = float(r["delta"])
    out = []
    for structure, region in ENDPOINTS:
        for arm in arms:
            keys = [k for k in measured if k[1:] == (structure, region) and arm_of.get(k[0]) == arm and k in truth]
            if not keys:
                continue
            m = np.array([measured[k] for k in keys])
            t = np.array([truth[k] for k in keys])
            out.append({"structure": structure, "region": region, "arm": arm, "n": len(keys),
                        "measured_mean_delta": float(m.mean()), "true_mean_delta": float(t.mean()),
                        "difference": float(m.mean() - t.mean()),
                        "per_knee_error_sd": float((m - t).std(ddof=1)) if len(keys) > 1 else float("nan")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_cohort_out"))
    parser.add_argument("--n-per-arm", type=int, default=None, help="subjects per arm (default: the trial's 24/24/25)")
    parser.add_argument("--scale", type=float, default=3.0, help="MR grid: DESS with this many times fewer voxels/axis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="subjects processed in parallel")
    parser.add_argument("--no-us", action="store_true", help="leave ultrasound out")
    parser.add_argument("--analyse-only", action="store_true",
                        help="re-run only the cohort statistics and checks on an existing --out (stage times of the "
                             "generating run are read from its bench_cohort.json)")
    args = parser.parse_args()
    arms = DEFAULT_ARMS if args.n_per_arm is None else tuple(replace(a, n=args.n_per_arm) for a in DEFAULT_ARMS)
    plans = plan_cohort(arms, seed=args.seed)
    with_us = not args.no_us and _us_measurer() is not None
    us_note = ("ultrasound included" if with_us else "ultrasound left out: " + (
        "--no-us" if args.no_us else "koaimg.pipeline.measure_ultrasound_file is not available yet (issue 7)"))
    root = args.out
    root.mkdir(parents=True, exist_ok=True)
    print(f"{len(plans)} subjects in {len(arms)} arms; MR grid DESS/{args.scale:g}; {us_note}; workers {args.workers}",
          flush=True)
    start = time.perf_counter()
    if args.analyse_only:
        previous = json.loads((root / "bench_cohort.json").read_text())
        done = [({k: v / len(plans) for k, v in previous["stage_seconds"].items()}, [])] * len(plans)
        start -= previous["total_seconds"] - previous["stage_seconds"]["cohort_statistics"]
    elif args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            done = list(pool.map(one_subject, plans, [root] * len(plans), [args.scale] * len(plans),
                                 [with_us] * len(plans)))
    else:
        done = []
        for n, plan in enumerate(plans, start=1):
            done.append(one_subject(plan, root, args.scale, with_us))
            if n % 10 == 0:
                print(f"  {n}/{len(plans)} subjects ({time.perf_counter() - start:.0f} s)", flush=True)
    timings = [d[0] for d in done]
    # the allocation and truth tables as write_cohort writes them
    from koaimg.export import write_rows_csv

    if not args.analyse_only:
        write_rows_csv([{"subject": p.subject, "arm": p.arm} for p in plans], root / "trial" / "allocation.csv")
        write_rows_csv([r for d in done for r in d[1]], root / "trial" / "ground_truth" / "truth.csv")
    t0 = time.perf_counter()
    run_cohort(root / "trial" / "allocation.csv", root / "results", root / "results" / "cohort")
    cohort_s = time.perf_counter() - t0
    total = time.perf_counter() - start
    stages = {k: float(sum(t.get(k, 0.0) for t in timings)) for k in ("generate", "measure_mr", "change_mr", "us")}
    stages["cohort_statistics"] = cohort_s
    arm_names = [a.name for a in arms]
    checks = check_against_truth(root, arm_names)
    contrasts = _read(root / "results" / "cohort" / "contrasts.csv")
    print(f"\nstage times (s, summed over subjects){'' if args.workers == 1 else ' - in parallel workers'}:")
    for k, v in stages.items():
        print(f"  {k:<18} {v:8.1f}   per subject {v / len(plans):6.2f}")
    analysis = stages["measure_mr"] + stages["change_mr"] + stages["us"] + cohort_s
    print(f"  analysis only (measure + change + cohort): {analysis:.1f} s; whole run incl. generation {total:.1f} s")
    print("\nper-arm mean Δ (mm; MR ThCtAB.Me from label maps, US site mean) vs the realised truth:")
    for c in checks:
        ok = "ok" if abs(c["difference"]) <= 0.03 else "OUT OF ±0.03"
        print(f"  {c['structure']:<18} {c['arm']:<18} n={c['n']:<3} measured {c['measured_mean_delta']:+.4f} "
              f"truth {c['true_mean_delta']:+.4f} diff {c['difference']:+.4f} ({ok}); per-knee error SD "
              f"{c['per_knee_error_sd']:.4f}")
    ordering, versus = {}, {}
    for structure, scheme, metric in (("femoral_cartilage", "moaks", "ThCtAB.Me"), ("tibial_cartilage", "moaks",
                                      "ThCtAB.Me"), ("ultrasound_femoral_cartilage", None, "thickness")):
        means = {c["arm"]: c["measured_mean_delta"] for c in checks if c["structure"] == structure}
        if len(means) < 3:
            continue
        ordering[structure] = means[arm_names[0]] > means[arm_names[1]] > means[arm_names[2]]
        region = "mean" if structure.startswith("ultrasound") else "all"
        key = next((r for r in contrasts if r["structure"] == structure and scheme in (None, r["scheme"])
                    and r["region"] == region and r["metric"] == metric
                    and {r["arm_a"], r["arm_b"]} == {arm_names[0], arm_names[2]}), None)
        print(f"{structure}: ordering {' > '.join(arm_names)}: {'yes' if ordering[structure] else 'NO'}")
        if key is None or not key["ancova_diff_a_minus_b"]:
            continue
        sign = 1.0 if key["arm_a"] == arm_names[0] else -1.0
        ci = sorted([sign * float(key["ancova_ci95_low"]), sign * float(key["ancova_ci95_high"])])
        versus[structure] = {k: key[k] for k in ("arm_a", "arm_b", "ancova_diff_a_minus_b", "ancova_ci95_low",
                                                 "ancova_ci95_high", "p_ancova", "p_welch", "p_mannwhitney")}
        print(f"  {arm_names[0]} vs {arm_names[2]}: ANCOVA difference {sign * float(key['ancova_diff_a_minus_b']):+.4f}"
              f" mm (95 % CI {ci[0]:+.4f} to {ci[1]:+.4f}), p = {key['p_ancova']}; Welch p = {key['p_welch']}; "
              f"Mann-Whitney p = {key['p_mannwhitney']}")
    (root / "bench_cohort.json").write_text(json.dumps({
        "python": platform.python_version(), "subjects": len(plans), "scale": args.scale, "workers": args.workers,
        "us": us_note, "stage_seconds": stages, "total_seconds": total, "checks": checks, "ordering": ordering,
        "first_vs_last_arm": versus},
        indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
    print(f"\ntables: {root / 'results' / 'cohort'} (cohort.csv, contrasts.csv, cohort.html); "
          f"{root / 'bench_cohort.json'}")


if __name__ == "__main__":
    main()
