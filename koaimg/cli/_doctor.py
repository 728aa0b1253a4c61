"""``koaimg doctor``: versions, DICOM codecs, CUDA and numba-cuda status, numba cache directory."""

from __future__ import annotations

import json

import typer

from ._app import app


@app.command("doctor")
def doctor_cmd(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Describe this installation: what it can decode, whether a GPU is usable, where kernels are cached."""
    from ..pipeline import environment_report
    from ._render import render_environment

    report = environment_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        render_environment(report)
