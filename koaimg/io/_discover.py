"""Walk a folder and list what is in it: studies -> series (stacks), each with geometry, knee side and role.

One SeriesInstanceUID often holds several stacks (8 echoes of a multi-echo T2, localiser planes, repeated
acquisitions), so series are split by frame of reference, plane, matrix, echo and acquisition number. Every file ends
up in exactly one place: a stack, a problem (one clear line), or the ignored count.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import KneeSide, KoaimgError, Plane, UnsupportedObjectError, decide_side, plane_of_normal, side_from_text
from ._codecs import ensure_decodable
from ._dicom_headers import InstanceHeader, pseudonym, read_header
from ._files import FileKind, sniff
from ._stack import check_stack, slice_normal

#: role names shown by ``koaimg inspect`` and used by the batch pipeline to route series
ROLE_THICKNESS = "thickness series (3D MR)"
ROLE_MOAKS = "MOAKS reading series (2D MR)"
ROLE_T2 = "T2 mapping echo"
ROLE_LOCALIZER = "localizer (ignored)"
ROLE_OTHER_MR = "other MR"
ROLE_US = "ultrasound frame"
ROLE_US_CINE = "ultrasound cine"
ROLE_US_SCREENSHOT = "ultrasound screenshot (needs --pixel-spacing)"
ROLE_LABELS = "label map"
ROLE_IMAGE = "image volume"


@dataclass
class FileProblem:
    """A file (or stack) that could not be used, with the one-line reason."""

    path: str
    code: str
    message: str


@dataclass
class SeriesInfo:
    """One loadable stack (or US object, or image file) and what koaimg would do with it."""

    key: str
    kind: str
    subject: str
    study: str
    modality: str
    description: str
    plane: str
    matrix: tuple[int, int]
    n_slices: int
    n_frames: int
    pixel_spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None
    echo_time_ms: float | None
    side: str
    side_source: str
    side_conflicts: list[str]
    role: str
    transfer_syntax: str
    files: list[str] = field(repr=False)
    problem: FileProblem | None = None
    #: things a reader should know that do not stop loading (e.g. a suspect ultrasound calibration)
    warnings: list[str] = field(default_factory=list)
    #: study date, kept in memory for visit ordering, never serialised
    _study_date: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """bool: the stack passed the header checks and can be loaded."""
        return self.problem is None

    def to_dict(self) -> dict:
        """JSON-ready dict without in-memory-only fields (file paths are kept: they are the user's own paths)."""
        d = asdict(self)
        d.pop("_study_date", None)
        return d


@dataclass
class DiscoveryReport:
    """Everything found under a folder."""

    root: str
    series: list[SeriesInfo]
    problems: list[FileProblem]
    ignored: int
    #: well-formed DICOM objects that hold no usable image (SR, RT, presentation states...): listed, not problems
    skipped: list[FileProblem] = field(default_factory=list)

    @property
    def studies(self) -> dict[str, list[SeriesInfo]]:
        """Series grouped by pseudonymous study key, in discovery order."""
        out: dict[str, list[SeriesInfo]] = defaultdict(list)
        for s in self.series:
            out[s.study].append(s)
        return dict(out)

    @property
    def good(self) -> list[SeriesInfo]:
        """Series that can be loaded."""
        return [s for s in self.series if s.ok]

    @property
    def all_problems(self) -> list[FileProblem]:
        """File-level problems plus stacks that failed their geometry checks."""
        return self.problems + [s.problem for s in self.series if s.problem is not None]

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"root": self.root, "series": [s.to_dict() for s in self.series],
                "problems": [asdict(p) for p in self.problems], "skipped": [asdict(p) for p in self.skipped],
                "ignored_files": self.ignored}


def _walk(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _plane(h: InstanceHeader) -> str:
    if h.orientation is None:
        return "unknown"
    return plane_of_normal(slice_normal(h.orientation)).value


def _split_by_acquisition(headers: list[InstanceHeader]) -> list[list[InstanceHeader]]:
    """Split by AcquisitionNumber unless that would shatter a stack into single slices (some scanners number
    every slice as its own acquisition)."""
    groups: dict[int | None, list[InstanceHeader]] = defaultdict(list)
    for h in headers:
        groups[h.acquisition_number].append(h)
    if len(groups) > 1 and all(len(g) == 1 for g in groups.values()):
        return [headers]
    return list(groups.values())


def _stacks(headers: list[InstanceHeader]) -> list[list[InstanceHeader]]:
    by_key: dict[tuple, list[InstanceHeader]] = defaultdict(list)
    for h in headers:
        echo = None if h.echo_time is None else round(h.echo_time, 3)
        by_key[(h.study_uid, h.series_uid, h.frame_of_reference_uid, _plane(h), h.rows, h.columns, echo,
                h.echo_number)].append(h)
    stacks: list[list[InstanceHeader]] = []
    # series in series-number order, and the stacks of one series (echoes) by ascending echo time
    for key in sorted(by_key, key=lambda k: (by_key[k][0].series_number or 0, k[1], k[6] is not None, k[6] or 0.0,
                                                k[7] or 0)):
        stacks.extend(_split_by_acquisition(by_key[key]))
    return stacks


def _side_of(h: InstanceHeader) -> tuple[KneeSide, str, list[str]]:
    evidence = [("Laterality tag", KneeSide(h.laterality or "")), ("ImageLaterality tag", KneeSide(h.image_laterality
                                                                                                    or "")),
                ("SeriesDescription", side_from_text(h.series_description)),
                ("ProtocolName", side_from_text(h.protocol_name))]
    decision = decide_side(evidence)
    return decision.side, decision.source, list(decision.conflicts)


def mr_role(h: InstanceHeader, n_slices: int, pixel_spacing: tuple[float, float] | None,
            slice_spacing: float | None, n_echoes_in_series: int) -> str:
    """Which job an MR stack would do (domain-specs section 5.2)."""
    if "LOCALIZER" in h.image_type.upper() or n_slices < 5:
        return ROLE_LOCALIZER
    if n_echoes_in_series >= 4:
        return ROLE_T2
    fine_inplane = pixel_spacing is not None and max(pixel_spacing) <= 0.5
    thin = slice_spacing is not None and slice_spacing <= 1.0
    is_3d = h.mr_acquisition_type.upper() == "3D" or thin
    if is_3d and fine_inplane and thin and _plane(h) in (Plane.SAGITTAL.value, Plane.CORONAL.value):
        return ROLE_THICKNESS
    if h.mr_acquisition_type.upper() == "2D" or (slice_spacing is not None and slice_spacing >= 2.0):
        return ROLE_MOAKS
    return ROLE_OTHER_MR


def _dicom_series(headers: list[InstanceHeader]) -> list[SeriesInfo]:
    out: list[SeriesInfo] = []
    us = [h for h in headers if h.is_ultrasound]
    mr = [h for h in headers if not h.is_ultrasound]
    for h in us:
        info = _describe_us(h.path)
        side, source, conflicts = _side_of(h)
        out.append(SeriesInfo(
            key=pseudonym(h.series_uid + str(h.path.name), prefix="us"), kind=FileKind.DICOM.value,
            subject=h.subject, study=pseudonym(h.study_uid, prefix="study"), modality="US",
            description=h.series_description, plane="transverse (US)", matrix=(h.rows, h.columns), n_slices=1,
            n_frames=h.number_of_frames, pixel_spacing_mm=info["mm_per_pixel"], slice_spacing_mm=None,
            echo_time_ms=None, side=side.value, side_source=source, side_conflicts=conflicts,
            role=ROLE_US_CINE if h.number_of_frames > 1 else ROLE_US, transfer_syntax=h.transfer_syntax,
            files=[str(h.path)],
            problem=None if info["mm_per_pixel"] else FileProblem(str(h.path), "no_calibration",
                                                                   str(info["calibration_problem"])),
            warnings=[info["calibration_warning"]] if info.get("calibration_warning") else [],
            _study_date=h.study_date))
    echoes_per_series: dict[str, set] = defaultdict(set)
    for h in mr:
        echoes_per_series[h.series_uid].add(None if h.echo_time is None else round(h.echo_time, 3))
    for stack in _stacks(mr):
        h = stack[0]
        problem = None
        pixel_spacing: tuple[float, float] | None = h.pixel_spacing  # type: ignore[assignment]
        slice_spacing = h.spacing_between_slices or h.slice_thickness
        n_slices = len(stack)
        if h.is_enhanced_mr:
            from ._dicom_mr import enhanced_geometry

            pixel_spacing, slice_spacing, plane = enhanced_geometry(h.path)
            n_slices = h.number_of_frames
        else:
            plane = _plane(h)
            try:
                for member in stack:
                    ensure_decodable(member.transfer_syntax, path=member.path)
                geom = check_stack(stack)
                slice_spacing = geom.slice_spacing
                pixel_spacing = geom.pixel_spacing
            except KoaimgError as exc:
                problem = FileProblem(str(h.path.parent), exc.code, exc.one_line())
        side, source, conflicts = _side_of(h)
        n_echoes = len(echoes_per_series[h.series_uid])
        split = f"{h.frame_of_reference_uid}|{plane}|{h.rows}x{h.columns}|{h.echo_time}|{h.acquisition_number}"
        out.append(SeriesInfo(
            key=pseudonym(h.series_uid + split, prefix="series"), kind=FileKind.DICOM.value, subject=h.subject,
            study=pseudonym(h.study_uid, prefix="study"), modality=h.modality or "OT",
            description=h.series_description, plane=plane, matrix=(h.rows, h.columns), n_slices=n_slices,
            n_frames=1, pixel_spacing_mm=pixel_spacing, slice_spacing_mm=slice_spacing, echo_time_ms=h.echo_time,
            side=side.value, side_source=source, side_conflicts=conflicts,
            role=mr_role(h, n_slices, pixel_spacing, slice_spacing, n_echoes) if h.modality == "MR" else "other",
            transfer_syntax=h.transfer_syntax, files=[str(s.path) for s in stack], problem=problem,
            _study_date=h.study_date))
    return out


def _describe_us(path: Path) -> dict:
    """Calibration summary of one ultrasound object from its header (no pixels)."""
    import pydicom

    from ._dicom_us import describe_ultrasound

    return describe_ultrasound(pydicom.dcmread(path, stop_before_pixels=True))


def _file_series(path: Path, kind: FileKind) -> SeriesInfo:
    """A NIfTI / NRRD / MHA / PNG / JPEG file as a one-file series."""
    side = side_from_text(path.name)
    common = dict(key=pseudonym(str(path.resolve()), prefix="file"), kind=kind.value, subject="", study="files",
                  description=path.name, echo_time_ms=None, side=side.value,
                  side_source="file name" if side in (KneeSide.RIGHT, KneeSide.LEFT) else "not determined",
                  side_conflicts=[], transfer_syntax="", files=[str(path)])
    if kind in (FileKind.PNG, FileKind.JPEG):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                width, height = im.size
        except (UnidentifiedImageError, OSError) as exc:
            raise _as_unreadable(path, exc) from None
        return SeriesInfo(**common, modality="US", plane="transverse (US)", matrix=(height, width), n_slices=1,
                          n_frames=1, pixel_spacing_mm=None, slice_spacing_mm=None, role=ROLE_US_SCREENSHOT)
    from ._images import looks_like_labels, read_image

    vol = read_image(path)
    is_labels = looks_like_labels(vol.array)
    sp, shape, axis = vol.spacing, vol.spatial_shape, vol.slice_axis
    inplane = [a for a in range(3) if a != axis]
    return SeriesInfo(**common, modality="SEG" if is_labels else "MR", plane=vol.plane.value,
                      matrix=(shape[inplane[0]], shape[inplane[1]]), n_slices=shape[axis], n_frames=1,
                      pixel_spacing_mm=(round(float(sp[inplane[0]]), 5), round(float(sp[inplane[1]]), 5)),
                      slice_spacing_mm=round(float(sp[axis]), 5), role=ROLE_LABELS if is_labels else ROLE_IMAGE)


def _as_unreadable(path: Path, exc: Exception) -> KoaimgError:
    from ..core import UnreadableFileError

    return UnreadableFileError(f"cannot read image ({type(exc).__name__})", path=path,
                               hint="check the file is complete")


def _dicomdir_problems(path: Path) -> list[FileProblem]:
    """A DICOMDIR is an index; its files are found by the walk anyway. Report entries that point nowhere."""
    import pydicom
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(pydicom.dcmread(path))
    except Exception as exc:  # a broken index is worth a line, not a crash
        return [FileProblem(str(path), "bad_dicomdir", f"{path}: DICOMDIR cannot be read ({type(exc).__name__}); "
                                                       "its files are still scanned")]
    missing = [inst for inst in fs if not Path(inst.path).exists()]
    if missing:
        return [FileProblem(str(path), "dicomdir_missing_files",
                            f"{path}: DICOMDIR lists {len(missing)} file(s) that are not present; re-copy the export")]
    return []


def discover(root: str | Path) -> DiscoveryReport:
    """Scan ``root`` (a folder or a single file) and return studies, series, problems and the ignored count."""
    root_path = Path(root)
    if not root_path.exists():
        from ..core import UnreadableFileError

        raise UnreadableFileError("path does not exist", path=root_path, hint="check the path")
    headers: list[InstanceHeader] = []
    series: list[SeriesInfo] = []
    problems: list[FileProblem] = []
    skipped: list[FileProblem] = []
    ignored = 0
    for path in _walk(root_path):
        kind = sniff(path)
        if kind == FileKind.IGNORED:
            ignored += 1
            continue
        try:
            if kind == FileKind.DICOMDIR:
                problems.extend(_dicomdir_problems(path))
            elif kind == FileKind.DICOM:
                headers.append(read_header(path))
            else:
                series.append(_file_series(path, kind))
        except UnsupportedObjectError as exc:
            skipped.append(FileProblem(str(path), exc.code, exc.one_line()))
        except KoaimgError as exc:
            problems.append(FileProblem(str(path), exc.code, exc.one_line()))
    series = _dicom_series(headers) + series
    return DiscoveryReport(str(root_path), series, problems, ignored, skipped)


def summarise_spacing(info: SeriesInfo) -> str:
    """'0.365 x 0.365 x 0.700 mm' (or what is known)."""
    if info.pixel_spacing_mm is None:
        return "uncalibrated"
    parts = [f"{v:.3f}" for v in info.pixel_spacing_mm]
    if info.slice_spacing_mm is not None:
        parts.append(f"{info.slice_spacing_mm:.3f}")
    return " x ".join(parts) + " mm"


__all__ = ["DiscoveryReport", "FileProblem", "SeriesInfo", "discover", "summarise_spacing"]
