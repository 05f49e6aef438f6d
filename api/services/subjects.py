"""Subjects: create from checked photos, find, delete with everything they own, train again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from api.deps import is_id
from api.image_checks import ACCEPTED_FORMATS, ImageHeader, ImageLimits, decode_image, read_headers
from api.multipart import ParsedForm
from api.problems import EXTERNAL_ID_TAKEN, INVALID_BOXES, NOT_FOUND, SUBJECT_BUSY, VALIDATION_ERROR, invalid
from api.schemas import SubjectForm
from api.services import Done
from api.services.quotas import check_training_quota
from api.transaction import after_rollback
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


def find_subject(repo: TenantRepository, subject_id: str) -> Subject:
    """The tenant's subject; 404 `not_found` for anything else (no query for what is not an id)."""
    subject = repo.get(Subject, subject_id) if is_id(subject_id) else None
    if subject is None:
        raise NOT_FOUND(f"no subject {subject_id!r}")
    return subject


def parse_boxes(raw: str | None, sizes: list[tuple[int, int]]) -> list[list[float] | None]:
    """The `boxes` field (see core.boxes) for photos of these sizes, as 422 `invalid_boxes` when wrong."""
    try:
        return core_boxes.parse_boxes(raw, sizes)
    except core_boxes.InvalidBoxes as exc:
        raise INVALID_BOXES(str(exc)) from exc


@contextmanager
def subject_kept(repo: TenantRepository, subject_id: str) -> Iterator[None]:
    """Around a flush that writes rows of a subject read earlier in the request: when it fails
    because the subject was deleted meanwhile (a preview's or job's foreign key: IntegrityError; its
    own update: StaleDataError), 404 `not_found`, as a request arriving after the deletion gets."""
    try:
        yield
    except (IntegrityError, StaleDataError) as exc:
        if repo.exists_now(Subject, subject_id):
            raise  # something else: not ours to explain
        raise NOT_FOUND(f"no subject {subject_id!r}") from exc


def drop_blobs(blobs: BlobStore, prefix: str) -> None:
    try:
        blobs.delete_prefix(prefix)
    except Exception:  # leftovers under an id nobody knows are harmless; say so and go on
        log.exception("could not remove blobs under %s", prefix)


def create_subject(
    repo: TenantRepository, blobs: BlobStore, celery: Celery, settings: Settings, form: ParsedForm
) -> Done[Subject]:
    """Check every field and every photo's header first; then decode, check and store the photos one
    at a time, the subject and its train job. On any failure, what was stored is removed."""
    tenant_id = repo.tenant_id
    try:
        fields = SubjectForm.model_validate(
            {k: form.text(k) for k in ("name", "external_id", "label") if form.text(k) is not None}
        )
    except ValidationError as exc:
        raise invalid(exc) from exc
    uploads = form.files.get("photos", [])
    if not uploads:
        raise VALIDATION_ERROR("photos: at least one photo is required")
    taken = EXTERNAL_ID_TAKEN(f"a subject with external_id {fields.external_id!r} exists")
    if fields.external_id and repo.subject_by_external_id(fields.external_id) is not None:
        raise taken
    check_training_quota(repo, settings)
    # Every header before any pixel is decoded: type, size, shape, the request's pixels together.
    headers = read_headers(
        ImageLimits.of(settings),
        [(upload, f"photo {i}", ACCEPTED_FORMATS) for i, upload in enumerate(uploads)],
    )
    raw_boxes = form.text("boxes")
    predicted = [header.oriented_size for header in headers]
    # Boxes are checked against the sizes the headers promise; a PNG may turn after its pixels.
    settled = all(header.orientation_settled for header in headers)
    boxes = parse_boxes(raw_boxes, predicted) if settled else None

    subject = subjects.new_subject(fields.name, fields.external_id, fields.label)
    repo.add(subject)
    # A commit that fails after the photos are stored leaves no row naming them: remove them then too.
    after_rollback(repo.session, lambda: drop_blobs(blobs, subject_prefix(tenant_id, subject.id)))
    try:
        # One photo at a time: decoded, checked, stored and freed before the next is decoded.
        stored = [_store_photo(blobs, subject, i, header) for i, header in enumerate(headers)]
        sizes = [size for size, _, _ in stored]
        if boxes is None or sizes != predicted:
            boxes = parse_boxes(raw_boxes, sizes)
        for i, ((size, key, _), box) in enumerate(zip(stored, boxes, strict=True)):
            repo.add(subjects.new_photo(subject, i, key, size, box))
        job = new_job(
            tenant_id,
            "train",
            subject_id=subject.id,
            params={"animated_photos": [i for i, (_, _, animated) in enumerate(stored) if animated]},
        )
        repo.add(job)
        repo.session.flush()
    except IntegrityError as exc:  # the same external_id created concurrently
        drop_blobs(blobs, subject_prefix(tenant_id, subject.id))
        raise taken from exc
    except BaseException:
        drop_blobs(blobs, subject_prefix(tenant_id, subject.id))
        raise
    return Done(subject, [lambda: send(repo.session, celery, job)])


def _store_photo(
    blobs: BlobStore, subject: Subject, index: int, header: ImageHeader
) -> tuple[tuple[int, int], str, bool]:
    """Decode and check one photo, store it (as sent when already upright RGB, else the normalised
    PNG: see api.image_checks) and let its pixels go: (size after orientation, blob key, animated)."""
    photo = decode_image(header)
    data, ext, content_type = photo.stored()
    key = photo_key(subject.tenant_id, subject.id, index, ext)  # the tenant is stamped by repo.add
    blobs.put(key, data, content_type)
    return photo.size, key, photo.animated


def delete_subject(repo: TenantRepository, blobs: BlobStore, subject_id: str) -> Done[None]:
    """Rows now (cancelling its jobs: a running worker stops at its next heartbeat); its blobs and
    its previews' once the rows are gone for good."""
    subject = find_subject(repo, subject_id)
    # Locked first: a preview of it flushed but not yet committed holds the foreign key's share lock
    # (PostgreSQL; on SQLite, the database's write lock, which this no-op write waits for), so this
    # waits for that commit and the list below has the preview; one not yet flushed waits for this
    # delete and answers 404. Listed before the lock, such a preview was removed by the cascade but
    # its room photo never, as no prefix below named it.
    repo.session.execute(update(Subject).where(Subject.id == subject.id).values(name=Subject.name))
    repo.session.refresh(subject, with_for_update=True)
    for job in repo.jobs_of_subject(subject.id):
        if job.status in ACTIVE:
            request_cancel(repo.session, job)
    previews = list(repo.previews_of_subject(subject.id))
    for preview in previews:
        repo.delete(preview)
    repo.session.flush()
    repo.delete(subject)
    repo.session.flush()
    prefixes = [subject_prefix(repo.tenant_id, subject.id)]
    prefixes += [preview_prefix(repo.tenant_id, preview.id) for preview in previews]
    return Done(None, [lambda prefix=prefix: drop_blobs(blobs, prefix) for prefix in prefixes])


def train_again(repo: TenantRepository, celery: Celery, settings: Settings, subject_id: str) -> Done[Subject]:
    subject = find_subject(repo, subject_id)
    busy = [j for j in repo.jobs_of_subject(subject.id) if j.kind == "train" and j.status in ACTIVE]
    if busy:
        raise SUBJECT_BUSY(f"subject {subject.id} is already queued or training ({busy[0].id})")
    check_training_quota(repo, settings)
    subjects.reset_for_training(subject)
    job = new_job(repo.tenant_id, "train", subject_id=subject.id)
    repo.add(job)
    with subject_kept(repo, subject.id):  # deleted since it was read: 404, not 500
        repo.session.flush()
    return Done(subject, [lambda: send(repo.session, celery, job)])
