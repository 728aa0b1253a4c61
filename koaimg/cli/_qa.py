"""``koaimg qa serve OUT`` (radiologist review web app) and ``koaimg qa audit OUT --csv FILE``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app

qa_app = typer.Typer(no_args_is_help=True, help="Radiologist review of a batch output folder.")
app.add_typer(qa_app, name="qa")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@qa_app.command("serve")
def serve_cmd(
    out: Path = typer.Argument(..., exists=True, file_okay=False, help="Batch output folder (OUT/<subject>/...)."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Interface to listen on. Anything but loopback turns on a required access token."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    reviewer: str | None = typer.Option(None, "--reviewer", help="Default reviewer name recorded with decisions."),
    max_upload_mb: int = typer.Option(64, "--max-upload-mb", min=1, max=2048,
                                      help="Largest corrected label map accepted (MB)."),
    token: bool = typer.Option(False, "--token", help="Require an access token on loopback too."),
) -> None:
    """Serve the worklist and case viewer; decisions and corrections go to OUT/qa/review.sqlite."""
    import uvicorn

    from ..qa import ReviewService, create_app
    from ..qa._security import LOOPBACK_HOSTS, new_token

    service = ReviewService(out, reviewer=reviewer, max_upload_bytes=max_upload_mb * 1024 * 1024)
    exposed = host not in _LOOPBACK
    secret = new_token() if (exposed or token) else None
    application = create_app(out, token=secret, service=service, allowed_hosts=None if exposed else LOOPBACK_HOSTS)
    if host in ("0.0.0.0", "::"):  # all interfaces: print a name other machines can use
        import socket

        shown = socket.gethostname()
    else:
        shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    typer.echo(f"koaimg QA: {len(service.cases)} case(s) in {out}; reviews in {service.store.path}")
    for reason in service.skipped:
        typer.echo(f"  skipped {reason}")
    if secret is not None:
        typer.echo(f"access token required; open {url}?token={secret}")
        if exposed:
            typer.echo("warning: listening beyond loopback: serve pseudonymised output folders only, over a trusted "
                       "network (the server speaks plain HTTP)")
    else:
        typer.echo(f"open {url} (this machine only)")
    uvicorn.run(application, host=host, port=port, log_level="warning", server_header=False)


@qa_app.command("audit")
def audit_cmd(
    out: Path = typer.Argument(..., exists=True, file_okay=False, help="Batch output folder."),
    csv: Path = typer.Option(..., "--csv", help="Where to write the audit trail (CSV)."),
    states: Path | None = typer.Option(None, "--states",
                                       help="Also write one row per case: status, reviewer, version, overrides."),
) -> None:
    """Export the append-only review audit trail (who, when, what, before/after) as CSV."""
    from ..qa import ReviewService, ReviewStore, export_audit_csv

    store_path = out / "qa" / "review.sqlite"
    if not store_path.is_file():
        from ..core import KoaimgError

        raise KoaimgError("no review store in this output folder", path=store_path,
                          hint="run `koaimg qa serve` on it first")
    store = ReviewStore(store_path)
    export_audit_csv(store, csv)
    typer.echo(f"wrote {len(store.audit())} audit event(s) to {csv}")
    if states is not None:
        from ..export import write_rows_csv

        rows = ReviewService(out).state_rows()
        write_rows_csv(rows, states)
        typer.echo(f"wrote {len(rows)} case state(s) to {states}")
