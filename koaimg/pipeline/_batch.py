"""The coordinator of ``koaimg run`` / ``koaimg batch``: plan jobs from the manifest, run them, record results.

Resume rule: a stage is reused when its manifest row is ``done``, its signature (content hash of the inputs, koaimg
and model versions, stage options, and the signatures of the stages it needs) matches, and every output it recorded
is present with the recorded content hash. Anything else runs again, and so does everything downstream of it.
``force`` names stages (or ``export``/``all``) to run again regardless. Only this process writes the manifest, and
only after a job's folder is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core import KoaimgError
from ._executors import cuda_available, make_executor
from ._manifest import DONE, FAILED, SKIPPED, UNAVAILABLE, Manifest, ManifestError, StageRecord
from ._stages import (
    ALL_STAGES,
    COHORT_STAGES,
    PAIR_STAGES,
    SCAN_STAGES,
    STAGE_GROUPS,
    Job,
    Unavailable,
    component,
    crash_point,
    deps_of,
    recover,
    sha256_file,
    sha256_files,
)
from ._subjects import Scan, StudyPlan


@dataclass
class RunOptions:
    """How to run a plan."""

    workers: int = 1
    resume: bool = False
    force: tuple[str, ...] = ()
    #: stages not to run at all (recorded as skipped, "not requested"), e.g. ("dicom",) for a quick look
    skip: tuple[str, ...] = ()
    scheduler: str | None = None
    bundle: str | None = None
    device: str = "auto"
    method: str = "normal"
    allocation: str | None = None
    cohort: bool = True
    #: None: a GPU worker when CUDA is present and a model would run; True/False to force (tests)
    gpu_worker: bool | None = None
    command: str = "batch"


@dataclass
class RunSummary:
    """What a run did: the final record of every stage of its units, which ones were reused, and problems."""

    out: Path
    records: list[StageRecord]
    reused: set[tuple[str, str]]
    problems: list[tuple[str, str]]
    seconds: float
    executor: str
    workers: int
    recovered: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Counter]:
        """Per stage: how many units ended done / reused / failed / unavailable / skipped."""
        out: dict[str, Counter] = {s: Counter() for s in ALL_STAGES}
        for r in self.records:
            key = "reused" if (r.unit, r.stage) in self.reused else r.status
            out[r.stage][key] += 1
        return {s: c for s, c in out.items() if c}

    def stage_seconds(self) -> dict[str, float]:
        """Total worker seconds per stage, for the stages run now."""
        out: dict[str, float] = {}
        for r in self.records:
            if (r.unit, r.stage) not in self.reused and r.status == DONE:
                out[r.stage] = out.get(r.stage, 0.0) + r.seconds
        return out

    @property
    def failures(self) -> list[StageRecord]:
        """Stages that failed (bad input, write errors)."""
        return [r for r in self.records if r.status == FAILED]

    @property
    def unavailable(self) -> list[StageRecord]:
        """Stages whose component has not landed or whose model is missing."""
        return [r for r in self.records if r.status == UNAVAILABLE]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when a scan, pair or file had a problem (the rest was still processed)."""
        return 1 if (self.failures or self.problems) else 0


class _Reporter:
    """No-op progress sink; the CLI passes one that draws bars or prints lines."""

    def start(self, totals: dict[str, int]) -> None:
        """Stages to run now, per stage name."""

    def update(self, record: StageRecord, reused: bool) -> None:
        """One stage finished (or was reused)."""

    def note(self, text: str) -> None:
        """A line worth showing (recovery, executor choice)."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def expand_force(names: tuple[str, ...]) -> set[str]:
    """Stage names from ``--force`` values (stage names, ``export`` or ``all``)."""
    out: set[str] = set()
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            if part in STAGE_GROUPS:
                out.update(STAGE_GROUPS[part])
            elif part in ALL_STAGES:
                out.add(part)
            else:
                raise KoaimgError(f"unknown stage {part!r} for --force",
                                  hint=f"use one of {', '.join(ALL_STAGES)}, export or all")
    return out


def _model_status(bundle: str | None) -> tuple[bool, str, str]:
    """(usable, reason if not, version) of the segmentation model, probed once per run in the coordinator."""
    try:
        component("segment_volume")
        import koaimg.segment as seg
    except Unavailable as exc:
        return False, str(exc), ""
    load_bundle = getattr(seg, "load_bundle", None)
    if load_bundle is None:
        return True, "", "unversioned"
    try:
        b = load_bundle(bundle) if bundle else load_bundle()
    except KoaimgError as exc:
        return False, f"segmentation model not usable: {exc.one_line()}", ""
    except Exception as exc:  # an incomplete bundle is an unavailable model, not a crash
        return False, f"segmentation model not usable ({type(exc).__name__}: {exc})", ""
    version = str(getattr(b, "version", "") or "")
    sha = str(getattr(b, "sha256", "") or "")
    label = " ".join(p for p in (version, f"sha256:{sha[:16]}" if sha else "") if p)
    return True, "", label or "unversioned"


class _Engine:
    def __init__(self, plan: StudyPlan, out: Path, options: RunOptions, reporter: _Reporter) -> None:
        self.plan, self.out, self.opt, self.rep = plan, out, options, reporter
        self.forced = expand_force(options.force)
        self.skipped = expand_force(options.skip)
        self.manifest = Manifest(out)
        self.state: dict[str, dict[str, StageRecord]] = {}
        self.reused: set[tuple[str, str]] = set()
        self.running: dict[Future, Job] = {}
        self.retries: Counter = Counter()
        self.scan_busy: dict[str, bool] = {}
        self.follow_up: dict[str, Job] = {}
        self.pairs_left = {p.unit: p for p in plan.pairs}
        self.cohort_left = options.cohort
        self.started = False
        self._early: list[StageRecord] = []

    # planning ------------------------------------------------------------------------------------------------------
    def _valid(self, rec: StageRecord | None, signature: str, folder: Path) -> bool:
        if not self.opt.resume or rec is None or rec.status != DONE or rec.signature != signature:
            return False
        for rel, digest in rec.outputs.items():
            path = folder / rel
            if not path.is_file() or sha256_file(path) != digest:
                return False
        return True

    def _plan_unit(self, unit: str, stages: tuple[str, ...], signatures: dict[str, str]) -> list[str]:
        previous = self.manifest.get(unit)
        self.state[unit] = previous
        redo: list[str] = []
        kept: list[str] = []
        absent: dict[str, str] = {}
        for s in stages:
            deps = deps_of(s, stages)
            if s in self.skipped or any(d in absent for d in deps):
                rec = previous.get(s)
                if rec is not None and rec.status == DONE and not any(d in redo or d in absent for d in deps):
                    kept.append(s)  # not requested now; its earlier outputs stay as they are
                else:
                    absent[s] = "not requested (--skip)" if s in self.skipped else \
                        f"needs {next(d for d in deps if d in absent)} (not requested)"
            elif s in self.forced or any(d in redo for d in deps) or \
                    not self._valid(previous.get(s), signatures[s], self.out / unit):
                redo.append(s)
            else:
                kept.append(s)
        for s in kept:
            self.reused.add((unit, s))
            if self.started:
                self.rep.update(previous[s], True)
        if absent:
            not_run = [StageRecord(unit, s, SKIPPED, why, signatures[s]) for s, why in absent.items()]
            self.manifest.record(not_run)
            for r in not_run:
                self.state[unit][r.stage] = r
                if self.started:
                    self.rep.update(r, False)
                else:
                    self._early.append(r)
        return redo

    def _stale(self, unit: str, redo: list[str]) -> list[str]:
        return sorted({k for s in redo if s in self.state[unit] for k in self.state[unit][s].outputs})

    def _scan_job(self, scan: Scan, model: tuple[bool, str, str], gpu: bool) -> list[Job]:
        stages = SCAN_STAGES[scan.modality]
        try:
            input_hash = sha256_files(scan.files)
        except OSError as exc:
            input_hash = f"unreadable:{exc.errno}"
        labels_sha = sha256_file(scan.labels) if scan.labels else ""
        config = {"ingest": {"pixel_spacing_mm": scan.pixel_spacing_mm},
                  "segment": {"labels_sha256": labels_sha} if labels_sha else {"model": model[2]},
                  "measure": {"method": self.opt.method, "side": scan.side, "visit": scan.visit},
                  "report": {}, "dicom": {}}
        signatures: dict[str, str] = {}
        for s in stages:
            signatures[s] = _hash({"unit": scan.unit, "stage": s, "input": input_hash, "koaimg": __version__,
                                   "config": config[s], "deps": [signatures[d] for d in deps_of(s, stages)]})
        self.units.append({"unit": scan.unit, "kind": "scan", "subject": scan.subject, "visit": scan.visit,
                           "visit_index": scan.visit_index, "modality": scan.modality, "series": scan.series.key,
                           "n_files": len(scan.files), "input_hash": input_hash})
        redo = self._plan_unit(scan.unit, stages, signatures)
        if not redo:
            return []
        versions = {"koaimg": __version__}
        if "segment" in redo and not labels_sha:
            versions["model"] = model[2] or "none"
        payload = {"series": scan.series, "modality": scan.modality, "subject": scan.subject, "visit": scan.visit,
                   "unit": scan.unit, "labels": scan.labels, "labels_sha256": labels_sha, "side": scan.side,
                   "pixel_spacing_mm": scan.pixel_spacing_mm, "input_hash": input_hash, "method": self.opt.method,
                   "model_ok": model[0], "model_reason": model[1], "model_version": model[2],
                   "bundle": self.opt.bundle, "device": self.opt.device, "problem": scan.problem,
                   "source_root": self.plan.root,
                   "all_stages": stages}
        common = dict(kind="scan", unit=scan.unit, out_root=str(self.out), signatures=signatures, payload=payload,
                      versions=versions)
        uses_model = "segment" in redo and not labels_sha and model[0]
        if gpu and uses_model:
            cut = redo.index("segment") + 1
            first = Job(stages=redo[:cut], stale=self._stale(scan.unit, redo[:cut]), pool="gpu", **common)
            rest = redo[cut:]
            jobs = [first]
            if rest:
                jobs.append(Job(stages=rest, stale=self._stale(scan.unit, rest), **common))
            return jobs
        return [Job(stages=redo, stale=self._stale(scan.unit, redo), **common)]

    # running -------------------------------------------------------------------------------------------------------
    def _submit(self, job: Job) -> None:
        try:
            future = self.executor.submit(job)
        except BrokenProcessPool:
            self._restart_pool()
            future = self.executor.submit(job)
        self.running[future] = job
        self.scan_busy[job.unit] = True

    def _restart_pool(self) -> None:
        self.rep.note("a worker process died; starting a fresh pool")
        self.executor.shutdown()
        self.executor = make_executor(self.opt.workers, scheduler=self.opt.scheduler, gpu=self.gpu)

    def _record(self, job: Job, records: list[StageRecord]) -> None:
        crash_point("before_commit")
        self.manifest.record(records)
        for r in records:
            self.state.setdefault(job.unit, {})[r.stage] = r
            self.reused.discard((r.unit, r.stage))
            self.rep.update(r, False)

    def _finish(self, future: Future, job: Job) -> None:
        try:
            records = future.result()
        except BrokenProcessPool:
            self.retries[job.unit] += 1
            if self.retries[job.unit] <= 1:
                self._restart_pool()
                self._submit(job)
                return
            records = [StageRecord(job.unit, s, FAILED, "the worker process died (killed or out of memory)",
                                   job.signatures.get(s, ""), versions=job.versions) for s in job.stages]
        except Exception as exc:  # a job that raised outside its stages (e.g. a Dask worker lost)
            records = [StageRecord(job.unit, s, FAILED, f"job failed: {type(exc).__name__}: {exc}",
                                   job.signatures.get(s, ""), versions=job.versions) for s in job.stages]
        self._record(job, records)
        self.scan_busy[job.unit] = False
        nxt = self.follow_up.pop(job.unit, None)
        if nxt is not None:
            if all(r.status == DONE for r in records):
                self._submit(nxt)
            else:
                reason = next(r.reason for r in records if r.status != DONE)
                self._record(nxt, [StageRecord(nxt.unit, s, SKIPPED, f"needs segment ({reason})",
                                               nxt.signatures.get(s, ""), versions=nxt.versions)
                                   for s in nxt.stages])

    def _measured(self, unit: str) -> StageRecord | None:
        rec = self.state.get(unit, {}).get("measure")
        return rec if rec is not None and rec.status == DONE else None

    def _advance(self) -> None:
        """Plan pairs whose scans are all settled, and the cohort once every pair is."""
        for unit, pair in list(self.pairs_left.items()):
            scans = {m: (f"{pair.subject}/{pair.baseline}/{m}", f"{pair.subject}/{pair.followup}/{m}")
                     for m in pair.modalities}
            if any(self.scan_busy.get(u) or u in self.follow_up for bl_fu in scans.values() for u in bl_fu):
                continue
            del self.pairs_left[unit]
            inputs = {}
            usable = {}
            for m, (bl, fu) in scans.items():
                rb, rf = self._measured(bl), self._measured(fu)
                inputs[m] = [None if r is None else (r.signature, r.outputs) for r in (rb, rf)]
                usable[m] = (bl if rb else None, fu if rf else None)
            signatures: dict[str, str] = {}
            for s in PAIR_STAGES:
                signatures[s] = _hash({"unit": unit, "stage": s, "koaimg": __version__, "inputs": inputs,
                                       "deps": [signatures[d] for d in deps_of(s, PAIR_STAGES)]})
            self.units.append({"unit": unit, "kind": "pair", "subject": pair.subject,
                               "visit": f"{pair.baseline}->{pair.followup}", "modality": ",".join(pair.modalities),
                               "input_hash": _hash(inputs)})
            redo = self._plan_unit(unit, PAIR_STAGES, signatures)
            if redo:
                self._submit(Job("pair", unit, str(self.out), redo, signatures,
                                 {"subject": pair.subject, "baseline": pair.baseline, "followup": pair.followup,
                                  "scans": usable, "all_stages": PAIR_STAGES}, self._stale(unit, redo),
                                 versions={"koaimg": __version__}))
        if self.cohort_left and not self.pairs_left and not any(j.kind == "pair" for j in self.running.values()):
            self.cohort_left = False
            allocation = self.opt.allocation or self.plan.allocation
            pair_inputs = sorted((u, r.signature, r.outputs) for u, recs in self.state.items()
                                 if (r := recs.get("change")) is not None and r.status == DONE)
            alloc_hash = sha256_file(allocation) if allocation else ""
            signatures = {}
            for s in COHORT_STAGES:
                signatures[s] = _hash({"unit": "cohort", "stage": s, "koaimg": __version__, "pairs": pair_inputs,
                                       "allocation": alloc_hash,
                                       "deps": [signatures[d] for d in deps_of(s, COHORT_STAGES)]})
            self.units.append({"unit": "cohort", "kind": "cohort", "input_hash": _hash([pair_inputs, alloc_hash])})
            redo = self._plan_unit("cohort", COHORT_STAGES, signatures)
            if redo:
                self._submit(Job("cohort", "cohort", str(self.out), redo, signatures,
                                 {"allocation": allocation, "n_pairs": len(pair_inputs),
                                  "all_stages": COHORT_STAGES}, self._stale("cohort", redo),
                                 versions={"koaimg": __version__}))

    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        self.units: list[dict] = []
        needs_model = any(s.modality == "MR" and not s.labels for s in self.plan.scans)
        model = _model_status(self.opt.bundle) if needs_model else (False, "no scan needs a model", "")
        self.gpu = self.opt.gpu_worker if self.opt.gpu_worker is not None else (
            model[0] and self.opt.workers > 0 and not self.opt.scheduler and cuda_available())
        jobs: list[list[Job]] = [self._scan_job(scan, model, self.gpu) for scan in self.plan.scans]
        totals = Counter(s for scan in self.plan.scans for s in SCAN_STAGES[scan.modality])
        for _pair in self.plan.pairs:
            totals.update(PAIR_STAGES)
        if self.opt.cohort:
            totals.update(COHORT_STAGES)
        self.rep.start(dict(totals))
        self.started = True
        for unit, stage in sorted(self.reused):
            self.rep.update(self.state[unit][stage], True)
        for r in self._early:
            self.rep.update(r, False)
        self.executor = make_executor(self.opt.workers, scheduler=self.opt.scheduler, gpu=self.gpu)
        self.manifest.start_run(self.opt.command, self.executor.name, self.executor.workers, __version__)
        self.manifest.set_problems(self.plan.problems)
        self.manifest.set_units(self.units)
        status = "interrupted"
        try:
            for chain in jobs:
                if chain:
                    self._submit(chain[0])
                    if len(chain) > 1:
                        self.follow_up[chain[0].unit] = chain[1]
            self._advance()
            while self.running:
                done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(future, self.running.pop(future))
                self._advance()
            status = "finished"
        finally:
            self.executor.shutdown()
            self.manifest.set_units(self.units)
            self.manifest.finish_run(status)
            self.manifest.close()
        records = [r for u in self.units for r in sorted(self.state.get(u["unit"], {}).values(),
                                                         key=lambda r: ALL_STAGES.index(r.stage))]
        return RunSummary(self.out, records, self.reused, list(self.plan.problems), time.perf_counter() - t0,
                          self.executor.name, self.executor.workers)


def _check_out(out: Path) -> None:
    """Fail early, with one line, when OUT cannot be written (read-only mount, permissions, full disk)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".koaimg-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ManifestError(f"the output folder is not writable ({exc.strerror or exc})", path=out,
                            hint="choose a writable OUT or fix its permissions") from None


class _OutLock:
    """One run per OUT at a time: a second run would tidy away the first one's staging folders."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".koaimg.lock"
        self.fh = None

    def __enter__(self) -> _OutLock:
        import fcntl

        self.fh = self.path.open("a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise ManifestError("another koaimg run is writing to this output folder", path=self.path.parent,
                                hint="wait for it to finish (or stop it) and run again with --resume") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.close()  # closing releases the lock; the file stays (removing it would race a waiting run)


def run_plan(plan: StudyPlan, out: str | Path, options: RunOptions | None = None,
             reporter: _Reporter | None = None) -> RunSummary:
    """Run (or resume) every stage of ``plan`` into ``out`` and return the summary."""
    out = Path(out)
    options = options or RunOptions()
    if not plan.scans:
        detail = f"; {len(plan.problems)} file problem(s), e.g. {plan.problems[0][1]}" if plan.problems else ""
        raise KoaimgError(f"no MR or US scan found{detail}", path=plan.root,
                          hint="expected SCAN_ROOT/<subject>/<visit>/<files> (batch) or STUDY_DIR/<visit>/<files> "
                               "(run); see koaimg inspect, or map files with --overrides")
    _check_out(out)
    with _OutLock(out):
        return _run_locked(plan, out, options, reporter)


def _run_locked(plan: StudyPlan, out: Path, options: RunOptions, reporter: _Reporter | None) -> RunSummary:
    recovered = recover(out)
    rep = reporter or _Reporter()
    for line in recovered:
        rep.note(f"recovered from an interrupted run: {line}")
    saved = os.environ.get("KOAIMG_COORDINATOR_PID")
    os.environ["KOAIMG_COORDINATOR_PID"] = str(os.getpid())
    try:
        summary = _Engine(plan, out, options, rep).run()
    finally:
        if saved is None:
            os.environ.pop("KOAIMG_COORDINATOR_PID", None)
        else:
            os.environ["KOAIMG_COORDINATOR_PID"] = saved
    summary.recovered = recovered
    return summary
