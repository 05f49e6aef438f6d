"""The ops API against real Redis and real worker processes (issue 12, acceptance 1): the queue
depths it reports are the broker's, a killed worker goes offline and then leaves the list after
its window, retrying a failed training runs it again, cancelling a running training stops it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.accounts import create_key
from core.blob_keys import photo_key
from core.tables import Job, Subject
from tests.worker.conftest import make_tenant, submit_subject
from tests.worker.stack import Stack, wait_for

pytestmark = pytest.mark.integration


@contextmanager
def ops_api(stack: Stack, **settings: Any) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API in this process on the stack's database and broker, and an ops key's headers."""
    app = create_app(stack.settings.model_copy(update=settings))
    with app.state.sessions() as session:
        _, key = create_key(session, kind="ops", tenant=None)
        session.commit()
    try:
        with TestClient(app) as client:
            yield client, {"Authorization": f"Bearer {key}"}
    finally:
        app.state.engine.dispose()


def _get(client: TestClient, headers: dict[str, str], path: str) -> Any:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_reported_queue_depths_are_the_brokers(distributed_stack: Stack) -> None:
    stack = distributed_stack  # no worker: what is sent stays in Redis
    tenant_id = make_tenant(stack)
    for _ in range(3):
        submit_subject(stack, tenant_id)
    with ops_api(stack) as (client, headers), stack.celery.connection_for_read() as conn:
        redis = conn.default_channel.client
        queues = {q["kind"]: q for q in _get(client, headers, "/v1/ops/queues")["queues"]}
        assert queues["train"]["broker_length"] == redis.llen("train") == 3
        assert queues["preview"]["broker_length"] == redis.llen("preview") == 0
        assert queues["train"]["counts"] == {"queued": 3} and queues["train"]["workers"] == 0
        assert queues["train"]["oldest_queued_seconds"] >= 0


def test_retry_cancel_and_a_killed_worker_on_a_real_train_worker(distributed_stack: Stack) -> None:
    """One worker process for three things, as starting one is the slow part: retrying a failed
    training runs it again, cancelling a running one stops it, and once killed the worker goes
    offline after its window (three 0.5 s heartbeats) and then leaves the list."""
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    # A photo that is no image: the training fails with image_unreadable. One step: the retry's
    # training only has to run.
    subject_id, job_id = submit_subject(stack, tenant_id, steps=1)
    key = photo_key(tenant_id, subject_id, 0, "png")
    good = stack.blobs.get(key)
    stack.blobs.put(key, b"not an image", content_type="image/png")
    worker = stack.start_worker("train", ROOMFIT_WORKER_HEARTBEAT_SECONDS="0.5")
    with ops_api(stack, worker_forget_seconds=3.0) as (client, headers):
        failed = wait_for(lambda: stack.finished(Job, job_id), 180, "the training to fail")
        assert (failed.status, failed.error_code, failed.attempts) == ("failed", "image_unreadable", 1)

        stack.blobs.put(key, good, content_type="image/png")  # mended: the retry can succeed
        assert client.post(f"/v1/ops/jobs/{job_id}/retry", headers=headers).status_code == 202
        done = wait_for(lambda: stack.finished(Job, job_id), 180, "the retry to end")
        assert done.status == "succeeded", worker.log()[-2000:]
        with stack.session() as session:
            assert session.get(Subject, subject_id).status == "ready"  # type: ignore[union-attr]
        page = _get(client, headers, f"/v1/ops/jobs/{job_id}")
        claims = [e["attempt"] for e in page["timeline"] if e["event"] == "claimed"]
        assert claims == [1, 2] and page["loss"], page["timeline"]

        # A long training, cancelled through the ops API once it is under way.
        _, long_id = submit_subject(stack, tenant_id, steps=400)
        wait_for(lambda: len(stack.row(Job, long_id).loss_points) >= 2, 180, "training to be under way")
        assert worker.process is not None
        pid = worker.process.pid

        def listed() -> dict[int, Any]:
            return {w["pid"]: w for w in _get(client, headers, "/v1/ops/workers")["workers"]}

        busy = wait_for(lambda: (w := listed().get(pid)) and w["current_jobs"] and w, 30, "the current job")
        assert (busy["online"], busy["queues"], busy["current_jobs"]) == (True, ["train"], [long_id])
        assert busy["base_model"] == "tiny"
        cancelled = client.post(f"/v1/ops/jobs/{long_id}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"], cancelled.text
        wait_for(lambda: f"job {long_id} cancelled" in worker.log(), 60, "the worker to stop the training")
        job = stack.row(Job, long_id)
        assert job.status == "cancelled" and len(job.loss_points) < 400

        worker.kill9()
        wait_for(lambda: (w := listed().get(pid)) is not None and not w["online"], 30, "the worker offline")
        wait_for(lambda: pid not in listed(), 30, "the worker to leave the list")
        queues = {q["kind"]: q for q in _get(client, headers, "/v1/ops/queues")["queues"]}
        assert queues["train"]["workers"] == 0
