"""``koaimg report DIR``: (re)write the HTML report of a scan, pair or cohort folder (or every one under a tree),
and optionally the scan's DICOM SEG/SR/SC."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app


@app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., exists=True, file_okay=False,
                                  help="A scan output folder (measures.csv), a change_<bl>_<fu> folder (change.csv) "
                                       "or a cohort folder."),
    image: Path | None = typer.Option(None, "--image", exists=True,
                                      help="MR image (NIfTI file or DICOM series folder) under the overlay."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Write every report under FOLDER."),
    dicom: Path | None = typer.Option(None, "--dicom", exists=True,
                                      help="Source DICOM series folder: also write SEG, SR and key-figure SC "
                                           "into FOLDER/dicom (scan folders only)."),
) -> None:
    """Write report.html (self-contained: inline CSS, embedded images) for a koaimg output folder."""
    from ..export import write_report, write_reports_tree

    if recursive:
        written, failed = write_reports_tree(folder)
        for path in written:
            typer.echo(f"wrote {path}")
        for where, reason in failed:
            typer.echo(f"koaimg: problem: {where}: {reason}", err=True)
        if not written and not failed:
            typer.echo(f"no scan, pair or cohort folders under {folder}")
        if failed:
            raise typer.Exit(EXIT_PROBLEMS)
        return
    volume = _load_image(image) if image is not None else None
    typer.echo(f"wrote {write_report(folder, image=volume)}")
    if dicom is not None:
        from ..export import write_dicom_outputs

        for path in write_dicom_outputs(folder, dicom, image=volume):
            typer.echo(f"wrote {path}")


def _load_image(path: Path):
    """A NIfTI/NRRD file or the (largest) DICOM MR series in a folder."""
    from ..io import discover, load_series, read_image

    if path.is_file():
        return read_image(path)
    report = discover(path)
    series = [s for s in report.series if s.modality == "MR" and s.problem is None]
    if not series:
        from ..core import UnreadableFileError

        raise UnreadableFileError("no readable MR series found", path=path, hint="pass the scan's DICOM folder")
    return load_series(max(series, key=lambda s: s.n_slices))
