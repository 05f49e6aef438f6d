"""Previews: check the room and the mask, store them, queue the painting."""

from __future__ import annotations

import secrets

from celery import Celery
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import is_id
from api.idempotency import Outcome
from api.problems import ApiError, invalid
from api.schemas import MAX_SEED, PreviewForm, PreviewOut
from api.services.subjects import drop_blobs
from api.uploads import ParsedForm, check_image, check_mask, png_bytes
from core import previews
from core.blob_keys import preview_mask_key, preview_prefix, preview_room_key
from core.blobstore import BlobStore
from core.dispatch import send
from core.ids import new_id
from core.job_state import new_job
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Subject


def create_preview(
    repo: TenantRepository,
    blobs: BlobStore,
    celery: Celery,
    settings: Settings,
    form: ParsedForm,
    key_id: str,
) -> Outcome:
    """Cheap checks first (fields, subject ready), then the images; `key_id` is remembered so a
    publishable key reads only the previews it made."""
    tenant_id = repo.tenant_id
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
    # room.png, or room.jpg / room.webp when the room is stored as sent.
    room_key = preview_room_key(tenant_id, preview_id, room_ext)
    preview = previews.new_preview(
        id=preview_id,
        subject_id=subject.id,
        api_key_id=key_id,
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
        repo.session.flush()
    except BaseException:
        drop_blobs(blobs, preview_prefix(tenant_id, preview.id))
        raise
    response = JSONResponse(
        PreviewOut.of(preview).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/previews/{preview.id}"},
    )
    return Outcome(response, [lambda: send(repo.session, celery, job)])
