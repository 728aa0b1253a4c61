"""Review store: one SQLite file per output folder with case states, MOAKS overrides and an append-only audit trail.

Every write names the case version it was based on; a write based on an old version is refused (``ConflictError``,
HTTP 409) so two reviewers of one case never silently overwrite each other. The audit table refuses UPDATE and
DELETE at the database level (triggers), so the trail is append-only even for code that forgets.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..core import KoaimgError
from ..io import atomic_write_text

STATUSES = ("unreviewed", "approved", "flagged", "rejected", "corrected")
#: statuses a reviewer sets directly; "corrected" comes from storing a corrected segmentation
DECISIONS = ("unreviewed", "approved", "flagged", "rejected")
GRADE_KINDS = ("moaks_any_loss_grade", "moaks_full_thickness_grade")
AUDIT_COLUMNS = ("seq", "at", "reviewer", "case_id", "action", "field", "before", "after", "comment", "case_version")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT 'unreviewed', version INTEGER NOT NULL DEFAULT 0,
    label_version INTEGER NOT NULL DEFAULT 0, reviewer TEXT, comment TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS overrides (
    case_id TEXT NOT NULL, region TEXT NOT NULL, grade TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (case_id, region, grade));
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, reviewer TEXT NOT NULL, case_id TEXT NOT NULL,
    action TEXT NOT NULL, field TEXT, before TEXT, after TEXT, comment TEXT, case_version INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class ConflictError(KoaimgError, RuntimeError):
    """A write was based on a case version that someone else has already changed."""

    code = "review_conflict"


@dataclass(frozen=True)
class CaseState:
    """Review state of one case; ``version`` changes on every write and is the case's ETag."""

    case_id: str
    status: str = "unreviewed"
    version: int = 0
    label_version: int = 0
    reviewer: str | None = None
    comment: str | None = None
    updated_at: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def now_utc() -> str:
    """Audit timestamp: UTC, ISO 8601, millisecond resolution."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


class ReviewStore:
    """Case states, grade overrides and the audit trail of one output folder (``OUT/qa/review.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------------------------------
    def state(self, case_id: str) -> CaseState:
        """Current state (a case nobody touched is unreviewed at version 0)."""
        with self._connect() as con:
            return self._state(con, case_id)

    @staticmethod
    def _state(con: sqlite3.Connection, case_id: str) -> CaseState:
        row = con.execute("SELECT case_id, status, version, label_version, reviewer, comment, updated_at FROM cases "
                          "WHERE case_id = ?", (case_id,)).fetchone()
        return CaseState(*row) if row else CaseState(case_id)

    def states(self) -> dict[str, CaseState]:
        """Every case that has been written to."""
        with self._connect() as con:
            rows = con.execute("SELECT case_id, status, version, label_version, reviewer, comment, updated_at "
                               "FROM cases").fetchall()
        return {r[0]: CaseState(*r) for r in rows}

    def overrides(self, case_id: str) -> dict[str, dict[str, int]]:
        """Reviewer grade overrides: ``{region: {grade_kind: value}}``."""
        with self._connect() as con:
            rows = con.execute("SELECT region, grade, value FROM overrides WHERE case_id = ?", (case_id,)).fetchall()
        out: dict[str, dict[str, int]] = {}
        for region, grade, value in rows:
            out.setdefault(region, {})[grade] = value
        return out

    def audit(self, case_id: str | None = None) -> list[dict]:
        """The audit trail in order, for one case or all."""
        query = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit"
        args: tuple = ()
        if case_id is not None:
            query += " WHERE case_id = ?"
            args = (case_id,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY seq", args).fetchall()
        return [dict(zip(AUDIT_COLUMNS, r, strict=True)) for r in rows]

    # -- writing ---------------------------------------------------------------------------------------------------
    def _bump(self, con: sqlite3.Connection, case_id: str, expected: int, **changes: object) -> CaseState:
        """Move the case from version ``expected`` to ``expected + 1`` with ``changes``, or raise ConflictError."""
        current = self._state(con, case_id)
        if current.version != expected:
            raise ConflictError(f"case {case_id} is at version {current.version}, the change was based on version "
                                f"{expected}", hint="reload the case, check the other reviewer's change, try again")
        merged = {**current.as_dict(), **changes, "version": expected + 1, "updated_at": now_utc()}
        con.execute("INSERT INTO cases (case_id, status, version, label_version, reviewer, comment, updated_at) "
                    "VALUES (:case_id, :status, :version, :label_version, :reviewer, :comment, :updated_at) "
                    "ON CONFLICT(case_id) DO UPDATE SET status=excluded.status, version=excluded.version, "
                    "label_version=excluded.label_version, reviewer=excluded.reviewer, comment=excluded.comment, "
                    "updated_at=excluded.updated_at", merged)
        return CaseState(**merged)

    @staticmethod
    def _log(con: sqlite3.Connection, *, reviewer: str, case_id: str, action: str, case_version: int,
             field: str | None = None, before: object = None, after: object = None, comment: str | None = None) -> None:
        con.execute("INSERT INTO audit (at, reviewer, case_id, action, field, before, after, comment, case_version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now_utc(), reviewer, case_id, action, field, _text(before), _text(after), comment, case_version))

    def decide(self, case_id: str, *, expected_version: int, status: str, reviewer: str,
               comment: str = "") -> CaseState:
        """Record a reviewer's decision (approve, flag, reject, or back to unreviewed)."""
        if status not in DECISIONS:
            raise ValueError(f"status must be one of {DECISIONS}, got {status!r}")
        with self._write() as con:
            before = self._state(con, case_id)
            state = self._bump(con, case_id, expected_version, status=status, reviewer=reviewer, comment=comment)
            self._log(con, reviewer=reviewer, case_id=case_id, action="decision", field="status",
                      before=before.status, after=status, comment=comment, case_version=state.version)
        return state

    def override_grade(self, case_id: str, *, expected_version: int, region: str, grade: str, value: int | None,
                       reviewer: str, comment: str = "", automated: int | None = None) -> CaseState:
        """Set (or clear, ``value=None``) a reviewer's grade for one subregion; the automated grade stays on file."""
        if grade not in GRADE_KINDS:
            raise ValueError(f"grade must be one of {GRADE_KINDS}, got {grade!r}")
        with self._write() as con:
            row = con.execute("SELECT value FROM overrides WHERE case_id=? AND region=? AND grade=?",
                              (case_id, region, grade)).fetchone()
            before = row[0] if row else automated
            state = self._bump(con, case_id, expected_version)
            if value is None:
                con.execute("DELETE FROM overrides WHERE case_id=? AND region=? AND grade=?", (case_id, region, grade))
            else:
                con.execute("INSERT INTO overrides (case_id, region, grade, value) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(case_id, region, grade) DO UPDATE SET value=excluded.value",
                            (case_id, region, grade, value))
            self._log(con, reviewer=reviewer, case_id=case_id, action="grade_override", field=f"{region}.{grade}",
                      before=before, after=automated if value is None else value, comment=comment,
                      case_version=state.version)
        return state

    def record_correction(self, case_id: str, *, expected_version: int, label_version: int, reviewer: str,
                          comment: str, details: dict) -> CaseState:
        """A corrected segmentation was stored as ``label_version``: status becomes corrected."""
        with self._write() as con:
            before = self._state(con, case_id)
            state = self._bump(con, case_id, expected_version, status="corrected", label_version=label_version,
                               reviewer=reviewer, comment=comment)
            self._log(con, reviewer=reviewer, case_id=case_id, action="correction", field="label_version",
                      before=before.label_version, after=details, comment=comment, case_version=state.version)
        return state

    def record_recompute(self, case_id: str, *, reviewer: str, label_version: int | None, details: dict,
                         comment: str = "") -> CaseState:
        """A derived result (a pair's change) was recomputed after a correction of one of its scans.

        Not based on a reviewer's view of this case, so it bumps the version unconditionally: a reviewer who had the
        pair open gets a conflict on their next write and sees the new numbers.
        """
        with self._write() as con:
            before = self._state(con, case_id)
            changes = {} if label_version is None else {"label_version": label_version}
            state = self._bump(con, case_id, before.version, **changes)
            self._log(con, reviewer=reviewer, case_id=case_id, action="change_recompute", field="label_version",
                      before=before.label_version, after=details, comment=comment, case_version=state.version)
        return state


def audit_csv_text(store: ReviewStore) -> str:
    """The whole audit trail as CSV text (one row per event, oldest first)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(AUDIT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(store.audit())
    return buf.getvalue()


def export_audit_csv(store: ReviewStore, path: str | Path) -> Path:
    """Write the audit trail to ``path`` as CSV (atomically)."""
    return atomic_write_text(path, audit_csv_text(store))
