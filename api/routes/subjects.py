"""`/v1/subjects`: create (upload photos, queue training), list, read, delete, train again.

HTTP only; the rules are in `api.services.subjects`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import Caller, RepoDep, SecretCaller, SessionDep, SettingsDep, TenantCaller, is_id
from api.idempotency import body_digest, read_small_body, run_idempotent
from api.openapi import AUTH, IDEMPOTENT_POST, SUBJECT_FORM, problems
from api.problems import ApiError
from api.schemas import SUBJECT_STATUSES, SubjectOut, SubjectPage, SubjectStatus, SubjectStatusOut
from api.services import subjects as service
from api.uploads import FormLimits, ParsedForm, read_form
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Subject

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
MAX_PHOTOS = service.MAX_PHOTOS


def _repo(session: Session, caller: Caller) -> TenantRepository:
    assert caller.tenant_id is not None  # SecretCaller: a tenant's key
    return TenantRepository(session, caller.tenant_id)


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


def _create_subject(
    request: Request, caller: Caller, session: Session, settings: Settings, form: ParsedForm
) -> Response:
    state = request.app.state
    repo = _repo(session, caller)
    return run_idempotent(
        session,
        caller,
        request,
        form.digest,
        settings.idempotency_hours,
        lambda: service.create_subject(repo, state.blobs, state.celery, settings, form),
    )


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
        raise service.not_found(subject_id)
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
    if not is_id(subject_id):
        raise service.not_found(subject_id)
    service.delete_subject(repo, request.app.state.blobs, subject_id)
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
    if not is_id(subject_id):
        raise service.not_found(subject_id)
    repo = _repo(session, caller)
    celery = request.app.state.celery
    return run_idempotent(
        session,
        caller,
        request,
        digest,
        settings.idempotency_hours,
        lambda: service.train_again(repo, celery, subject_id),
    )
