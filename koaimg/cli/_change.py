"""``koaimg change BASELINE FOLLOWUP`` (one knee, two visits) and ``koaimg cohort ALLOCATION RESULTS`` (trial)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app


@app.command("change")
def change_cmd(
    baseline: Path = typer.Argument(..., exists=True, file_okay=False, help="Baseline scan output folder."),
    followup: Path = typer.Argument(..., exists=True, file_okay=False, help="Follow-up scan output folder."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output folder (default: change_<bl>_<fu> beside the baseline's subject)."),
    subject: str = typer.Option("", "--subject", help="Subject pseudonym (default: from measures.csv)."),
    baseline_visit: str = typer.Option("baseline", "--baseline-visit", help="Baseline visit name."),
    followup_visit: str = typer.Option("month6", "--followup-visit", help="Follow-up visit name."),
    on_mismatch: str = typer.Option("refuse", "--on-mismatch",
                                    help="refuse (default) or flag a pair whose subject, side, sequence or voxel "
                                         "size differ."),
    voxel_tolerance: float = typer.Option(0.05, "--voxel-tolerance", help="Relative voxel-size tolerance."),
    rms_cv: float | None = typer.Option(None, "--rms-cv", help="MR precision as RMS-CV in percent (default 3)."),
    sem_mm: float | None = typer.Option(None, "--sem-mm", help="Thickness precision as SEM in mm."),
) -> None:
    """Register the follow-up onto the baseline (femur-based) and write change.csv, the Δ map and transitions."""
    from rich.console import Console

    from ..pipeline._change import run_change

    out = out or baseline.parent.parent / f"change_{baseline_visit}_{followup_visit}"
    run_change(baseline, followup, out, subject=subject, baseline_visit=baseline_visit, followup_visit=followup_visit,
               on_mismatch=on_mismatch, voxel_tolerance=voxel_tolerance, rms_cv_pct=rms_cv, sem_mm=sem_mm)
    import csv
    import json

    console = Console(width=160, highlight=False)
    with (out / "change.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        shown = r["region"] in ("all", "mean") and r["metric"] in ("ThCtAB.Me", "thickness")
        if shown and r["scheme"] != "wirth-eckstein":
            sdd = f" (SDD {float(r['sdd']):.2f})" if r["sdd"] else ""
            console.print(f"{r['structure']:<32} {r['metric']:<10} {r['baseline']:>8} -> {r['followup']:>8}  "
                          f"Δ {r['delta']:>9} {r['unit']}{sdd}")
    modality = rows[-1]["modality"] if rows else "MR"
    info = json.loads((out / "change.json").read_text())[modality]
    for text in info["pair_check"]["mismatches"]:
        console.print(f"FLAGGED: {text}")
    for text in info.get("notes", []):
        console.print(f"note: {text}")
    console.print(f"outputs in {out}")
    if info["pair_check"]["mismatches"]:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("cohort")
def cohort_cmd(
    allocation: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV with subject,arm."),
    results: Path = typer.Argument(..., exists=True, file_okay=False,
                                   help="Results folder holding <subject>/change_*/change.csv."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: RESULTS/cohort)."),
) -> None:
    """Per-arm summaries, ANCOVA and nonparametric between-arm tests, MOAKS transitions: CSV + HTML."""
    from rich.console import Console

    from ..pipeline._cohort import run_cohort

    out = out or results / "cohort"
    run_cohort(allocation, results, out)
    import json

    info = json.loads((out / "cohort.json").read_text())
    console = Console(width=160, highlight=False)
    console.print(f"{info['n_subjects']} subjects in {len(info['arms'])} arms; tables in {out} (cohort.html)")
    for text in info["notes"]:
        console.print(f"note: {text}")
