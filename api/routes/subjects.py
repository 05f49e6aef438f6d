"""`/v1/subjects`: create (upload photos, queue training), list, read, delete, train again."""

from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Caller, RepoDep, SecretCaller, SessionDep, SettingsDep, TenantCaller, is_id
from api.idempotency import Outcome, body_digest, read_small_body, run_idempotent
from api.openapi import AUTH, IDEMPOTENT_POST, SUBJECT_FORM, problems
from api.problems import ApiError, invalid
from api.schemas import (
    SUBJECT_STATUSES,
    SubjectForm,
    SubjectOut,
    SubjectPage,
    SubjectStatus,
    SubjectStatusOut,
)
from api.uploads import CheckedImage, FormLimits, ParsedForm, check_image, read_form
from core.blob_keys import photo_key, preview_prefix, subject_prefix
from core.blobstore import BlobStore
from core.ids import new_id
from core.jobs import ACTIVE_STATUSES, new_job, request_cancel, send
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Subject, SubjectPhoto

log = logging.getLogger("roomfit.api.subjects")
router = APIRouter(prefix="/v1/subjects", tags=["subjects"])

MAX_PHOTOS = 8
SubjectId = Annotated[str, "subject id"]


def _not_found(subject_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no subject {subject_id!r}")


def _created(subject: Subject, status: int = 202) -> JSONResponse:
    return JSONResponse(
        SubjectOut.of(subject).model_dump(mode="json"),
        status_code=status,
        headers={"Location": f"/v1/subjects/{subject.id}"},
    )


@router.post(
    "",
    status_code=202,
    response_model=SubjectOut,
    summary="Create a subject from 1-8 product photos and queue its training",
    responses={
        202: {"description": "Accepted; `Location` names the subject."},
        **problems(400, *AUTH, 409, 413, 415, 422),
    },
    openapi_extra=SUBJECT_FORM,
)
async def create_subject(
    request: Request, caller: SecretCaller, session: SessionDep, settings: SettingsDep
) -> Response:
    limits = FormLimits(
        max_file_bytes=settings.max_upload_bytes,
        file_fields={
            "photos": (
                MAX_PHOTOS,
                ApiError(422, "too_many_photos", f"at most {MAX_PHOTOS} photos per subject"),
            )
        },
    )
    form = await read_form(request, limits)
    try:
        return await run_in_threadpool(_create_subject, request, caller, session, settings, form)
    finally:
        form.close()


def _parse_boxes(raw: str | None, photos: list[CheckedImage]) -> list[list[float] | None]:
    if raw is None or not raw.strip():
        return [None] * len(photos)
    try:
        boxes = json.loads(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid_boxes", "boxes is not valid JSON") from exc
    if not isinstance(boxes, list) or len(boxes) != len(photos):
        raise ApiError(
            422, "invalid_boxes", f"boxes must be a JSON list of {len(photos)} entries, one per photo"
        )
    out: list[list[float] | None] = []
    for i, (box, photo) in enumerate(zip(boxes, photos, strict=True)):
        if box is None:
            out.append(None)
            continue
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box
            )
        ):
            raise ApiError(422, "invalid_boxes", f"box {i} must be [x0, y0, x1, y1] in pixels, or null")
        x0, y0, x1, y1 = (float(v) for v in box)
        width, height = photo.size
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ApiError(
                422,
                "invalid_boxes",
                f"box {i} {box} is not inside photo {i} ({width}x{height}) with x0<x1, y0<y1",
            )
        out.append([x0, y0, x1, y1])
    return out


def _create_subject(
    request: Request, caller: Caller, session: Session, settings: Settings, form: ParsedForm
) -> Response:
    assert caller.tenant_id is not None
    repo = TenantRepository(session, caller.tenant_id)
    blobs: BlobStore = request.app.state.blobs

    def produce() -> Outcome:
        try:
            fields = SubjectForm.model_validate(
                {k: form.text(k) for k in ("name", "external_id", "label") if form.text(k) is not None}
            )
        except ValidationError as exc:
            raise invalid(exc) from exc
        uploads = form.files.get("photos", [])
        if not uploads:
            raise ApiError(422, "validation_error", "photos: at least one photo is required")
        if fields.external_id and repo.subject_by_external_id(fields.external_id) is not None:
            raise ApiError(
                409, "external_id_taken", f"a subject with external_id {fields.external_id!r} exists"
            )
        photos = [
            check_image(upload, what=f"photo {i}", max_pixels=settings.max_pixels)
            for i, upload in enumerate(uploads)
        ]
        boxes = _parse_boxes(form.text("boxes"), photos)

        subject = Subject(
            id=new_id("sub"),
            name=fields.name,
            external_id=fields.external_id,
            label=fields.label,
            status="queued",
            progress=0.0,
        )
        repo.add(subject)
        try:
            for i, (photo, box) in enumerate(zip(photos, boxes, strict=True)):
                # As sent when already upright RGB, else normalised PNG (see api.uploads).
                data, ext, content_type = photo.stored()
                key = photo_key(caller.tenant_id, subject.id, i, ext)  # type: ignore[arg-type]
                blobs.put(key, data, content_type)
                row = SubjectPhoto(
                    id=new_id("pho"),
                    subject_id=subject.id,
                    index=i,
                    blob_key=key,
                    width=photo.size[0],
                    height=photo.size[1],
                    box=box,
                    source="given" if box else None,
                )
                repo.add(row)
                subject.photos.append(row)
            job = new_job(
                caller.tenant_id,  # type: ignore[arg-type]
                "train",
                subject_id=subject.id,
                params={"animated_photos": [i for i, p in enumerate(photos) if p.animated]},
            )
            repo.add(job)
            session.flush()
        except IntegrityError as exc:
            _drop_blobs(blobs, subject_prefix(caller.tenant_id, subject.id))  # type: ignore[arg-type]
            raise ApiError(
                409, "external_id_taken", f"a subject with external_id {fields.external_id!r} exists"
            ) from exc
        except BaseException:
            _drop_blobs(blobs, subject_prefix(caller.tenant_id, subject.id))  # type: ignore[arg-type]
            raise
        celery = request.app.state.celery
        return Outcome(_created(subject), [lambda: send(session, celery, job)])

    return run_idempotent(session, caller, request, form.digest, settings.idempotency_hours, produce)


def _drop_blobs(blobs: BlobStore, prefix: str) -> None:
    try:
        blobs.delete_prefix(prefix)
    except Exception:  # leftovers under a subject id nobody knows are harmless; say so and go on
        log.exception("could not remove blobs under %s", prefix)


@router.get(
    "",
    response_model=SubjectPage,
    summary="List subjects, newest first",
    responses=problems(*AUTH, 422),
)
def list_subjects(
    _: SecretCaller,
    repo: RepoDep,
    status: Annotated[SubjectStatus | None, Query(description="only subjects in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern=r"^sub_[0-9A-Z]{26}$", description="`next_cursor` of the previous page")
    ] = None,
) -> SubjectPage:
    assert status is None or status in SUBJECT_STATUSES
    rows, next_cursor = repo.subjects_page(status=status, limit=limit, cursor=cursor)
    return SubjectPage(items=[SubjectOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{subject_id}",
    response_model=SubjectOut | SubjectStatusOut,
    summary="A subject (publishable keys: its status fields only)",
    responses=problems(*AUTH, 404),
)
def get_subject(subject_id: str, caller: TenantCaller, repo: RepoDep) -> Any:
    subject = repo.get(Subject, subject_id) if is_id(subject_id) else None
    if subject is None:
        raise _not_found(subject_id)
    if caller.kind == "publishable":
        return SubjectStatusOut.of(subject)
    return SubjectOut.of(subject)


@router.delete(
    "/{subject_id}",
    status_code=204,
    summary="Delete a subject with its photos, adapters and previews (cancels its training)",
    responses={204: {"description": "Deleted."}, **problems(*AUTH, 404)},
)
def delete_subject(subject_id: str, _: SecretCaller, repo: RepoDep, request: Request) -> Response:
    subject = repo.get(Subject, subject_id) if is_id(subject_id) else None
    if subject is None:
        raise _not_found(subject_id)
    session = repo.session
    for job in repo.jobs_of_subject(subject_id):
        if job.status in ACTIVE_STATUSES:
            request_cancel(session, job)  # a running worker stops at its next heartbeat
    previews = list(repo.previews_of_subject(subject_id))
    for preview in previews:
        repo.delete(preview)
    session.flush()
    repo.delete(subject)
    session.commit()
    blobs: BlobStore = request.app.state.blobs
    _drop_blobs(blobs, subject_prefix(repo.tenant_id, subject_id))
    for preview in previews:
        _drop_blobs(blobs, preview_prefix(repo.tenant_id, preview.id))
    return Response(status_code=204)


@router.post(
    "/{subject_id}/train",
    status_code=202,
    response_model=SubjectOut,
    summary="Train the subject again (a new adapter version)",
    responses={202: {"description": "Accepted."}, **problems(*AUTH, 404, 409, 413, 422)},
    openapi_extra=IDEMPOTENT_POST,
)
async def train_again(
    subject_id: str, request: Request, caller: SecretCaller, session: SessionDep, settings: SettingsDep
) -> Response:
    digest = body_digest(await read_small_body(request))
    return await run_in_threadpool(_train_again, subject_id, request, caller, session, settings, digest)


def _train_again(
    subject_id: str, request: Request, caller: Caller, session: Session, settings: Settings, digest: str
) -> Response:
    assert caller.tenant_id is not None
    repo = TenantRepository(session, caller.tenant_id)

    def produce() -> Outcome:
        subject = repo.get(Subject, subject_id) if is_id(subject_id) else None
        if subject is None:
            raise _not_found(subject_id)
        busy = [
            j for j in repo.jobs_of_subject(subject_id) if j.kind == "train" and j.status in ACTIVE_STATUSES
        ]
        if busy:
            raise ApiError(
                409, "subject_busy", f"subject {subject_id} is already queued or training ({busy[0].id})"
            )
        subject.status = "queued"
        subject.progress = 0.0
        subject.stage = None
        subject.error_code = None
        subject.error_message = None
        job = new_job(caller.tenant_id, "train", subject_id=subject.id)  # type: ignore[arg-type]
        repo.add(job)
        session.flush()
        celery = request.app.state.celery
        return Outcome(_created(subject), [lambda: send(session, celery, job)])

    return run_idempotent(session, caller, request, digest, settings.idempotency_hours, produce)
