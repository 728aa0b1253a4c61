"""Find the reviewable cases in a batch output folder from its layout alone (DESIGN.md), never from a request.

A case is a scan folder ``OUT/<subject>/<visit>/<modality>/`` or a pair folder ``OUT/<subject>/change_<bl>_<fu>/``
(one pair case per modality when the batch wrote ``change_<bl>_<fu>/<modality>/change.csv``).
Every file the server may send is resolved here, once, into a fixed role → path table; requests name a case id and a
role, and anything not in the table does not exist for the web app. Folder names must be plain pseudonymous ids.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..io._locks import REVIEW_DIR

#: a folder name the server accepts as a pseudonym, visit or modality (no separators, no dots at the start)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: case ids: ``subject~visit~modality``, ``subject~change_bl_fu`` or ``subject~change_bl_fu~modality``
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,200}$")
#: folder names under OUT that are not subjects
RESERVED = frozenset({"cohort", "qa", "logs", "manifest", "tmp"})
#: things that look like a date of birth or a study date rather than a pseudonym (YYYYMMDD, YYYY-MM-DD)
_DATE_RE = re.compile(r"(19|20)\d\d[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])")

#: role → file name in a scan folder (the only scan files the app reads or serves)
SCAN_FILES = {
    "image": "image.nii.gz",
    "labels": "labels.nii.gz",
    "thickness": "thickness.nii.gz",
    "regions": "regions.nii.gz",
    "measures": "measures.csv",
    "moaks": "moaks.json",
    "report": "report.html",
    "provenance": "provenance.json",
    "qa_flags": "qa_flags.json",
    "thickness_map": "femoral_thickness_map.png",
    "overlay": "overlay.png",
    "ultrasound": "ultrasound.json",
}
#: role → candidate file names in a pair folder (first one present wins)
PAIR_FILES = {
    "change": ("change.csv",),
    "delta": ("delta_thickness.nii.gz", "delta.nii.gz"),
    "delta_map": ("femoral_delta_map.png", "delta_thickness_map.png", "delta_map.png"),
    "transitions": ("transitions.json",),
    "report": ("report.html",),
    "qa_flags": ("qa_flags.json",),
}
#: where corrected versions live inside a case folder (``corrected/v1``, ``corrected/v2`` ...); batch re-runs of the
#: unit carry them over (``io._locks``)
CORRECTED_DIR = REVIEW_DIR


@dataclass(frozen=True)
class Case:
    """One reviewable unit: a scan or a baseline/follow-up pair, with the files it has."""

    case_id: str
    kind: str  # "scan" or "pair"
    subject: str
    folder: Path
    visit: str = ""
    modality: str = ""
    baseline: str = ""
    followup: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    flags: tuple[dict, ...] = ()

    def summary(self) -> dict:
        """What the worklist shows (no paths: the browser never sees the file system)."""
        return {"id": self.case_id, "kind": self.kind, "subject": self.subject, "visit": self.visit,
                "modality": self.modality, "baseline": self.baseline, "followup": self.followup,
                "flags": list(self.flags), "has": sorted(self.files)}


def case_id_for_scan(subject: str, visit: str, modality: str) -> str:
    """The stable id of a scan case."""
    return f"{subject}~{visit}~{modality}"


def case_id_for_pair(subject: str, baseline: str, followup: str, modality: str = "") -> str:
    """The stable id of a pair case (``modality`` when the pair folder has one subfolder per modality)."""
    return f"{subject}~change_{baseline}_{followup}" + (f"~{modality}" if modality else "")


def is_pseudonym(name: str) -> bool:
    """A folder name the app may show: a plain id, not something that looks like a date."""
    return bool(NAME_RE.match(name)) and not _DATE_RE.search(name)


def _read_flags(folder: Path) -> tuple[dict, ...]:
    """QA flags raised by the pipeline: ``qa_flags.json`` (list, or ``{"flags": [...]}``) plus measure notes."""
    flags: list[dict] = []
    path = folder / "qa_flags.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = [{"code": "qa_flags_unreadable", "message": "qa_flags.json could not be parsed"}]
        if isinstance(data, dict):
            data = data.get("flags", [])
        for item in data if isinstance(data, list) else []:
            if isinstance(item, str):
                flags.append({"code": item, "message": item})
            elif isinstance(item, dict):
                code = str(item.get("code") or item.get("flag") or item.get("name") or "flag")
                flags.append({"code": code, "message": str(item.get("message") or item.get("detail") or code)})
    moaks = folder / "moaks.json"
    if moaks.is_file():
        try:
            notes = json.loads(moaks.read_text()).get("notes", [])
        except (OSError, ValueError, AttributeError):
            notes = []
        flags.extend({"code": "measure_note", "message": str(n)} for n in notes if n)
    return tuple(flags)


def manifest_flags(root: Path) -> dict[str, list[dict]]:
    """Best effort: failed/unavailable stages and segmentation warnings from the batch manifest, by unit folder.

    The manifest's schema belongs to the batch engine; if it is absent or not as expected this returns nothing and the
    worklist still works from the folder layout and ``qa_flags.json``.
    """
    out: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*manifest*.sqlite")):
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                rows = con.execute("SELECT unit, stage, status, reason, info FROM stages").fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            continue
        for unit, stage, status, reason, info in rows:
            flags = out.setdefault(str(unit), [])
            if status in ("failed", "unavailable"):
                flags.append({"code": f"{stage}_{status}", "message": str(reason or status)})
            try:
                extra = json.loads(info or "{}")
            except ValueError:
                extra = {}
            for key in ("warnings", "notes"):
                items = extra.get(key) if isinstance(extra, dict) else None
                flags.extend({"code": f"{stage}_{key[:-1]}", "message": str(m)} for m in items or [] if m)
    return out


def latest_version(folder: Path) -> int:
    """Highest corrected version number present in ``folder/corrected`` (0 when there is none)."""
    root = folder / CORRECTED_DIR
    if not root.is_dir():
        return 0
    numbers = [int(p.name[1:]) for p in root.iterdir() if p.is_dir() and re.fullmatch(r"v[1-9]\d{0,5}", p.name)]
    return max(numbers, default=0)


def _scan_case(subject: str, visit: str, modality_dir: Path) -> Case | None:
    files = {role: modality_dir / name for role, name in SCAN_FILES.items() if (modality_dir / name).is_file()}
    if "image" not in files and (modality_dir / "image.nii").is_file():  # uncompressed, as the report also accepts
        files["image"] = modality_dir / "image.nii"
    if "measures" not in files and "labels" not in files:
        return None
    return Case(case_id_for_scan(subject, visit, modality_dir.name), "scan", subject, modality_dir, visit=visit,
                modality=modality_dir.name, files=files, flags=_read_flags(modality_dir))


def _split_pair(name: str, visits: set[str]) -> tuple[str, str] | None:
    rest = name[len("change_"):]
    cuts = [i for i, ch in enumerate(rest) if ch == "_"]
    for i in cuts:  # prefer the split whose both halves are visit folders of this subject
        if rest[:i] in visits and rest[i + 1:] in visits:
            return rest[:i], rest[i + 1:]
    return (rest[:cuts[0]], rest[cuts[0] + 1:]) if cuts else None


def _pair_files(folder: Path) -> dict[str, Path]:
    files = {}
    for role, names in PAIR_FILES.items():
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is not None:
            files[role] = found
    return files


def _pair_cases(subject: str, pair_dir: Path, visits: set[str]) -> list[Case]:
    """One case per modality subfolder (``change_bl_fu/MR/change.csv``, as the batch writes), else the folder itself."""
    split = _split_pair(pair_dir.name, visits)
    if split is None or not all(NAME_RE.match(v) for v in split):
        return []
    cases = []
    for sub in sorted(p for p in pair_dir.iterdir() if p.is_dir() and NAME_RE.match(p.name)
                      and p.name != CORRECTED_DIR):
        files = _pair_files(sub)
        if "change" in files:
            cases.append(Case(case_id_for_pair(subject, *split, sub.name), "pair", subject, sub, modality=sub.name,
                              baseline=split[0], followup=split[1], files=files, flags=_read_flags(sub)))
    if cases:
        return cases
    files = _pair_files(pair_dir)
    if "change" not in files:
        return []
    return [Case(case_id_for_pair(subject, *split), "pair", subject, pair_dir, baseline=split[0], followup=split[1],
                 files=files, flags=_read_flags(pair_dir))]


def discover_cases(out: str | Path) -> tuple[dict[str, Case], list[str]]:
    """All scan and pair cases under ``out`` (ordered by subject, then visit) and why any folder was skipped."""
    root = Path(out)
    cases: dict[str, Case] = {}
    skipped: list[str] = []
    if not root.is_dir():
        return cases, [f"{root}: not a folder"]
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = subject_dir.name
        if name.startswith(".") or name in RESERVED:
            continue
        if not is_pseudonym(name):
            skipped.append(f"{name}: folder name is not a plain pseudonymous id (letters, digits, . _ -; no dates)")
            continue
        children = sorted(p for p in subject_dir.iterdir() if p.is_dir() and NAME_RE.match(p.name))
        visits = {p.name for p in children if not p.name.startswith("change_")}
        for child in children:
            if child.name.startswith("change_"):
                cases.update((c.case_id, c) for c in _pair_cases(name, child, visits))
                continue
            for modality_dir in sorted(p for p in child.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
                case = _scan_case(name, child.name, modality_dir)
                if case is not None:
                    cases[case.case_id] = case
    extra = manifest_flags(root)
    if extra:
        for case_id, case in cases.items():
            unit = case.folder.relative_to(root)
            unit_key = str(unit.parent if case.kind == "pair" and case.modality else unit)
            if extra.get(unit_key):
                cases[case_id] = replace(case, flags=case.flags + tuple(extra[unit_key]))
    return cases, skipped
