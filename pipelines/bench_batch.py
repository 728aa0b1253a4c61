"""Batch throughput: scans per hour with 1 and 2 workers (threads split between them), per-stage time breakdown.

    python pipelines/bench_batch.py                      # makes a small trial export (reduced-size MR) and times it
    python pipelines/bench_batch.py --make-trial DIR --n-per-arm 7 --scale 3   # only write a trial export (with
                                                         # true label maps, as `koaimg batch --labels-dir` reads them)
    python pipelines/bench_batch.py --compare OUT --export DIR   # OUT/cohort/cohort.csv vs DIR/ground_truth

Each worker count runs ``--repeats`` times (interleaved); the table shows the median run.
Writes pipelines/out/bench_batch.json and prints a table. The "CPU stages" speed-up compares the wall time of the
per-scan stages (everything before the pair/cohort stages) with 2 workers against 1 worker, both on the same export.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from koaimg.io import atomic_write_bytes
from koaimg.pipeline import RunOptions, run_batch
from koaimg.pipeline._executors import cpu_count

SCAN_STAGES = ("ingest", "segment", "measure", "report", "dicom")


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def make_trial(out: Path, *, n_per_arm: int = 7, scale: float = 3.0, seed: int = 0, workers: int = 1) -> Path:
    """The simulated trial (``koaimg synth cohort`` layout) plus the true label maps under ``ground_truth/``.

    ``write_cohort`` keeps only DICOM in the export and writes no label maps; the batch run needs them in place of a
    trained segmentation model, so this calls the same per-subject generator with ``truth_formats=("labels",)``.
    """
    from concurrent.futures import ProcessPoolExecutor

    from koaimg.synth._cohort import DEFAULT_ARMS, make_subject, plan_cohort

    arms = tuple(replace(a, n=n_per_arm) for a in DEFAULT_ARMS)
    plans = plan_cohort(arms, seed=seed)
    rows: list[dict] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(_subject, [(p, out, scale) for p in plans]):
                rows.extend(r)
    else:
        for p in plans:
            rows.extend(make_subject(p, out, mr_scale=scale, truth_formats=("labels",)))
    atomic_write_bytes(out / "allocation.csv", _csv([{"subject": p.subject, "arm": p.arm} for p in plans]))
    truth = out / "ground_truth"
    atomic_write_bytes(truth / "subjects.csv", _csv([
        {"subject": p.subject, "arm": p.arm, "side": p.side, "us_delta_mm": round(p.us_delta_mm, 6),
         "mri_delta_mm": round(p.mri_delta_mm, 6), "defect_factor": round(p.defect_factor, 6)} for p in plans]))
    atomic_write_bytes(truth / "truth.csv", _csv(rows))
    atomic_write_bytes(truth / "design.json", json.dumps({"n_per_arm": n_per_arm, "mr_scale": scale,
                                                          "seed": seed}, indent=2).encode())
    return out


def _subject(args):
    from koaimg.synth._cohort import make_subject

    plan, out, scale = args
    return make_subject(plan, out, mr_scale=scale, truth_formats=("labels",))


def _time_run(export: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_batch(export, out, RunOptions(workers=workers), labels_dir=export / "ground_truth")
    wall = time.perf_counter() - t0
    scans = [r for r in summary.records if r.stage == "ingest"]
    # wall time of the per-scan stages: from the run's first stage start to the last scan stage's end
    scan_records = [r for r in summary.records if r.stage in SCAN_STAGES and r.finished]
    first = min(r.started for r in summary.records if r.started)
    scan_wall = max(r.finished for r in scan_records) - first
    per_stage = summary.stage_seconds()
    cpu: dict[str, float] = {}
    for r in summary.records:
        if r.status == "done" and (r.unit, r.stage) not in summary.reused:
            cpu[r.stage] = cpu.get(r.stage, 0.0) + float(r.info.get("cpu_s", 0.0))
    counts = {s: dict(c) for s, c in summary.counts().items()}
    return {"workers": workers, "wall_s": round(wall, 2), "scan_stage_wall_s": round(scan_wall, 2),
            "n_scans": len(scans), "scans_per_hour": round(len(scans) / wall * 3600, 1),
            "scans_per_hour_scan_stages": round(len(scans) / scan_wall * 3600, 1),
            "worker_seconds_per_stage": {k: round(v, 2) for k, v in per_stage.items()},
            "cpu_seconds_per_stage": {k: round(v, 2) for k, v in cpu.items()}, "counts": counts,
            "exit_code": summary.exit_code}


ENDPOINTS = {("MR", "femoral_cartilage", "all", "ThCtAB.Me"): "MR femoral ThCtAB.Me (whole plate)",
             ("US", "ultrasound_femoral_cartilage", "mean", "thickness"): "US femoral thickness (mean of LC/IN/MC)"}


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def compare_with_truth(out: Path, export: Path) -> dict:
    """Per arm: mean true Δ (the realised per-subject truth) vs mean measured Δ from OUT/cohort/cohort.csv."""
    truth = _read(export / "ground_truth" / "truth.csv")
    allocation = {r["subject"]: r["arm"] for r in _read(export / "allocation.csv")}
    true_delta: dict[tuple, dict[str, float]] = {k: {} for k in ENDPOINTS}
    us_sites: dict[str, list[float]] = {}
    for r in truth:
        key = (r["modality"], r["structure"], r["region"], r["metric"])
        if key in true_delta:
            true_delta[key][r["subject"]] = float(r["delta"])
        if r["modality"] == "US" and r["region"] in ("LC", "IN", "MC"):
            us_sites.setdefault(r["subject"], []).append(float(r["delta"]))
    us_key = ("US", "ultrasound_femoral_cartilage", "mean", "thickness")
    true_delta[us_key] = {s: sum(v) / len(v) for s, v in us_sites.items()}
    cohort = _read(out / "cohort" / "cohort.csv")
    result = {}
    for key, label in ENDPOINTS.items():
        arms = {}
        for arm in sorted(set(allocation.values())):
            subjects = [s for s, a in allocation.items() if a == arm and s in true_delta[key]]
            t = sum(true_delta[key][s] for s in subjects) / max(1, len(subjects))
            row = next((r for r in cohort if (r["modality"], r["structure"], r["region"], r["metric"]) == key
                        and r["arm"] == arm), None)
            measured = float(row["delta_mean"]) if row and row["delta_mean"] not in ("", None) else None
            arms[arm] = {"n": len(subjects), "n_analysed": int(row["n_analysed"]) if row else 0,
                         "true_delta_mean": round(t, 4),
                         "measured_delta_mean": None if measured is None else round(measured, 4),
                         "error": None if measured is None else round(measured - t, 4)}
        result[label] = arms
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-trial", type=Path, help="only write a trial export here and stop")
    parser.add_argument("--export", type=Path, help="an existing export to time (default: make a small one)")
    parser.add_argument("--n-per-arm", type=int, default=1)
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--gen-workers", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per worker count, interleaved (1, 2, 1, 2, ...); the median run is reported")
    parser.add_argument("--out", type=Path, default=Path("pipelines/out/bench_batch"))
    parser.add_argument("--compare", type=Path, help="a batch OUT to compare with --export's ground truth")
    args = parser.parse_args()
    if args.compare:
        result = compare_with_truth(args.compare, args.export)
        print(f"{'endpoint':<44} {'arm':<20} {'n':>3} {'true Δ':>8} {'measured Δ':>10} {'error':>7}")
        for label, arms in result.items():
            for arm, r in arms.items():
                measured = "-" if r["measured_delta_mean"] is None else f"{r['measured_delta_mean']:+.3f}"
                error = "-" if r["error"] is None else f"{r['error']:+.3f}"
                print(f"{label:<44} {arm:<20} {r['n_analysed']:>3} {r['true_delta_mean']:>+8.3f} {measured:>10} "
                      f"{error:>7}")
        Path("pipelines/out").mkdir(parents=True, exist_ok=True)
        Path("pipelines/out/bench_batch_truth.json").write_text(json.dumps(result, indent=2))
        return
    if args.make_trial:
        t0 = time.perf_counter()
        make_trial(args.make_trial, n_per_arm=args.n_per_arm, scale=args.scale, workers=args.gen_workers)
        print(f"trial export in {args.make_trial} ({time.perf_counter() - t0:.0f} s)")
        return
    export = args.export
    if export is None:
        export = args.out / "export"
        if not (export / "allocation.csv").is_file():
            shutil.rmtree(export, ignore_errors=True)
            make_trial(export, n_per_arm=args.n_per_arm, scale=args.scale, workers=args.gen_workers)
    runs: dict[int, list[dict]] = {w: [] for w in args.workers}
    for _ in range(max(1, args.repeats)):  # interleaved, so a drift in machine load touches every worker count
        for w in args.workers:
            runs[w].append(_time_run(export, args.out / f"run_w{w}", w))
    results = []
    for w in args.workers:
        ordered = sorted(runs[w], key=lambda r: r["wall_s"])
        median = dict(ordered[len(ordered) // 2])
        median["all_wall_s"] = [r["wall_s"] for r in runs[w]]
        median["all_scan_stage_wall_s"] = [r["scan_stage_wall_s"] for r in runs[w]]
        median["scan_stage_wall_s"] = float(np.median(median["all_scan_stage_wall_s"]))
        median["scans_per_hour_scan_stages"] = round(median["n_scans"] / median["scan_stage_wall_s"] * 3600, 1)
        results.append(median)
    base = results[0]
    for r in results:
        r["speedup_vs_first"] = round(base["wall_s"] / r["wall_s"], 2)
        r["speedup_scan_stages_vs_first"] = round(base["scan_stage_wall_s"] / r["scan_stage_wall_s"], 2)
    report = {"machine": {"cores": cpu_count(), "python": platform.python_version(), "node": platform.node(),
                          "load_average_1min_after": round(os.getloadavg()[0], 2)},
              "export": str(export), "results": results}
    out_json = Path("pipelines/out/bench_batch.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2))
    print(f"{'workers':>7} {'scans':>5} {'wall s':>8} {'scans/h':>8} {'scan-stage s':>12} {'scans/h (scan)':>14} "
          f"{'speed-up':>8} {'speed-up (scan)':>15}")
    for r in results:
        print(f"{r['workers']:>7} {r['n_scans']:>5} {r['wall_s']:>8.1f} {r['scans_per_hour']:>8.0f} "
              f"{r['scan_stage_wall_s']:>12.1f} {r['scans_per_hour_scan_stages']:>14.0f} "
              f"{r['speedup_vs_first']:>8.2f} {r['speedup_scan_stages_vs_first']:>15.2f}")
    stages = sorted({s for r in results for s in r["worker_seconds_per_stage"]})
    print("worker seconds per stage: " + ", ".join(
        f"{s}: " + "/".join(f"{r['worker_seconds_per_stage'].get(s, 0):.1f}" for r in results) for s in stages))
    print("CPU seconds per stage: " + ", ".join(
        f"{s}: " + "/".join(f"{r['cpu_seconds_per_stage'].get(s, 0):.1f}" for r in results) for s in stages))
    print(f"medians of {max(1, args.repeats)} interleaved runs per worker count; wall s of every run: " + "; ".join(
        f"{r['workers']} worker(s): " + ", ".join(f"{x:.1f}" for x in r["all_wall_s"]) for r in results))
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} (1 min) on {cpu_count()} cores")
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
