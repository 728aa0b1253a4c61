"""The ``koaimg`` command. Thin: parse, call a library function, print. One error boundary in ``main``."""

from ._app import app, main

__all__ = ["app", "main"]
