"""Radiologist QA review: a local web app over a batch output folder, with a review store and audit trail.

``create_app(OUT)`` builds the FastAPI app (``koaimg qa serve OUT`` runs it); ``ReviewService`` holds the logic
without HTTP; ``ReviewStore`` is the SQLite store (``OUT/qa/review.sqlite``) whose audit table is append-only.
FastAPI is imported only by ``create_app`` (the ``qa`` extra), so the store and audit export work without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cases import Case, case_id_for_pair, case_id_for_scan, discover_cases, is_pseudonym
from ._corrections import validate_correction
from ._service import BadRequestError, Filters, NotFoundError, ReviewService
from ._store import (
    DECISIONS,
    GRADE_KINDS,
    STATUSES,
    CaseState,
    ConflictError,
    ReviewStore,
    audit_csv_text,
    export_audit_csv,
)

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(out: str | Path, **options: Any) -> FastAPI:
    """Build the review web app (options as ``koaimg.qa._app.create_app``); needs the ``qa`` extra."""
    from ._app import create_app as _create

    return _create(out, **options)


__all__ = [
    "DECISIONS",
    "GRADE_KINDS",
    "STATUSES",
    "BadRequestError",
    "Case",
    "CaseState",
    "ConflictError",
    "Filters",
    "NotFoundError",
    "ReviewService",
    "ReviewStore",
    "audit_csv_text",
    "case_id_for_pair",
    "case_id_for_scan",
    "create_app",
    "discover_cases",
    "export_audit_csv",
    "is_pseudonym",
    "validate_correction",
]
