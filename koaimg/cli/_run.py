"""``koaimg run STUDY_DIR OUT`` and ``koaimg batch SCAN_ROOT OUT``: the whole pipeline, resumable and parallel."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app

_WORKERS = typer.Option(1, "--workers", "-j", help="Worker processes (threads are split between them); 0 runs "
                                                    "everything in this process.")
_RESUME = typer.Option(False, "--resume", help="Reuse every stage whose outputs exist and match inputs and versions.")
_FORCE = typer.Option([], "--force", help="Redo this stage even when it could be reused (ingest, segment, measure, "
                                          "report, dicom, change, pair_report, cohort, cohort_report, export, all); "
                                          "repeatable.")
_SKIP = typer.Option([], "--skip", help="Do not run this stage now (e.g. dicom or export for a quick look); "
                                        "recorded as skipped, run later with --resume. Repeatable.")
_SCHEDULER = typer.Option(None, "--scheduler", envvar="KOAIMG_SCHEDULER",
                          help="Dask scheduler address (tcp://HOST:PORT) to run the jobs on a cluster.")
_LABELS = typer.Option(None, "--labels-dir", exists=True, file_okay=False,
                       help="Precomputed label maps: LABELS_DIR/<subject>/<visit>/MR/labels.nii.gz (the layout of a "
                            "simulated cohort's ground_truth/).")
_OVERRIDES = typer.Option(None, "--overrides", exists=True, dir_okay=False,
                          help="Override manifest CSV for messy exports: path, subject, visit, modality, side, labels, "
                               "pixel_spacing_mm, visit_order, exclude.")
_SUBJECT_FROM = typer.Option("folder", "--subject-from",
                             help="folder (subject folder names, pseudonymous in trial exports) or header (salted "
                                  "pseudonym of the DICOM PatientID).")
_BUNDLE = typer.Option(None, "--bundle", help="Segmentation model bundle (default: models/knee_mr_seg).")
_DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda for segmentation.")
_METHOD = typer.Option("normal", "--method", help="Thickness method: normal or nearest.")
_PROGRESS = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal only).")


class _Progress:
    """Rich bars per stage on a terminal; plain log lines otherwise."""

    def __init__(self, bars: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.bars = bars
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.done = 0
        self.total = 0
        self.reused = 0

    def start(self, totals: dict[str, int]) -> None:
        self.total = sum(totals.values())
        if self.bars:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.console, transient=False)
            self.progress.start()
            self.tasks = {s: self.progress.add_task(s, total=n) for s, n in totals.items() if n}

    def update(self, record, reused: bool) -> None:
        self.done += 1
        if self.progress is not None:
            if record.stage in self.tasks:
                self.progress.advance(self.tasks[record.stage])
            if record.status in ("failed",):
                self.progress.console.print(f"[red]failed[/] {record.unit} {record.stage}: {record.reason}")
            return
        if reused:
            self.reused += 1
            return
        line = f"koaimg: [{self.done}/{self.total}] {record.unit} {record.stage} "
        if record.status == "done":
            line += f"done ({record.seconds:.1f} s)"
        elif record.reason.startswith(record.status):
            line += record.reason
        else:
            line += f"{record.status}: {record.reason}"
        print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(f"koaimg: {text}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        elif self.reused:
            print(f"koaimg: {self.reused} stage(s) reused from the manifest", file=sys.stderr, flush=True)


def _summary(summary, console) -> None:
    from rich.table import Table

    table = Table(title=f"koaimg {summary.executor} run: {summary.workers} worker(s), {summary.seconds:.1f} s",
                  title_justify="left")
    for col in ("stage", "done", "reused", "failed", "unavailable", "skipped", "worker s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    seconds = summary.stage_seconds()
    for stage, counts in summary.counts().items():
        table.add_row(stage, *(str(counts.get(k, 0) or "") for k in ("done", "reused", "failed", "unavailable",
                                                                       "skipped")),
                      f"{seconds.get(stage, 0.0):.1f}")
    console.print(table)
    reasons = Counter((r.status, r.stage, r.reason) for r in summary.records
                      if r.status in ("failed", "unavailable") and (r.unit, r.stage) not in summary.reused)
    for (status, stage, reason), n in sorted(reasons.items()):
        console.print(f"{status}: {stage} x{n}: {reason}")
    for r in summary.failures:
        console.print(f"failed: {r.unit} {r.stage}: {r.reason}")
    for place, problem in summary.problems:
        console.print(f"problem: {place}: {problem}")
    console.print(f"outputs in {summary.out} (manifest: {summary.out / 'koaimg_manifest.sqlite'})")
    if summary.exit_code:
        console.print(f"finished with problems: {len(summary.failures)} stage(s) failed, "
                      f"{len(summary.problems)} file problem(s); the rest was processed")


def _go(kind: str, source: Path, out: Path, workers: int, resume: bool, force: list[str], skip: list[str],
        scheduler: str | None, labels_dir: Path | None, overrides: Path | None, subject_from: str, bundle: str | None,
        device: str, method: str, progress: bool | None, **extra) -> None:
    from rich.console import Console

    from ..core import KoaimgError
    from ..pipeline import RunOptions, run_batch, run_study

    if subject_from not in ("folder", "header"):
        raise KoaimgError(f"--subject-from {subject_from!r}", hint="use folder or header")
    options = RunOptions(workers=workers, resume=resume, force=tuple(force), skip=tuple(skip), scheduler=scheduler,
                         bundle=bundle, device=device, method=method, command=kind, cohort=kind == "batch",
                         allocation=str(extra.pop("allocation")) if extra.get("allocation") else None)
    reporter = _Progress(sys.stderr.isatty() if progress is None else progress)
    try:
        if kind == "run":
            summary = run_study(source, out, options, subject=extra.get("subject"), subject_from=subject_from,
                                overrides_csv=overrides, labels_dir=labels_dir, reporter=reporter)
        else:
            summary = run_batch(source, out, options, subject_from=subject_from, overrides_csv=overrides,
                                labels_dir=labels_dir, reporter=reporter)
    finally:
        reporter.stop()
    _summary(summary, Console(width=160, highlight=False))
    if summary.exit_code:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("run")
def run_cmd(
    study_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="One subject: STUDY_DIR/<visit>/..."),
    out: Path = typer.Argument(..., help="Output folder (OUT/<subject>/<visit>/<modality>/ ...)."),
    workers: int = _WORKERS, resume: bool = _RESUME, force: list[str] = _FORCE, skip: list[str] = _SKIP,
    scheduler: str | None = _SCHEDULER,
    labels_dir: Path | None = _LABELS, overrides: Path | None = _OVERRIDES, subject_from: str = _SUBJECT_FROM,
    subject: str | None = typer.Option(None, "--subject", help="Subject name (default: the folder name)."),
    bundle: str | None = _BUNDLE, device: str = _DEVICE, method: str = _METHOD, progress: bool | None = _PROGRESS,
) -> None:
    """One subject, all visits and modalities: segment, measure, report, DICOM outputs and baseline→follow-up change."""
    _go("run", study_dir, out, workers, resume, force, skip, scheduler, labels_dir, overrides, subject_from, bundle,
        device, method, progress, subject=subject)


@app.command("batch")
def batch_cmd(
    scan_root: Path = typer.Argument(..., exists=True, file_okay=False,
                                     help="A trial export: SCAN_ROOT/<subject>/<visit>/..."),
    out: Path = typer.Argument(..., help="Output folder (per scan, per pair, and OUT/cohort/)."),
    workers: int = _WORKERS, resume: bool = _RESUME, force: list[str] = _FORCE, skip: list[str] = _SKIP,
    scheduler: str | None = _SCHEDULER,
    labels_dir: Path | None = _LABELS, overrides: Path | None = _OVERRIDES, subject_from: str = _SUBJECT_FROM,
    allocation: Path | None = typer.Option(None, "--allocation", exists=True, dir_okay=False,
                                           help="subject,arm CSV (default: SCAN_ROOT/allocation.csv)."),
    bundle: str | None = _BUNDLE, device: str = _DEVICE, method: str = _METHOD, progress: bool | None = _PROGRESS,
) -> None:
    """Every subject of an export, in parallel, resumable; then the cohort table per arm."""
    _go("batch", scan_root, out, workers, resume, force, skip, scheduler, labels_dir, overrides, subject_from, bundle,
        device, method, progress, allocation=allocation)
