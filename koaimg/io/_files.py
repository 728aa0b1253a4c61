"""What kind of file is this? Decided from the name and the first bytes, without parsing the whole file."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class FileKind(StrEnum):
    """File formats koaimg reads (and the ones it knowingly ignores)."""

    DICOM = "dicom"
    DICOMDIR = "dicomdir"
    NIFTI = "nifti"
    NRRD = "nrrd"
    METAIMAGE = "metaimage"
    PNG = "png"
    JPEG = "jpeg"
    IGNORED = "ignored"


#: files a scan folder commonly holds that are not images; skipped without complaint
IGNORED_SUFFIXES = {".txt", ".md", ".json", ".csv", ".tsv", ".html", ".htm", ".xml", ".pdf", ".py", ".zip", ".gz",
                    ".log", ".yaml", ".yml", ".sqlite", ".db", ".raw", ".zraw", ".ini", ".cfg", ".sh", ".bat", ".exe",
                    ".parquet", ".js", ".css"}
IGNORED_NAMES = {"sha256sums", "md5sums", "readme", "license", "licence", "notice", "lockfile", "version",
                 "autorun.inf", "thumbs.db", ".ds_store"}


def _suffixes(path: Path) -> str:
    return "".join(path.suffixes[-2:]).lower()


def sniff(path: str | Path) -> FileKind:
    """Classify ``path``. Files that are neither known images nor known non-images are assumed DICOM.

    DICOM exports routinely drop the extension, so an unknown file is read as DICOM and fails loudly there rather
    than being skipped.
    """
    p = Path(path)
    name = p.name.lower()
    suffixes = _suffixes(p)
    if name == "dicomdir":
        return FileKind.DICOMDIR
    if name.startswith("."):
        return FileKind.IGNORED
    if suffixes.endswith((".nii", ".nii.gz")):
        return FileKind.NIFTI
    if suffixes.endswith((".nrrd", ".nhdr")):
        return FileKind.NRRD
    if suffixes.endswith((".mha", ".mhd")):
        return FileKind.METAIMAGE
    suffix = p.suffix.lower()
    if suffix == ".png":
        return FileKind.PNG
    if suffix in {".jpg", ".jpeg"}:
        return FileKind.JPEG
    if name in IGNORED_NAMES or suffix in IGNORED_SUFFIXES or name.split(".")[0] in IGNORED_NAMES:
        return FileKind.IGNORED
    try:
        with p.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return FileKind.DICOM  # let the DICOM reader raise the precise error
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FileKind.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return FileKind.JPEG
    if head.startswith(b"NRRD"):
        return FileKind.NRRD
    return FileKind.DICOM
