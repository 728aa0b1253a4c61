"""The FastAPI app: worklist and case pages, JSON API, NIfTI/PNG for the viewer, audit CSV.

Routes take ids (case id, whitelisted role, integer version) and hand them to ``ReviewService``; writes need the
case's ETag in ``If-Match`` (a stale one gets 409, a missing one 428), which also makes every write a request a
foreign web page cannot send without a CORS preflight the server never grants.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..core import KoaimgError
from ._nifti import scrubbed_nifti_gz
from ._security import LOOPBACK_HOSTS, GuardMiddleware
from ._service import DEFAULT_MAX_UPLOAD, BadRequestError, Filters, NotFoundError, ReviewService
from ._store import ConflictError
from ._views import label_lut

STATIC = Path(str(resources.files("koaimg.qa") / "static"))
_NO_STORE = {"cache-control": "no-store"}


class Decision(BaseModel):
    """Body of POST /decision."""

    status: Literal["unreviewed", "approved", "flagged", "rejected"]
    reviewer: str | None = Field(default=None, max_length=64)
    comment: str | None = Field(default=None, max_length=4000)


class GradeOverride(BaseModel):
    """Body of POST /grades (``value`` null clears the override)."""

    region: str = Field(max_length=16)
    grade: Literal["moaks_any_loss_grade", "moaks_full_thickness_grade"]
    value: int | None = Field(default=None, ge=0, le=3)
    reviewer: str | None = Field(default=None, max_length=64)
    comment: str | None = Field(default=None, max_length=4000)


def _etag(version: int) -> str:
    return f'"{int(version)}"'


def _expected(if_match: str | None) -> int:
    if if_match is None:
        raise _Http(428, "If-Match header with the case version (its ETag) is required")
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise _Http(400, "If-Match must be the case ETag, e.g. \"3\"")
    return int(text)


class _Http(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def create_app(out: str | Path, *, token: str | None = None, reviewer: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
               reports: bool = True, service: ReviewService | None = None) -> FastAPI:
    """Build the review app over batch output folder ``out``.

    ``token``: required on every request when given (use one whenever the server listens beyond loopback).
    ``allowed_hosts``: Host header names accepted (loopback by default; ``None`` accepts any, for token mode).
    ``reports``: write report.html for corrected versions and recomputed pairs.
    """
    svc = service or ReviewService(out, reviewer=reviewer, max_upload_bytes=max_upload_bytes, reports=reports)
    app = FastAPI(title="koaimg QA review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc
    app.add_middleware(GuardMiddleware, token=token, allowed_hosts=allowed_hosts,
                       max_body_bytes=svc.max_upload_bytes + 64 * 1024)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(_Http)
    async def _http(_: Request, exc: _Http) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=_NO_STORE)

    @app.exception_handler(KoaimgError)
    async def _koaimg(_: Request, exc: KoaimgError) -> JSONResponse:
        status = 422  # UnreadableFileError, GeometryError, LabelSchemaError: the upload is not a valid correction
        if isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, ConflictError):
            status = 409
        elif isinstance(exc, BadRequestError):
            status = 400
        return JSONResponse({"detail": exc.one_line(), "code": exc.code}, status_code=status, headers=_NO_STORE)

    # -- pages -----------------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_NO_STORE)

    @app.get("/cases/{case_id}", include_in_schema=False)
    def case_page(case_id: str) -> FileResponse:
        svc.case(case_id)
        return FileResponse(STATIC / "case.html", headers=_NO_STORE)

    # -- API: reading ----------------------------------------------------------------------------------------------
    @app.get("/api/session")
    def session() -> dict:
        return {"reviewer": svc.default_reviewer, "max_upload_bytes": svc.max_upload_bytes,
                "token_required": token is not None, "statuses": ["unreviewed", "approved", "flagged", "rejected",
                                                                  "corrected"]}

    @app.get("/api/cases")
    def cases(status: str | None = None, kind: Literal["scan", "pair"] | None = None,
              modality: Annotated[str | None, Query(max_length=16)] = None, flagged: bool | None = None,
              q: Annotated[str | None, Query(max_length=100)] = None) -> JSONResponse:
        data = svc.worklist(Filters(status=status, kind=kind, modality=modality, flagged=flagged, q=q))
        return JSONResponse(data, headers=_NO_STORE)

    @app.get("/api/cases/{case_id}")
    def case_detail(case_id: str, version: Annotated[int | None, Query(ge=0)] = None) -> JSONResponse:
        data = svc.detail(case_id, version)
        return JSONResponse(data, headers={**_NO_STORE, "etag": _etag(data["state"]["version"])})

    @app.get("/api/cases/{case_id}/v/{version}/{role}.nii.gz")
    def volume(case_id: str, version: int, role: Literal["image", "labels", "thickness", "regions",
                                                           "delta"]) -> Response:
        path = svc.file_for(case_id, version, role)
        return Response(scrubbed_nifti_gz(path), media_type="application/gzip", headers=_NO_STORE)

    @app.get("/api/cases/{case_id}/v/{version}/{role}.png")
    def picture(case_id: str, version: int, role: Literal["thickness_map", "overlay", "delta_map"]) -> FileResponse:
        return FileResponse(svc.file_for(case_id, version, role), media_type="image/png", headers=_NO_STORE)

    @app.get("/api/labels.json")
    def labels_lut() -> dict:
        return label_lut()

    @app.get("/api/cases/{case_id}/audit")
    def case_audit(case_id: str) -> list[dict]:
        return svc.store.audit(svc.case(case_id).case_id)

    @app.get("/api/audit.csv")
    def audit_csv() -> PlainTextResponse:
        return PlainTextResponse(svc.audit_csv(), media_type="text/csv",
                                 headers={**_NO_STORE, "content-disposition": 'attachment; filename="qa_audit.csv"'})

    # -- API: writing ----------------------------------------------------------------------------------------------
    @app.post("/api/cases/{case_id}/decision")
    def decision(case_id: str, body: Decision,
                 if_match: Annotated[str | None, Header()] = None) -> JSONResponse:
        state = svc.decide(case_id, expected_version=_expected(if_match), status=body.status,
                           reviewer=body.reviewer, comment=body.comment)
        return JSONResponse(state.as_dict(), headers={**_NO_STORE, "etag": _etag(state.version)})

    @app.post("/api/cases/{case_id}/grades")
    def grades(case_id: str, body: GradeOverride,
               if_match: Annotated[str | None, Header()] = None) -> JSONResponse:
        state = svc.override_grade(case_id, expected_version=_expected(if_match), region=body.region,
                                   grade=body.grade, value=body.value, reviewer=body.reviewer, comment=body.comment)
        return JSONResponse(state.as_dict(), headers={**_NO_STORE, "etag": _etag(state.version)})

    @app.post("/api/cases/{case_id}/corrections")
    async def corrections(case_id: str, request: Request,
                          source: Literal["upload", "drawn"] = "upload",
                          reviewer: Annotated[str | None, Query(max_length=64)] = None,
                          comment: Annotated[str | None, Query(max_length=4000)] = None,
                          based_on: Annotated[int | None, Query(ge=0)] = None,
                          if_match: Annotated[str | None, Header()] = None) -> JSONResponse:
        expected = _expected(if_match)
        svc.case(case_id)  # 404 before reading a body for a case that does not exist
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/octet-stream", "application/gzip", "application/x-gzip"):
            raise _Http(415, "send the NIfTI bytes as application/octet-stream (or application/gzip)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > svc.max_upload_bytes:
                raise _Http(413, f"upload larger than the {svc.max_upload_bytes}-byte limit")
            chunks.append(chunk)
        result = await run_in_threadpool(svc.correct, case_id, b"".join(chunks), expected_version=expected,
                                         reviewer=reviewer, source=source, comment=comment, based_on=based_on)
        return JSONResponse(result, status_code=201, headers={**_NO_STORE, "etag": _etag(result["state"]["version"])})

    return app
