"""`/events` (Server-Sent Events) on real processes: `roomfit serve` and Celery worker processes, in
distributed mode (PostgreSQL LISTEN/NOTIFY, Redis, SeaweedFS) and embedded mode (SQLite, polled).

What a widget relies on: it sees every stage and one terminal event, for a preview and for a
training; a reconnect with `Last-Event-ID` misses nothing and repeats nothing; a publishable key
from another origin is refused like on the GET; a key revoked while its stream is open ends it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from core.accounts import create_key, revoke_key
from core.tables import ApiKey, Event, Tenant
from tests.api.served import ServedApi, served_api
from tests.worker.conftest import png_bytes, product_photo, submit_subject
from tests.worker.stack import Stack, ready_subject_with_random_adapter

pytestmark = pytest.mark.integration

ORIGIN = "https://shop.example"
# the API process's own settings (served_env sets these itself)
_SERVED_SETS = {"ROOMFIT_VAR_DIR", "ROOMFIT_RATE_LIMIT", "ROOMFIT_LOG_LEVEL"}


@dataclass
class Received:
    event: str
    id: int
    data: dict[str, Any]


def read_events(response: httpx.Response, stop_after: int | None = None) -> Iterator[Received]:
    """Parse a text/event-stream (the subset the server speaks: event, id, data, comments)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield Received(fields.get("event", "message"), int(fields["id"]), json.loads(fields["data"]))
                stop_after = None if stop_after is None else stop_after - 1
                if stop_after == 0:
                    return
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def stream(api: ServedApi, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return httpx.stream("GET", api.url + path, headers=headers or api.auth(), timeout=60, **kwargs)


def object_events(stack: Stack, object_id: str) -> list[tuple[int, str, str, str | None]]:
    with stack.session() as session:
        rows = session.execute(
            select(Event.id, Event.kind, Event.status, Event.stage).where(Event.object_id == object_id)
        )
        return sorted(tuple(r) for r in rows)  # type: ignore[misc]


@pytest.fixture(params=["distributed", "embedded"])
def api_and_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServedApi, Stack]]:
    stack: Stack = request.getfixturevalue(f"{request.param}_stack")
    settings = {k.removeprefix("ROOMFIT_").lower(): v for k, v in stack.env.items() if k not in _SERVED_SETS}
    with served_api(stack.folder, **settings) as api:
        yield api, stack


def _post_preview(api: ServedApi, subject_id: str) -> str:
    room, _ = product_photo(11, size=(96, 72))
    mask = np.zeros((room.height, room.width), dtype=np.uint8)
    mask[12:50, 20:70] = 255
    answer = api.post(
        "/v1/previews",
        data={"subject_id": subject_id, "seed": "3"},
        files=[
            ("room", ("room.png", png_bytes(room), "image/png")),
            ("mask", ("mask.png", png_bytes(Image.fromarray(mask)), "image/png")),
        ],
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


@pytest.mark.slow
def test_a_training_and_a_preview_stream_every_stage_then_one_terminal_event(
    api_and_stack: tuple[ServedApi, Stack], shared_models_dir: Path
) -> None:
    api, stack = api_and_stack
    # 16 steps: a worker writes progress once a second and each time it moves a quarter of the bar,
    # so even a training that ends within a second streams progress events.
    subject_id, _ = submit_subject(stack, api.tenant_id, steps=16)
    with stream(api, f"/v1/subjects/{subject_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stack.start_worker("train")  # after the stream is open: it must see the whole training
        seen = list(read_events(response))
    stages = [e.data["stage"] for e in seen if e.event == "status"]
    assert {"annotating", "training", "saving"} <= set(stages), stages
    assert "progress" in [e.event for e in seen]
    progress = [e.data["progress"] for e in seen[:-1]]
    assert progress == sorted(progress), [(e.event, e.data) for e in seen]
    assert seen[-1].event == "ready" and seen[-1].data["id"] == subject_id
    assert seen[-1].data["status"] == "ready" and seen[-1].data["adapter"] is not None  # the GET body
    assert all(e.event != "ready" for e in seen[:-1])
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids))
    # Every event written after the first one the stream sent reached it, in order.
    assert ids == [row[0] for row in object_events(stack, subject_id) if row[0] >= ids[0]]

    stack.start_worker("preview")
    ready = ready_subject_with_random_adapter(stack, api.tenant_id, shared_models_dir)
    preview_id = _post_preview(api, ready)
    with stream(api, f"/v1/previews/{preview_id}/events") as response:
        seen = list(read_events(response))
    assert seen[0].event == "status" and seen[0].data["status"] in ("queued", "running")
    assert "painting" in [e.data["stage"] for e in seen if e.event == "status"]
    assert seen[-1].event == "succeeded" and seen[-1].data["result_url"].endswith("/result")
    assert [e.id for e in seen] == [r[0] for r in object_events(stack, preview_id) if r[0] >= seen[0].id]


@pytest.mark.slow
def test_a_reconnect_with_last_event_id_misses_nothing(api_and_stack: tuple[ServedApi, Stack]) -> None:
    api, stack = api_and_stack
    subject_id, _ = submit_subject(stack, api.tenant_id, steps=6)
    stack.start_worker("train")
    with stream(api, f"/v1/subjects/{subject_id}/events") as response:
        first = list(read_events(response, stop_after=3))  # then the connection drops
    time.sleep(1.0)  # events go on meanwhile
    headers = {**api.auth(), "Last-Event-ID": str(first[-1].id)}
    with stream(api, f"/v1/subjects/{subject_id}/events", headers=headers) as response:
        rest = list(read_events(response))
    ids = [e.id for e in first + rest]
    assert ids == [row[0] for row in object_events(stack, subject_id) if row[0] >= ids[0]]
    assert rest[-1].event == "ready"
    # A stream resumed after the end answers just the terminal event again, not an open stream.
    headers = {**api.auth(), "Last-Event-ID": str(ids[-1])}
    with stream(api, f"/v1/subjects/{subject_id}/events", headers=headers) as response:
        assert [e.event for e in read_events(response)] == ["ready"]


def _publishable(stack: Stack, tenant_id: str) -> tuple[str, str]:
    with stack.session() as session:
        tenant = session.get(Tenant, tenant_id)
        row, key = create_key(session, kind="publishable", tenant=tenant, origins=[ORIGIN])
        session.commit()
        return row.id, key


def test_origins_are_checked_and_a_revoked_key_s_stream_ends(api_and_stack: tuple[ServedApi, Stack]) -> None:
    api, stack = api_and_stack
    subject_id, _ = submit_subject(stack, api.tenant_id)  # no worker: it stays queued
    key_id, key = _publishable(stack, api.tenant_id)
    path = f"/v1/subjects/{subject_id}/events"
    refused = httpx.get(
        api.url + path, headers={"Authorization": f"Bearer {key}", "Origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    missing = httpx.get(api.url + "/v1/subjects/sub_01M8JXQWXADN45JA084RYC78C9/events", headers=api.auth())
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    seen: list[Received] = []
    ended = threading.Event()

    def listen() -> None:
        with stream(api, path, headers={"Authorization": f"Bearer {key}", "Origin": ORIGIN}) as response:
            assert response.status_code == 200
            seen.extend(read_events(response))
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [e.event for e in seen] == ["status"] and seen[0].data["status"] == "queued"
    assert not ended.is_set()
    with stack.session() as session:
        revoke_key(session, key_id)
        session.commit()
        assert session.scalars(select(ApiKey.revoked_at).where(ApiKey.id == key_id)).one() is not None
    revoked_at = time.monotonic()
    assert ended.wait(15), "the revoked key's stream stayed open"
    print(f"stream closed {time.monotonic() - revoked_at:.2f} s after the revocation")
    listener.join(5)
    denied = httpx.get(api.url + path, headers={"Authorization": f"Bearer {key}", "Origin": ORIGIN})
    assert denied.status_code == 401
