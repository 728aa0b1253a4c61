"""``koaimg us-measure PATH``: femoral cartilage thickness at LC, IN and MC on a transverse suprapatellar US image."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import EXIT_PROBLEMS, app


@app.command("us-measure")
def us_measure_cmd(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="DICOM US file (image or cine) or PNG/JPEG."),
    pixel_spacing: float | None = typer.Option(None, "--pixel-spacing", help="mm per pixel of a PNG/JPEG "
                                               "screenshot (required there unless a <file>.json sidecar states it)."),
    method: str = typer.Option("auto", "--method", help="auto (= tracker), tracker or model."),
    speed_of_sound_factor: float = typer.Option(1.0, "--speed-of-sound-factor",
                                                help="True/assumed (1540 m/s) speed of sound; scales thickness."),
    out: Path = typer.Option(Path("koaimg_us"), "--out", "-o", help="Output folder."),
    side: str | None = typer.Option(None, "--side", help="right or left (default: DICOM Laterality, else right)."),
    frame: int | None = typer.Option(None, "--frame", help="Cine frame to measure (default: the best one)."),
    trust_region_overflow: bool = typer.Option(False, "--trust-region-overflow",
                                               help="Measure although the calibration region is larger than the "
                                                    "pixels (only for images known to be cropped, not resized)."),
    cross_check: bool = typer.Option(True, "--cross-check/--no-cross-check",
                                     help="Also run the other method and flag sites where they disagree."),
    subject: str = typer.Option("", "--subject", help="Pseudonymous subject id for the tables."),
    visit: str = typer.Option("", "--visit", help="Visit name for the tables."),
) -> None:
    """Measure cartilage thickness (mm) at LC, IN, MC; write measures.csv, ultrasound.json, overlay.png."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..pipeline._ultrasound import measure_ultrasound_file

    result = measure_ultrasound_file(path, out, subject=subject, visit=visit, pixel_spacing_mm=pixel_spacing,
                                     method=method, speed_of_sound_factor=speed_of_sound_factor, side=side,
                                     frame=frame, trust_region_overflow=trust_region_overflow,
                                     cross_check=cross_check)
    summary = json.loads((result / "ultrasound.json").read_text())
    table = Table(title=f"{path.name}: {summary['method']}, frame {summary['frame_index']}, {summary['side']} knee "
                        f"({summary['side_source']})", title_justify="left")
    for col in ("site", "thickness mm", "area/length mm", "SD mm", "confidence", "reasons"):
        table.add_column(col)
    for name, site in summary["sites"].items():
        table.add_row(name, _fmt(site["thickness_mm"]), _fmt(site["area_per_length_mm"]), _fmt(site["sd_mm"]),
                      site["confidence"], "; ".join(site["reasons"]))
    table.add_row("mean", _fmt(summary["mean_mm"]), _fmt(summary["mean_area_per_length_mm"]), "", "", "")
    console = Console(width=160, highlight=False)
    console.print(table)
    for flag in summary["flags"]:
        console.print(f"flag: {flag}")
    for note in summary["notes"]:
        console.print(f"note: {note}")
    console.print(f"outputs in {result}")
    if not summary["confident"]:
        raise typer.Exit(EXIT_PROBLEMS)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
