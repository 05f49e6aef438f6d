"""CORS that answers only the origins listed on active publishable keys.

Starlette's CORSMiddleware takes a static list; roomfit's list lives in the database and changes
when a key is created or revoked, so this small middleware reads it per request (one query, only
for requests that carry an `Origin`). A preflight carries no key, so it is allowed when *any* active
publishable key lists the origin; the real request is then checked against its own key's origins
by `api.deps.get_caller` (403 `origin_not_allowed`).

The answer names the origin as it is listed (lower case, no trailing slash), never the request's
own spelling. On an authenticated answer it is granted only when the caller's own key lists the
origin: an origin listed by one shop gets nothing on another shop's answers, nor on a secret
key's (those belong on servers). Answers refused before a key was read (401) keep it when any
key lists the origin, so a widget can read why it was refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import normalize_origin
from api.problems import ORIGIN_NOT_ALLOWED, PROBLEM_JSON
from core.repository import OpsRepository

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"  # DELETE: the widget's "Delete my photos"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = "Location, Retry-After, Idempotency-Replayed, X-Request-ID"
MAX_AGE_SECONDS = "600"


def listed_origin_check(sessions: sessionmaker[Session]) -> Callable[[str], bool]:
    # Its own short session: this runs in a middleware, outside any request's transaction.
    def is_listed(origin: str) -> bool:
        with sessions() as session:
            return origin in OpsRepository(session).publishable_origins()

    return is_listed


class KeyOriginCORS:
    def __init__(self, app: ASGIApp, is_listed: Callable[[str], bool]) -> None:
        self.app = app
        self.is_listed = is_listed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        canonical = normalize_origin(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(canonical, await self._listed(canonical), send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                # api.deps.get_caller leaves the authenticated key in the request's state; only an
                # answer without one (401, 404 of a page) needs the lookup of every listed origin.
                caller = scope.get("state", {}).get("caller")
                granted = await self._listed(canonical) if caller is None else canonical in caller.origins
                if granted:
                    out["Access-Control-Allow-Origin"] = canonical
                    out["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _listed(self, origin: str) -> bool:
        try:
            return await anyio.to_thread.run_sync(self.is_listed, origin)
        except Exception:  # database down: no CORS headers; the route itself will answer 503/401
            return False

    @staticmethod
    async def _preflight(origin: str, listed: bool, send: Send) -> None:
        if listed:
            status = 204
            body = b""
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1", "replace")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", MAX_AGE_SECONDS.encode()),
                (b"vary", b"Origin"),
            ]
        else:
            status = ORIGIN_NOT_ALLOWED.status
            body = json.dumps(
                ORIGIN_NOT_ALLOWED.document("this origin is not listed on any publishable key")
            ).encode()
            headers = [(b"content-type", PROBLEM_JSON.encode()), (b"vary", b"Origin")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
