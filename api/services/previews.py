"""Previews: check the room and the mask, store them, queue the painting; find one; its result."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from functools import partial
from typing import Any

from celery import Celery
from pydantic import ValidationError

from api.deps import Caller, is_id
from api.image_checks import (
    ACCEPTED_FORMATS,
    MASK_FORMATS,
    ImageLimits,
    decode_image,
    decode_mask,
    png_bytes,
    read_headers,
)
from api.multipart import ParsedForm
from api.problems import NOT_FOUND, PREVIEW_NOT_READY, SUBJECT_NOT_READY, VALIDATION_ERROR, invalid
from api.renditions import ImageFormat, PreviewGone, Rendition, rendition_download
from api.schemas import MAX_SEED, PreviewForm
from api.services import Done
from api.services.quotas import check_preview_quota, check_steps
from api.services.subjects import drop_blobs, subject_kept
from api.transaction import after_rollback
from core import previews
from core.blob_keys import preview_mask_key, preview_prefix, preview_room_key
from core.blobstore import BlobNotFound, BlobStore, Download
from core.clock import utcnow
from core.dispatch import send
from core.ids import new_id
from core.job_state import ACTIVE, new_job, request_cancel
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Job, Preview, Subject

log = logging.getLogger("roomfit.api.previews")
KEEP_BEFORE_EXPIRY = timedelta(hours=1)
"""A rendition of a preview that retention may delete within this long (a sweep's pass, clocks that
differ between machines) is sent from memory, not kept: the sweep drops the blobs before its rows."""


def create_preview(
    # alike: the typed arguments of every upload service and route (subjects), declarations only
    repo: TenantRepository,
    blobs: BlobStore,
    celery: Celery,
    settings: Settings,
    form: ParsedForm,
    caller: Caller,
) -> Done[Preview]:
    """Cheap checks first (fields, image headers, the subject paintable in the mode asked, quotas),
    then the images, one at a time; the caller's key is remembered so a publishable key reads only
    the previews it made. The mode recorded is what the subject allows now (`core.previews`)."""
    publishable = caller.kind == "publishable"
    tenant_id = repo.tenant_id
    raw = {k: form.text(k) for k in ("subject_id", "seed", "steps", "guidance_scale", "mode")}
    try:
        params = PreviewForm.model_validate({k: v for k, v in raw.items() if v not in (None, "")})
    except ValidationError as exc:
        raise invalid(exc) from exc
    rooms, masks = form.files.get("room", []), form.files.get("mask", [])
    if not rooms:
        raise VALIDATION_ERROR("room: a room photo is required")
    if not masks:
        raise VALIDATION_ERROR("mask: a mask PNG is required")
    # The images' headers (type, size, shape, pixels together) cost nothing to read: first.
    room_header, mask_header = read_headers(
        ImageLimits.of(settings), [(rooms[0], "room", ACCEPTED_FORMATS), (masks[0], "mask", MASK_FORMATS)]
    )
    subject = repo.get(Subject, params.subject_id) if is_id(params.subject_id) else None
    if subject is None:
        raise NOT_FOUND(f"no subject {params.subject_id!r}")
    mode = previews.paint_mode(params.mode, subject)
    if mode is None:
        raise SUBJECT_NOT_READY(_not_ready(subject, params.mode))
    check_steps(params.steps, settings, publishable)
    check_preview_quota(repo, settings, caller.key_id, publishable)
    room = decode_image(room_header)  # one image at a time: the room's pixels are freed here
    mask = decode_mask(mask_header, size=room.size)

    preview_id = new_id("prv")
    room_bytes, room_ext, room_type = room.stored()
    # room.png, or room.jpg / room.webp when the room is stored as sent.
    room_key = preview_room_key(tenant_id, preview_id, room_ext)
    preview = previews.new_preview(
        id=preview_id,
        subject_id=subject.id,
        api_key_id=caller.key_id,
        seed=params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1),
        steps=params.steps,
        guidance_scale=params.guidance_scale,
        width=room.size[0],
        height=room.size[1],
        room_key=room_key,
        mask_key=preview_mask_key(tenant_id, preview_id),
        requested_mode=params.mode,
    )
    # What it will be painted with if the subject is unchanged by then; the worker decides again.
    previews.record_mode(preview, mode, subject.adapter_version)
    # A commit that fails after the images are stored leaves no row naming them: remove them then too.
    after_rollback(repo.session, lambda: drop_blobs(blobs, preview_prefix(tenant_id, preview_id)))
    try:
        blobs.put(preview.room_key, room_bytes, room_type)
        blobs.put(preview.mask_key, png_bytes(mask), "image/png")
        job = new_job(tenant_id, "preview", subject_id=subject.id, preview_id=preview.id)
        preview.job_id = job.id
        repo.add(preview)
        repo.add(job)
        # The subject may have been deleted while the images were decoded: 404, its row never lands.
        with subject_kept(repo, subject.id):
            repo.session.flush()
    except BaseException:
        drop_blobs(blobs, preview_prefix(tenant_id, preview.id))
        raise
    return Done(preview, [lambda: send(repo.session, celery, job)])


def delete_preview(repo: TenantRepository, caller: Caller, blobs: BlobStore, preview_id: str) -> Done[None]:
    """The row now (cancelling its job if it is queued or painting: a worker that finishes it anyway
    drops the result); the room photo, mask, result and renditions once the row is gone for good.
    Who may: whoever may read it (`visible_preview`). A publishable key is public, but a preview's
    id is known only to the page that made it (80 random bits), which could read its photo anyway."""
    preview = visible_preview(repo, caller, preview_id)
    job = repo.get(Job, preview.job_id) if preview.job_id else None
    if job is not None and job.status in ACTIVE:
        request_cancel(repo.session, job)
    repo.delete(preview)
    repo.session.flush()
    prefix = preview_prefix(repo.tenant_id, preview.id)
    return Done(None, [lambda: drop_blobs(blobs, prefix)])


def _not_ready(subject: Subject, requested: str) -> str:
    """Why `subject` cannot be painted as `requested` (safe to show a shopper)."""
    if requested == "adapter":
        return f"subject {subject.id} is {subject.status}; mode adapter needs a ready subject"
    return (
        f"subject {subject.id} is {subject.status}; previews need a ready subject, or one in "
        "training (zero-shot) once its photos are annotated"
    )


def visible_preview(repo: TenantRepository, caller: Caller, preview_id: str) -> Preview:
    """The tenant's preview; for a publishable key, only one it made. Anything else: 404."""
    return visible(caller, repo.get(Preview, preview_id) if is_id(preview_id) else None, preview_id)


def visible(caller: Caller, preview: Any, preview_id: str) -> Any:
    """The rule of `visible_preview` for a row already read (api.deps.read_with_key)."""
    if preview is None or (caller.kind == "publishable" and preview.api_key_id != caller.key_id):
        raise NOT_FOUND(f"no preview {preview_id!r}")
    return preview


def result(
    # alike: the typed arguments of a service and its route, declarations only
    repo: TenantRepository,
    caller: Caller,
    blobs: BlobStore,
    settings: Settings,
    preview_id: str,
    image_format: ImageFormat = "png",
    max_side: int | None = None,
) -> tuple[Download, str]:
    """How the caller gets the painted result, and its media type: streamed, or from a presigned URL
    (the store decides). PNG at its own size is the result as stored, byte for byte; any other format
    or a smaller size is a display rendition, encoded on the first request and kept (`api.renditions`)."""
    preview = visible_preview(repo, caller, preview_id)
    if preview.status != "succeeded" or not preview.result_key:
        raise PREVIEW_NOT_READY(f"preview {preview_id} is {preview.status}; it has no result yet")
    # The result has the room's size (the contract), so the row says what "never upscale" means.
    wanted = Rendition.of(image_format, max_side, (preview.width, preview.height))
    expiry = previews.expires_at(preview, settings.preview_retention_days)
    keep = expiry is None or expiry - KEEP_BEFORE_EXPIRY > utcnow()
    try:
        if wanted.is_result:
            download = blobs.download(preview.result_key, settings.presign_seconds)
        else:
            still_there = partial(repo.exists_now, Preview, preview.id)  # a transaction of its own
            download = rendition_download(
                blobs, preview.result_key, wanted, settings, still_there=still_there, keep=keep
            )
    except PreviewGone as exc:
        # Deleted while it was encoded: answered as a GET after the deletion is; nothing left behind.
        drop_blobs(blobs, preview_prefix(repo.tenant_id, preview.id))
        raise NOT_FOUND(f"no preview {preview_id!r}") from exc
    except BlobNotFound as exc:
        log.error("preview %s: result blob %s is missing", preview_id, preview.result_key)
        raise NOT_FOUND(f"the result of preview {preview_id} is gone") from exc
    return download, wanted.format.media_type
