"""The stage graph and the worker side of a run: each job runs some stages of one unit in a staging folder.

Units: a scan (``<subject>/<visit>/<modality>``: ingest → segment → measure → report, dicom), a pair
(``<subject>/change_<bl>_<fu>``: change of MR and US into one folder → pair_report) and the cohort
(``cohort``: cohort → cohort_report).
A job builds the unit's folder as ``.<name>.staging-*`` beside the final one (copies of the outputs it keeps,
fresh files for the stages it runs), then swaps it into place with two renames. A crash at any moment leaves the final
folder either as it was or complete; ``recover`` tidies the leftovers. Components that have not landed (segmentation
model, ultrasound measurement, change, reports, DICOM writers) make their stage ``unavailable`` with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import os
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..core import KoaimgError
from ..io._atomic import _UMASK
from ..io._locks import REVIEW_DIR, carry_reviews, unit_lock
from ._manifest import DONE, FAILED, SKIPPED, UNAVAILABLE, StageRecord

SCAN_STAGES = {"MR": ("ingest", "segment", "measure", "report", "dicom"),
               "US": ("ingest", "measure", "report", "dicom")}
PAIR_STAGES = ("change", "pair_report")
COHORT_STAGES = ("cohort", "cohort_report")
#: which stages each stage needs (within its unit)
DEPENDS = {"ingest": (), "segment": ("ingest",), "measure": ("segment",), "report": ("measure",),
           "dicom": ("measure",), "change": (), "pair_report": ("change",), "cohort": (),
           "cohort_report": ("cohort",)}
#: names accepted by ``--force`` besides the stage names
STAGE_GROUPS = {"export": ("report", "dicom", "pair_report", "cohort_report"), "all": tuple(DEPENDS)}
ALL_STAGES = tuple(DEPENDS)

#: where each optional component comes from, and the issue that delivers it (for the "unavailable" reason)
COMPONENTS = {
    "segment_volume": ("koaimg.segment", "segment_volume", "segmentation, issue 5"),
    "measure_ultrasound_file": ("koaimg.pipeline", "measure_ultrasound_file", "ultrasound measurement, issue 7"),
    "run_change": ("koaimg.pipeline", "run_change", "change analysis, issue 6"),
    "run_cohort": ("koaimg.pipeline", "run_cohort", "cohort analysis, issue 6"),
    "write_scan_report": ("koaimg.export", "write_scan_report", "reports, issue 8"),
    "write_pair_report": ("koaimg.export", "write_pair_report", "reports, issue 8"),
    "write_cohort_report": ("koaimg.export", "write_cohort_report", "reports, issue 8"),
    "write_dicom_outputs": ("koaimg.export", "write_dicom_outputs", "DICOM exports, issue 8"),
}


class Unavailable(Exception):
    """A component needed by a stage is missing; the stage is recorded as unavailable with this reason."""


class NotApplicable(Exception):
    """The stage does not apply to this unit (e.g. DICOM outputs of a NIfTI source); recorded as skipped."""


def deps_of(stage: str, stages: tuple[str, ...] | list[str]) -> list[str]:
    """The stages of ``stages`` that ``stage`` needs (skipping ones the unit does not have, e.g. US segment)."""
    out: list[str] = []
    for d in DEPENDS[stage]:
        out.extend([d] if d in stages else deps_of(d, stages))
    return out


def component(name: str):
    """The callable behind ``name`` or raise ``Unavailable`` saying which piece has not landed."""
    module, attr, issue = COMPONENTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} cannot be imported ({exc}; {issue})") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise Unavailable(f"{module}.{attr} has not landed yet ({issue})")
    return fn


def available(name: str) -> bool:
    """bool: the component can be called."""
    try:
        component(name)
    except Unavailable:
        return False
    return True


def sha256_file(path: str | Path) -> str:
    """Content hash of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[str]) -> str:
    """Order-independent content hash of a set of files (names excluded: a renamed copy is the same input)."""
    return hashlib.sha256("".join(sorted(sha256_file(p) for p in paths)).encode()).hexdigest()


# crash hooks for the kill -9 tests ---------------------------------------------------------------------------------
_HITS: dict[str, int] = {}


def crash_point(name: str) -> None:
    """``KOAIMG_CRASH_AT=<point>[,...]`` and ``KOAIMG_CRASH_COUNT=N``: SIGKILL the run at the Nth hit of a point.

    Points: ``stage:<stage>`` (a stage finished in staging), ``mid_write`` (half a file written in staging),
    ``mid_swap`` (old folder moved aside, new one not yet in place), ``before_commit`` (outputs in place, manifest
    not yet updated). Used only by tests; kills the coordinating process too (``KOAIMG_COORDINATOR_PID``).
    """
    points = os.environ.get("KOAIMG_CRASH_AT", "")
    if not points or name not in points.split(","):
        return
    _HITS[name] = _HITS.get(name, 0) + 1
    if _HITS[name] < int(os.environ.get("KOAIMG_CRASH_COUNT", "1")):
        return
    coordinator = int(os.environ.get("KOAIMG_COORDINATOR_PID", "0") or 0)
    if coordinator and coordinator != os.getpid():
        with contextlib.suppress(ProcessLookupError):
            os.kill(coordinator, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


# jobs ---------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """Some stages of one unit, with everything a worker needs (picklable, no open handles)."""

    kind: str  # scan | pair | cohort
    unit: str
    out_root: str
    stages: list[str]
    signatures: dict[str, str]
    payload: dict
    #: outputs recorded for the stages being re-run (removed from the staging copy first)
    stale: list[str] = field(default_factory=list)
    pool: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> Path:
        """The unit's output folder."""
        return Path(self.out_root) / self.unit


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir() or str(rel) in skip or rel.parts[0] == REVIEW_DIR:  # reviews: carried at the swap
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # a copy, not a hard link: a writer that rewrites a file in place (np.save) must never reach the final folder
        shutil.copy2(path, target)


def _describe_oserror(exc: OSError) -> str:
    where = Path(exc.filename).name if getattr(exc, "filename", None) else "an output"
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {where} (ENOSPC); free space and run again with --resume"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"output folder not writable while writing {where} ({errno.errorcode.get(exc.errno, exc.errno)}); "
                "make OUT writable and run again with --resume")
    return f"cannot write {where} ({exc.strerror or exc}); check the output folder and run again with --resume"


def _scrub(text: str, job: Job) -> str:
    """Reasons go to the manifest and the log: user folders (which may carry names) become SCAN_ROOT / OUT."""
    if not text:
        return text
    for root, name in ((job.payload.get("source_root"), "SCAN_ROOT"), (job.out_root, "OUT")):
        if root:
            for form in {str(Path(root)), str(Path(root).resolve())}:
                text = text.replace(form.rstrip("/") + "/", f"{name}/").replace(form, name)
    return text


def recover(out_root: str | Path) -> list[str]:
    """Tidy what a killed run left: put back a folder moved aside mid-swap, remove staging folders and temp files."""
    root = Path(out_root)
    actions: list[str] = []
    if not root.is_dir():
        return actions
    for dirpath, dirnames, filenames in os.walk(root, topdown=True):
        here = Path(dirpath)
        for name in list(dirnames):
            if name.startswith(".") and ".old-" in name:
                final = here / name[1:name.index(".old-")]
                if final.exists():
                    shutil.rmtree(here / name, ignore_errors=True)
                else:
                    os.rename(here / name, final)
                    actions.append(f"restored {final.relative_to(root)}")
                dirnames.remove(name)
            elif name.startswith(".") and ".staging-" in name:
                shutil.rmtree(here / name, ignore_errors=True)
                dirnames.remove(name)
                actions.append("removed an unfinished staging folder")
        for name in filenames:
            if name.startswith(".") and ".part" in name:
                with contextlib.suppress(OSError):
                    (here / name).unlink()
    return actions


def _swap(staging: Path, final: Path) -> None:
    """Put ``staging`` in place of ``final`` with renames only (no half state visible as ``final``).

    Under the unit lock, with the QA app's corrections stored since the job copied the folder carried over first.
    """
    with unit_lock(final):
        if final.exists():
            carry_reviews(final, staging)
            old = final.parent / f".{final.name}.old-{staging.name.rsplit('-', 1)[-1]}"
            os.rename(final, old)
            crash_point("mid_swap")
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, final)
    with contextlib.suppress(OSError):
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def execute(job: Job) -> list[StageRecord]:
    """Run ``job`` (in a worker process, a Dask worker or inline) and return one record per stage it ran."""
    runner = {"scan": _ScanRunner, "pair": _PairRunner, "cohort": _CohortRunner}[job.kind](job)
    final = job.final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the final folder gets the usual permissions
    except OSError as exc:
        reason = _describe_oserror(exc)
        return [StageRecord(job.unit, s, FAILED, reason, job.signatures.get(s, ""), versions=job.versions)
                for s in job.stages]
    records: list[StageRecord] = []
    try:
        if final.is_dir():
            _link_tree(final, staging, set(job.stale))
        failed: dict[str, str] = {}
        all_stages = job.payload.get("all_stages", job.stages)
        for stage in job.stages:
            blocked = [d for d in deps_of(stage, all_stages) if d in failed]
            started = time.time()
            if blocked:
                records.append(StageRecord(job.unit, stage, SKIPPED, f"needs {blocked[0]} ({failed[blocked[0]]})",
                                           job.signatures.get(stage, ""), versions=job.versions, started=started,
                                           finished=started))
                failed[stage] = SKIPPED
                continue
            before = _snapshot(staging)
            t0, c0 = time.perf_counter(), time.process_time()
            status, reason, info = DONE, "", {}
            try:
                info = getattr(runner, f"stage_{stage}")(staging) or {}
            except Unavailable as exc:
                status, reason = UNAVAILABLE, f"unavailable: {exc}"
            except NotApplicable as exc:
                status, reason = SKIPPED, f"not applicable: {exc}"
            except KoaimgError as exc:
                status, reason = FAILED, exc.one_line()
            except OSError as exc:
                status, reason = FAILED, _describe_oserror(exc)
            except Exception as exc:  # a bug in a stage must not stop the batch; it is recorded with its type
                status, reason = FAILED, f"internal error {type(exc).__name__}: {exc}"
                if os.environ.get("KOAIMG_DEBUG") == "1":
                    traceback.print_exc()
            reason = _scrub(reason, job)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            after = _snapshot(staging)
            changed = sorted(k for k, v in after.items() if before.get(k) != v)
            outputs: dict[str, str] = {}
            if status == DONE:
                outputs = {k: sha256_file(staging / k) for k in changed}
            else:
                for k in changed:  # a failed stage leaves nothing behind
                    with contextlib.suppress(OSError):
                        (staging / k).unlink()
                failed[stage] = reason
            info = dict(info)
            info["worker"] = f"{os.uname().nodename}:{os.getpid()}"
            info["cpu_s"] = round(cpu, 3)  # CPU time of the worker process (all its threads), for benchmarks
            records.append(StageRecord(job.unit, stage, status, reason, job.signatures.get(stage, ""), outputs,
                                       job.versions, info, seconds, started, time.time()))
            crash_point(f"stage:{stage}")
        _swap(staging, final)
    except OSError as exc:
        reason = _describe_oserror(exc)
        shutil.rmtree(staging, ignore_errors=True)
        ran = {r.stage for r in records}
        return [StageRecord(job.unit, r.stage, FAILED, reason, r.signature, versions=job.versions,
                            seconds=r.seconds, started=r.started, finished=r.finished) for r in records] + \
               [StageRecord(job.unit, s, FAILED, reason, job.signatures.get(s, ""), versions=job.versions)
                for s in job.stages if s not in ran]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return records


# scan stages --------------------------------------------------------------------------------------------------------
class _ScanRunner:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.p = job.payload
        self._image = None

    def image(self):
        if self._image is None:
            from ..io import load_series

            if self.p.get("problem"):
                from ..core import DicomSeriesError

                raise DicomSeriesError(self.p["problem"])
            self._image = load_series(self.p["series"], pixel_spacing_mm=self.p.get("pixel_spacing_mm"))
        return self._image

    def stage_ingest(self, folder: Path) -> dict:
        img = self.image()
        if self.p["modality"] == "MR":
            from ..io import write_volume

            write_volume(img, folder / "image.nii.gz")  # the scan under its overlays, for the report and QA viewer
            return {"shape": list(img.spatial_shape), "spacing_mm": [round(float(v), 4) for v in img.spacing],
                    "side": self.p.get("side") or img.meta.side.value, "n_files": len(self.p["series"].files)}
        return {"frames": int(getattr(img, "n_frames", 1) or 1), "side": self.p.get("side", "")}

    def stage_segment(self, folder: Path) -> dict:
        from ..core import GeometryError, LabelVolume
        from ..export import write_label_table
        from ..io import read_labels, write_volume

        img = self.image()
        if self.p.get("labels"):
            labels = read_labels(self.p["labels"])
            if not img.same_grid(labels, atol=1e-3):
                raise GeometryError(f"precomputed labels {Path(self.p['labels']).name} are not on the scan's grid "
                                    f"({labels.spatial_shape} vs {img.spatial_shape})", path=self.p["unit"],
                                    hint="give label maps on the image's own grid")
            source = {"labels": "precomputed", "labels_sha256": self.p["labels_sha256"]}
            warnings: list[str] = []
        else:
            if not self.p.get("model_ok"):
                raise Unavailable("segmentation: no precomputed labels for this scan (--labels-dir "
                                  "DIR/<subject>/<visit>/MR/labels.nii.gz or a labels column in --overrides) and "
                                  f"{self.p.get('model_reason') or 'no segmentation model'}")
            segment_volume = component("segment_volume")
            result = segment_volume(img, bundle=self.p.get("bundle"), device=self.p.get("device", "auto"))
            labels = result.labels
            source = {"labels": "model", "model": self.p.get("model_version", "")}
            warnings = list(getattr(result, "warnings", []) or [])
        labels = LabelVolume(labels.array, img.affine, img.meta.replace(side=img.meta.side))
        write_volume(labels, folder / "labels.nii.gz")
        write_label_table(folder / "labels_table.txt")
        return {**source, "warnings": warnings}

    def stage_measure(self, folder: Path) -> dict:
        if self.p["modality"] == "US":
            fn = component("measure_ultrasound_file")
            side = self.p.get("side") or ""
            extra = {"side": side} if side in ("right", "left") else {}
            fn(Path(self.p["series"].files[0]), folder, subject=self.p["subject"], visit=self.p["visit"],
               pixel_spacing_mm=self.p.get("pixel_spacing_mm"), **extra)
            return {}
        from ..core import KneeSide
        from ..io import read_labels
        from ..measure import measure_knee
        from ._measure import write_measurement

        labels = read_labels(folder / "labels.nii.gz")
        side = self.p.get("side") or ""
        measurement = measure_knee(labels, side=KneeSide(side) if side in ("right", "left") else None,
                                   method=self.p.get("method", "normal"))
        if "mid_write" in os.environ.get("KOAIMG_CRASH_AT", ""):  # test hook: a writer killed half-way
            (folder / "measures.csv").write_text("subject,visit,modality,si")
            crash_point("mid_write")
        write_measurement(measurement, labels, folder, subject=self.p["subject"], visit=self.p["visit"],
                          inputs={"scan": self.p["input_hash"]},
                          config={"method": self.p.get("method", "normal"), "side": measurement.side.value,
                                  "labels": "precomputed" if self.p.get("labels") else "model"})
        return {"side": measurement.side.value, "moaks_summed_score": measurement.summary.get(
            "moaks_summed_score_pos_worse")}

    def stage_report(self, folder: Path) -> dict:
        fn = component("write_scan_report")
        side = self.p.get("side") or None
        fn(folder, image=self.image() if self.p["modality"] == "MR" else None,
           expected_side=side if side in ("right", "left") else None)
        return {}

    def stage_dicom(self, folder: Path) -> dict:
        if self.p["series"].kind != "dicom":
            raise NotApplicable("the source is not DICOM, so there is no series to reference")
        fn = component("write_dicom_outputs")
        import pydicom

        sources = [pydicom.dcmread(f) for f in self.p["series"].files]
        written = fn(folder, sources, image=self.image() if self.p["modality"] == "MR" else None)
        return {"dicom": sorted(Path(p).name for p in written)}


# pair and cohort stages ---------------------------------------------------------------------------------------------
class _PairRunner:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.p = job.payload

    def stage_change(self, folder: Path) -> dict:
        """MR and US comparisons of the same visits share the pair folder (``run_change`` merges change.csv)."""
        run_change = component("run_change")
        done, notes = [], []
        root = Path(self.job.out_root)
        for modality, (bl, fu) in sorted(self.p["scans"].items()):
            if bl is None or fu is None:
                notes.append(f"{modality}: a visit has no measurement")
                continue
            run_change(root / bl, root / fu, folder, subject=self.p["subject"], baseline_visit=self.p["baseline"],
                       followup_visit=self.p["followup"])
            done.append(modality)
        if not done:
            raise NotApplicable("no modality was measured at both visits")
        return {"modalities": done, "notes": notes}

    def stage_pair_report(self, folder: Path) -> dict:
        fn = component("write_pair_report")
        fn(folder)
        return {}


class _CohortRunner:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.p = job.payload

    def stage_cohort(self, folder: Path) -> dict:
        if not self.p.get("allocation"):
            raise NotApplicable("no allocation table (pass --allocation or put allocation.csv in the scan root)")
        run_cohort = component("run_cohort")
        run_cohort(Path(self.p["allocation"]), Path(self.job.out_root), folder)
        return {"pairs": self.p.get("n_pairs", 0)}

    def stage_cohort_report(self, folder: Path) -> dict:
        fn = component("write_cohort_report")
        fn(folder)
        return {}
