"""Segment one knee MR image (file or DICOM folder) and write labels, optional probabilities and provenance."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import DicomSeriesError, Modality, OptionError, Structure, Volume
from ..export import write_json, write_label_table
from ..io import discover, load_series, write_volume

__all__ = ["load_image", "segment_file"]


def load_image(path: Path, *, series: int | None = None) -> tuple[Volume, list[str]]:
    """The MR volume in ``path`` (NIfTI/NRRD/MHA file, DICOM file or folder); notes say which series was chosen."""
    report = discover(path)
    candidates = [s for s in report.series if s.ok and s.modality == "MR"]
    if not candidates:
        raise DicomSeriesError("no readable MR series found", path=path,
                               hint="pass a NIfTI/NRRD/MHA image or a folder of MR DICOM files")
    notes: list[str] = []
    if series is not None:
        if not 0 <= series < len(candidates):
            raise OptionError(f"--series {series} is out of range: {len(candidates)} MR series found", path=path)
        chosen = candidates[series]
    else:
        chosen = min(candidates, key=lambda s: (s.echo_time_ms if s.echo_time_ms is not None else np.inf))
        if len(candidates) > 1:
            notes.append(f"{len(candidates)} MR series found (e.g. echoes); segmented the shortest-echo one "
                         f"({chosen.description or chosen.key}, TE {chosen.echo_time_ms} ms); choose with --series")
    return load_series(chosen), notes


def segment_file(image_path: str | Path, out_dir: str | Path, *, bundle: str | Path | None = None,
                 device: str = "auto", probabilities: bool = False, series: int | None = None):
    """Segment ``image_path`` into ``out_dir``: labels.nii.gz, label table, segmentation.json, provenance.json and,
    when asked, probabilities.nii.gz (4D, one channel per structure 1-6). Returns the SegmentationResult."""
    from ..segment import segment_volume

    image_path, out = Path(image_path), Path(out_dir)
    volume, notes = load_image(image_path, series=series)
    result = segment_volume(volume, bundle=bundle, device=device, probabilities=probabilities)
    result.warnings[:0] = notes
    out.mkdir(parents=True, exist_ok=True)
    write_volume(result.labels, out / "labels.nii.gz")
    write_label_table(out / "labels.txt")
    if result.probabilities is not None:
        stack = np.stack([result.probabilities[s] for s in sorted(result.probabilities)], axis=-1)
        write_volume(Volume(stack.astype(np.float32), volume.affine, volume.meta.replace(modality=Modality.OTHER)),
                     out / "probabilities.nii.gz")
    voxel_ml = volume.voxel_volume_mm3 / 1000.0
    volumes = {s.name.lower(): round(float((result.labels.array == s).sum()) * voxel_ml, 3)
               for s in Structure if 1 <= int(s) <= 6}
    write_json({"image": str(image_path), "shape": list(volume.spatial_shape),
                "spacing_mm": [round(float(s), 4) for s in volume.spacing], "axcodes": volume.axcodes,
                "volumes_ml": volumes, "warnings": result.warnings, **result.info}, out / "segmentation.json")
    write_json({"koaimg_version": __version__, "python": platform.python_version(), "stage": "segment",
                "inputs": {"image": str(image_path)}, "model_sha256": result.info.get("model_sha256"),
                "bundle_version": result.info.get("bundle_version"), "device": result.info.get("device"),
                "config": {"probabilities": probabilities, "series": series}}, out / "provenance.json")
    return result
