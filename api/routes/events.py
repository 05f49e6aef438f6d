"""`GET /v1/previews/{id}/events` and `GET /v1/subjects/{id}/events`: the object's progress pushed as
Server-Sent Events (api.event_streams), with the keys and origin rules of its GET.

The key and the row are read in one query (api.deps.read_with_key), as the GETs do; the terminal
event's body is made by the GET's own code, in the thread pool, once per stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Caller, Keyed, SettingsDep, read_with_key
from api.event_streams import EventStreamResponse, Feed, last_event_id, stream_events
from api.openapi import AUTH, problems
from api.problems import NOT_FOUND, RATE_LIMITED, SERVER_BUSY, ApiError
from api.schemas import PreviewOut, SubjectOut, SubjectStatusOut
from api.services import previews as preview_service
from api.services import subjects as subject_service
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Preview, Subject

router = APIRouter(prefix="/v1", tags=["events"])
READERS = ("secret", "publishable")
PreviewRead = Annotated[Keyed, Depends(read_with_key(Preview, "preview_id", READERS))]
SubjectRead = Annotated[Keyed, Depends(read_with_key(Subject, "subject_id", READERS))]
LastEventId = Annotated[
    str | None,
    Header(description="The `id` of the last event received: the stream resumes after it, missing nothing"),
]

STREAM = {
    200: {
        "description": "`text/event-stream`: `status` and `progress` events (data: `{id, status, stage, "
        "progress}`), then one terminal event named for the final status (data: the object's GET body), "
        "then the stream ends. Each event has an `id`; comment lines are heartbeats.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **problems(*AUTH, 404, 503),
}


def _respond(
    request: Request,
    settings: Settings,
    caller: Caller,
    object_id: str,
    row: Any,
    last_id: str | None,
    body: Callable[[TenantRepository], BaseModel],
) -> StreamingResponse:
    feed: Feed = request.app.state.feeds.get()
    tenant_id = caller.tenant_id
    assert tenant_id is not None, "read_with_key admits only keys of a tenant"
    # Checked and reserved with no await between: streams opened at once cannot all pass the check.
    if feed.streams >= settings.max_event_streams:
        raise SERVER_BUSY("too many open event streams here; retry shortly", headers={"Retry-After": "5"})
    if feed.per_tenant[tenant_id] >= settings.max_event_streams_per_tenant:
        # One shop's storefront (or someone holding its public key) cannot take every stream here.
        raise RATE_LIMITED(
            "this shop has too many open event streams here; close some or retry shortly",
            headers={"Retry-After": "5"},
        )
    release = feed.reserve(tenant_id)

    def final() -> dict[str, Any] | None:
        with request.app.state.sessions() as session:
            try:
                return body(TenantRepository(session, tenant_id)).model_dump(mode="json")
            except ApiError as error:
                if error.problem is not NOT_FOUND:
                    raise
                return None  # deleted since it ended: the stream just ends, as a reconnect gets 404

    async def final_body() -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(final)

    try:
        chunks = stream_events(
            feed,
            object_id,
            caller.key_id,
            last_event_id(last_id),
            final_body,
            row,
            settings.event_heartbeat_seconds,
        )
        return EventStreamResponse(chunks, release)
    except BaseException:
        release()
        raise


@router.get(
    "/previews/{preview_id}/events",
    operation_id="preview_events",
    summary="A preview's status and progress as they change (Server-Sent Events), then its final state",
    response_class=StreamingResponse,
    responses=STREAM,
)
# alike: a route's declaration (typed dependencies), as every route's; the work is in _respond.
async def preview_events(
    preview_id: str,
    read: PreviewRead,
    request: Request,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    row = preview_service.visible(read.caller, read.row, preview_id)

    def body(repo: TenantRepository) -> BaseModel:
        current = preview_service.visible_preview(repo, read.caller, preview_id)
        return PreviewOut.of(current, settings.preview_retention_days)

    return _respond(request, settings, read.caller, preview_id, row, last_event_id, body)


@router.get(
    "/subjects/{subject_id}/events",
    operation_id="subject_events",
    summary="A subject's status, stage and training progress as they change (Server-Sent Events)",
    response_class=StreamingResponse,
    responses=STREAM,
)
# alike: the preview stream's declaration for subjects; the work is in _respond.
async def subject_events(
    subject_id: str,
    read: SubjectRead,
    request: Request,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    if read.row is None:
        raise NOT_FOUND(f"no subject {subject_id!r}")
    shape = SubjectStatusOut if read.caller.kind == "publishable" else SubjectOut

    def body(repo: TenantRepository) -> BaseModel:
        return shape.of(subject_service.find_subject(repo, subject_id))

    return _respond(request, settings, read.caller, subject_id, read.row, last_event_id, body)
