"""``koaimg inspect PATH``: what is in a scan folder, and what koaimg would do with each series."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., exists=True, help="Folder (or file) to scan: DICOM, DICOMDIR, NIfTI, NRRD, "
                                                         "MHA, PNG/JPEG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """List studies -> series with modality, plane, matrix, spacing, echoes, knee side and role.

    Exits 1 when any file or series has a problem (every good series is still listed).
    """
    from ..pipeline import discover
    from ._render import render_discovery

    report = discover(path)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        render_discovery(report)
    if report.all_problems:
        raise typer.Exit(EXIT_PROBLEMS)
