"""Server-Sent Events for `/v1/previews/{id}/events` and `/v1/subjects/{id}/events`: progress pushed
to widgets instead of polled.

A stream sends the object's rows of `events` (core.events: written by the transaction that made each
change) in id order: `status` and `progress` events, then ONE terminal event named for the final
status, whose data is the same body as the object's GET, and the stream closes (an end the object
has since left, trained again or retried, is passed over: its restart's events follow). Each event
carries its `id`; a client reconnecting with `Last-Event-ID` gets exactly the events after it. A
fresh stream starts from the object's newest event, and so does one resumed for an object with no
events left (pruned after a day) or none up to its id. A comment line every `heartbeat` seconds
keeps proxies from closing a quiet stream. A stream of an object deleted while it is open ends with
no terminal event (a reconnect answers 404): at once on PostgreSQL, woken by the delete's NOTIFY,
else at its next heartbeat. A stream that waited and read nothing new also looks at the object's
status: an object that ended with no terminal event after the stream's place (ids are drawn at
insert, so a transaction can commit an event under a lower id than one already read) gets its
terminal event all the same, with the id the stream had reached.

A stream's place under the caps is taken as it is admitted (`Feed.reserve`, before its response
starts) and given back by its response however it ends (`EventStreamResponse`).

Waiting costs nothing per stream: one `Feed` per process wakes only the streams of an object that
has new events. On PostgreSQL it LISTENs to the NOTIFY each such transaction sends at commit; on
SQLite (embedded) it polls the table's newest id a few times a second, and only while streams are
open. The feed also looks for keys revoked since its last look (once a second) and closes their
streams at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import psycopg
from sqlalchemy import bindparam, select
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from core.async_db import AsyncReader, first
from core.events import (
    CHANNEL,
    EVENTS_AFTER,
    LAST_EVENT,
    NEWEST_ID,
    OBJECT_STATUS,
    OBJECTS_AFTER,
    TERMINAL,
    kind_of,
)
from core.tables import ApiKey

log = logging.getLogger("roomfit.api.events")

REVOKED_SINCE = select(ApiKey.id).where(ApiKey.revoked_at > bindparam("since"))
_EVENT_ID = re.compile(r"[0-9]{1,18}")


class Feed:
    """One process's (one event loop's) watch over `events`: wakes the streams of changed objects."""

    def __init__(self, reader: AsyncReader, listen: str | None, poll_seconds: float = 0.1) -> None:
        self.reader = reader
        self.listen = listen  # a PostgreSQL conninfo to LISTEN on; None: poll (SQLite)
        self.poll_seconds = poll_seconds
        self.objects: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.keys: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.revoked: set[str] = set()
        self.streams = 0
        self.per_tenant: Counter[str] = Counter()  # open streams of each tenant (its share is capped)
        self._task: asyncio.Task[None] | None = None

    def reserve(self, tenant_id: str) -> Callable[[], None]:
        """Count a stream of `tenant_id` now, as it is admitted; returns its release (idempotent).
        The caller checks the caps and reserves with no await between, so streams opened at the same
        moment cannot all pass one check before any of them is counted."""
        self.streams += 1
        self.per_tenant[tenant_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.streams -= 1
            self.per_tenant[tenant_id] -= 1
            if not self.per_tenant[tenant_id]:
                del self.per_tenant[tenant_id]

        return release

    @contextmanager
    def watching(self, object_id: str, key_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `object_id` may have new events, or `key_id` was revoked."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        wake = asyncio.Event()
        self.objects[object_id].add(wake)
        self.keys[key_id].add(wake)
        try:
            yield wake
        finally:
            for table, name in ((self.objects, object_id), (self.keys, key_id)):
                table[name].discard(wake)
                if not table[name]:
                    del table[name]

    def _wake(self, table: dict[str, set[asyncio.Event]], name: str) -> None:
        for wake in table.get(name, ()):
            wake.set()

    def _wake_all(self) -> None:
        for wakes in list(self.objects.values()):
            for wake in wakes:
                wake.set()

    async def _run(self) -> None:
        await asyncio.gather(self._changes(), self._revocations())

    async def _changes(self) -> None:
        while True:
            try:
                await (self._listen() if self.listen else self._poll())
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away: streams re-read once it is back
                log.warning("event feed lost the database; retrying in 1 s", exc_info=True)
                self._wake_all()
                await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        assert self.listen is not None
        async with await psycopg.AsyncConnection.connect(self.listen, autocommit=True) as connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            self._wake_all()  # whatever happened while (re)connecting
            async for note in connection.notifies():
                self._wake(self.objects, note.payload)

    async def _poll(self) -> None:
        newest = await first(self.reader, NEWEST_ID, {})
        after = newest.id if newest is not None else 0
        while True:
            await asyncio.sleep(self.poll_seconds)
            if not self.objects:
                continue
            for row in await self.reader.rows(OBJECTS_AFTER, {"after": after}):
                after = max(after, row.id)
                self._wake(self.objects, row.object_id)

    async def _revocations(self) -> None:
        # Revocations are timed by the revoking process's clock: look a few seconds back.
        since = time.time() - 5.0
        while True:
            await asyncio.sleep(1.0)
            if not self.keys:
                since = time.time() - 5.0
                continue
            now = time.time()
            try:
                found = await self.reader.rows(REVOKED_SINCE, {"since": datetime.fromtimestamp(since, UTC)})
            except Exception:
                log.warning("event feed could not read revoked keys", exc_info=True)
                continue
            since = now - 5.0
            for row in found:
                if row.id in self.keys:
                    self.revoked.add(row.id)
                    self._wake(self.keys, row.id)


def _frame(event: str, event_id: int, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {event}\nid: {event_id}\ndata: {body}\n\n".encode()


def last_event_id(header: str | None) -> int | None:
    """The `Last-Event-ID` a reconnecting client sends; anything but a small integer starts afresh."""
    # ASCII digits only: headers are decoded as latin-1, and `str.isdigit` takes '²' too (int() won't).
    if header is None or not _EVENT_ID.fullmatch(header.strip()):
        return None
    return int(header.strip())


async def stream_events(
    feed: Feed,
    object_id: str,
    key_id: str,
    resume_after: int | None,
    final_body: Callable[[], Awaitable[dict[str, Any] | None]],
    opened_row: Any,
    heartbeat: float,
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes (see the module's docstring). `final_body`: the GET body now, None once the
    object is gone; `opened_row`: the object's row as the stream was opened (for objects older than
    their events)."""
    terminal = TERMINAL[kind_of(object_id)]
    status_now = OBJECT_STATUS[kind_of(object_id)]
    reader = feed.reader
    with feed.watching(object_id, key_id) as wake:
        yield b"retry: 2000\n\n"
        newest = await first(reader, LAST_EVENT, {"object_id": object_id})
        after = resume_after
        # Fresh: from the newest event. Resumed after the end: the end. Resumed when the object has
        # no events left (pruned a day on), or none up to the id resumed from (SQLite numbers events
        # by rowid, from 1 again once the prune emptied the table; no stream sent an id above its
        # object's newest): as a fresh stream, else nothing would ever come.
        if (
            after is None
            or newest is None
            or newest.id < after
            or (newest.id == after and newest.status in terminal)
        ):
            start = newest if newest is not None else opened_row
            after = newest.id if newest is not None else 0
            if start.status in terminal:
                ends, body = await _final(final_body, start.status)
                if body is not None:
                    yield _frame(start.status, after, body)
                if ends:
                    return
            else:
                yield _frame("status", after, _data(object_id, start))
        idle = False  # waited, and no event came: the object may have been deleted (deleting writes none)
        while key_id not in feed.revoked:
            wake.clear()  # before reading: a change during the read wakes the next wait
            found = await reader.rows(EVENTS_AFTER, {"object_id": object_id, "after": after})
            for row in found:
                after = row.id
                if row.status in terminal:
                    ends, body = await _final(final_body, row.status)
                    if body is not None:
                        yield _frame(row.status, row.id, body)
                    if ends:
                        return
                    continue  # started again since (trained again, retried): its later events follow
                yield _frame(row.kind, row.id, _data(object_id, row))
            if found:
                idle = False
                continue  # the page may have been full
            now = await first(reader, status_now, {"object_id": object_id}) if idle else None
            if idle and now is None:
                # Deleted: end the stream (a reconnect answers 404, as the GET does); no slot held forever.
                log.info("event stream of %s closed: deleted", object_id)
                return
            if now is not None and now.status in terminal:
                # Ended, but its terminal event is not after `after`: committed under a lower id by a
                # transaction that drew it before another's. Without this the stream would wait forever.
                log.warning("event stream of %s: ended with no event after %d; closing", object_id, after)
                ends, body = await _final(final_body, now.status)
                if body is not None:
                    yield _frame(now.status, after, body)
                if ends:
                    return
            try:
                await asyncio.wait_for(wake.wait(), timeout=heartbeat)
            except TimeoutError:
                yield b": keep-alive\n\n"
            idle = True
        log.info("event stream of %s closed: key %s revoked", object_id, key_id)


class EventStreamResponse(StreamingResponse):
    """A stream's response. It gives back the place `Feed.reserve` counted however it ends: the body
    sent to its end, the client gone during it or before it started, or the response never sent."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], release: Callable[[], None]) -> None:
        # no-cache and no proxy buffering: every event goes out as it happens.
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(chunks, media_type="text/event-stream", headers=headers)
        self.chunks = chunks
        # Also when the response is dropped unsent (an error between the route and the sending).
        self.release = weakref.finalize(self, release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
            # The stream's wake registrations too: now, not when the generator is collected.
            with anyio.CancelScope(shield=True):
                await self.chunks.aclose()


async def _final(
    final_body: Callable[[], Awaitable[dict[str, Any] | None]], status: str
) -> tuple[bool, dict[str, Any] | None]:
    """Whether a terminal `status` read from an event ends the stream, and the body to send with it.
    The body is the object as it is now, read after the event: when its status is another, the object
    started again after that end (a subject trained again, a preview whose job was retried), and an
    event named `status` with that body would contradict itself and close the stream before the
    object's final status: (False, None), the stream goes on to the events of the restart. Deleted
    meanwhile: (True, None), the stream ends with no terminal event."""
    body = await final_body()
    if body is None:
        return True, None
    if body.get("status") != status:
        return False, None
    return True, body


def _data(object_id: str, row: Any) -> dict[str, Any]:
    return {
        "id": object_id,
        "status": row.status,
        "stage": getattr(row, "stage", None),
        "progress": max(0.0, min(1.0, float(row.progress or 0.0))),
    }
