"""`/events` streams at their edges, through the app's ASGI interface (raw header bytes, clients
that come at the same moment or leave early): the caps hold for streams opened at once and every
place is given back; a `Last-Event-ID` that is not ASCII digits starts afresh; a stream resumed
after its object's events were pruned still ends; a stream of an object deleted while it is open
ends, and so does one whose object ended with no event after the stream's place."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncGenerator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from api.event_streams import EventStreamResponse, Feed, last_event_id
from core import events
from core.clock import utcnow
from core.ids import new_id
from core.tables import Event, Preview, Subject
from tests.api.conftest import (
    ApiEnv,
    Shop,
    build_env,
    create_preview,
    make_settings,
    ready_subject,
    succeed_preview,
)

WAIT = 10.0  # seconds: far more than anything here should take


class Raw:
    """One request through the app's ASGI interface, header bytes as given; the client stays for
    the whole answer unless told to `leave` (it then disconnects)."""

    def __init__(self, app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.method, self.path, self.headers = app, method, path, headers
        self.started = asyncio.Event()  # the status is known
        self.ended = asyncio.Event()  # the body's last chunk came
        self.leave = asyncio.Event()
        self.status: int | None = None
        self.answer_headers: dict[bytes, bytes] = {}
        self.body = b""
        self.error: BaseException | None = None
        self._asked = False

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.answer_headers = dict(message["headers"])
            self.started.set()
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                self.ended.set()

    async def run(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 4321),
            "server": ("testserver", 80),
            "state": {},
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:  # kept for the test to see: an app that failed mid-stream
            self.error = exc
        finally:
            self.started.set()
            self.ended.set()

    def problem(self) -> tuple[int | None, str]:
        return self.status, json.loads(self.body)["code"]


class Gone(Raw):
    """A client whose connection is lost as the answer begins: its body is never asked for."""

    async def _send(self, message: dict[str, Any]) -> None:
        await super()._send(message)
        raise OSError("connection reset by peer")


def _auth(shop: Shop) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {shop.secret}".encode())]


async def _open_at_once(
    app: Any, path: str, shop: Shop, count: int
) -> tuple[list[Raw], list[asyncio.Task[None]]]:
    """`count` streams of `path` opened at the same moment, each answered (200 held open, or refused)."""
    raws = [Raw(app, "GET", path, _auth(shop)) for _ in range(count)]
    tasks = [asyncio.create_task(raw.run()) for raw in raws]
    await asyncio.wait_for(asyncio.gather(*(raw.started.wait() for raw in raws)), WAIT)
    return raws, tasks


async def _leave(raws: list[Raw], tasks: list[asyncio.Task[None]]) -> None:
    for raw in raws:
        raw.leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)


# --- the caps, for streams opened at the same moment ----------------------------------------------


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ApiEnv]:
    """Room for 3 streams in the process, 2 of them for one shop."""
    database = f"sqlite:///{tmp_path / 'roomfit.db'}"
    yield from build_env(
        make_settings(tmp_path, database, max_event_streams=3, max_event_streams_per_tenant=2)
    )


def _queued_preview_path(env: ApiEnv, shop: Shop) -> str:
    """The stream of a preview waiting for a painter (none runs here): it stays open."""
    preview = create_preview(env, shop, ready_subject(env, shop))
    return f"/v1/previews/{preview['id']}/events"


def test_streams_opened_at_once_keep_to_the_caps_and_give_their_places_back(capped: ApiEnv) -> None:
    env, app = capped, capped.app
    mine, theirs = _queued_preview_path(env, env.a), _queued_preview_path(env, env.b)

    async def scenario() -> dict[str, Any]:
        first, first_tasks = await _open_at_once(app, mine, env.a, 10)
        second, second_tasks = await _open_at_once(app, theirs, env.b, 10)  # while the first are held
        held = [r.status for r in first + second]
        await _leave(first + second, first_tasks + second_tasks)
        feed: Feed = app.state.feeds.get()
        left = (feed.streams, dict(feed.per_tenant))
        again, again_tasks = await _open_at_once(app, mine, env.a, 6)  # every place was given back
        await _leave(again, again_tasks)
        return {"first": first, "second": second, "held": held, "left": left, "again": again}

    got = env.client.portal.call(scenario)
    first, second = got["first"], got["second"]
    # The shop's share (2); the rest are told so, not let in.
    assert sorted(r.status for r in first) == [200] * 2 + [429] * 8, got["held"]
    assert {r.problem() for r in first if r.status != 200} == {(429, "rate_limited")}
    # The other shop gets what is left of the process's total (3), then 503.
    assert sorted(r.status for r in second) == [200] + [503] * 9, got["held"]
    assert {r.problem() for r in second if r.status != 200} == {(503, "server_busy")}
    assert {r.answer_headers[b"retry-after"] for r in first + second if r.status != 200} == {b"5"}
    assert got["left"] == (0, {})
    assert sorted(r.status for r in got["again"]) == [200] * 2 + [429] * 4


def test_a_client_gone_before_its_stream_started_gives_its_place_back(capped: ApiEnv) -> None:
    env, app = capped, capped.app
    path = _queued_preview_path(env, env.a)

    async def scenario() -> tuple[list[int | None], tuple[int, dict[str, int]], list[int | None]]:
        gone = [Gone(app, "GET", path, _auth(env.a)) for _ in range(5)]
        for raw in gone:  # one after the other: each finds the places the ones before it left
            await asyncio.wait_for(raw.run(), WAIT)
        feed: Feed = app.state.feeds.get()
        left = (feed.streams, dict(feed.per_tenant))
        again, tasks = await _open_at_once(app, path, env.a, 6)
        await _leave(again, tasks)
        return [r.status for r in gone], left, [r.status for r in again]

    gone, left, again = env.client.portal.call(scenario)
    assert gone == [200] * 5  # admitted, then the connection failed as the answer began
    assert left == (0, {})
    assert sorted(again) == [200] * 2 + [429] * 4


def test_a_stream_response_dropped_unsent_gives_its_place_back(sqlite_env: ApiEnv) -> None:
    async def scenario() -> tuple[int, int]:
        feed: Feed = sqlite_env.app.state.feeds.get()
        release = feed.reserve("ten_x")

        async def chunks() -> AsyncGenerator[bytes, None]:
            yield b""

        response = EventStreamResponse(chunks(), release)
        counted = feed.streams
        del response  # e.g. an error after the route returned: never sent
        gc.collect()
        return counted, feed.streams

    assert sqlite_env.client.portal.call(scenario) == (1, 0)


# --- Last-Event-ID -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [b"\xb2", b"\xb9\xb2\xb3", b"4\xb2"])
def test_a_last_event_id_that_is_not_ascii_digits_starts_afresh(sqlite_env: ApiEnv, header: bytes) -> None:
    env = sqlite_env
    preview = create_preview(env, env.a, ready_subject(env, env.a))
    succeed_preview(env, preview["id"])
    path = f"/v1/previews/{preview['id']}/events"

    async def scenario() -> Raw:
        raw = Raw(env.app, "GET", path, [*_auth(env.a), (b"last-event-id", header)])
        await asyncio.wait_for(raw.run(), WAIT)
        return raw

    raw = env.client.portal.call(scenario)
    assert raw.error is None and raw.status == 200
    assert b"event: succeeded\n" in raw.body  # as a fresh stream: at once its end
    assert last_event_id(header.decode("latin-1")) is None


# --- a resume after the object's events were pruned ------------------------------------------------


def _prune_all(env: ApiEnv) -> int:
    """What the daily prune does to events older than a day; returns the newest id there was."""
    with env.session() as session:
        newest = session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
        session.execute(update(Event).values(created_at=utcnow() - events.KEEP - timedelta(hours=1)))
        events.prune(session)
        session.commit()
    assert newest is not None
    return newest


@pytest.mark.parametrize("ended", [True, False])
def test_a_stream_resumed_after_its_events_were_pruned_starts_afresh(sqlite_env: ApiEnv, ended: bool) -> None:
    env = sqlite_env
    preview = create_preview(env, env.a, ready_subject(env, env.a))
    if ended:
        succeed_preview(env, preview["id"])
    last_seen = _prune_all(env)
    path = f"/v1/previews/{preview['id']}/events"

    async def scenario() -> Raw:
        raw = Raw(env.app, "GET", path, [*_auth(env.a), (b"last-event-id", str(last_seen).encode())])
        task = asyncio.create_task(raw.run())
        with contextlib.suppress(TimeoutError):  # well within the 15 s heartbeat: what comes, comes at once
            await asyncio.wait_for(raw.ended.wait() if ended else _until(raw, b"event: status\n"), 3.0)
        raw.leave.set()
        await asyncio.wait_for(task, WAIT)
        return raw

    raw = env.client.portal.call(scenario)
    assert raw.error is None and raw.status == 200
    if ended:  # its end, and the stream ends (it held a place forever before)
        assert b"event: succeeded\n" in raw.body and raw.body.endswith(b"\n\n")
        assert json.loads(raw.body.split(b"data: ")[-1])["status"] == "succeeded"
    else:  # its present state, as a fresh stream starts
        assert (
            b'event: status\nid: 0\ndata: {"id":"' + preview["id"].encode() + b'","status":"queued"'
            in raw.body
        )


async def _until(raw: Raw, needle: bytes) -> None:
    while needle not in raw.body:
        await asyncio.sleep(0.02)


# --- a stream of an object deleted while it is open ---------------------------------------------


@pytest.fixture
def slow_heartbeat_env(tmp_path: Path, database_url: str) -> Iterator[ApiEnv]:
    """On PostgreSQL a heartbeat far longer than the test waits: the delete itself must wake the
    stream (NOTIFY). SQLite has nothing to wake it by: it looks at its next heartbeat (1 s here)."""
    heartbeat = 1.0 if database_url.startswith("sqlite") else 60.0
    yield from build_env(make_settings(tmp_path, database_url, event_heartbeat_seconds=heartbeat))


def _queued_subject(env: ApiEnv, shop: Shop) -> str:
    with env.session() as session:
        subject = Subject(id=new_id("sub"), tenant_id=shop.tenant_id, name="lamp", status="queued")
        session.add(subject)
        session.commit()
        return subject.id


@pytest.mark.parametrize("kind", ["previews", "subjects"])
def test_a_stream_of_an_object_deleted_while_open_ends(slow_heartbeat_env: ApiEnv, kind: str) -> None:
    env = slow_heartbeat_env
    if kind == "previews":
        object_id = create_preview(env, env.a, ready_subject(env, env.a))["id"]
    else:
        object_id = _queued_subject(env, env.a)
    path = f"/v1/{kind}/{object_id}"

    async def scenario() -> tuple[Raw, int | None, int | None, float]:
        stream = Raw(env.app, "GET", f"{path}/events", _auth(env.a))
        task = asyncio.create_task(stream.run())
        await asyncio.wait_for(_until(stream, b"event: status\n"), WAIT)
        await asyncio.sleep(0.3)  # the stream waits for news
        deleted = Raw(env.app, "DELETE", path, _auth(env.a))
        await asyncio.wait_for(deleted.run(), WAIT)
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.ended.wait(), 5.0)
        took = asyncio.get_running_loop().time() - started
        stream.leave.set()
        await asyncio.wait_for(task, WAIT)
        again = Raw(env.app, "GET", f"{path}/events", _auth(env.a))
        await asyncio.wait_for(again.run(), WAIT)
        return stream, deleted.status, again.status, took

    stream, deleted, again, took = env.client.portal.call(scenario)
    assert deleted == 204
    assert stream.error is None
    assert took < 5.0, "the stream of a deleted object was still open"
    assert stream.body.count(b"event: ") == 1  # its first state only: no terminal event for a deletion
    assert again == 404  # what a reconnect gets, as the GET


def test_a_stream_whose_object_ended_and_was_deleted_at_once_ends_cleanly(sqlite_env: ApiEnv) -> None:
    """The terminal event is there but the body for it (the GET's) is gone: the stream ends, unbroken."""
    env = sqlite_env
    preview_id = create_preview(env, env.a, ready_subject(env, env.a))["id"]

    async def scenario() -> Raw:
        stream = Raw(env.app, "GET", f"/v1/previews/{preview_id}/events", _auth(env.a))
        task = asyncio.create_task(stream.run())
        await asyncio.wait_for(_until(stream, b"event: status\n"), WAIT)

        def end_then_delete() -> None:
            with env.session() as session:
                preview = session.get(Preview, preview_id)
                assert preview is not None
                preview.status = "failed"
                session.flush()  # its terminal event
                session.delete(preview)
                session.commit()

        await asyncio.to_thread(end_then_delete)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.ended.wait(), 5.0)
        stream.leave.set()
        await asyncio.wait_for(task, WAIT)
        return stream

    stream = env.client.portal.call(scenario)
    assert stream.error is None, stream.error
    assert stream.body.endswith(b"\n\n") and b"event: failed" not in stream.body


# --- a stream whose object ended with no event it can read --------------------------------------


@pytest.fixture
def quick_heartbeat_env(tmp_path: Path, database_url: str) -> Iterator[ApiEnv]:
    yield from build_env(make_settings(tmp_path, database_url, event_heartbeat_seconds=0.5))


def test_a_stream_whose_object_ended_without_an_event_after_it_still_ends(
    quick_heartbeat_env: ApiEnv,
) -> None:
    """Event ids are drawn at insert, not at commit: a transaction can commit a preview's terminal
    event under a lower id than one the stream already read past. Here the status changes with no
    event at all (a Core UPDATE: the session hook that writes events does not see it), the case a
    stream can least see; it must end with the terminal event anyway, not send keep-alives forever."""
    env = quick_heartbeat_env
    preview_id = create_preview(env, env.a, ready_subject(env, env.a))["id"]

    async def scenario() -> Raw:
        stream = Raw(env.app, "GET", f"/v1/previews/{preview_id}/events", _auth(env.a))
        task = asyncio.create_task(stream.run())
        await asyncio.wait_for(_until(stream, b"event: status\n"), WAIT)

        def fail_unseen() -> None:
            with env.session() as session:
                session.execute(
                    update(Preview)
                    .where(Preview.id == preview_id)
                    .values(status="failed", error_code="internal_error", error_message="lost")
                )
                session.commit()

        await asyncio.to_thread(fail_unseen)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.ended.wait(), WAIT)
        stream.leave.set()
        await asyncio.wait_for(task, WAIT)
        return stream

    stream = env.client.portal.call(scenario)
    assert stream.error is None, stream.error
    assert b"event: failed\nid: " in stream.body, stream.body
    final = json.loads(stream.body.split(b"event: failed\n", 1)[1].split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert final["id"] == preview_id and final["status"] == "failed"
    assert final["error"]["code"] == "internal_error"
