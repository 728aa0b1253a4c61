"""Who, when and what: subjects, visits and modalities of a study folder or a trial export.

A trial export is ``ROOT/<subject>/<visit>/<anything>/files``; subjects are keyed by their folder name (trial exports
use pseudonymous subject ids) or, with ``subject_from="header"``, by the salted pseudonym of the DICOM PatientID.
Visits are the folders under a subject (or, for loose files, the study dates), ordered by study date (kept in memory
only, never written) and then by name; the first is the baseline, every later one is a follow-up paired with it.
Messy exports are fixed with an override CSV (``path, subject, visit, modality, side, labels, pixel_spacing_mm,
visit_order, exclude``) whose rows apply to every series under ``path``.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..core import KoaimgError
from ..io import DiscoveryReport, SeriesInfo, discover
from ..io._discover import ROLE_LABELS, ROLE_LOCALIZER, ROLE_MOAKS, ROLE_OTHER_MR, ROLE_T2, ROLE_THICKNESS

#: folder names under a scan root that hold no scans by convention (the simulated cohort's truth)
DEFAULT_EXCLUDE = ("ground_truth",)
#: names that sort first among visits without study dates
_BASELINE_NAMES = ("baseline", "bl", "screening", "v0", "visit0", "month0", "m0", "week0")
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,47}$")
_MR_RANK = {ROLE_THICKNESS: 0, ROLE_OTHER_MR: 1, ROLE_MOAKS: 2}


class ManifestCsvError(KoaimgError, ValueError):
    """The override CSV cannot be used as written."""

    code = "bad_override_csv"


@dataclass
class Scan:
    """One scan to process: a subject's visit in one modality, with the files that make it."""

    subject: str
    visit: str
    visit_index: int
    modality: str  # "MR" or "US"
    series: SeriesInfo = field(repr=False)
    labels: str | None = None
    pixel_spacing_mm: float | None = None
    side: str = ""
    #: why the chosen series cannot be loaded (found at discovery); the scan is recorded as failed at ingest
    problem: str | None = None

    @property
    def unit(self) -> str:
        """Manifest key and output sub-path: ``<subject>/<visit>/<modality>``."""
        return f"{self.subject}/{self.visit}/{self.modality}"

    @property
    def files(self) -> list[str]:
        """The source files (user paths; never written to the manifest)."""
        return list(self.series.files)


@dataclass
class Pair:
    """Baseline and one follow-up visit of a subject (all modalities present at both)."""

    subject: str
    baseline: str
    followup: str
    modalities: list[str]

    @property
    def unit(self) -> str:
        """Manifest key and output sub-path: ``<subject>/change_<bl>_<fu>``."""
        return f"{self.subject}/change_{self.baseline}_{self.followup}"


@dataclass
class StudyPlan:
    """Everything discovered: scans, pairs, what was ignored and why, and file problems."""

    root: str
    scans: list[Scan]
    pairs: list[Pair]
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (where, why) without user paths
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, one-line problem)
    allocation: str | None = None

    @property
    def subjects(self) -> list[str]:
        """Subjects in discovery order."""
        return list(dict.fromkeys(s.subject for s in self.scans))


def safe_name(text: str) -> str:
    """A path-safe version of a subject or visit name (letters, digits, ``._-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-.")
    return cleaned or "unnamed"


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def _usable_visit_name(name: str) -> bool:
    """Folder names that are dates or UIDs are not printed (they may identify a patient's visit)."""
    return bool(_SAFE_NAME.match(name)) and not re.search(r"\d{6,}", name)


@dataclass
class _Override:
    path: Path
    subject: str = ""
    visit: str = ""
    modality: str = ""
    side: str = ""
    labels: str = ""
    pixel_spacing_mm: float | None = None
    visit_order: int | None = None
    exclude: bool = False


def read_overrides(csv_path: str | Path, root: str | Path) -> list[_Override]:
    """Parse the override CSV; relative paths are relative to ``root`` (labels: to the CSV's folder)."""
    p = Path(csv_path)
    try:
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ManifestCsvError(f"cannot read ({exc.strerror})", path=p, hint="check the path") from None
    if not rows or "path" not in rows[0]:
        raise ManifestCsvError("needs a header with a 'path' column", path=p,
                               hint="columns: path, subject, visit, modality, side, labels, pixel_spacing_mm, "
                                    "visit_order, exclude")
    out = []
    for n, row in enumerate(rows, start=2):
        raw = (row.get("path") or "").strip()
        if not raw:
            raise ManifestCsvError(f"line {n}: empty path", path=p, hint="every row names a file or folder")
        target = Path(raw) if Path(raw).is_absolute() else Path(root) / raw
        labels = (row.get("labels") or "").strip()
        if labels and not Path(labels).is_absolute():
            labels = str(p.parent / labels)
        try:
            spacing = float(row["pixel_spacing_mm"]) if (row.get("pixel_spacing_mm") or "").strip() else None
            order = int(row["visit_order"]) if (row.get("visit_order") or "").strip() else None
        except ValueError:
            raise ManifestCsvError(f"line {n}: pixel_spacing_mm / visit_order must be numbers", path=p,
                                   hint="leave them empty when unknown") from None
        modality = (row.get("modality") or "").strip().upper()
        if modality and modality not in ("MR", "US"):
            raise ManifestCsvError(f"line {n}: modality {modality!r} is not MR or US", path=p, hint="use MR or US")
        out.append(_Override(path=target.resolve(), subject=safe_name(row["subject"]) if row.get("subject") else "",
                             visit=safe_name(row["visit"]) if row.get("visit") else "", modality=modality,
                             side=(row.get("side") or "").strip().lower(), labels=labels, pixel_spacing_mm=spacing,
                             visit_order=order,
                             exclude=(row.get("exclude") or "").strip().lower() in ("1", "true", "yes", "y")))
    return out


def _override_for(series: SeriesInfo, overrides: list[_Override]) -> _Override | None:
    first = Path(series.files[0]).resolve()
    best = None
    for o in overrides:
        if (first == o.path or o.path in first.parents) and (best is None or
                                                              len(o.path.parts) > len(best.path.parts)):
            best = o
    return best


def _short(path: str, code: str, message: str) -> str:
    """A problem line naming the file but not the folders above it (they may carry identifiers)."""
    text = message[len(path) + 2:] if message.startswith(path + ": ") else message
    return f"{code}: {text}" if Path(path).is_dir() else f"{code}: {Path(path).name}: {text}"


def _modality(series: SeriesInfo) -> str | None:
    if series.modality == "US":
        return "US"
    if series.modality == "MR" and series.role not in (ROLE_LOCALIZER, ROLE_T2, ROLE_LABELS):
        return "MR"
    return None


@dataclass
class _Candidate:
    subject: str
    visit_key: str
    visit_name: str
    date: str
    order: int | None
    modality: str
    series: SeriesInfo
    override: _Override | None


def _inside(path: str, roots: set[Path]) -> bool:
    p = Path(path).resolve()
    return any(p == r or r in p.parents for r in roots)


def _candidates(report: DiscoveryReport, subject_dir: Path | None, subject: str | None, subject_from: str,
                overrides: list[_Override], ignored: list, problems: list,
                skip: set[Path] | None = None) -> list[_Candidate]:
    out = []
    skip = skip or set()
    for p in report.problems:
        if not _inside(p.path, skip):
            problems.append((subject or "scan root", _short(p.path, p.code, p.message)))
    for s in report.series:
        if _inside(s.files[0], skip):
            continue
        o = _override_for(s, overrides)
        if o is not None and o.exclude:
            ignored.append((s.key, "excluded by the override CSV"))
            continue
        modality = (o.modality if o is not None and o.modality else None) or _modality(s)
        if modality is None:
            ignored.append((s.key, f"{s.modality} {s.role}: not a scan koaimg measures"))
            continue
        who = subject
        if subject_from == "header" or who is None:
            who = s.subject or "unknown"
        if o is not None and o.subject:
            who = o.subject
        rel = Path(s.files[0]).resolve()
        visit_key, visit_name = "", ""
        if subject_dir is not None:
            parts = rel.relative_to(subject_dir.resolve()).parts
            if len(parts) >= 2:
                visit_key = parts[0]
                visit_name = parts[0] if _usable_visit_name(parts[0]) else ""
        if not visit_key:
            visit_key = f"date:{s._study_date or s.study}"
        if o is not None and o.visit:
            visit_key = visit_name = o.visit
        out.append(_Candidate(who, visit_key, visit_name, s._study_date, o.visit_order if o else None, modality, s, o))
    return out


def _pick(cands: list[_Candidate], ignored: list) -> _Candidate:
    """One series per visit and modality: the 3D thickness series first, then other MR; the first US object."""
    def rank(c: _Candidate) -> tuple:
        if c.modality == "MR":
            return (not c.series.ok, _MR_RANK.get(c.series.role, 3), -c.series.n_slices)
        return (not c.series.ok, 0 if c.series.kind == "dicom" else 1, 0)
    ordered = sorted(cands, key=rank)
    for c in ordered[1:]:
        ignored.append((c.series.key, f"another {c.modality} series was chosen for this visit"))
    return ordered[0]


def _labels_for(labels_dir: Path | None, subject: str, visit: str) -> str | None:
    if labels_dir is None:
        return None
    for candidate in (labels_dir / subject / visit / "MR" / "labels.nii.gz", labels_dir / subject / visit /
                      "labels.nii.gz"):
        if candidate.is_file():
            return str(candidate)
    return None


def plan_scans(cands: list[_Candidate], labels_dir: Path | None, ignored: list) -> tuple[list[Scan], list[Pair]]:
    """Group candidates into subjects → visits → modalities, name and order visits, pair follow-ups with baseline."""
    by_subject: dict[str, dict[str, list[_Candidate]]] = defaultdict(lambda: defaultdict(list))
    for c in cands:
        by_subject[c.subject][c.visit_key].append(c)
    scans: list[Scan] = []
    pairs: list[Pair] = []
    for subject in sorted(by_subject, key=_natural):
        visits = by_subject[subject]

        def order(key: str, visits: dict = visits) -> tuple:
            group = visits[key]
            explicit = min((c.order for c in group if c.order is not None), default=None)
            dates = [c.date for c in group if c.date]
            name = group[0].visit_name or key
            return (explicit if explicit is not None else 10**6, min(dates) if dates else "99999999",
                    0 if name.lower() in _BASELINE_NAMES else 1, _natural(name))
        ordered = sorted(visits, key=order)
        names: list[str] = []
        for index, key in enumerate(ordered):
            name = visits[key][0].visit_name
            if not name or name in names:
                name = "baseline" if index == 0 else f"followup{index}"
            names.append(safe_name(name))
        present: dict[str, set[str]] = {}
        for index, (key, name) in enumerate(zip(ordered, names, strict=True)):
            by_mod: dict[str, list[_Candidate]] = defaultdict(list)
            for c in visits[key]:
                by_mod[c.modality].append(c)
            present[name] = set(by_mod)
            for modality in sorted(by_mod):
                c = _pick(by_mod[modality], ignored)
                o = c.override
                labels = (o.labels if o is not None and o.labels else None)
                if modality == "MR" and labels is None:
                    labels = _labels_for(labels_dir, subject, name)
                scans.append(Scan(subject=subject, visit=name, visit_index=index, modality=modality, series=c.series,
                                  labels=labels if modality == "MR" else None,
                                  pixel_spacing_mm=o.pixel_spacing_mm if o is not None else None,
                                  side=(o.side if o is not None and o.side else c.series.side),
                                  problem=None if c.series.ok else _short(c.series.problem.path, c.series.problem.code,
                                                                          c.series.problem.message)))
        for fu in names[1:]:
            mods = sorted(present[names[0]] & present[fu])
            if mods:
                pairs.append(Pair(subject, names[0], fu, mods))
    return scans, pairs


def discover_study(study_dir: str | Path, *, subject: str | None = None, subject_from: str = "folder",
                   overrides_csv: str | Path | None = None, labels_dir: str | Path | None = None,
                   skip: tuple[str | Path, ...] = ()) -> StudyPlan:
    """``koaimg run``: one subject's folder (``STUDY_DIR/<visit>/...``); ``skip``: folders inside it to leave out
    (an OUT or labels folder placed inside the study)."""
    root = Path(study_dir)
    overrides = read_overrides(overrides_csv, root) if overrides_csv else []
    ignored: list = []
    problems: list = []
    name = safe_name(subject) if subject else (None if subject_from == "header" else safe_name(root.resolve().name))
    skip_paths = {Path(s).resolve() for s in skip if s}
    cands = _candidates(discover(root), root, name, subject_from, overrides, ignored, problems, skip_paths)
    scans, pairs = plan_scans(cands, Path(labels_dir) if labels_dir else None, ignored)
    return StudyPlan(str(root), scans, pairs, ignored, problems)


def discover_batch(scan_root: str | Path, *, subject_from: str = "folder", overrides_csv: str | Path | None = None,
                   labels_dir: str | Path | None = None, exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                   skip: tuple[str | Path, ...] = ()) -> StudyPlan:
    """``koaimg batch``: a trial export, one folder per subject (``ROOT/<subject>/<visit>/...``)."""
    root = Path(scan_root)
    if not root.is_dir():
        from ..core import UnreadableFileError

        raise UnreadableFileError("scan root is not a folder", path=root, hint="pass the export's top folder")
    overrides = read_overrides(overrides_csv, root) if overrides_csv else []
    skip_paths = {Path(s).resolve() for s in skip if s}
    ignored: list = []
    problems: list = []
    cands: list[_Candidate] = []
    loose = False
    for child in sorted(root.iterdir(), key=lambda p: _natural(p.name)):
        if child.name.startswith(".") or child.name in exclude or child.resolve() in skip_paths:
            continue
        if child.is_dir():
            name = None if subject_from == "header" else safe_name(child.name)
            cands += _candidates(discover(child), child, name, subject_from, overrides, ignored, problems,
                                 skip_paths)
        elif child.is_file() and child.suffix.lower() not in (".csv", ".json", ".md", ".txt"):
            loose = True
    if loose:
        ignored.append(("scan root", "files directly under the scan root are not scans of a subject folder; "
                                     "use the override CSV to assign them"))
    scans, pairs = plan_scans(cands, Path(labels_dir) if labels_dir else None, ignored)
    allocation = root / "allocation.csv"
    return StudyPlan(str(root), scans, pairs, ignored, problems,
                     allocation=str(allocation) if allocation.is_file() else None)
