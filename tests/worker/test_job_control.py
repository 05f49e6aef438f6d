"""Cancellation, deadlines, webhooks and failure handling of the job pipeline (issue 5)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from core.blob_keys import subject_prefix
from core.ids import new_id
from core.job_state import request_cancel
from core.tables import Job, Subject, Webhook, WebhookDelivery
from core.webhooks import new_secret, verify
from tests.worker.conftest import make_tenant, submit_subject
from tests.worker.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def test_deleting_a_subject_in_training_stops_it_and_removes_its_blobs(distributed_stack: Stack) -> None:
    stack = distributed_stack
    worker = stack.start_worker("train")
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id, steps=400)
    wait_for(lambda: len(stack.row(Job, job_id).loss_points) >= 2, 180, "training to be under way")

    # What DELETE /v1/subjects/{id} does: cancel the job, drop the rows and the blobs.
    with stack.session() as session:
        request_cancel(session, session.get(Job, job_id))
        session.delete(session.get(Subject, subject_id))
        session.commit()
    stack.blobs.delete_prefix(subject_prefix(tenant_id, subject_id))

    wait_for(lambda: f"job {job_id} cancelled" in worker.log(), 30, "the worker to stop the training")
    job = stack.row(Job, job_id)
    assert job.status == "cancelled"
    assert len(job.loss_points) < 400  # it stopped, it did not train to the end
    assert stack.blobs.list(subject_prefix(tenant_id, subject_id)) == []


def test_a_job_past_its_deadline_fails_with_timeout(distributed_stack: Stack) -> None:
    stack = distributed_stack
    worker = stack.start_worker("train", ROOMFIT_TRAIN_TIMEOUT_SECONDS="10")
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id, steps=5000)
    job = wait_for(lambda: stack.finished(Job, job_id), 120, "the deadline")
    assert (job.status, job.error_code) == ("failed", "timeout"), worker.log()[-2000:]
    with stack.session() as session:
        subject = session.get(Subject, subject_id)
        assert (subject.status, subject.error_code) == ("failed", "timeout")


class _Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = 500 if len(type(self).received) <= type(self).fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hooks]]]:
    handler = type("Hooks", (_Hooks,), {"received": [], "fail_first": 1})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks", handler
    finally:
        server.shutdown()


def test_webhook_is_signed_and_retried_until_2xx(distributed_stack: Stack, hook_server) -> None:  # type: ignore[no-untyped-def]
    stack = distributed_stack
    url, handler = hook_server
    tenant_id = make_tenant(stack)
    secret = new_secret()
    with stack.session() as session:
        session.add(Webhook(id=new_id("whk"), tenant_id=tenant_id, url=url, secret=secret))
        session.commit()
    stack.start_worker("train")
    # Deliveries have their own pool; the test's loopback receiver needs the development setting.
    stack.start_worker("webhooks", ROOMFIT_WEBHOOK_ALLOW_PRIVATE="true")
    subject_id, _ = submit_subject(stack, tenant_id)

    wait_for(lambda: len(handler.received) >= 2, 240, "the webhook to be delivered after one failure")
    (_, first_body), (headers, body) = handler.received[:2]
    assert first_body == body  # the retry sends the same event
    assert verify(secret, headers["Roomfit-Signature"], body)
    assert not verify("whsec_other", headers["Roomfit-Signature"], body)
    event = json.loads(body)
    assert event["type"] == "subject.ready" and event["data"]["id"] == subject_id
    assert event["data"]["status"] == "ready" and event["data"]["adapter"]["rank"] == 4
    with stack.session() as session:
        delivery = session.query(WebhookDelivery).filter_by(tenant_id=tenant_id).one()
        assert (delivery.status, delivery.attempts) == ("delivered", 2)
