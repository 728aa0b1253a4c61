"""Writers of koaimg's outputs: tidy tables (CSV/JSON), label tables for viewers, thickness-map pictures,
DICOM SEG / TID 1500 SR / Secondary Capture (highdicom)."""

from ._dicom_sc import write_secondary_capture
from ._dicom_seg import write_dicom_seg
from ._dicom_sr import read_dicom_sr_rows, write_dicom_sr
from ._maps import colourise, thickness_map_png, unrolled_femoral_map
from ._tables import MEASURE_COLUMNS, write_json, write_label_table, write_rows_csv

__all__ = [
    "MEASURE_COLUMNS",
    "colourise",
    "read_dicom_sr_rows",
    "thickness_map_png",
    "unrolled_femoral_map",
    "write_dicom_seg",
    "write_dicom_sr",
    "write_json",
    "write_label_table",
    "write_rows_csv",
    "write_secondary_capture",
]
