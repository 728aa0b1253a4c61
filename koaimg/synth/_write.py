"""Write phantoms to disk like a scanner export (DICOM, NIfTI) with their ground truth beside them."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import Structure
from ..io import MRSeriesTags, atomic_write_bytes, atomic_write_text, write_dicom_series, write_volume
from ._knee_anatomy import MOAKS_REGIONS, PLATES
from ._knee_phantom import CARTILAGE_LABEL, KneePhantom
from ._longitudinal import PhantomPair

#: fake acquisition dates: visits are days after this (synthetic data, never a real date)
BASE_DATE = np.datetime64("2000-01-03")
VISIT_DAYS = {"baseline": 0, "month6": 182, "month12": 364}


def visit_date(visit: str) -> str:
    """DICOM date (YYYYMMDD) of a synthetic visit."""
    return str(BASE_DATE + np.timedelta64(VISIT_DAYS.get(visit, 0), "D")).replace("-", "")


def _csv_bytes(rows: list[dict], *, gz: bool = False) -> bytes:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    data = buf.getvalue().encode()
    return gzip.compress(data, mtime=0) if gz else data


def interface_rows(phantom: KneePhantom, *, delta: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One row per bone-interface voxel: where it is, the true thickness there, its subregion (and Δ)."""
    rows = []
    for bone in PLATES:
        pts = phantom.interface[bone]
        for n in range(len(pts["thickness"])):
            row = {"structure": CARTILAGE_LABEL[bone].key, "i": int(pts["ijk"][n, 0]), "j": int(pts["ijk"][n, 1]),
                   "k": int(pts["ijk"][n, 2]), "x_mm": round(float(pts["xyz"][n, 0]), 4),
                   "y_mm": round(float(pts["xyz"][n, 1]), 4), "z_mm": round(float(pts["xyz"][n, 2]), 4),
                   "thickness_mm": round(float(pts["thickness"][n]), 5),
                   "region": MOAKS_REGIONS[int(pts["region"][n]) - 1] if pts["region"][n] > 0 else ""}
            if delta is not None:
                row["delta_mm"] = round(float(delta[bone][n]), 5)
            rows.append(row)
    return rows


def region_rows(phantom: KneePhantom) -> list[dict]:
    """Tidy regional truth: structure, scheme, region, metric, value."""
    rows = []
    for bone in PLATES:
        for row in phantom.regions[bone].rows:
            for metric, value in row.items():
                if metric == "region" or value is None:
                    continue
                rows.append({"structure": CARTILAGE_LABEL[bone].key, "scheme": "moaks", "region": row["region"],
                             "metric": metric, "value": round(float(value), 6)})
    return rows


def phantom_description(phantom: KneePhantom) -> dict:
    """Everything needed to regenerate the scan (anatomy, grid, pose, seeds) plus provenance."""
    from ._knee_truth import defect_areas

    defects = defect_areas(phantom.anatomy, change=phantom.change)
    anatomy = asdict(phantom.anatomy)
    anatomy.pop("defects")
    return {"generator": f"koaimg {__version__} procedural knee", "side": phantom.side.value, "seed": phantom.seed,
            "anatomy": anatomy, "defects": defects, "acquisition": asdict(phantom.acquisition),
            "pose": asdict(phantom.pose), "change": None if phantom.change is None else asdict(phantom.change),
            "labels": {s.key: int(s) for s in Structure}}


def write_knee_phantom(phantom: KneePhantom, folder: str | Path, *, pseudonym: str = "PHANTOM",
                       visit: str = "baseline", formats: tuple[str, ...] = ("dicom", "nifti"),
                       probability_maps: bool = True, series_number: int = 1, dicom_dir: str | Path | None = None,
                       truth_dir: str | Path | None = None) -> Path:
    """Write one scan (DICOM series and/or NIfTI) and its truth under ``folder``; returns ``folder``.

    By default the DICOM series goes to ``folder/dicom`` and the truth to ``folder/truth``; a trial-like export
    passes ``dicom_dir`` and ``truth_dir`` to keep the truth away from the scans.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    acq = phantom.image.meta.acquisition
    if "dicom" in formats:
        tags = MRSeriesTags(pseudonym=pseudonym, study_seed=f"{pseudonym}/{visit}", series_number=series_number,
                            series_description=phantom.image.meta.series_description, study_date=visit_date(visit),
                            side=phantom.side, echo_time_ms=acq.get("echo_time_ms"),
                            repetition_time_ms=acq.get("repetition_time_ms"),
                            flip_angle_deg=acq.get("flip_angle_deg"),
                            mr_acquisition_type=str(acq.get("mr_acquisition_type", "3D")),
                            scanning_sequence=str(acq.get("scanning_sequence", "GR")),
                            scan_options=str(acq.get("scan_options", "")))
        rounded = phantom.image.with_array(np.rint(phantom.image.array).astype(np.uint16))
        write_dicom_series(rounded, Path(dicom_dir) if dicom_dir is not None else out / "dicom", tags)
    if "nifti" in formats:
        write_volume(phantom.image, out / "image.nii.gz")
    if "nifti" in formats or "labels" in formats:
        write_volume(phantom.labels, out / "labels.nii.gz")
    if "nifti" in formats and probability_maps:
        for bone, volume in phantom.cartilage_fraction.items():
            write_volume(volume, out / f"probability_{CARTILAGE_LABEL[bone].key}.nii.gz")
    truth = Path(truth_dir) if truth_dir is not None else out / "truth"
    atomic_write_bytes(truth / "interface_points.csv.gz", _csv_bytes(interface_rows(phantom), gz=True))
    atomic_write_bytes(truth / "regions.csv", _csv_bytes(region_rows(phantom)))
    atomic_write_text(truth / "phantom.json", json.dumps(phantom_description(phantom), indent=2))
    return out


def write_pair(pair: PhantomPair, folder: str | Path, *, pseudonym: str = "PHANTOM",
               visits: tuple[str, str] = ("baseline", "month6"), formats: tuple[str, ...] = ("dicom", "nifti"),
               probability_maps: bool = True) -> Path:
    """Both visits under ``folder/<visit>/`` and the true change under ``folder/truth_change/``."""
    out = Path(folder)
    write_knee_phantom(pair.baseline, out / visits[0], pseudonym=pseudonym, visit=visits[0], formats=formats,
                       probability_maps=probability_maps)
    write_knee_phantom(pair.followup, out / visits[1], pseudonym=pseudonym, visit=visits[1], formats=formats,
                       probability_maps=probability_maps)
    change = out / "truth_change"
    atomic_write_bytes(change / "interface_points_delta.csv.gz",
                       _csv_bytes(interface_rows(pair.baseline, delta=pair.delta_points), gz=True))
    rows = [{"structure": CARTILAGE_LABEL[r["bone"]].key, "scheme": "moaks", "region": r["region"],
             "metric": r["metric"], "baseline": round(float(r["baseline"]), 6),
             "followup": round(float(r["followup"]), 6), "delta": round(float(r["delta"]), 6)}
            for r in pair.delta_regions]
    atomic_write_bytes(change / "change.csv", _csv_bytes(rows))
    atomic_write_text(change / "change.json", json.dumps({"change": asdict(pair.change),
                                                          "baseline_pose": asdict(pair.baseline.pose),
                                                          "followup_pose": asdict(pair.followup.pose)}, indent=2))
    return out
