"""`/v1/previews`: paint a subject into a room photo (with its adapter once ready, zero-shot while it
trains); read the preview; fetch its result.

HTTP only; the rules are in `api.services.previews`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from api.deps import BlobsDep, CeleryDep, Keyed, RepoDep, SettingsDep, TenantCaller, read_with_key
from api.idempotency import Outcome
from api.multipart import FormLimits, ParsedForm
from api.openapi import AUTH, LOCATION, PREVIEW_FORM, problems
from api.posts import PostDep, answer
from api.problems import VALIDATION_ERROR
from api.schemas import PreviewOut
from api.services import previews as service
from core.blobstore import Stream
from core.tables import Preview

router = APIRouter(prefix="/v1/previews", tags=["previews"])
# The hot read (every open widget asks again and again): key and row in one query, no thread pool.
PreviewRead = Annotated[Keyed, Depends(read_with_key(Preview, "preview_id", ("secret", "publishable")))]
PNG = {"type": "string", "format": "binary"}
URL = {"type": "string", "format": "uri"}


@router.post(
    "",
    status_code=202,
    response_model=PreviewOut,
    operation_id="create_preview",
    summary="Paint a subject into a room photo where the mask says: its adapter, or zero-shot in training",
    responses={
        202: {"description": "Accepted; `Location` names the preview.", "headers": LOCATION},
        **problems(400, *AUTH, 404, 409, 413, 415, 422),
    },
    openapi_extra=PREVIEW_FORM,
)
async def create_preview(
    caller: TenantCaller,
    post: PostDep,
    repo: RepoDep,
    blobs: BlobsDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Response:
    one = {name: (1, VALIDATION_ERROR(f"{name}: send exactly one file")) for name in ("room", "mask")}
    limits = FormLimits(max_file_bytes=settings.max_upload_bytes, file_fields=one)

    def produce(form: ParsedForm) -> Outcome:
        done = service.create_preview(repo, blobs, celery, settings, form, caller)
        return answer(done, PreviewOut.of(done.row), status=202, location=f"/v1/previews/{done.row.id}")

    return await post.run(produce, form=limits)


@router.get(
    "/{preview_id}",
    response_model=PreviewOut,
    operation_id="get_preview",
    summary="A preview: status, progress and, once succeeded, where its result is",
    responses=problems(*AUTH, 404),
)
async def get_preview(preview_id: str, read: PreviewRead) -> PreviewOut:
    return PreviewOut.of(service.visible(read.caller, read.row, preview_id))


@router.get(
    "/{preview_id}/result",
    operation_id="get_preview_result",
    summary="The painted PNG: streamed, or a 307 to a short-lived presigned URL (S3)",
    response_class=Response,
    responses={
        200: {"description": "The PNG, the room's size.", "content": {"image/png": {"schema": PNG}}},
        307: {
            "description": "Redirect to a presigned URL valid for a few minutes (blob store on S3); "
            "fetch it without the `Authorization` header.",
            "headers": {"Location": {"description": "the presigned URL", "schema": URL, "required": True}},
        },
        **problems(*AUTH, 404, 409),
    },
)
def get_result(
    preview_id: str, caller: TenantCaller, repo: RepoDep, blobs: BlobsDep, settings: SettingsDep
) -> Response:
    download = service.result(repo, caller, blobs, settings, preview_id)
    headers = {"Cache-Control": "private, no-store"}
    if isinstance(download, Stream):
        return StreamingResponse(download.chunks, media_type="image/png", headers=headers)
    return RedirectResponse(download.url, status_code=307, headers=headers)
