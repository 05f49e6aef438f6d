"""The hottest read, `GET /v1/previews/{id}` (every open widget's, again and again), answered
without FastAPI's router and dependency solver, which cost about a fifth of its CPU (py-spy, see
BENCHMARKS.md).

It runs the route's own dependency (`api.deps.read_with_key`: the key and the row in one query, the
origin check, the rate limit) and rule (`api.services.previews.visible`), and serializes the same
response model. Whenever one of them refuses (401, 403, 404, 429 ...) or the database fails, it
steps aside and the routes answer as they always do, so every error, header and problem document
stays theirs (a database that is down: 503, which FastAPI's handlers answer). The cost of
stepping aside: such a request is looked up twice and, past the origin check, counted twice
against its key's rate limit.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import read_with_key
from api.problems import ApiError
from api.schemas import PreviewOut
from api.services.previews import visible
from core.tables import Preview

PATH = re.compile(r"/v1/previews/([^/]+)")
ROUTE = SimpleNamespace(path="/v1/previews/{preview_id}")


class FastPreviewRead:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read = read_with_key(Preview, "preview_id", ("secret", "publishable"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = scope["type"] == "http" and scope["method"] == "GET"
        match = PATH.fullmatch(scope["path"]) if hot else None
        body = await self._answer(scope, match.group(1)) if match else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, preview_id: str) -> bytes | None:
        scope["path_params"] = {"preview_id": preview_id}
        try:
            found = await self.read(Request(scope))
            row = visible(found.caller, found.row, preview_id)
        except (ApiError, DBAPIError):
            # DBAPIError: this middleware sits outside FastAPI's exception handlers, so a database
            # that is down would be a 500 here; the route meets the same error and answers 503.
            return None
        scope["route"] = ROUTE  # what api.app.count_request labels requests by
        retention = scope["app"].state.settings.preview_retention_days
        return PreviewOut.of(row, retention).model_dump_json().encode()
