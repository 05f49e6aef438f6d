"""`/v1/previews`: paint a ready subject into a room photo; read the preview; fetch its result.

HTTP only; the rules of creating one are in `api.services.previews`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import Caller, RepoDep, SessionDep, SettingsDep, TenantCaller, is_id
from api.idempotency import run_idempotent
from api.openapi import AUTH, PREVIEW_FORM, problems
from api.problems import ApiError
from api.schemas import PreviewOut
from api.services import previews as service
from api.uploads import FormLimits, ParsedForm, read_form
from core.blobstore import BlobNotFound, BlobStore, LocalBlobStore
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Preview

log = logging.getLogger("roomfit.api.previews")
router = APIRouter(prefix="/v1/previews", tags=["previews"])


def _one(name: str) -> ApiError:
    return ApiError(422, "validation_error", f"{name}: send exactly one file")


@router.post(
    "",
    status_code=202,
    response_model=PreviewOut,
    summary="Paint a ready subject into a room photo where the mask says",
    responses={
        202: {"description": "Accepted; `Location` names the preview."},
        **problems(400, *AUTH, 404, 409, 413, 415, 422),
    },
    openapi_extra=PREVIEW_FORM,
)
async def create_preview(
    request: Request, caller: TenantCaller, session: SessionDep, settings: SettingsDep
) -> Response:
    limits = FormLimits(
        max_file_bytes=settings.max_upload_bytes,
        file_fields={"room": (1, _one("room")), "mask": (1, _one("mask"))},
    )
    form = await read_form(request, limits)
    try:
        return await run_in_threadpool(_create_preview, request, caller, session, settings, form)
    finally:
        form.close()


def _create_preview(
    request: Request, caller: Caller, session: Session, settings: Settings, form: ParsedForm
) -> Response:
    assert caller.tenant_id is not None  # TenantCaller: a tenant's key
    repo = TenantRepository(session, caller.tenant_id)
    state = request.app.state
    return run_idempotent(
        session,
        caller,
        request,
        form.digest,
        settings.idempotency_hours,
        lambda: service.create_preview(repo, state.blobs, state.celery, settings, form, caller.key_id),
    )


def _visible_preview(repo: TenantRepository, caller: Caller, preview_id: str) -> Preview:
    """The tenant's preview; for a publishable key, only one it made. Anything else: 404."""
    preview = repo.get(Preview, preview_id) if is_id(preview_id) else None
    if preview is None or (caller.kind == "publishable" and preview.api_key_id != caller.key_id):
        raise ApiError(404, "not_found", f"no preview {preview_id!r}")
    return preview


@router.get(
    "/{preview_id}",
    response_model=PreviewOut,
    summary="A preview: status, progress and, once succeeded, where its result is",
    responses=problems(*AUTH, 404),
)
def get_preview(preview_id: str, caller: TenantCaller, repo: RepoDep) -> PreviewOut:
    return PreviewOut.of(_visible_preview(repo, caller, preview_id))


@router.get(
    "/{preview_id}/result",
    summary="The painted PNG: streamed, or a 307 to a short-lived presigned URL (S3)",
    response_class=Response,
    responses={
        200: {"description": "The PNG, the room's size.", "content": {"image/png": {}}},
        307: {"description": "Redirect to a presigned URL valid for a few minutes."},
        **problems(*AUTH, 404, 409),
    },
)
def get_result(
    preview_id: str, caller: TenantCaller, repo: RepoDep, request: Request, settings: SettingsDep
) -> Response:
    preview = _visible_preview(repo, caller, preview_id)
    if preview.status != "succeeded" or not preview.result_key:
        raise ApiError(
            409, "preview_not_ready", f"preview {preview_id} is {preview.status}; it has no result yet"
        )
    blobs: BlobStore = request.app.state.blobs
    headers = {"Cache-Control": "private, no-store"}
    try:
        if isinstance(blobs, LocalBlobStore):
            chunks = blobs.open(preview.result_key)
            return StreamingResponse(chunks, media_type="image/png", headers=headers)
        url = blobs.presign(preview.result_key, settings.presign_seconds)
    except BlobNotFound as exc:
        log.error("preview %s: result blob %s is missing", preview_id, preview.result_key)
        raise ApiError(404, "not_found", f"the result of preview {preview_id} is gone") from exc
    return RedirectResponse(url, status_code=307, headers=headers)
