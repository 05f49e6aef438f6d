"""Each request's id and its access line, and no key in either.

**Request ids.** The caller's `X-Request-ID` when it is a sane short token, else a new one
(`req_...`); bound into the log context (core.logs) for every line the request writes and returned
in the response's `X-Request-ID`, so a shop that reports a failure can name the lines that tell it.
A caller's id is written into logs, so it is taken only as 1 to 64 of `A-Z a-z 0-9 . _ : -`: one
with spaces, quotes, control characters or newlines, or a longer one, could forge or break log lines
and is replaced, never written.

**The access line.** One line per request, logger `roomfit.access`, written when the request is
done: method, path (never the query string, where a careless client may put a key), route
template, status and milliseconds, with the request's ids (the tenant's once its key is known).
`roomfit serve` turns uvicorn's own access log off, so each request is logged once.

`with_request_ids(build)` wraps the app outside Starlette's error middleware, so a 500 carries its
id and is logged too.

**Keys.** Every line goes through `core.logs.redact` in roomfit's formatters. `RedactKeys` does the
same for uvicorn's access log when uvicorn runs with its own logging (`uvicorn api.app:create_app`):
a client may put a key in a query string (`?key=pk_...`), and that log writes the whole path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs
from core.ids import new_id
from core.logs import redact

__all__ = ["Done", "RedactKeys", "RequestIds", "install", "redact", "request_id_of", "with_request_ids"]

HEADER = b"x-request-id"
SANE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
access = logging.getLogger("roomfit.access")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    given = next((value for name, value in headers if name.lower() == HEADER), None)
    if given is not None and SANE.fullmatch(given):
        return given.decode("ascii")
    return new_id("req")


Done = Callable[[Scope, int, float], None]
"""Told of each request when it is done: its scope (with the matched route), status and seconds."""


@dataclass
class RequestIds:
    app: ASGIApp
    done: Done | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._request(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope["headers"])
        encoded = request_id.encode("ascii")
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, encoded)]
            await send(message)

        # Only this request's ids: the connection's task may have served another request before.
        token = logs.bind(
            request_id=request_id, tenant_id=None, job_id=None, subject_id=None, preview_id=None
        )
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            _access_line(scope, status, seconds)
            if self.done is not None:
                self.done(scope, status, seconds)
        # Not reached when the request raised: the server's error log is written after, in this
        # same task, and should name the request; the task (and its context) ends with it.
        logs.unbind(token)


def _access_line(scope: Scope, status: int, seconds: float) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    route = getattr(scope.get("route"), "path", None)
    millis = round(seconds * 1000, 1)
    fields = {"method": scope["method"], "path": scope["path"], "route": route, "status": status}
    access.info(
        "%s %s %d %.1f ms",
        scope["method"],
        scope["path"],
        status,
        millis,
        extra={**fields, "duration_ms": millis},
    )


def with_request_ids(build: Callable[[], ASGIApp], done: Done | None = None) -> Callable[[], ASGIApp]:
    """Wrap an app's `build_middleware_stack`: Starlette puts its ServerErrorMiddleware (the one that
    answers 500) outside every middleware added with `add_middleware`."""
    return lambda: RequestIds(build(), done)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(str(record.msg))
        return True


def install() -> None:
    """Redact keys from uvicorn's access log (once per process)."""
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeys) for f in uvicorn_access.filters):
        uvicorn_access.addFilter(RedactKeys())
