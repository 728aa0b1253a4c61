"""Writers of koaimg's outputs: tidy tables (CSV/JSON), label tables for viewers, thickness-map pictures,
self-contained HTML reports (scan, pair, cohort) and DICOM SEG / TID 1500 SR / Secondary Capture (highdicom)."""

from ._dicom_outputs import write_dicom_outputs
from ._dicom_sc import write_secondary_capture
from ._dicom_seg import write_dicom_seg
from ._dicom_sr import read_dicom_sr_rows, write_dicom_sr
from ._maps import colourise, thickness_map_png, unrolled_femoral_map
from ._report_auto import report_kind, write_report, write_reports_tree
from ._report_checks import QAFlag, QALimits, plausibility_checks
from ._report_cohort import write_cohort_report
from ._report_pair import write_pair_report
from ._report_scan import scan_figures, write_scan_report
from ._tables import MEASURE_COLUMNS, write_json, write_label_table, write_rows_csv

__all__ = [
    "MEASURE_COLUMNS",
    "QAFlag",
    "QALimits",
    "colourise",
    "plausibility_checks",
    "read_dicom_sr_rows",
    "report_kind",
    "scan_figures",
    "thickness_map_png",
    "unrolled_femoral_map",
    "write_cohort_report",
    "write_dicom_outputs",
    "write_dicom_seg",
    "write_dicom_sr",
    "write_json",
    "write_label_table",
    "write_pair_report",
    "write_report",
    "write_reports_tree",
    "write_rows_csv",
    "write_scan_report",
    "write_secondary_capture",
]
