"""A stream's terminal event is the object's *final* status, with the GET body of that status: an
object that ended and then started again (a subject trained again, a preview whose job ops retried)
has ended only once it ends again. A stream resumed from before the first end (`Last-Event-ID`), or
opened as the restart commits, used to send the first terminal event with the body of the object
as it is now (an `event: ready` whose data says `"status": "queued"`) and close, so a widget took a
subject in training again for ready."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from core.ids import new_id
from core.tables import Event, Preview, Subject
from tests.api.conftest import ApiEnv, create_preview, ready_subject, set_row


def _frames(env: ApiEnv, path: str, headers: dict[str, str]) -> list[tuple[str, int, dict[str, Any]]]:
    """Every (event, id, data) of a stream that ends by itself."""
    frames, fields = [], {}
    with env.client.stream("GET", path, headers=headers) as stream:
        for line in stream.iter_lines():
            if line == "":
                if "data" in fields:
                    frames.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return frames


def _set(env: ApiEnv, model: type[Subject] | type[Preview], object_id: str, **values: Any) -> int:
    """Change the row as a worker would (one commit, so one event); that event's id."""
    set_row(env, model, object_id, **values)
    with env.session() as session:
        newest = select(Event.id).where(Event.object_id == object_id).order_by(Event.id.desc()).limit(1)
        return int(session.scalar(newest) or 0)


def _subject_in_training(env: ApiEnv) -> str:
    subject_id = ready_subject(env, env.a)
    _set(env, Subject, subject_id, status="training", stage="training", progress=0.5)
    return subject_id


@pytest.mark.parametrize("kind", ["secret", "publishable"])
def test_a_subject_trained_again_ends_its_stream_at_its_final_status(env: ApiEnv, kind: str) -> None:
    subject_id = _subject_in_training(env)
    resume = _set(env, Subject, subject_id, progress=0.75)  # the widget's last event
    _set(env, Subject, subject_id, status="ready", stage=None, progress=1.0)
    again = _set(env, Subject, subject_id, status="queued", stage=None, progress=0.0)  # trained again
    _set(env, Subject, subject_id, status="failed", progress=0.2, error_code="no_object_found")
    headers = {**env.a.auth(kind), "Last-Event-ID": str(resume)}
    frames = _frames(env, f"/v1/subjects/{subject_id}/events", headers)
    get = env.client.get(f"/v1/subjects/{subject_id}", headers=env.a.auth(kind)).json()
    *before, (event, _, data) = frames
    assert (event, data) == ("failed", get), frames
    assert ("status", again) in [(name, event_id) for name, event_id, _ in before], frames
    for name, _, body in frames:  # never an event named for one status with another's body
        assert name in ("status", "progress") or body["status"] == name, frames


def test_a_preview_retried_after_it_failed_ends_its_stream_at_its_final_status(env: ApiEnv) -> None:
    subject_id = ready_subject(env, env.a)
    preview_id = create_preview(env, env.a, subject_id)["id"]
    resume = _set(env, Preview, preview_id, status="running", progress=0.3)
    _set(env, Preview, preview_id, status="failed", error_code="worker_lost", error_message="lost")
    _set(env, Preview, preview_id, status="queued", progress=0.0, error_code=None, error_message=None)
    _set(env, Preview, preview_id, status="succeeded", progress=1.0, result_key=new_id("blob"))
    headers = {**env.a.auth(), "Last-Event-ID": str(resume)}
    frames = _frames(env, f"/v1/previews/{preview_id}/events", headers)
    get = env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth()).json()
    assert [name for name, _, _ in frames] == ["status", "succeeded"], frames
    assert frames[-1][2] == get
