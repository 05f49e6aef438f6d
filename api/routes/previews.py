"""`/v1/previews`: paint a subject into a room photo (with its adapter once ready, zero-shot while it
trains); read the preview; fetch its result; delete it.

HTTP only; the rules are in `api.services.previews`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from api.deps import BlobsDep, CeleryDep, Keyed, RepoDep, SettingsDep, TenantCaller, read_with_key
from api.idempotency import Outcome
from api.multipart import FormLimits, ParsedForm
from api.openapi import AUTH, LOCATION, PREVIEW_FORM, problems
from api.posts import PostDep, answer
from api.problems import VALIDATION_ERROR
from api.renditions import MAX_SIDE, MIN_SIDE, ImageFormat
from api.schemas import PreviewOut
from api.services import previews as service
from api.transaction import after_commit
from core.blobstore import Stream
from core.tables import Preview

router = APIRouter(prefix="/v1/previews", tags=["previews"])
# The hot read (every open widget asks again and again): key and row in one query, no thread pool.
PreviewRead = Annotated[Keyed, Depends(read_with_key(Preview, "preview_id", ("secret", "publishable")))]
BINARY = {"type": "string", "format": "binary"}
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
        out = PreviewOut.of(done.row, settings.preview_retention_days)
        return answer(done, out, status=202, location=f"/v1/previews/{done.row.id}")

    return await post.run(produce, form=limits)


@router.get(
    "/{preview_id}",
    response_model=PreviewOut,
    operation_id="get_preview",
    summary="A preview: status, progress and, once succeeded, where its result is",
    responses=problems(*AUTH, 404),
)
async def get_preview(preview_id: str, read: PreviewRead, settings: SettingsDep) -> PreviewOut:
    return PreviewOut.of(service.visible(read.caller, read.row, preview_id), settings.preview_retention_days)


_FORMAT_DOC = (
    "`png` (default), `jpeg` or `webp`. PNG at the result's own size is the result itself, byte for byte "
    "(every pixel the mask keeps equals the room's); any other format or a smaller `max_side` is a display "
    "rendition: scaled, lossy for JPEG (quality 85) and WebP (80), made on the first request and kept."
)
_MAX_SIDE_DOC = (
    f"the longest side of the rendition, in pixels ({MIN_SIDE}..{MAX_SIDE}): the aspect ratio is kept and "
    "the result is never enlarged (a value at or past its longest side is its own size); default: its own "
    "size. Ask in steps (the widget uses multiples of 256) so the kept renditions are reused."
)


@router.get(
    "/{preview_id}/result",
    operation_id="get_preview_result",
    summary="The painted result (PNG; or a JPEG, WebP or smaller rendition): streamed, or a 307 to S3",
    response_class=Response,
    responses={
        200: {
            "description": "The exact PNG at the room's size by default, else the rendition asked for.",
            "content": {media: {"schema": BINARY} for media in ("image/png", "image/jpeg", "image/webp")},
        },
        307: {
            "description": "Redirect to a presigned URL valid for a few minutes (blob store on S3); "
            "fetch it without the `Authorization` header.",
            "headers": {"Location": {"description": "the presigned URL", "schema": URL, "required": True}},
        },
        **problems(*AUTH, 404, 409),
    },
)
def get_result(
    # alike: a route's typed dependencies and its service's arguments, declarations only
    preview_id: str,
    caller: TenantCaller,
    repo: RepoDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    image_format: Annotated[ImageFormat, Query(alias="format", description=_FORMAT_DOC)] = "png",
    max_side: Annotated[int | None, Query(ge=MIN_SIDE, le=MAX_SIDE, description=_MAX_SIDE_DOC)] = None,
) -> Response:
    # sync def: FastAPI runs it in the thread pool, so a first request's encode never blocks the loop.
    download, media_type = service.result(repo, caller, blobs, settings, preview_id, image_format, max_side)
    headers = {"Cache-Control": "private, no-store"}
    if isinstance(download, Stream):
        return StreamingResponse(download.chunks, media_type=media_type, headers=headers)
    return RedirectResponse(download.url, status_code=307, headers=headers)


# alike: DELETE /v1/subjects/{id}'s declaration; what deleting means is each service's own
@router.delete(
    "/{preview_id}",
    status_code=204,
    operation_id="delete_preview",
    summary="Delete a preview with its room photo, mask and result (cancels its painting)",
    description="A secret key deletes any preview of its shop; a publishable key only those it made "
    '(the widget\'s "Delete my photos").',
    responses={204: {"description": "Deleted."}, **problems(*AUTH, 404)},
)
def delete_preview(preview_id: str, caller: TenantCaller, repo: RepoDep, blobs: BlobsDep) -> Response:
    done = service.delete_preview(repo, caller, blobs, preview_id)
    after_commit(repo.session, done.after_commit)
    return Response(status_code=204)
