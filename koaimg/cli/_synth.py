"""``koaimg synth ...``: digital phantoms with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

synth_app = typer.Typer(no_args_is_help=True, help="Digital knee phantoms with exact ground truth.")
app.add_typer(synth_app, name="synth")

_FORMATS = typer.Option("dicom,nifti", "--formats", help="Comma-separated: dicom, nifti.")
_ACQ = typer.Option("dess", "--acquisition", "-a", help="dess (OAI 3D DESS), flash (coronal 3D FLASH), tse (2D TSE).")
_SCALE = typer.Option(1.0, "--scale", help="Divide the voxel count per axis (same field of view), e.g. 2.")
_SIDE = typer.Option("right", "--side", help="right or left knee.")
_SEED = typer.Option(0, "--seed", help="Random seed (noise, random anatomy, repositioning).")
_RANDOM = typer.Option(False, "--random-anatomy", help="Draw a random anatomy instead of the default knee.")
_DEFECT = typer.Option([], "--defect", help="REGION:RADIUS_MM[:DEPTH], repeatable, e.g. FMC:5:1.")


def _formats(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in ("dicom", "nifti")]
    if bad or not items:
        raise typer.BadParameter(f"unknown format(s) {bad}; use dicom and/or nifti")
    return items


@synth_app.command("knee")
def knee_cmd(out: Path = typer.Argument(..., help="Output folder."), acquisition: str = _ACQ, scale: float = _SCALE,
             side: str = _SIDE, seed: int = _SEED, random_anatomy: bool = _RANDOM, defect: list[str] = _DEFECT,
             formats: str = _FORMATS) -> None:
    """One procedural knee MR scan with labels, probability maps and exact thickness truth."""
    from ..pipeline._synth import synth_knee

    path = synth_knee(out, acquisition=acquisition, scale=scale, side=side, seed=seed, random_anatomy=random_anatomy,
                      defects=defect, formats=_formats(formats))
    typer.echo(f"wrote {path}")


@synth_app.command("pair")
def pair_cmd(out: Path = typer.Argument(..., help="Output folder."), acquisition: str = _ACQ, scale: float = _SCALE,
             side: str = _SIDE, seed: int = _SEED, random_anatomy: bool = _RANDOM, defect: list[str] = _DEFECT,
             delta: float = typer.Option(0.0, "--delta", help="Global thickness change (mm), follow-up - baseline."),
             region_delta: list[str] = typer.Option([], "--region-delta", help="REGION=MM, repeatable."),
             defect_growth: float = typer.Option(1.0, "--defect-growth", help="Follow-up / baseline defect radius."),
             max_deg: float = typer.Option(10.0, "--max-reposition-deg"),
             max_mm: float = typer.Option(10.0, "--max-reposition-mm"), formats: str = _FORMATS) -> None:
    """Baseline and 6-month scans of one knee with a prescribed thickness change and a rigid repositioning."""
    from ..pipeline._synth import synth_pair

    path = synth_pair(out, acquisition=acquisition, scale=scale, side=side, seed=seed, random_anatomy=random_anatomy,
                      defects=defect, delta_mm=delta, region_deltas=region_delta, defect_growth=defect_growth,
                      max_deg=max_deg, max_mm=max_mm, formats=_formats(formats))
    typer.echo(f"wrote {path}")


@synth_app.command("us")
def us_cmd(out: Path = typer.Argument(..., help="Output folder."), seed: int = _SEED, side: str = _SIDE,
           frames: int = typer.Option(8, "--frames", help="Cine length (1 = single frame)."),
           delta: float | None = typer.Option(None, "--delta", help="Also write a 6-month follow-up with this Δ mm."),
           formats: str = typer.Option("dicom,png", "--formats", help="Comma-separated: dicom, png, mask.")) -> None:
    """Transverse suprapatellar ultrasound phantom (LC, IN, MC sites) with exact thickness truth."""
    from ..pipeline._synth import synth_us

    items = tuple(t.strip() for t in formats.split(",") if t.strip())
    typer.echo(f"wrote {synth_us(out, seed=seed, side=side, frames=frames, delta_mm=delta, formats=items)}")


@synth_app.command("cohort")
def cohort_cmd(out: Path = typer.Argument(..., help="Output folder (a trial-like export)."), seed: int = _SEED,
               n_per_arm: int | None = typer.Option(None, "--n-per-arm",
                                                    help="Subjects per arm (default: the published 24/24/25)."),
               scale: float = typer.Option(3.0, "--scale", help="MR grid reduction (DESS voxels per axis / scale)."),
               no_us: bool = typer.Option(False, "--no-us", help="MR only."),
               workers: int = typer.Option(1, "--workers", help="Processes."),
               with_labels: bool = typer.Option(
                   False, "--with-labels",
                   help="Also write each MR scan's true label map under ground_truth/ (for `koaimg batch "
                        "--labels-dir OUT/ground_truth`, no segmentation model needed).")) -> None:
    """Simulated trial: two-dose AdMSC, single-dose AdMSC and HA arms, baseline and 6-month MR + US."""
    from ..pipeline._synth import synth_cohort

    path = synth_cohort(out, seed=seed, n_per_arm=n_per_arm, scale=scale, with_us=not no_us, workers=workers,
                        with_labels=with_labels)
    extra = ", MR label maps" if with_labels else ""
    typer.echo(f"wrote {path} (allocation.csv, ground_truth/{extra})")
