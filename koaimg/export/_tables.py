"""Tidy tables and JSON, written atomically; one schema shared by reports, QA, cohort statistics and users' code."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..core import STRUCTURE_COLOURS, Structure
from ..io import atomic_write_text

#: the shared measures.csv schema (DESIGN.md)
MEASURE_COLUMNS = ("subject", "visit", "modality", "side", "structure", "scheme", "region", "metric", "value", "unit")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def write_rows_csv(rows: list[dict], path: str | Path, *, columns: tuple[str, ...] | None = None) -> Path:
    """Rows as CSV with a fixed column order (the first row's keys when ``columns`` is not given)."""
    columns = columns or (tuple(rows[0]) if rows else ())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _plain(row.get(k, "")) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def write_json(data: object, path: str | Path) -> Path:
    """Pretty JSON (numpy scalars and arrays converted)."""
    def default(obj):
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
        return str(obj)

    return atomic_write_text(path, json.dumps(data, indent=2, default=default))


def write_label_table(path: str | Path, *, extra: dict[int, tuple[str, tuple[int, int, int]]] | None = None) -> Path:
    """ITK-SNAP / Slicer-readable label description for koaimg's label schema (plus optional extra labels)."""
    lines = ["# koaimg label table: IDX R G B A VIS MSH LABEL", '0 0 0 0 0 0 0 "background"']
    for structure in Structure:
        if structure == Structure.BACKGROUND:
            continue
        r, g, b = STRUCTURE_COLOURS[structure]
        lines.append(f'{int(structure)} {r} {g} {b} 1 1 1 "{structure.key}"')
    for value, (name, (r, g, b)) in (extra or {}).items():
        lines.append(f'{value} {r} {g} {b} 1 1 1 "{name}"')
    return atomic_write_text(path, "\n".join(lines) + "\n")
