"""`/v1/previews`: paint a ready subject into a room photo; read the preview; fetch its result."""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import Caller, RepoDep, SessionDep, SettingsDep, TenantCaller, is_id
from api.idempotency import Outcome, run_idempotent
from api.openapi import AUTH, PREVIEW_FORM, problems
from api.problems import ApiError, invalid
from api.schemas import MAX_SEED, PreviewForm, PreviewOut
from api.uploads import FormLimits, ParsedForm, check_image, check_mask, png_bytes, read_form
from core.blob_keys import preview_mask_key, preview_prefix, preview_room_key
from core.blobstore import BlobNotFound, BlobStore, LocalBlobStore
from core.ids import new_id
from core.jobs import new_job, send
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Preview, Subject

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
    assert caller.tenant_id is not None
    tenant_id = caller.tenant_id
    repo = TenantRepository(session, tenant_id)
    blobs: BlobStore = request.app.state.blobs

    def produce() -> Outcome:
        raw = {k: form.text(k) for k in ("subject_id", "seed", "steps", "guidance_scale")}
        try:
            params = PreviewForm.model_validate({k: v for k, v in raw.items() if v not in (None, "")})
        except ValidationError as exc:
            raise invalid(exc) from exc
        subject = repo.get(Subject, params.subject_id) if is_id(params.subject_id) else None
        if subject is None:
            raise ApiError(404, "not_found", f"no subject {params.subject_id!r}")
        if subject.status != "ready" or not subject.adapter_key:
            raise ApiError(
                409,
                "subject_not_ready",
                f"subject {subject.id} is {subject.status}; previews need a ready subject",
            )
        rooms, masks = form.files.get("room", []), form.files.get("mask", [])
        if not rooms:
            raise ApiError(422, "validation_error", "room: a room photo is required")
        if not masks:
            raise ApiError(422, "validation_error", "mask: a mask PNG is required")
        room = check_image(rooms[0], what="room", max_pixels=settings.max_pixels)
        mask = check_mask(masks[0], size=room.size, max_pixels=settings.max_pixels)

        preview_id = new_id("prv")
        room_bytes, room_ext, room_type = room.stored()
        # The layout's room.png, or room.jpg / room.webp when the room is stored as sent.
        room_key = preview_room_key(tenant_id, preview_id)
        if room_ext != "png":
            room_key = f"{preview_prefix(tenant_id, preview_id)}room.{room_ext}"
        preview = Preview(
            id=preview_id,
            subject_id=subject.id,
            api_key_id=caller.key_id,
            status="queued",
            progress=0.0,
            seed=params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1),
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            width=room.size[0],
            height=room.size[1],
            room_key=room_key,
            mask_key=preview_mask_key(tenant_id, preview_id),
        )
        try:
            blobs.put(preview.room_key, room_bytes, room_type)
            blobs.put(preview.mask_key, png_bytes(mask), "image/png")
            job = new_job(tenant_id, "preview", subject_id=subject.id, preview_id=preview.id)
            preview.job_id = job.id
            repo.add(preview)
            repo.add(job)
            session.flush()
        except BaseException:
            _drop(blobs, preview_prefix(tenant_id, preview.id))
            raise
        response = JSONResponse(
            PreviewOut.of(preview).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/previews/{preview.id}"},
        )
        celery = request.app.state.celery
        return Outcome(response, [lambda: send(session, celery, job)])

    return run_idempotent(session, caller, request, form.digest, settings.idempotency_hours, produce)


def _drop(blobs: BlobStore, prefix: str) -> None:
    try:
        blobs.delete_prefix(prefix)
    except Exception:
        log.exception("could not remove blobs under %s", prefix)


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
