"""The fast read of a preview (api.fast_reads: the key and the row in one raw query, no ORM) answers
what the schema path answers, `PreviewOut.of(<ORM row>).model_dump(mode="json")`, for a preview in
every status and mode, read with a secret or a publishable key, on SQLite and PostgreSQL; and a fresh
`/events` stream's first event says what the object's GET says at that moment (its status, stage and
progress; an ended object's terminal event: the GET body itself), for previews and for subjects in
every status. A guard: these pass on the code they were written against; they fail when the raw rows
(asyncpg's types on PostgreSQL, the key-and-row join) or the stream's first event drift from the
schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

import api.fast_reads
from api.schemas import PreviewOut, SubjectOut, SubjectStatusOut
from core.tables import Preview, Subject
from tests.api.conftest import ApiEnv, create_preview, http_scope, ready_subject, set_row

WAIT = 10.0  # seconds: far more than a first event takes
TERMINAL = {"succeeded", "failed", "cancelled", "ready"}
PREVIEWS: list[dict[str, Any]] = [
    {},  # queued, as POST left it
    {"status": "running", "progress": 0.25, "timings": {"load_adapter": 0.03}},
    {"status": "running", "progress": 1.5, "mode": "zero_shot", "adapter_version": None},  # clamped
    {"status": "running", "progress": -0.1, "guidance_scale": 7.25, "steps": 30, "seed": 2**32 - 1},
    {"status": "succeeded", "progress": 1.0, "result_key": "r.png", "timings": {"sample": 2, "x": 2.5e-7}},
    {"status": "succeeded", "progress": 1.0, "result_key": None},  # no result_url without a result
    {"status": "failed", "progress": 0.3, "error_code": "oom", "error_message": "out of memory, é"},
    {"status": "cancelled", "progress": 0.0, "mode": "zero_shot", "adapter_version": None},
]
SUBJECTS: list[dict[str, Any]] = [
    {"status": "queued", "progress": 0.0, "adapter_key": None, "adapter_version": None},
    {"status": "annotating", "stage": "annotating", "progress": 0.05, "adapter_key": None},
    {"status": "training", "stage": "training", "progress": 0.42, "adapter_key": None},
    {"status": "ready", "progress": 1.0},
    {"status": "failed", "progress": 0.3, "error_code": "no_object_found", "error_message": "no couch"},
    {"status": "cancelled", "progress": 0.6, "stage": "training", "adapter_key": None},
]


def _set(env: ApiEnv, model: type[Preview] | type[Subject], object_id: str, values: dict[str, Any]) -> None:
    set_row(env, model, object_id, **values)


def _schema_preview(env: ApiEnv, preview_id: str) -> dict[str, Any]:
    with env.session() as session:
        row = session.get(Preview, preview_id)
        assert row is not None
        return PreviewOut.of(row, env.settings.preview_retention_days).model_dump(mode="json")


def first_event(
    env: ApiEnv, path: str, headers: dict[str, str], wait: float = WAIT
) -> tuple[str, dict[str, Any]] | None:
    """A stream's first event (name, data), read through the app's ASGI interface; the client then
    leaves (an object that has not ended keeps its stream open). None: no event within `wait` s."""
    body = bytearray()
    got, leave = asyncio.Event(), asyncio.Event()

    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:  # the request: no body
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if b"\ndata: " in body and body.endswith(b"\n\n"):
                got.set()

    async def scenario() -> None:
        scope = http_scope("GET", path, headers)
        task = asyncio.create_task(env.app(scope, receive, send))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got.wait(), wait)
        leave.set()
        await asyncio.wait_for(task, WAIT)

    env.client.portal.call(scenario)
    if not got.is_set():
        return None
    frame = next(part for part in bytes(body).decode().split("\n\n") if "\ndata: " in part)
    fields = dict(line.split(": ", 1) for line in frame.splitlines())
    return fields["event"], json.loads(fields["data"])


@pytest.mark.parametrize("kind", ["secret", "publishable"])
def test_the_fast_read_is_the_schema_s_answer_in_every_state(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    answered: list[bool] = []
    answer = api.fast_reads.FastPreviewRead._answer

    async def counted(self: api.fast_reads.FastPreviewRead, scope: Any, preview_id: str) -> bytes | None:
        body = await answer(self, scope, preview_id)
        answered.append(body is not None)
        return body

    monkeypatch.setattr(api.fast_reads.FastPreviewRead, "_answer", counted)
    subject_id = ready_subject(env, env.a)
    for state in PREVIEWS:
        preview_id = create_preview(env, env.a, subject_id, kind=kind)["id"]
        _set(env, Preview, preview_id, state)
        want = _schema_preview(env, preview_id)
        got = env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth(kind))
        assert answered[-1], "the fast path stepped aside"
        assert got.status_code == 200 and got.json() == want, state
        first = first_event(env, f"/v1/previews/{preview_id}/events", env.a.auth(kind))
        assert first is not None, state
        event, data = first
        if want["status"] in TERMINAL:
            assert (event, data) == (want["status"], want), state
        else:
            assert event == "status", state
            assert {k: data[k] for k in ("id", "status", "progress")} == {
                k: want[k] for k in ("id", "status", "progress")
            }, state


@pytest.mark.parametrize("kind", ["secret", "publishable"])
def test_a_subject_stream_starts_with_what_its_get_says(env: ApiEnv, kind: str) -> None:
    shape = SubjectStatusOut if kind == "publishable" else SubjectOut
    for state in SUBJECTS:
        subject_id = ready_subject(env, env.a)
        _set(env, Subject, subject_id, state)
        got = env.client.get(f"/v1/subjects/{subject_id}", headers=env.a.auth(kind))
        with env.session() as session:
            row = session.get(Subject, subject_id)
            assert row is not None
            want = shape.of(row).model_dump(mode="json")
        assert got.status_code == 200 and got.json() == want, state
        first = first_event(env, f"/v1/subjects/{subject_id}/events", env.a.auth(kind))
        assert first is not None, state
        event, data = first
        if want["status"] in TERMINAL:
            assert (event, data) == (want["status"], want), state
        else:
            fields = ("id", "status", "stage", "progress")
            assert (event, data) == ("status", {k: want[k] for k in fields}), state
