"""Writers of koaimg's outputs: tidy tables (CSV/JSON), label tables for viewers, thickness-map pictures."""

from ._maps import colourise, thickness_map_png, unrolled_femoral_map
from ._tables import MEASURE_COLUMNS, write_json, write_label_table, write_rows_csv

__all__ = [
    "MEASURE_COLUMNS",
    "colourise",
    "thickness_map_png",
    "unrolled_femoral_map",
    "write_json",
    "write_label_table",
    "write_rows_csv",
]
