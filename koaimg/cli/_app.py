"""Typer application and the single error boundary: a KoaimgError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import os
import sys

import typer

from .. import __version__
from ..core import KoaimgError

app = typer.Typer(name="koaimg", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Knee cartilage thickness, MOAKS-style defects and change from MRI and ultrasound.")

#: exit codes: 0 ok, 1 finished but some inputs had problems, 2 the command itself failed on bad input
EXIT_PROBLEMS = 1
EXIT_ERROR = 2


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"koaimg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """koaimg: measure knee cartilage and its change between visits."""
    if debug:
        os.environ["KOAIMG_DEBUG"] = "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")


def _register() -> None:
    from . import (  # noqa: F401  (commands register themselves on ``app``)
        _change,
        _doctor,
        _inspect,
        _measure,
        _qa,
        _report,
        _run,
        _segment,
        _synth,
        _us_measure,
    )


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        app()
    except KoaimgError as exc:
        if os.environ.get("KOAIMG_DEBUG") == "1":
            raise
        typer.echo(f"koaimg: error: {exc.one_line()}", err=True)
        sys.exit(EXIT_ERROR)
