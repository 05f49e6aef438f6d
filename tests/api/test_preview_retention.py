"""A preview holds a shopper's photo of their own room: the shop deletes it (`DELETE /v1/previews/{id}`),
and finished previews are deleted after `ROOMFIT_PREVIEW_RETENTION_DAYS` by the reconciler pass
every worker runs (core.retention). Both on SQLite and PostgreSQL, with the local blob store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import select, update

from core import retention
from core.blob_keys import preview_prefix
from core.clock import utcnow
from core.retention import Swept, forget_old_previews
from core.settings import Settings
from core.tables import Job, Preview, Subject
from tests.api.conftest import (
    ApiEnv,
    build_env,
    create_preview,
    make_settings,
    ready_subject,
    succeed_preview,
)
from worker.reconciler import reconcile_once
from worker.runtime import Runtime


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def _counted(name: str) -> float:
    """A counter of this process's metrics registry (what a worker's /metrics serves)."""
    return REGISTRY.get_sample_value(name) or 0.0


def _blobs_of(env: ApiEnv, preview_id: str) -> list[str]:
    return sorted(env.blobs.list(preview_prefix(env.a.tenant_id, preview_id)))


def _finished(env: ApiEnv, subject_id: str, status: str, days_ago: float) -> str:
    """A preview that ended `days_ago` (succeeded with its result, or failed), with its blobs."""
    preview = create_preview(env, env.a, subject_id)["id"]
    if status == "succeeded":
        succeed_preview(env, preview)
    with env.session() as session:
        values: dict[str, Any] = {"updated_at": utcnow() - timedelta(days=days_ago)}
        if status != "succeeded":
            values["status"] = status
        session.execute(update(Preview).where(Preview.id == preview).values(**values))
        session.execute(update(Job).where(Job.preview_id == preview).values(status=status))
        session.commit()
    return preview


def test_deleting_a_preview_removes_its_room_photo_mask_result_and_renditions(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    preview = create_preview(env, env.a, sid)["id"]
    kept = create_preview(env, env.a, sid)["id"]
    succeed_preview(env, preview)
    rendition = env.client.get(f"/v1/previews/{preview}/result?format=jpeg", headers=env.a.auth())
    assert rendition.status_code == 200
    stored = _blobs_of(env, preview)
    assert len(stored) == 4, stored  # room, mask, result, the JPEG rendition

    response = env.client.delete(f"/v1/previews/{preview}", headers=env.a.auth())
    assert response.status_code == 204 and response.content == b""
    assert _blobs_of(env, preview) == []
    with env.session() as session:
        assert session.get(Preview, preview) is None
        assert session.get(Subject, sid) is not None
    _problem(env.client.get(f"/v1/previews/{preview}", headers=env.a.auth()), 404, "not_found")
    _problem(env.client.get(f"/v1/previews/{preview}/result", headers=env.a.auth()), 404, "not_found")
    _problem(env.client.delete(f"/v1/previews/{preview}", headers=env.a.auth()), 404, "not_found")
    # the subject's other preview is untouched
    assert len(_blobs_of(env, kept)) == 2
    assert env.client.get(f"/v1/previews/{kept}", headers=env.a.auth()).status_code == 200


@pytest.mark.parametrize("job_status", ["queued", "running"])
def test_deleting_a_queued_or_painting_preview_cancels_its_job(env: ApiEnv, job_status: str) -> None:
    sid = ready_subject(env, env.a)
    preview = create_preview(env, env.a, sid)["id"]
    with env.session() as session:
        session.execute(update(Job).where(Job.preview_id == preview).values(status=job_status, worker="w1"))
        session.commit()

    assert env.client.delete(f"/v1/previews/{preview}", headers=env.a.auth()).status_code == 204
    with env.session() as session:
        job = session.query(Job).filter(Job.preview_id == preview).one()
        # a painting worker sees the request at its next heartbeat and stops; one that finishes
        # anyway finds no row and drops its result (worker.preview_job)
        assert job.status == "cancelled" and job.cancel_requested
        assert session.get(Preview, preview) is None
    assert _blobs_of(env, preview) == []


def test_who_may_delete_a_preview_is_who_may_read_it(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    by_widget = create_preview(env, env.a, sid, kind="publishable")["id"]
    by_backend = create_preview(env, env.a, sid)["id"]
    pk = env.a.auth("publishable")
    # the widget's key: not what the shop's backend made, nor from an origin not on the key
    _problem(env.client.delete(f"/v1/previews/{by_backend}", headers=pk), 404, "not_found")
    elsewhere = {**pk, "Origin": "https://evil.example"}
    _problem(env.client.delete(f"/v1/previews/{by_widget}", headers=elsewhere), 403, "origin_not_allowed")
    for url in (f"/v1/previews/{by_widget}", f"/v1/previews/{by_backend}"):
        _problem(env.client.delete(url, headers=env.b.auth()), 404, "not_found")  # another shop's
        _problem(env.client.delete(url, headers=env.ops()), 403, "forbidden")
        _problem(env.client.delete(url), 401, "unauthorized")
    for hostile in ("prv_nope", "..%2F..", "x" * 300):
        _problem(env.client.delete(f"/v1/previews/{hostile}", headers=env.a.auth()), 404, "not_found")
    assert len(_blobs_of(env, by_widget)) == 2 and len(_blobs_of(env, by_backend)) == 2

    deleted = env.client.delete(f"/v1/previews/{by_widget}", headers=pk)  # the widget's own
    assert deleted.status_code == 204
    assert deleted.headers["access-control-allow-origin"] == env.a.origin
    assert _blobs_of(env, by_widget) == []
    assert env.client.delete(f"/v1/previews/{by_backend}", headers=env.a.auth()).status_code == 204
    assert _blobs_of(env, by_backend) == []


def test_the_widgets_origin_may_send_a_delete(sqlite_env: ApiEnv) -> None:
    """The CORS preflight of a DELETE from a listed origin allows it (the widget's "Delete my photos")."""
    env = sqlite_env
    preflight = env.client.options(
        "/v1/previews/prv_x",
        headers={"Origin": env.a.origin, "Access-Control-Request-Method": "DELETE"},
    )
    assert preflight.status_code == 204
    assert "DELETE" in preflight.headers["access-control-allow-methods"]


def test_the_reconciler_deletes_finished_previews_past_retention(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    old_success = _finished(env, sid, "succeeded", days_ago=45)
    old_failure = _finished(env, sid, "failed", days_ago=31)
    recent = _finished(env, sid, "succeeded", days_ago=29)
    waiting = create_preview(env, env.a, sid)["id"]  # queued for 40 days: not finished, kept
    with env.session() as session:
        session.execute(
            update(Preview).where(Preview.id == waiting).values(updated_at=utcnow() - timedelta(days=40))
        )
        session.commit()
    assert env.settings.preview_retention_days == 30  # the default
    expired = _counted("roomfit_previews_expired_total")

    reconcile_once(Runtime(env.settings))

    assert _counted("roomfit_previews_expired_total") == expired + 2  # the worker's /metrics

    for gone in (old_success, old_failure):
        assert _blobs_of(env, gone) == []
        _problem(env.client.get(f"/v1/previews/{gone}", headers=env.a.auth()), 404, "not_found")
    assert len(_blobs_of(env, recent)) == 3
    assert len(_blobs_of(env, waiting)) == 2
    for kept in (recent, waiting):
        assert env.client.get(f"/v1/previews/{kept}", headers=env.a.auth()).status_code == 200


def test_a_pass_deletes_at_most_a_batch_oldest_first(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    older = _finished(env, sid, "succeeded", days_ago=50)
    newer = _finished(env, sid, "cancelled", days_ago=40)
    with env.session() as session:
        assert forget_old_previews(session, env.blobs, utcnow(), 30, batch=1) == Swept(deleted=1)
    assert _blobs_of(env, older) == [] and len(_blobs_of(env, newer)) == 2
    with env.session() as session:
        assert session.get(Preview, newer) is not None
        assert forget_old_previews(session, env.blobs, utcnow(), 30, batch=1) == Swept(deleted=1)
        assert forget_old_previews(session, env.blobs, utcnow(), 30, batch=1) == Swept()
    assert _blobs_of(env, newer) == []


def test_retention_zero_keeps_finished_previews(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    preview = _finished(env, ready_subject(env, env.a), "succeeded", days_ago=3650)
    with env.session() as session:
        assert forget_old_previews(session, env.blobs, utcnow(), 0) == Swept()
    assert len(_blobs_of(env, preview)) == 3


def test_a_preview_whose_blobs_cannot_be_deleted_keeps_its_row_for_the_next_pass(
    sqlite_env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    stuck = _finished(env, sid, "succeeded", days_ago=60)
    other = _finished(env, sid, "succeeded", days_ago=50)
    delete_prefix, failing = env.blobs.delete_prefix, preview_prefix(env.a.tenant_id, stuck)

    def store_down_for_one(prefix: str) -> int:  # an outage of the store, for one preview's prefix
        if prefix == failing:
            raise OSError("blob store unavailable")
        return delete_prefix(prefix)

    monkeypatch.setattr(env.blobs, "delete_prefix", store_down_for_one)
    runtime = Runtime(env.settings)
    runtime.blobs = env.blobs  # the worker's store is the one that fails
    errors = _counted("roomfit_preview_expiry_errors_total")
    reconcile_once(runtime)
    with env.session() as session:
        assert session.get(Preview, stuck) is not None  # its photo is still stored: so is its row
        assert session.get(Preview, other) is None
    assert _blobs_of(env, other) == [] and len(_blobs_of(env, stuck)) == 3
    assert _counted("roomfit_preview_expiry_errors_total") == errors + 1  # what the alert watches
    monkeypatch.undo()  # the store is back
    with env.session() as session:
        assert forget_old_previews(session, env.blobs, utcnow(), 30) == Swept(deleted=1)
    assert _blobs_of(env, stuck) == []


def test_a_preview_says_when_it_will_be_deleted(env: ApiEnv) -> None:
    """`expires_at`: the retention after it finished, as the read, the POST answer and the stream say."""
    sid = ready_subject(env, env.a)
    made = create_preview(env, env.a, sid)
    assert made["status"] == "queued" and made["expires_at"] is None
    succeed_preview(env, made["id"])
    read = env.client.get(f"/v1/previews/{made['id']}", headers=env.a.auth()).json()
    finished = datetime.fromisoformat(read["updated_at"])
    assert datetime.fromisoformat(read["expires_at"]) == finished + timedelta(days=30)
    with env.client.stream(
        "GET", f"/v1/previews/{made['id']}/events", headers=env.a.auth()
    ) as stream:  # a finished preview's stream: its final state, then it ends
        final = [line for line in stream.iter_lines() if line.startswith("data:")][-1]
    assert json.loads(final.removeprefix("data:"))["expires_at"] == read["expires_at"]


@pytest.fixture
def keeping_env(tmp_path: Path) -> Iterator[ApiEnv]:
    """The app with `ROOMFIT_PREVIEW_RETENTION_DAYS=0`: previews kept until deleted."""
    yield from build_env(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'roomfit.db'}", preview_retention_days=0)
    )


def test_a_service_that_keeps_previews_says_no_expiry(keeping_env: ApiEnv) -> None:
    env = keeping_env
    made = create_preview(env, env.a, ready_subject(env, env.a))
    succeed_preview(env, made["id"])
    assert env.client.get(f"/v1/previews/{made['id']}", headers=env.a.auth()).json()["expires_at"] is None


@pytest.mark.parametrize("days", ["-1", "36501", "nan", "a month"])
def test_a_retention_that_is_not_a_number_of_days_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("ROOMFIT_PREVIEW_RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="preview_retention_days"):
        Settings(var_dir=tmp_path)


def test_ops_cannot_retry_a_preview_that_retention_is_deleting(env: ApiEnv) -> None:
    """A sweep drops a preview's blobs before its row, and its row delete checks again that the
    preview is still finished: a retry in between kept the row but lost the room photo, and failed.
    So a preview within the hour before its deletion (or past it) is not retried; a newer one is."""
    sid = ready_subject(env, env.a)
    due = _finished(env, sid, "failed", days_ago=30 - 0.5 / 24)  # deleted in half an hour
    fresh = _finished(env, sid, "failed", days_ago=29)
    with env.session() as session:
        jobs = {p: session.scalars(select(Job.id).where(Job.preview_id == p)).one() for p in (due, fresh)}

    refused = env.client.post(f"/v1/ops/jobs/{jobs[due]}/retry", headers=env.ops())
    _problem(refused, 409, "job_not_retryable")
    assert "retention" in refused.json()["detail"]
    assert env.client.get(f"/v1/previews/{due}", headers=env.a.auth()).json()["status"] == "failed"

    retried = env.client.post(f"/v1/ops/jobs/{jobs[fresh]}/retry", headers=env.ops())
    assert retried.status_code == 202, retried.text
    assert env.client.get(f"/v1/previews/{fresh}", headers=env.a.auth()).json()["status"] == "queued"


def test_previews_that_never_can_be_deleted_do_not_hold_up_newer_ones(
    sqlite_env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two oldest expired previews' blobs can never be deleted (a key under object lock, say)
    and a pass takes two: every pass used to try those two again and nothing newer ever went."""
    env = sqlite_env
    monkeypatch.setattr(retention, "_resume", retention._Resume())  # this process's sweep, fresh
    sid = ready_subject(env, env.a)
    stuck = [_finished(env, sid, "failed", days_ago=90 - n) for n in range(2)]
    newer = [_finished(env, sid, "failed", days_ago=60 - n) for n in range(3)]
    refused = {preview_prefix(env.a.tenant_id, p) for p in stuck}
    delete_prefix = env.blobs.delete_prefix

    def locked(prefix: str) -> int:
        if prefix in refused:
            raise OSError("AccessDenied: object locked")
        return delete_prefix(prefix)

    monkeypatch.setattr(env.blobs, "delete_prefix", locked)
    passes = []
    for _ in range(4):
        with env.session() as session:
            passes.append(forget_old_previews(session, env.blobs, utcnow(), 30, batch=2))
    assert passes == [Swept(0, 2), Swept(2, 0), Swept(0, 2), Swept(1, 0)]  # then from the oldest again
    with env.session() as session:
        assert [p for p in stuck + newer if session.get(Preview, p) is not None] == stuck
