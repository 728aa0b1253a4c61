"""All DICOM outputs of one scan folder in one call (what the batch engine runs after measuring a scan)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from ..core import UnreadableFileError, Volume
from ._dicom_sc import write_secondary_capture
from ._dicom_seg import write_dicom_seg
from ._dicom_source import read_source_series
from ._dicom_sr import write_dicom_sr


def write_dicom_outputs(scan_dir: str | Path, source: str | Path | Sequence[Dataset], *,
                        out_dir: str | Path | None = None, image: Volume | None = None) -> list[Path]:
    """Write ``seg.dcm`` (MR with labels.nii.gz), ``sr.dcm`` (from measures.csv) and ``sc_<n>.dcm`` key figures
    into ``scan_dir/dicom`` (or ``out_dir``), all referencing the source series; returns the paths written."""
    from ..io import read_labels
    from ._plots import moaks_grid_figure
    from ._report_html import read_csv
    from ._report_scan import scan_figures

    scan_dir = Path(scan_dir)
    out = Path(out_dir) if out_dir is not None else scan_dir / "dicom"
    measures = scan_dir / "measures.csv"
    if not measures.is_file():
        raise UnreadableFileError("no measures.csv to export", path=scan_dir, hint="measure the scan first")
    datasets = read_source_series(source)
    written: list[Path] = []
    seg_path = None
    if (scan_dir / "labels.nii.gz").is_file():
        seg_path = write_dicom_seg(read_labels(scan_dir / "labels.nii.gz"), datasets, out / "seg.dcm")
        written.append(seg_path)
    rows = read_csv(measures)
    written.append(write_dicom_sr(rows, datasets, out / "sr.dcm", seg=seg_path))
    figures: list[tuple[bytes, str]] = []
    if (scan_dir / "overlay.png").is_file():  # ultrasound
        figures.append(((scan_dir / "overlay.png").read_bytes(), "ultrasound measurement overlay"))
    else:
        figures += [(png, caption.split(":")[0]) for png, caption in scan_figures(scan_dir, image=image).values()]
        grades = {}
        for r in rows:
            if r.get("metric") == "moaks_any_loss_grade" and r.get("value") not in ("", None):
                ft = next((x.get("value") for x in rows if x.get("region") == r.get("region")
                           and x.get("metric") == "moaks_full_thickness_grade"), "")
                grades[r["region"]] = (int(float(r["value"])), int(float(ft)) if ft not in ("", None) else None)
        if grades:
            figures.append((moaks_grid_figure(grades), "MOAKS-style cartilage grades"))
    for n, (png, description) in enumerate(figures, start=1):
        written.append(write_secondary_capture(png, datasets, out / f"sc_{n}.dcm", instance_number=n,
                                               description=description))
    return written
