"""``koaimg segment IMAGE``: femur, tibia, patella and their cartilage from a knee MRI with the MONAI bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app


@app.command("segment")
def segment_cmd(
    image: Path = typer.Argument(..., exists=True, help="Knee MR image: NIfTI/NRRD/MHA file or DICOM file/folder."),
    out: Path = typer.Option(Path("koaimg_segment"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu or cuda."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write probabilities.nii.gz (4D)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="MONAI bundle folder (default models/knee_mr_seg)."),
    series: int | None = typer.Option(None, "--series", help="Which MR series of a folder (0-based; default: "
                                                            "the shortest echo)."),
) -> None:
    """Segment a knee MRI and write labels.nii.gz, segmentation.json (volumes, warnings) and provenance.json."""
    from ..pipeline import segment_file

    result = segment_file(image, out, bundle=bundle, device=device, probabilities=probabilities, series=series)
    seconds = result.info.get("seconds", {}).get("total", float("nan"))
    typer.echo(f"segmented {image.name} on {result.info.get('device')} in {seconds:.1f} s -> {out}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if any("no knee" in w or "empty" in w or "both knees" in w for w in result.warnings):
        raise typer.Exit(EXIT_PROBLEMS)
