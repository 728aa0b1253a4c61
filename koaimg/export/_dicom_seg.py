"""DICOM Segmentation (SEG) of koaimg's label map, on the source series' grid, with coded anatomy (highdicom).

BINARY segments come from the label map; FRACTIONAL (probability) segments from per-structure probability maps
when a segmentation model provides them. The label map must lie on the source series' voxel grid (permuted or
flipped axes are fine; resampling is not done here: a segmentation on another grid is an error, not a guess).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from .. import __version__
from ..core import STRUCTURE_COLOURS, GeometryError, LabelVolume, Structure
from ._dicom_codes import KNEE_JOINT, SEGMENT_CODING
from ._dicom_source import (
    DEVICE_SERIAL,
    MANUFACTURER,
    MODEL_NAME,
    content_hash,
    derived_uid,
    finalise,
    quiet_person_names,
    read_source_series,
    save,
    source_geometry,
)

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _on_source_grid(array: np.ndarray, affine_ras: np.ndarray, geometry, what: str) -> np.ndarray:
    """Permute/flip a RAS-affine array onto the source series' frame order (frames, rows, columns)."""
    import highdicom as hd

    vol = hd.Volume(array, _RAS_TO_LPS @ np.asarray(affine_ras, dtype=float), "PATIENT",
                    frame_of_reference_uid=geometry.frame_of_reference_uid)
    try:
        return vol.match_geometry(geometry, tol=1e-3).array
    except RuntimeError as exc:
        raise GeometryError(f"the {what} is not on the source series' voxel grid ({exc})",
                            hint="export DICOM SEG from a segmentation made on this series (native grid)") from exc


def segment_descriptions(structures: Sequence[Structure], *, algorithm: str = "koaimg segmentation",
                         version: str = __version__) -> list:
    """highdicom SegmentDescriptions (numbered 1..N in the given order) with SNOMED-coded anatomy."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(name=algorithm, family=codes.cid7162.ArtificialIntelligence,
                                              version=version)
    out = []
    for number, structure in enumerate(structures, start=1):
        coding = SEGMENT_CODING[structure]
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=coding.label, segmented_property_category=coding.category,
            segmented_property_type=coding.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo, tracking_id=coding.label,
            tracking_uid=derived_uid("segment", structure.key),
            anatomic_regions=[KNEE_JOINT],
            primary_anatomic_structures=[coding.primary_structure] if coding.primary_structure else None,
            display_color=hd.color.CIELabColor.from_rgb(*STRUCTURE_COLOURS[structure])))
    return out


def build_dicom_seg(labels: LabelVolume, source: str | Path | Sequence[Dataset], *,
                    probabilities: Mapping[Structure, np.ndarray] | None = None,
                    structures: Sequence[Structure] | None = None, series_number: int = 300,
                    series_description: str = "koaimg cartilage segmentation") -> Dataset:
    """The SEG dataset (not written). Empty structures are left out; see ``write_dicom_seg``."""
    import highdicom as hd

    datasets = read_source_series(source)
    geometry = source_geometry(datasets)
    if geometry is None:
        raise GeometryError("cannot derive the source geometry", hint="pass the source series folder")
    label_array = _on_source_grid(np.asarray(labels.array, dtype=np.uint8), labels.affine, geometry, "label map")
    wanted = list(structures) if structures is not None else [s for s in SEGMENT_CODING]
    present = [s for s in wanted if s in SEGMENT_CODING and np.any(label_array == int(s))]
    if not present:
        raise GeometryError("the label map holds none of the structures to export", hint="check the label schema")
    if probabilities is not None:
        missing = [s.key for s in present if s not in probabilities]
        if missing:
            raise ValueError(f"`probabilities` lacks {missing}; pass one map per exported structure or none")
        stack = np.stack([np.clip(_on_source_grid(np.asarray(probabilities[s], dtype=np.float32), labels.affine,
                                                  geometry, f"{s.key} probability map"), 0.0, 1.0)
                          for s in present], axis=-1)
        pixel_array, seg_type = stack, hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pixel_array = np.zeros(label_array.shape, dtype=np.uint8)
        for number, s in enumerate(present, start=1):
            pixel_array[label_array == int(s)] = number
        seg_type = hd.seg.SegmentationTypeValues.BINARY
    src = datasets[0]
    key = content_hash(pixel_array, seg_type.value, *[s.key for s in present])
    with quiet_person_names():
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=pixel_array, segmentation_type=seg_type,
            segment_descriptions=segment_descriptions(present),
            series_instance_uid=derived_uid("seg-series", src.SeriesInstanceUID, key), series_number=series_number,
            sop_instance_uid=derived_uid("seg", src.SeriesInstanceUID, key), instance_number=1,
            manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions=__version__,
            device_serial_number=DEVICE_SERIAL, series_description=series_description,
            content_label="CARTILAGE", content_description="knee bones and cartilage plates", omit_empty_frames=True)
    return finalise(seg, src)


def write_dicom_seg(labels: LabelVolume, source_dir_or_datasets: str | Path | Sequence[Dataset], path: str | Path, *,
                    probabilities: Mapping[Structure, np.ndarray] | None = None,
                    structures: Sequence[Structure] | None = None, series_number: int = 300) -> Path:
    """Write a DICOM SEG of ``labels`` referencing the source series; BINARY, or FRACTIONAL with probabilities.

    Segments are the knee structures present in the label map (femur, tibia, patella and their cartilage plates,
    plus fibula/meniscus when labelled), coded with SNOMED CT (see ``_dicom_codes``).
    """
    seg = build_dicom_seg(labels, source_dir_or_datasets, probabilities=probabilities, structures=structures,
                          series_number=series_number)
    return save(seg, path)
