"""The review logic behind the web app, free of HTTP: cases, decisions, grade overrides, corrections, recomputes.

Every file path is built here from a discovered ``Case``, a whitelisted role and an integer version; nothing a
request sends is ever joined onto a path.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..core import KoaimgError
from ._cases import CORRECTED_DIR, PAIR_FILES, SCAN_FILES, Case, case_id_for_scan, discover_cases
from ._corrections import discard_version, sha256_hex, store_correction, validate_correction, version_folder
from ._store import DECISIONS, GRADE_KINDS, STATUSES, CaseState, ConflictError, ReviewStore, audit_csv_text
from ._views import change_table, moaks_grid, provenance_summary, regional_table

#: NIfTI roles the viewer may load, and the PNG roles
VOLUME_ROLES = ("image", "labels", "thickness", "regions", "delta")
PNG_ROLES = ("thickness_map", "overlay", "delta_map")
#: default ceiling for one upload: a DESS label map (384 x 384 x 160 uint8) is 23.6 MB uncompressed
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
_REVIEWER_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_COMMENT_MAX = 4000


class NotFoundError(KoaimgError, LookupError):
    """A case, version or file the request names does not exist in this output folder."""

    code = "not_found"


class BadRequestError(KoaimgError, ValueError):
    """A request field is missing or malformed."""

    code = "bad_request"


@dataclass(frozen=True)
class Filters:
    """Worklist filters (all optional)."""

    status: str | None = None
    kind: str | None = None
    modality: str | None = None
    flagged: bool | None = None
    q: str | None = None


class ReviewService:
    """Cases of one output folder plus their review store."""

    def __init__(self, out: str | Path, *, reviewer: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
                 rescan_seconds: float = 5.0, reports: bool = True) -> None:
        self.out = Path(out).resolve()
        if not self.out.is_dir():
            raise NotFoundError("output folder does not exist", path=self.out, hint="pass a batch output folder")
        self.default_reviewer = self._reviewer(reviewer) if reviewer else None
        self.max_upload_bytes = int(max_upload_bytes)
        self.store = ReviewStore(self.out / "qa" / "review.sqlite")
        self.rescan_seconds = rescan_seconds
        #: write report.html for corrected versions and recomputed pairs (about 2 s each)
        self.reports = reports
        self._cases: dict[str, Case] = {}
        self.skipped: list[str] = []
        self._scanned_at = -1e9
        self._lock = threading.Lock()
        self._case_locks: dict[str, threading.Lock] = {}
        self.refresh()

    # -- cases -----------------------------------------------------------------------------------------------------
    def refresh(self) -> dict[str, Case]:
        """Re-read the folder layout (the batch may still be adding cases)."""
        cases, skipped = discover_cases(self.out)
        with self._lock:
            self._cases, self.skipped, self._scanned_at = cases, skipped, time.monotonic()
        return cases

    @property
    def cases(self) -> dict[str, Case]:
        """Discovered cases, re-read at most every ``rescan_seconds``."""
        if time.monotonic() - self._scanned_at > self.rescan_seconds:
            self.refresh()
        return self._cases

    def case(self, case_id: str) -> Case:
        """The case with this id, or NotFoundError (the only way a request reaches a case)."""
        found = self.cases.get(case_id) if isinstance(case_id, str) else None
        if found is None:
            found = self.refresh().get(case_id)
        if found is None:
            raise NotFoundError("no such case", hint="pick a case from the worklist")
        return found

    def worklist(self, filters: Filters = Filters()) -> dict:
        """Cases with their review state, filtered, plus counts per status."""
        if filters.status is not None and filters.status not in STATUSES:
            raise BadRequestError(f"status must be one of {STATUSES}")
        states = self.store.states()
        rows, counts = [], dict.fromkeys(STATUSES, 0)
        q = (filters.q or "").strip().lower()
        for case in self.cases.values():
            state = states.get(case.case_id, CaseState(case.case_id))
            counts[state.status] = counts.get(state.status, 0) + 1
            if filters.status and state.status != filters.status:
                continue
            if filters.kind and case.kind != filters.kind:
                continue
            if filters.modality and case.modality != filters.modality:
                continue
            if filters.flagged is not None and bool(case.flags) != filters.flagged:
                continue
            if q and q not in case.case_id.lower():
                continue
            rows.append({**case.summary(), "status": state.status, "version": state.version,
                         "label_version": state.label_version, "reviewer": state.reviewer,
                         "updated_at": state.updated_at})
        return {"cases": rows, "counts": counts, "total": len(self.cases), "skipped": len(self.skipped)}

    def detail(self, case_id: str, version: int | None = None) -> dict:
        """Everything the case view shows, with URLs (never paths) for its volumes and pictures.

        ``version``: which segmentation version to show (default the latest; 0 = the automated one).
        """
        case = self.case(case_id)
        state = self.store.state(case.case_id)
        if version is not None and not 0 <= version <= state.label_version:
            raise NotFoundError("no such version of this case")
        ids = list(self.cases)
        pos = ids.index(case.case_id) if case.case_id in ids else -1
        states = self.store.states()
        after = ids[pos + 1:] + ids[:max(pos, 0)]
        next_unreviewed = next((i for i in after if states.get(i, CaseState(i)).status == "unreviewed"), None)
        overrides = self.store.overrides(case.case_id)
        shown = state.label_version if version is None else version
        versions = sorted({0, shown})
        base = f"/api/cases/{case.case_id}"
        out = {**case.summary(), "state": state.as_dict(), "versions": list(range(state.label_version + 1)),
               "shown_version": shown,
               "next_id": ids[pos + 1] if 0 <= pos < len(ids) - 1 else None,
               "prev_id": ids[pos - 1] if pos > 0 else None, "next_unreviewed_id": next_unreviewed,
               "overrides": overrides, "audit": self.store.audit(case.case_id),
               "provenance": provenance_summary(case), "volumes": {}, "images": {}, "correctable": False}
        if case.kind == "scan":
            for role in ("labels", "thickness", "regions"):
                if (version_folder(case, shown) / SCAN_FILES[role]).is_file():
                    out["volumes"][role] = f"{base}/v/{shown}/{role}.nii.gz"
            if "image" in case.files:
                out["volumes"]["image"] = f"{base}/v/0/image.nii.gz"
            for role in ("thickness_map", "overlay"):
                if (version_folder(case, shown) / SCAN_FILES[role]).is_file():
                    out["images"][role] = f"{base}/v/{shown}/{role}.png"
            out["regional"] = regional_table(case, versions)
            out["moaks"] = moaks_grid(case, shown, overrides)
            out["correctable"] = "labels" in case.files
        else:
            out["change"] = change_table(case, shown)
            out["change_original"] = change_table(case, 0) if shown else None
            bl = self.cases.get(case_id_for_scan(case.subject, case.baseline, case.modality or "MR"))
            fu = self.cases.get(case_id_for_scan(case.subject, case.followup, case.modality or "MR"))
            out["baseline_case"] = bl.case_id if bl else None
            out["followup_case"] = fu.case_id if fu else None
            if bl is not None:
                bl_state = self.store.state(bl.case_id)
                if "image" in bl.files:
                    out["volumes"]["image"] = f"/api/cases/{bl.case_id}/v/0/image.nii.gz"
                if (version_folder(bl, bl_state.label_version) / "labels.nii.gz").is_file():
                    out["volumes"]["labels"] = f"/api/cases/{bl.case_id}/v/{bl_state.label_version}/labels.nii.gz"
            if self._pair_file(case, shown, "delta") is not None:
                out["volumes"]["delta"] = f"{base}/v/{shown}/delta.nii.gz"
            if self._pair_file(case, shown, "delta_map") is not None:
                out["images"]["delta_map"] = f"{base}/v/{shown}/delta_map.png"
        return out

    # -- files -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _pair_file(case: Case, version: int, role: str) -> Path | None:
        folder = version_folder(case, version)
        return next((folder / n for n in PAIR_FILES[role] if (folder / n).is_file()), None)

    def file_for(self, case_id: str, version: int, role: str) -> Path:
        """The file of ``role`` in version ``version`` of a case; NotFoundError for anything else."""
        case = self.case(case_id)
        state = self.store.state(case.case_id)
        if not isinstance(version, int) or version < 0 or version > state.label_version:
            raise NotFoundError("no such version of this case")
        if role not in VOLUME_ROLES + PNG_ROLES:
            raise NotFoundError("no such file")
        if case.kind == "pair":
            path = self._pair_file(case, version, role) if role in ("delta", "delta_map") else None
        elif role == "image":
            path = case.files.get("image") if version == 0 else None
        else:
            path = version_folder(case, version) / SCAN_FILES[role] if role in SCAN_FILES else None
        if path is None or not path.is_file():
            raise NotFoundError("this case has no such file")
        resolved = path.resolve()
        if not resolved.is_relative_to(case.folder.resolve()):  # a symlink pointing out of the case folder
            raise NotFoundError("this case has no such file")
        return resolved

    # -- writes ----------------------------------------------------------------------------------------------------
    def _reviewer(self, name: str | None) -> str:
        chosen = (name or "").strip() or (getattr(self, "default_reviewer", None) or "")
        if not chosen:
            raise BadRequestError("reviewer name required", hint="type your name, or start the server with --reviewer")
        if not _REVIEWER_RE.match(chosen):
            raise BadRequestError("reviewer name must be 1-64 printable characters")
        return chosen

    @staticmethod
    def _comment(text: str | None) -> str:
        text = text or ""
        if len(text) > _COMMENT_MAX:
            raise BadRequestError(f"comment longer than {_COMMENT_MAX} characters")
        return text

    def decide(self, case_id: str, *, expected_version: int, status: str, reviewer: str | None = None,
               comment: str | None = None) -> CaseState:
        """Approve / flag / reject (or reset) a case."""
        case = self.case(case_id)
        if status not in DECISIONS:
            raise BadRequestError(f"status must be one of {DECISIONS}", hint="'corrected' is set by a correction")
        return self.store.decide(case.case_id, expected_version=expected_version, status=status,
                                 reviewer=self._reviewer(reviewer), comment=self._comment(comment))

    def override_grade(self, case_id: str, *, expected_version: int, region: str, grade: str, value: int | None,
                       reviewer: str | None = None, comment: str | None = None) -> CaseState:
        """Override (or clear) one subregion's MOAKS grade; the region must be in the case's grid."""
        case = self.case(case_id)
        if case.kind != "scan":
            raise BadRequestError("grades belong to scans, not pairs")
        if grade not in GRADE_KINDS:
            raise BadRequestError(f"grade must be one of {GRADE_KINDS}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3):
            raise BadRequestError("a MOAKS grade is 0, 1, 2 or 3 (or null to clear the override)")
        state = self.store.state(case.case_id)
        grid = {row["region"]: row for row in moaks_grid(case, state.label_version, {})}
        if region not in grid:
            raise BadRequestError(f"region must be one of {sorted(grid)}")
        return self.store.override_grade(case.case_id, expected_version=expected_version, region=region, grade=grade,
                                         value=value, reviewer=self._reviewer(reviewer),
                                         comment=self._comment(comment), automated=grid[region]["automated"][grade])

    def _case_lock(self, case_id: str) -> threading.Lock:
        with self._lock:
            return self._case_locks.setdefault(case_id, threading.Lock())

    def correct(self, case_id: str, data: bytes, *, expected_version: int, reviewer: str | None = None,
                source: str = "upload", comment: str | None = None, based_on: int | None = None) -> dict:
        """Validate a corrected label map, store it as the next version, re-measure it and recompute its pairs.

        ``based_on``: the version the reviewer edited (default the latest), recorded with the voxel changes.
        """
        case = self.case(case_id)
        if case.kind != "scan" or "labels" not in case.files:
            raise BadRequestError("this case has no label map to correct")
        if source not in ("upload", "drawn"):
            raise BadRequestError("source must be 'upload' or 'drawn'")
        if len(data) > self.max_upload_bytes:
            raise BadRequestError(f"upload larger than {self.max_upload_bytes} bytes")
        who, note = self._reviewer(reviewer), self._comment(comment)
        with self._case_lock(case.case_id):
            state = self.store.state(case.case_id)
            if state.version != expected_version:  # fail before the expensive part
                raise ConflictError(f"case {case.case_id} is at version {state.version}, the correction was based "
                                    f"on version {expected_version}", hint="reload the case and redo the correction")
            base = state.label_version if based_on is None else based_on
            if not 0 <= base <= state.label_version:
                raise BadRequestError(f"based_on must be a version of this case (0-{state.label_version})")
            labels, affine = validate_correction(data, case.files["labels"])
            version, details = store_correction(case, labels, affine, base_version=base,
                                                last_version=state.label_version,
                                                reviewer=who, source=source, upload_sha256=sha256_hex(data),
                                                comment=note, report=self.reports)
            try:
                new_state = self.store.record_correction(case.case_id, expected_version=expected_version,
                                                         label_version=version, reviewer=who, comment=note,
                                                         details=details)
            except ConflictError:
                discard_version(case, version)
                raise
        pairs = self.recompute_pairs(case, reviewer=who)
        return {"state": new_state.as_dict(), "correction": details, "pairs": pairs}

    def _latest_folder(self, case: Case) -> Path:
        return version_folder(case, self.store.state(case.case_id).label_version)

    def recompute_pairs(self, scan: Case, *, reviewer: str) -> list[dict]:
        """Recompute the change of every pair that uses ``scan``, from the latest version of both visits."""
        results = []
        for pair in [c for c in self.cases.values() if c.kind == "pair" and c.subject == scan.subject
                     and scan.visit in (c.baseline, c.followup) and (c.modality or "MR") == scan.modality]:
            bl = self.cases.get(case_id_for_scan(pair.subject, pair.baseline, scan.modality))
            fu = self.cases.get(case_id_for_scan(pair.subject, pair.followup, scan.modality))
            try:
                from ..pipeline import run_change  # type: ignore[attr-defined]
            except ImportError:
                run_change = None
            if run_change is None or bl is None or fu is None:
                why = ("koaimg.pipeline.run_change is not available in this install" if run_change is None
                       else "the other visit of this pair has no scan folder")
                details = {"recomputed": False, "reason": why, "trigger": scan.case_id}
                self.store.record_recompute(pair.case_id, reviewer=reviewer, label_version=None, details=details,
                                            comment="change not recomputed")
                results.append({"pair": pair.case_id, **details})
                continue
            details = self._run_change(run_change, pair, bl, fu, reviewer)
            results.append({"pair": pair.case_id, **details})
        return results

    def _run_change(self, run_change, pair: Case, bl: Case, fu: Case, reviewer: str) -> dict:
        root = pair.folder / CORRECTED_DIR
        root.mkdir(parents=True, exist_ok=True)
        state = self.store.state(pair.case_id)
        from ._cases import latest_version

        version = max(latest_version(pair.folder), state.label_version) + 1
        tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.", dir=root))
        details = {"trigger_versions": {bl.case_id: self.store.state(bl.case_id).label_version,
                                        fu.case_id: self.store.state(fu.case_id).label_version}}
        try:
            run_change(self._latest_folder(bl), self._latest_folder(fu), tmp, subject=pair.subject,
                       baseline_visit=pair.baseline, followup_visit=pair.followup)
            if self.reports:
                details["report"] = _pair_report(tmp)
            tmp.rename(root / f"v{version}")
        except Exception as exc:  # a failed recompute is recorded, never hidden, and never breaks the correction
            shutil.rmtree(tmp, ignore_errors=True)
            details.update(recomputed=False, reason=f"run_change failed: {type(exc).__name__}: {str(exc)[:200]}")
            self.store.record_recompute(pair.case_id, reviewer=reviewer, label_version=None, details=details,
                                        comment="change recompute failed")
            return details
        details.update(recomputed=True, version=version)
        self.store.record_recompute(pair.case_id, reviewer=reviewer, label_version=version, details=details,
                                    comment="change recomputed from corrected segmentation")
        return details

    def state_rows(self) -> list[dict]:
        """One row per discovered case: final status, reviewer, segmentation version and grade overrides (JSON)."""
        states = self.store.states()
        rows = []
        for case in self.cases.values():
            st = states.get(case.case_id, CaseState(case.case_id))
            rows.append({"case_id": case.case_id, "kind": case.kind, "subject": case.subject,
                         "visit": case.visit or f"{case.baseline}->{case.followup}", "modality": case.modality,
                         "status": st.status, "reviewer": st.reviewer or "", "comment": st.comment or "",
                         "label_version": st.label_version, "case_version": st.version,
                         "updated_at": st.updated_at or "",
                         "grade_overrides": json.dumps(self.store.overrides(case.case_id), sort_keys=True)})
        return rows

    def audit_csv(self) -> str:
        """The audit trail as CSV text."""
        return audit_csv_text(self.store)


def _pair_report(folder: Path) -> str:
    """The pair report of a recomputed change, best effort (recorded, never fatal)."""
    try:
        from ..export import write_pair_report

        write_pair_report(folder)
    except Exception as exc:
        return f"not written: {type(exc).__name__}: {str(exc)[:160]}"
    return "report.html"
