"""``koaimg measure LABELS``: thickness, subregions, Eckstein metrics and MOAKS-style grades from a label map."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app


@app.command("measure")
def measure_cmd(
    labels: Path = typer.Argument(..., exists=True, dir_okay=False, help="Label map (NIfTI, NRRD, MHA)."),
    out: Path = typer.Option(Path("koaimg_measure"), "--out", "-o", help="Output folder."),
    preset: str = typer.Option("koaimg", "--preset", help="koaimg, oai-zib, pymskt, woo-oai, clair, spl."),
    mapping: Path | None = typer.Option(None, "--mapping", exists=True, help="User JSON label mapping."),
    label_table: Path | None = typer.Option(None, "--label-table", exists=True,
                                            help="Atlas colour table (for --preset spl)."),
    side: str | None = typer.Option(None, "--side", help="right or left (default: from the file or anatomy)."),
    method: str = typer.Option("normal", "--method", help="normal (bone-normal rays) or nearest (cross-check)."),
    scheme: str = typer.Option("all", "--scheme",
                               help="Subregions: moaks, wirth-eckstein (Chondrometrics-comparable) or all."),
    subject: str = typer.Option("", "--subject", help="Pseudonymous subject id for the tables."),
    visit: str = typer.Option("", "--visit", help="Visit name for the tables."),
) -> None:
    """Measure every labelled cartilage plate and write thickness/regions NIfTI, measures.csv, moaks.json, maps."""
    from rich.console import Console
    from rich.table import Table

    from ..pipeline._measure import measure_file

    result = measure_file(labels, out, preset=preset, mapping_json=mapping, label_table=label_table, side=side,
                          method=method, subject=subject, visit=visit, scheme=scheme)
    table = Table(title=f"{labels.name} ({result.side.value} knee)", title_justify="left")
    for col in ("plate", "scheme", "region", "tAB mm2", "ThCtAB mm", "ThCcAB mm", "VC mm3", "dAB %", "MOAKS area.FT"):
        table.add_column(col)
    for plate_name, plate in result.plates.items():
        for r in plate.rows:
            grade = "" if r["moaks_any_loss_grade"] is None else \
                f"{r['moaks_any_loss_grade']}.{r['moaks_full_thickness_grade']}"
            if scheme == "all" and r["scheme"] != "moaks" and r["region"] == "all":
                continue  # the whole plate is already on its MOAKS row
            table.add_row(plate_name, r["scheme"], r["region"], f"{r['tAB']:.0f}", f"{r['ThCtAB.Me']:.2f}",
                          f"{r['ThCcAB.Me']:.2f}", f"{r['VC']:.0f}", f"{r['dAB%']:.1f}", grade)
    console = Console(width=160, highlight=False)
    console.print(table)
    flagged = sum(p.result.n_flagged for p in result.plates.values())
    console.print(f"MOAKS summed score {result.summary['moaks_summed_score_pos_worse']:.0f} (higher = worse); "
                  f"{flagged} point(s) flagged; outputs in {out}")
    for note in result.notes:
        console.print(f"note: {note}")
