"""Terminal rendering of library results (rich tables; plain text when not a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..io import DiscoveryReport, summarise_spacing


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=200)


def render_discovery(report: DiscoveryReport) -> None:
    """Studies -> series table, then one line per problem."""
    console = _console()
    studies = report.studies
    console.print(f"[bold]{report.root}[/bold]: {len(report.series)} series in {len(studies)} "
                  f"stud{'y' if len(studies) == 1 else 'ies'}, {len(report.all_problems)} problem(s), "
                  f"{len(report.skipped)} non-image DICOM object(s) skipped, {report.ignored} other file(s) ignored")
    for study, series in studies.items():
        table = Table(title=f"study {study} (subject {series[0].subject or '-'})", title_justify="left")
        for col in ("series", "mod", "plane", "matrix", "slices/frames", "spacing", "TE ms", "side (source)", "role",
                    "status"):
            table.add_column(col)
        for s in series:
            count = f"{s.n_frames} frames" if s.n_frames > 1 else f"{s.n_slices}"
            side = f"{s.side} ({s.side_source})" + (" CONFLICT" if s.side_conflicts else "")
            te = "" if s.echo_time_ms is None else f"{s.echo_time_ms:g}"
            status = "[yellow]warning[/yellow]" if s.warnings else "ok"
            if not s.ok:
                status = f"[red]{s.problem.code}[/red]"
            table.add_row(s.key, s.modality, s.plane, f"{s.matrix[0]}x{s.matrix[1]}", count, summarise_spacing(s), te,
                          escape(side), escape(s.role), status)
        console.print(table)
    for s in report.series:
        for w in s.warnings:
            console.print(f"[yellow]warning[/yellow] {escape(s.key)}: {escape(w)}")
    for p in report.all_problems:
        console.print(f"[red]problem[/red] {escape('[' + p.code + ']')} {escape(p.message)}")


def render_environment(report: dict) -> None:
    """Human-readable `koaimg doctor` output."""
    console = _console()
    console.print(f"koaimg {report['koaimg']} on Python {report['python']} ({report['platform']}, "
                  f"{report['cpu_count']} CPUs)")
    table = Table(title="packages", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    for name, version in report["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    console.print(table)
    codecs = Table(title="DICOM codecs", title_justify="left")
    for col in ("transfer syntax", "decodable", "plugins", "missing"):
        codecs.add_column(col)
    for row in report["dicom_codecs"]:
        codecs.add_row(row["name"], "yes" if row["available"] else "[red]no[/red]", ", ".join(row["plugins"]),
                       "; ".join(row["missing"]))
    console.print(codecs)
    torch_cuda, numba_cuda, nb = report["cuda_torch"], report["cuda_numba"], report["numba"]
    console.print(f"CUDA (torch): {'yes ' + str(torch_cuda.get('devices')) if torch_cuda['available'] else 'no'}"
                  f"{'' if torch_cuda['available'] else ' - ' + str(torch_cuda.get('reason'))}")
    console.print(f"CUDA (numba): {'yes' if numba_cuda['available'] else 'no'} "
                  f"(numba-cuda {numba_cuda.get('package') or 'not installed'}, "
                  f"implementation {numba_cuda.get('implementation', '?')}"
                  f"{', simulator' if numba_cuda.get('simulator') else ''})"
                  f"{'' if numba_cuda['available'] else ' - ' + escape(str(numba_cuda.get('reason')))}")
    console.print(f"numba cache: {escape(str(nb['cache_dir']))}; threading layer {nb['threading_layer']}, "
                  f"{nb['threads']} threads, fastmath {'on' if nb['fastmath'] else 'off'}")
