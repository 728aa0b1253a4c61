"""The run manifest: one SQLite file under OUT recording every stage of every scan, pair and the cohort.

Why SQLite: a single file, transactional (a ``kill -9`` mid-commit leaves the previous state), readable by anyone
(``sqlite3 OUT/koaimg_manifest.sqlite 'select * from stages'``). Only the coordinating process writes it, and only after
a job's outputs are in place, so a row marked ``done`` always has its files. Rows are keyed by (unit, stage): a resumed
run updates them, never duplicates them. No user paths or patient identifiers are stored: units are pseudonymous
``subject/visit/modality`` keys and inputs are content hashes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import KoaimgError

MANIFEST_NAME = "koaimg_manifest.sqlite"
SCHEMA_VERSION = 1

#: stage statuses: done (outputs in place), failed (error recorded), unavailable (a component is missing),
#: skipped (an upstream stage did not finish)
DONE, FAILED, UNAVAILABLE, SKIPPED = "done", "failed", "unavailable", "skipped"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL, finished REAL, koaimg_version TEXT, command TEXT,
    executor TEXT, workers INTEGER, status TEXT);
CREATE TABLE IF NOT EXISTS units (
    unit TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT, visit TEXT, visit_index INTEGER, modality TEXT,
    series TEXT, n_files INTEGER, input_hash TEXT);
CREATE TABLE IF NOT EXISTS stages (
    unit TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, signature TEXT,
    outputs TEXT, versions TEXT, info TEXT, seconds REAL, started REAL, finished REAL, run_id INTEGER,
    PRIMARY KEY (unit, stage));
CREATE TABLE IF NOT EXISTS problems (
    place TEXT NOT NULL, problem TEXT NOT NULL, run_id INTEGER, PRIMARY KEY (place, problem));
"""


class ManifestError(KoaimgError, RuntimeError):
    """The manifest under OUT cannot be opened or written."""

    code = "manifest"


@dataclass
class StageRecord:
    """What happened to one stage of one unit."""

    unit: str
    stage: str
    status: str
    reason: str = ""
    signature: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    versions: dict[str, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        """bool: the stage finished and its outputs are in place."""
        return self.status == DONE


class Manifest:
    """Open (or create) ``OUT/koaimg_manifest.sqlite`` in WAL mode."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / MANIFEST_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except (sqlite3.Error, OSError) as exc:
            raise ManifestError(f"cannot open or write the run manifest ({exc})", path=self.path,
                                hint="check that the output folder is writable and not on a full disk") from None
        self.run_id: int | None = None

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        self._db.close()

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                self._db.execute(sql, params)
            self._db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise ManifestError(f"cannot record progress ({exc})", path=self.path,
                                hint="free disk space, then run again with --resume") from None

    def start_run(self, command: str, executor: str, workers: int, version: str) -> int:
        """Record the start of a run and return its id."""
        self._write([("INSERT INTO runs (started, koaimg_version, command, executor, workers, status) "
                      "VALUES (?, ?, ?, ?, ?, 'running')", (time.time(), version, command, executor, workers))])
        self.run_id = int(self._db.execute("SELECT max(id) FROM runs").fetchone()[0])
        return self.run_id

    def finish_run(self, status: str) -> None:
        """Mark the current run finished."""
        self._write([("UPDATE runs SET finished=?, status=? WHERE id=?", (time.time(), status, self.run_id))])

    def set_units(self, units: list[dict]) -> None:
        """Upsert the units (scans, pairs, cohort) of this run."""
        cols = ("unit", "kind", "subject", "visit", "visit_index", "modality", "series", "n_files", "input_hash")
        self._write([(f"INSERT OR REPLACE INTO units ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      tuple(u.get(c) for c in cols)) for u in units])

    def set_problems(self, problems: list[tuple[str, str]]) -> None:
        """Record discovery problems (files that could not be used)."""
        self._write([("INSERT OR REPLACE INTO problems VALUES (?, ?, ?)", (place, text, self.run_id))
                     for place, text in problems])

    def record(self, records: list[StageRecord]) -> None:
        """Store stage results of one job in one transaction."""
        self._write([("INSERT OR REPLACE INTO stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (r.unit, r.stage, r.status, r.reason, r.signature, json.dumps(r.outputs, sort_keys=True),
                       json.dumps(r.versions, sort_keys=True), json.dumps(r.info, sort_keys=True), r.seconds,
                       r.started, r.finished, self.run_id)) for r in records])

    def get(self, unit: str) -> dict[str, StageRecord]:
        """The recorded stages of ``unit``."""
        rows = self._db.execute("SELECT unit, stage, status, reason, signature, outputs, versions, info, seconds, "
                                "started, finished FROM stages WHERE unit=?", (unit,)).fetchall()
        return {r[1]: StageRecord(r[0], r[1], r[2], r[3] or "", r[4] or "", json.loads(r[5] or "{}"),
                                  json.loads(r[6] or "{}"), json.loads(r[7] or "{}"), r[8] or 0.0, r[9] or 0.0,
                                  r[10] or 0.0) for r in rows}

    def all_records(self) -> list[StageRecord]:
        """Every stage row, ordered by unit and stage."""
        units = [r[0] for r in self._db.execute("SELECT DISTINCT unit FROM stages ORDER BY unit")]
        return [rec for u in units for rec in sorted(self.get(u).values(), key=lambda r: r.stage)]


def read_manifest(out: str | Path, *, timings: bool = False) -> list[dict]:
    """Stage rows as dicts (without timings unless asked): for comparing runs and for reports."""
    db = sqlite3.connect(Path(out) / MANIFEST_NAME)
    try:
        cur = db.execute("SELECT * FROM stages ORDER BY unit, stage")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        db.close()
    if not timings:
        for r in rows:
            for key in ("seconds", "started", "finished", "run_id"):
                r.pop(key, None)
            info = json.loads(r["info"] or "{}")
            info.pop("worker", None)
            info.pop("cpu_s", None)
            r["info"] = json.dumps(info, sort_keys=True)
    return rows
