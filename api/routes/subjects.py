"""`/v1/subjects`: create (upload photos, queue training), list, read, delete, train again.

HTTP only; the rules are in `api.services.subjects`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import BlobsDep, CeleryDep, RepoDep, SecretCaller, SettingsDep, TenantCaller
from api.idempotency import Outcome
from api.multipart import FormLimits
from api.openapi import AUTH, IDEMPOTENT_POST, LOCATION, SUBJECT_FORM, problems
from api.posts import PostDep, answer
from api.problems import TOO_MANY_PHOTOS
from api.schemas import SUBJECT_STATUSES, SubjectOut, SubjectPage, SubjectStatus, SubjectStatusOut
from api.services import Done
from api.services import subjects as service
from api.transaction import after_commit
from core.tables import Subject

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
MAX_PHOTOS = service.MAX_PHOTOS


def _accepted(done: Done[Subject]) -> Outcome:
    return answer(done, SubjectOut.of(done.row), status=202, location=f"/v1/subjects/{done.row.id}")


# alike: POST /v1/previews is declared the same way; the decorator is this route's own OpenAPI entry
@router.post(
    "",
    status_code=202,
    response_model=SubjectOut,
    operation_id="create_subject",
    summary="Create a subject from 1-8 product photos and queue its training",
    responses={
        202: {"description": "Accepted; `Location` names the subject.", "headers": LOCATION},
        **problems(400, *AUTH, 409, 413, 415, 422),
    },
    openapi_extra=SUBJECT_FORM,
)
async def create_subject(
    # alike: the typed dependencies of every upload route (POST /v1/previews, the services)
    _: SecretCaller,
    post: PostDep,
    repo: RepoDep,
    blobs: BlobsDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Response:
    photos = FormLimits(
        max_file_bytes=settings.max_upload_bytes,
        file_fields={"photos": (MAX_PHOTOS, TOO_MANY_PHOTOS(f"at most {MAX_PHOTOS} photos per subject"))},
    )
    return await post.run(
        lambda form: _accepted(service.create_subject(repo, blobs, celery, settings, form)), form=photos
    )


@router.get(
    "",
    response_model=SubjectPage,
    operation_id="list_subjects",
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
    operation_id="get_subject",
    summary="A subject (publishable keys: its status fields only)",
    responses=problems(*AUTH, 404),
)
def get_subject(subject_id: str, caller: TenantCaller, repo: RepoDep) -> Any:
    subject = service.find_subject(repo, subject_id)
    if caller.kind == "publishable":
        return SubjectStatusOut.of(subject)
    return SubjectOut.of(subject)


@router.delete(
    "/{subject_id}",
    status_code=204,
    operation_id="delete_subject",
    summary="Delete a subject with its photos, adapters and previews (cancels its training)",
    responses={204: {"description": "Deleted."}, **problems(*AUTH, 404)},
)
def delete_subject(subject_id: str, _: SecretCaller, repo: RepoDep, blobs: BlobsDep) -> Response:
    done = service.delete_subject(repo, blobs, subject_id)
    after_commit(repo.session, done.after_commit)
    return Response(status_code=204)


@router.post(
    "/{subject_id}/train",
    status_code=202,
    response_model=SubjectOut,
    operation_id="train_subject",
    summary="Train the subject again (a new adapter version)",
    responses={
        202: {"description": "Accepted; `Location` names the subject.", "headers": LOCATION},
        **problems(*AUTH, 404, 409, 413, 422),
    },
    openapi_extra=IDEMPOTENT_POST,
)
async def train_again(
    subject_id: str, _: SecretCaller, post: PostDep, repo: RepoDep, celery: CeleryDep, settings: SettingsDep
) -> Response:
    return await post.run(lambda _: _accepted(service.train_again(repo, celery, settings, subject_id)))
