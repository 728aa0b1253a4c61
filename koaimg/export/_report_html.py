"""Shared plumbing of the HTML reports: one Jinja2 template, plain section records, embedded PNGs, atomic writes.

Reports are single self-contained files (inline CSS, images as base64 data URIs, no scripts, no CDN), so they open
from a USB stick on a hospital workstation and can be archived next to the data they describe.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..io import atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Cell:
    """One table cell: text, an optional CSS class (grade colour, change direction) and a hover title."""

    text: str
    css: str = ""
    title: str = ""


@dataclass
class Row:
    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[Row]
    caption: str = ""
    css: str = ""
    legend: str = ""
    #: how many leading columns hold text (left-aligned headers)
    left: int = 1


@dataclass
class Section:
    """A titled block of the report; every part is optional."""

    id: str
    title: str
    note: str = ""
    cards: list[dict] = field(default_factory=list)
    flags: list | None = None
    figures: list[dict] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def png_uri(png: bytes) -> str:
    """An embeddable ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str, *, wide: bool = False) -> dict:
    """A report figure record (``wide`` takes more of the row, e.g. a two-panel overlay)."""
    return {"src": png_uri(png), "caption": caption, "css": "wide" if wide else ""}


def fmt(value, digits: int = 2, *, signed: bool = False) -> str:
    """A number for a table: fixed digits, en dash for missing; text passes through."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–" if value in (None, "") else str(value)
    if math.isnan(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def num(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def render_report(path: Path, *, title: str, subtitle: str, meta: list[tuple[str, str]], sections: list[Section],
                  provenance: list[tuple[str, str]] | None = None) -> Path:
    """Render the report template and write it atomically."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(
        ["html", "j2"], default=True), undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(
        title=title, subtitle=subtitle, meta=meta, sections=sections, provenance=provenance or [],
        version=__version__)
    return atomic_write_text(path, html)
