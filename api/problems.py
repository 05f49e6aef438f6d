"""Errors as RFC 9457 problem+json, with a stable snake_case `code` that clients switch on.

Every code the API can answer is one `Problem` in the registry below (code, HTTP status, title);
api/README.md's error table is checked against it by tests/api/test_problems.py. A route or service
raises a problem by calling its entry: `raise NOT_FOUND(f"no subject {subject_id!r}")` builds the
`ApiError`. The handlers here turn it, FastAPI's validation errors and anything unexpected into
problem documents, so no client input ever yields a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.blobstore import BlobStoreUnavailable

log = logging.getLogger("roomfit.api")

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    """One kind of error: its stable code, its HTTP status and a title that never changes."""

    code: str
    status: int
    title: str

    def __call__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> ApiError:
        """The error to raise, with what this occurrence says (`detail`, safe to show a shopper)."""
        return ApiError(self, detail, headers=headers, **extra)

    def document(self, detail: str, **extra: Any) -> dict[str, Any]:
        """The problem+json body."""
        return {
            "type": f"https://roomfit.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": detail,
            "code": self.code,
            **extra,
        }

    def response(self, detail: str, headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
        return JSONResponse(
            self.document(detail, **extra), status_code=self.status, media_type=PROBLEM_JSON, headers=headers
        )


class ApiError(Exception):
    """A problem raised by a route or service; `problems[code]` says which."""

    def __init__(
        self, problem: Problem, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.status = problem.status
        self.code = problem.code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


REGISTRY: dict[str, Problem] = {}


def _register(code: str, status: int, title: str) -> Problem:
    assert code not in REGISTRY, f"problem code {code!r} registered twice"
    REGISTRY[code] = problem = Problem(code, status, title)
    return problem


# --- the registry: every code the API answers, grouped by status -------------------------------
BAD_REQUEST = _register("bad_request", 400, "Bad request")
MALFORMED_MULTIPART = _register("malformed_multipart", 400, "Malformed multipart body")
CLIENT_DISCONNECTED = _register("client_disconnected", 400, "Client disconnected")
UNAUTHORIZED = _register("unauthorized", 401, "Unauthorized")
FORBIDDEN = _register("forbidden", 403, "Forbidden")
ORIGIN_NOT_ALLOWED = _register("origin_not_allowed", 403, "Origin not allowed")
NOT_FOUND = _register("not_found", 404, "Not found")
METHOD_NOT_ALLOWED = _register("method_not_allowed", 405, "Method not allowed")
SUBJECT_NOT_READY = _register("subject_not_ready", 409, "Subject not ready")
EXTERNAL_ID_TAKEN = _register("external_id_taken", 409, "External id taken")
SUBJECT_BUSY = _register("subject_busy", 409, "Subject busy")
PREVIEW_NOT_READY = _register("preview_not_ready", 409, "Preview not ready")
IDEMPOTENCY_KEY_REUSED = _register("idempotency_key_reused", 409, "Idempotency-Key reused")
IDEMPOTENCY_KEY_IN_PROGRESS = _register("idempotency_key_in_progress", 409, "Idempotency-Key in progress")
JOB_NOT_RETRYABLE = _register("job_not_retryable", 409, "Job not retryable")
JOB_NOT_CANCELLABLE = _register("job_not_cancellable", 409, "Job not cancellable")
IMAGE_TOO_LARGE = _register("image_too_large", 413, "Image too large")
PAYLOAD_TOO_LARGE = _register("payload_too_large", 413, "Payload too large")
REQUEST_TOO_LARGE = _register("request_too_large", 413, "Request images too large")
FIELD_TOO_LARGE = _register("field_too_large", 413, "Form field too large")
UNSUPPORTED_MEDIA_TYPE = _register("unsupported_media_type", 415, "Unsupported image type")
UNSUPPORTED_CONTENT_TYPE = _register("unsupported_content_type", 415, "Unsupported content type")
VALIDATION_ERROR = _register("validation_error", 422, "Validation error")
IMAGE_UNREADABLE = _register("image_unreadable", 422, "Image unreadable")
TOO_MANY_PHOTOS = _register("too_many_photos", 422, "Too many photos")
INVALID_BOXES = _register("invalid_boxes", 422, "Invalid boxes")
MASK_SIZE_MISMATCH = _register("mask_size_mismatch", 422, "Mask size mismatch")
MASK_EMPTY = _register("mask_empty", 422, "Mask empty")
IMAGE_SHAPE_NOT_ALLOWED = _register("image_shape_not_allowed", 422, "Image shape not allowed")
INVALID_IDEMPOTENCY_KEY = _register("invalid_idempotency_key", 422, "Invalid Idempotency-Key")
WEBHOOK_URL_NOT_ALLOWED = _register("webhook_url_not_allowed", 422, "Webhook URL not allowed")
RATE_LIMITED = _register("rate_limited", 429, "Rate limited")
TOO_MANY_JOBS = _register("too_many_jobs", 429, "Too many jobs")
INTERNAL_ERROR = _register("internal_error", 500, "Internal error")
SERVICE_UNAVAILABLE = _register("service_unavailable", 503, "Service unavailable")
SERVER_BUSY = _register("server_busy", 503, "Server busy")

# The problems for the statuses Starlette raises itself (unknown route, wrong method ...).
_STARLETTE = {
    p.status: p for p in (BAD_REQUEST, UNAUTHORIZED, NOT_FOUND, METHOD_NOT_ALLOWED, PAYLOAD_TOO_LARGE)
}


def codes_by_status() -> dict[int, list[str]]:
    """The registry's codes per HTTP status, in registry order (for OpenAPI and the README)."""
    out: dict[int, list[str]] = {}
    for problem in REGISTRY.values():
        out.setdefault(problem.status, []).append(problem.code)
    return out


def validation_failed(errors: Iterable[Mapping[str, Any]]) -> ApiError:
    """pydantic's (or FastAPI's) error list as 422 `validation_error`: the first error is the
    detail, all of them go along as `errors`."""
    listed = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in errors
    ]
    first = listed[0] if listed else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
    return VALIDATION_ERROR(detail, errors=listed)


def invalid(exc: Exception) -> ApiError:
    """A pydantic ValidationError of form fields as 422 `validation_error`, like FastAPI's own."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return VALIDATION_ERROR(str(exc))
    return validation_failed(exc.errors())


def _answer(exc: ApiError) -> JSONResponse:
    return exc.problem.response(exc.detail, exc.headers, **exc.extra)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(validation_failed(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        # A status Starlette raises that the registry does not name keeps a code made from it.
        problem = _STARLETTE.get(status) or Problem(f"http_{status}", status, HTTPStatus(status).phrase)
        return problem.response(str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the client sent (e.g. a character it cannot store); the
        # routes check what they can first, this is the net under them.
        log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
        return VALIDATION_ERROR.response("a value in the request cannot be stored")

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(BlobStoreUnavailable)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A dependency is down (database, blob store): the client may retry; nothing it sent is wrong.
        log.warning("dependency unavailable on %s %s: %s", request.method, request.url.path, exc)
        return SERVICE_UNAVAILABLE.response(
            "a dependency is unavailable; retry shortly", {"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, never the client's input: log it with the request id, answer vaguely.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return INTERNAL_ERROR.response("an unexpected error occurred; it has been logged")
