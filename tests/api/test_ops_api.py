"""`/v1/ops/*` read on the app with SQLite and PostgreSQL: the job filters and their paging, a job's
timeline, usage per tenant, the workers from heartbeat rows, the queues; bad filters answer 422
problem+json and keys other than ops keys 403."""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from core import heartbeats, job_state, previews
from core.clock import utcnow
from core.tables import Job, Preview
from tests.api.conftest import ApiEnv, create_preview, ready_subject

READS = ("/v1/ops/queues", "/v1/ops/workers", "/v1/ops/jobs", "/v1/ops/usage")


def _get(env: ApiEnv, path: str, **params: Any) -> Any:
    response = env.client.get(path, headers=env.ops(), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _previews(env: ApiEnv, count: int, shop: Any) -> list[str]:
    """Job ids of `count` new previews of `shop`, oldest first."""
    subject = ready_subject(env, shop)
    return [create_preview(env, shop, subject)["id"] for _ in range(count)]


def _job_of(env: ApiEnv, preview_id: str) -> str:
    with env.session() as session:
        preview = session.get(Preview, preview_id)
        assert preview is not None and preview.job_id is not None
        return preview.job_id


def _set(env: ApiEnv, job_id: str, **values: Any) -> None:
    with env.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def test_jobs_filter_by_tenant_status_and_time_and_page(env: ApiEnv) -> None:
    a_jobs = [_job_of(env, p) for p in _previews(env, 3, env.a)]
    b_jobs = [_job_of(env, p) for p in _previews(env, 1, env.b)]
    yesterday = utcnow() - timedelta(days=1)
    _set(env, a_jobs[0], created_at=yesterday, status="failed", error_code="boom", error_message="it broke")

    page = _get(env, "/v1/ops/jobs", tenant_id=env.a.tenant_id)
    assert [j["id"] for j in page["items"]] == a_jobs[::-1] and page["next_cursor"] is None
    item = page["items"][-1]
    assert (item["status"], item["error"], item["attempts"]) == (
        "failed",
        {"code": "boom", "message": "it broke"},
        0,
    )
    assert {"stage", "progress", "loss"} <= set(item)
    assert [j["id"] for j in _get(env, "/v1/ops/jobs", status="failed")["items"]] == [a_jobs[0]]

    today = (utcnow() - timedelta(hours=1)).isoformat()
    recent = _get(env, "/v1/ops/jobs", since=today)["items"]
    assert {j["id"] for j in recent} == {*a_jobs[1:], *b_jobs}
    # A time without a zone is UTC, and `until` is exclusive.
    naive = (yesterday + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert [j["id"] for j in _get(env, "/v1/ops/jobs", until=naive)["items"]] == [a_jobs[0]]
    assert _get(env, "/v1/ops/jobs", until=yesterday.isoformat())["items"] == []

    first = _get(env, "/v1/ops/jobs", limit=2)
    second = _get(env, "/v1/ops/jobs", limit=2, cursor=first["next_cursor"])
    assert [j["id"] for j in first["items"] + second["items"]] == [*b_jobs, *a_jobs[::-1]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-11-29T10:00:00Z", "until": "2026-11-29T10:00:00Z"},
        {"since": "2026-11-29T11:00:00Z", "until": "2026-11-29T10:00:00+00:00"},
        {"tenant_id": "shop-a"},
        {"status": "lost"},
        {"kind": "webhook"},
        {"limit": "0"},
        {"cursor": "job_; drop table jobs"},
    ],
)
def test_bad_job_filters_are_422_problems(sqlite_env: ApiEnv, params: dict[str, str]) -> None:
    response = sqlite_env.client.get("/v1/ops/jobs", headers=sqlite_env.ops(), params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error" and body["errors"][0]["loc"][0] == "query"


def test_only_ops_keys_read_ops(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    job_id = _job_of(env, _previews(env, 1, env.a)[0])
    for path in (*READS, f"/v1/ops/jobs/{job_id}"):
        for headers in (env.a.auth(), env.a.auth("publishable")):
            response = env.client.get(path, headers=headers)
            assert (response.status_code, response.json()["code"]) == (403, "forbidden"), path
        assert env.client.get(path, headers=env.ops()).status_code == 200, path


def test_a_job_page_has_its_loss_and_each_attempt_in_its_timeline(env: ApiEnv) -> None:
    preview_id = _previews(env, 1, env.a)[0]
    job_id = _job_of(env, preview_id)

    def run(outcome: str) -> None:
        with env.session() as session:
            held = job_state.claim(session, job_id, "gpu-0:1", 60, 3)
            assert held is not None
            previews.mark_running(session.get(Preview, preview_id))  # type: ignore[arg-type]
            job_state.report(session, held, stage="painting", progress=0.5, loss_point=(1, 0.25))
            if outcome == "succeeded":
                previews.finish(session.get(Preview, preview_id), "k", {})  # type: ignore[arg-type]
            job_state.finish(session, held, outcome, *(("boom", "it broke") if outcome == "failed" else ()))

    run("failed")
    retried = env.client.post(f"/v1/ops/jobs/{job_id}/retry", headers=env.ops())
    assert retried.status_code == 202, retried.text
    run("succeeded")

    job = _get(env, f"/v1/ops/jobs/{job_id}")
    assert job["status"] == "succeeded" and job["loss"] == [[1.0, 0.25], [1.0, 0.25]]
    steps = [(e["event"], e["status"], e["stage"], e["attempt"]) for e in job["timeline"]]
    assert steps == [
        ("queued", "queued", None, 0),
        ("claimed", "running", None, 1),
        ("stage", "running", "painting", 1),
        ("finished", "failed", "painting", 1),
        ("queued", "queued", None, 1),
        ("claimed", "running", None, 2),
        ("stage", "running", "painting", 2),
        ("finished", "succeeded", None, 2),
    ]
    times = [e["at"] for e in job["timeline"]]
    assert times == sorted(times)
    missing = env.client.get("/v1/ops/jobs/job_01JD6Y3ZC7A1B2C3D4E5F6G7H8", headers=env.ops())
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_usage_counts_today_and_now_per_tenant(env: ApiEnv) -> None:
    a_jobs = [_job_of(env, p) for p in _previews(env, 3, env.a)]
    b_jobs = [_job_of(env, p) for p in _previews(env, 2, env.b)]
    long_ago = utcnow() - timedelta(days=3)
    _set(env, a_jobs[0], status="failed", finished_at=utcnow())
    _set(env, a_jobs[1], status="running")
    # shop-b's: one made days ago and still queued, one made and finished days ago (not today's).
    _set(env, b_jobs[0], created_at=long_ago)
    _set(env, b_jobs[1], created_at=long_ago, status="failed", finished_at=long_ago)

    usage = _get(env, "/v1/ops/usage")
    assert usage["day"] == utcnow().date().isoformat()
    rows = {
        (t["name"], t["created_today"], t["queued_now"], t["running_now"], t["failed_today"])
        for t in usage["tenants"]
    }
    assert rows == {("shop-a", 3, 1, 1, 1), ("shop-b", 0, 1, 0, 0)}
    assert [t["name"] for t in usage["tenants"]] == ["shop-a", "shop-b"]  # most created first


def test_workers_from_heartbeats_go_offline_then_leave(env: ApiEnv) -> None:
    now = utcnow()
    job_id = _job_of(env, _previews(env, 1, env.a)[0])
    _set(env, job_id, status="running", worker="gpu-0:11")
    with env.session() as session:
        beat = {"host": "gpu-0", "queues": ["preview"], "adapter_cache_hits": 5, "adapter_cache_misses": 2}
        heartbeats.record(session, "gpu-0:11", now, 5.0, pid=11, base_model="tiny", **beat)
        heartbeats.record(session, "gpu-0:12", now - timedelta(seconds=30), 5.0, pid=12, **beat)
        heartbeats.record(session, "gpu-0:13", now - timedelta(hours=1), 5.0, pid=13, **beat)
        session.commit()
    listed = {w["name"]: w for w in _get(env, "/v1/ops/workers")["workers"]}
    assert set(listed) == {"gpu-0:11", "gpu-0:12"}  # 13 went past ROOMFIT_WORKER_FORGET_SECONDS
    live, gone = listed["gpu-0:11"], listed["gpu-0:12"]
    assert (live["online"], live["current_jobs"], live["running_jobs"]) == (True, [job_id], 1)
    assert (gone["online"], gone["current_jobs"]) == (False, [])
    assert live["adapter_cache"] == {"hits": 5, "misses": 2, "swap_seconds_mean": None}
    assert (live["host"], live["pid"], live["queues"], live["base_model"], live["gpu"]) == (
        "gpu-0",
        11,
        ["preview"],
        "tiny",
        None,
    )
    with env.session() as session:
        assert heartbeats.prune(session, utcnow(), env.settings.worker_forget_seconds) == 1


def test_queues_show_counts_oldest_wait_and_live_workers(env: ApiEnv) -> None:
    jobs = [_job_of(env, p) for p in _previews(env, 3, env.a)]
    waited_since = utcnow() - timedelta(minutes=5)
    _set(env, jobs[0], created_at=waited_since)
    _set(env, jobs[2], status="failed")
    with env.session() as session:
        heartbeats.record(session, "gpu-0:11", utcnow(), 5.0, host="gpu-0", pid=11, queues=["preview"])
        session.commit()
    found = {q["kind"]: q for q in _get(env, "/v1/ops/queues")["queues"]}
    preview, train = found["preview"], found["train"]
    assert preview["counts"] == {"failed": 1, "queued": 2}
    assert 300 <= preview["oldest_queued_seconds"] < 360
    assert preview["oldest_queued_at"].startswith(waited_since.isoformat()[:19])
    assert (preview["workers"], train["workers"]) == (1, 0)
    assert (train["counts"], train["oldest_queued_at"], train["oldest_queued_seconds"]) == ({}, None, None)
    # embedded mode's filesystem broker: one message file per submitted job (no worker took any;
    # the failed one's is there too, as the database alone marked it)
    assert (preview["broker_length"], train["broker_length"]) == (3, 0)
    shutil.rmtree(env.settings.broker_folder / "queue")  # a broker that cannot be read: null, no 500
    assert [q["broker_length"] for q in _get(env, "/v1/ops/queues")["queues"]] == [None, None]
