"""Subjects: create from checked photos, delete with everything they own, train again."""

from __future__ import annotations

import logging

from celery import Celery
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from api.idempotency import Outcome
from api.problems import ApiError, invalid
from api.schemas import SubjectForm, SubjectOut
from api.uploads import CheckedImage, ParsedForm, check_image
from core import boxes as core_boxes
from core import subjects
from core.blob_keys import photo_key, preview_prefix, subject_prefix
from core.blobstore import BlobStore
from core.dispatch import send
from core.job_state import ACTIVE, new_job, request_cancel
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Subject

log = logging.getLogger("roomfit.api.subjects")

MAX_PHOTOS = 8


def not_found(subject_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no subject {subject_id!r}")


def accepted(subject: Subject) -> JSONResponse:
    return JSONResponse(
        SubjectOut.of(subject).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/subjects/{subject.id}"},
    )


def parse_boxes(raw: str | None, photos: list[CheckedImage]) -> list[list[float] | None]:
    """The `boxes` field (see core.boxes) as 422 `invalid_boxes` when it is wrong."""
    try:
        return core_boxes.parse_boxes(raw, [photo.size for photo in photos])
    except core_boxes.InvalidBoxes as exc:
        raise ApiError(422, "invalid_boxes", str(exc)) from exc


def drop_blobs(blobs: BlobStore, prefix: str) -> None:
    try:
        blobs.delete_prefix(prefix)
    except Exception:  # leftovers under an id nobody knows are harmless; say so and go on
        log.exception("could not remove blobs under %s", prefix)


def create_subject(
    repo: TenantRepository, blobs: BlobStore, celery: Celery, settings: Settings, form: ParsedForm
) -> Outcome:
    """Check every field and photo first; then store the photos, the subject and its train job."""
    tenant_id = repo.tenant_id
    try:
        fields = SubjectForm.model_validate(
            {k: form.text(k) for k in ("name", "external_id", "label") if form.text(k) is not None}
        )
    except ValidationError as exc:
        raise invalid(exc) from exc
    uploads = form.files.get("photos", [])
    if not uploads:
        raise ApiError(422, "validation_error", "photos: at least one photo is required")
    taken = ApiError(409, "external_id_taken", f"a subject with external_id {fields.external_id!r} exists")
    if fields.external_id and repo.subject_by_external_id(fields.external_id) is not None:
        raise taken
    photos = [
        check_image(upload, what=f"photo {i}", max_pixels=settings.max_pixels)
        for i, upload in enumerate(uploads)
    ]
    boxes = parse_boxes(form.text("boxes"), photos)

    subject = subjects.new_subject(fields.name, fields.external_id, fields.label)
    repo.add(subject)
    try:
        for i, (photo, box) in enumerate(zip(photos, boxes, strict=True)):
            # As sent when already upright RGB, else normalised PNG (see api.uploads).
            data, ext, content_type = photo.stored()
            key = photo_key(tenant_id, subject.id, i, ext)
            blobs.put(key, data, content_type)
            repo.add(subjects.new_photo(subject, i, key, photo.size, box))
        job = new_job(
            tenant_id,
            "train",
            subject_id=subject.id,
            params={"animated_photos": [i for i, p in enumerate(photos) if p.animated]},
        )
        repo.add(job)
        repo.session.flush()
    except IntegrityError as exc:  # the same external_id created concurrently
        drop_blobs(blobs, subject_prefix(tenant_id, subject.id))
        raise taken from exc
    except BaseException:
        drop_blobs(blobs, subject_prefix(tenant_id, subject.id))
        raise
    return Outcome(accepted(subject), [lambda: send(repo.session, celery, job)])


def delete_subject(repo: TenantRepository, blobs: BlobStore, subject_id: str) -> None:
    """Rows first (cancelling its jobs: a running worker stops at its next heartbeat), then blobs."""
    subject = repo.get(Subject, subject_id)
    if subject is None:
        raise not_found(subject_id)
    session = repo.session
    for job in repo.jobs_of_subject(subject_id):
        if job.status in ACTIVE:
            request_cancel(session, job)
    previews = list(repo.previews_of_subject(subject_id))
    for preview in previews:
        repo.delete(preview)
    session.flush()
    repo.delete(subject)
    session.commit()
    drop_blobs(blobs, subject_prefix(repo.tenant_id, subject_id))
    for preview in previews:
        drop_blobs(blobs, preview_prefix(repo.tenant_id, preview.id))


def train_again(repo: TenantRepository, celery: Celery, subject_id: str) -> Outcome:
    subject = repo.get(Subject, subject_id)
    if subject is None:
        raise not_found(subject_id)
    busy = [j for j in repo.jobs_of_subject(subject_id) if j.kind == "train" and j.status in ACTIVE]
    if busy:
        raise ApiError(
            409, "subject_busy", f"subject {subject_id} is already queued or training ({busy[0].id})"
        )
    subjects.reset_for_training(subject)
    job = new_job(repo.tenant_id, "train", subject_id=subject.id)
    repo.add(job)
    repo.session.flush()
    return Outcome(accepted(subject), [lambda: send(repo.session, celery, job)])
