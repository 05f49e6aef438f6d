"""The ops gauges on /metrics (api.ops_metrics): queue depth and the oldest job's age, live workers,
the webhook backlog; and /metrics still answering, with `roomfit_ops_metrics_up 0`, when the
database is gone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from api.ops_metrics import install_ops_metrics
from core import heartbeats
from core.clock import utcnow
from core.db import make_engine
from core.tables import Job
from core.webhooks import new_delivery
from tests.api.conftest import ApiEnv, create_preview, ready_subject


def _samples(env: ApiEnv) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = env.client.get("/metrics")
    assert response.status_code == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"{key} twice: the collector is registered more than once"
            out[key] = sample.value
    return out


def _queue(name: str, queue: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, (("queue", queue),)


def test_queue_gauges_count_what_waits(env: ApiEnv) -> None:
    install_ops_metrics(env.app)
    install_ops_metrics(env.app)  # again: no duplicate registration, no duplicate samples
    before = _samples(env)
    assert before[("roomfit_ops_metrics_up", ())] == 1
    assert before[_queue("roomfit_queue_depth", "preview")] == 0
    assert before[_queue("roomfit_queue_oldest_seconds", "preview")] == 0
    assert before[("roomfit_webhook_deliveries_pending", ())] == 0
    # No worker wrote a heartbeat: no live worker anywhere.
    assert before[_queue("roomfit_workers", "preview")] == 0

    subject = ready_subject(env, env.a)
    for _ in range(3):
        create_preview(env, env.a, subject)
    with env.session() as session:
        session.add_all([new_delivery(env.a.tenant_id, "preview.succeeded", {}) for _ in range(2)])
        # One job has waited two minutes; the gauge reports the oldest.
        oldest = session.scalars(select(Job.id).where(Job.kind == "preview").limit(1)).first()
        session.execute(
            update(Job).where(Job.id == oldest).values(created_at=utcnow() - timedelta(seconds=120))
        )
        session.commit()

    after = _samples(env)
    assert after[_queue("roomfit_queue_depth", "preview")] == 3
    assert after[_queue("roomfit_queue_depth", "train")] == 0
    assert 120 <= after[_queue("roomfit_queue_oldest_seconds", "preview")] < 180
    assert after[_queue("roomfit_queue_oldest_seconds", "train")] == 0
    assert after[("roomfit_webhook_deliveries_pending", ())] == 2


def test_workers_count_only_online_heartbeats(env: ApiEnv) -> None:
    install_ops_metrics(env.app)
    now = utcnow()
    with env.session() as session:
        heartbeats.record(session, "gpu-1:42", now, 5.0, host="gpu-1", pid=42, queues=["preview"])
        heartbeats.record(session, "gpu-2:43", now, 5.0, host="gpu-2", pid=43, queues=["train", "preview"])
        # Last seen a minute ago with 5 s heartbeats: past its window, so not counted.
        heartbeats.record(
            session, "gpu-3:44", now - timedelta(minutes=1), 5.0, host="gpu-3", pid=44, queues=["train"]
        )
        session.commit()
    samples = _samples(env)
    assert samples[_queue("roomfit_workers", "preview")] == 2
    assert samples[_queue("roomfit_workers", "train")] == 1
    assert samples[_queue("roomfit_workers", "webhooks")] == 0


def test_metrics_answer_with_the_database_down(sqlite_env: ApiEnv, tmp_path: Path) -> None:
    install_ops_metrics(sqlite_env.app)
    folder = tmp_path / "gone"
    broken = make_engine(f"sqlite:///{folder}/x.db")  # creates the folder ...
    folder.rmdir()  # ... which then vanishes: every connection fails (as test_contract does)
    sqlite_env.app.state.sessions = sessionmaker(bind=broken)
    assert sqlite_env.client.get("/healthz").status_code == 200  # a request for the request metrics
    samples = _samples(sqlite_env)
    assert samples[("roomfit_ops_metrics_up", ())] == 0
    assert not any(name == "roomfit_queue_depth" for name, _ in samples)
    # The request metrics are still there: the scrape as a whole did not fail.
    assert any(name == "roomfit_http_requests_total" for name, _ in samples)
