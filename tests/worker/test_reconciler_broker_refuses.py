"""A reconciler pass while the broker refuses messages goes on past each send it cannot make: the
jobs it gives up are failed and still get their failure webhook, and what it could not send (a lost
job, a stalled webhook delivery) is sent by a later pass once the broker is back."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from core import webhooks
from core.clock import utcnow
from core.ids import new_id
from core.queue import _decoded, job_ids_in_broker
from core.tables import Job, Subject, Webhook, WebhookDelivery
from core.webhooks import new_secret
from tests.worker.conftest import in_process_runtime, make_tenant, submit_preview
from worker.reconciler import reconcile_once
from worker.runtime import Runtime


def _two_orphaned_previews(runtime: Runtime) -> tuple[str, str, str, str]:
    """A tenant with a webhook, and two previews whose worker died (lease expired): one out of
    attempts, one to send again; (tenant, preview given up, its job, the job to send again)."""
    tenant_id = make_tenant(runtime)  # type: ignore[arg-type]
    subject_id = new_id("sub")
    with runtime.session() as session:
        session.add(Subject(id=subject_id, tenant_id=tenant_id, name="sofa", status="ready"))
        session.add(
            Webhook(id=new_id("whk"), tenant_id=tenant_id, url="https://h.example/", secret=new_secret())
        )
        session.commit()
    given_up_preview, given_up_job, _, _ = submit_preview(runtime, tenant_id, subject_id, seed=1)  # type: ignore[arg-type]
    _, resent_job, _, _ = submit_preview(runtime, tenant_id, subject_id, seed=2)  # type: ignore[arg-type]
    with runtime.session() as session:
        for job_id, attempts in ((given_up_job, 2), (resent_job, 1)):
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status="running",
                    worker="gone:1",
                    attempts=attempts,
                    lease_expires_at=utcnow() - timedelta(seconds=1),
                )
            )
        session.commit()
    return tenant_id, given_up_preview, given_up_job, resent_job


def _broker_refuses(runtime: Runtime) -> Path:
    queue = runtime.settings.broker_folder / "queue"
    runtime.celery  # noqa: B018 - made while the folder is there (its options create it)
    shutil.rmtree(queue)
    queue.write_bytes(b"")  # a file where the broker's folder was: every send is refused
    return queue


def _broker_back(queue: Path) -> None:
    queue.unlink()
    queue.mkdir()


def _failure_events(runtime: Runtime, tenant_id: str) -> list[tuple[str, str]]:
    with runtime.session() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.event == "preview.failed"
            )
        ).all()
        return [(d.event, d.payload["data"]["id"]) for d in rows]


def _given_up(runtime: Runtime, job_id: str) -> tuple[str, str | None]:
    with runtime.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, job.error_code


def test_a_pass_whose_sends_fail_still_reports_the_jobs_it_gave_up(tmp_path: Path) -> None:
    with in_process_runtime(tmp_path, max_attempts=2) as runtime:
        tenant_id, given_up_preview, given_up_job, resent_job = _two_orphaned_previews(runtime)
        queue = _broker_refuses(runtime)
        reconcile_once(runtime)

        assert _given_up(runtime, given_up_job) == ("failed", "too_many_attempts")
        assert _failure_events(runtime, tenant_id) == [("preview.failed", given_up_preview)]

        _broker_back(queue)
        reconcile_once(runtime)
        assert resent_job in (job_ids_in_broker(runtime.celery) or set())


def test_a_stalled_delivery_that_cannot_be_sent_does_not_stop_the_pass(tmp_path: Path) -> None:
    with in_process_runtime(tmp_path, max_attempts=2) as runtime:
        tenant_id, given_up_preview, given_up_job, _ = _two_orphaned_previews(runtime)
        with runtime.session() as session:  # a delivery whose message was lost long ago
            stalled = webhooks.new_delivery(tenant_id, "preview.succeeded", {"id": "prv_x"})
            stalled.next_attempt_at = utcnow() - timedelta(hours=1)
            session.add(stalled)
            session.commit()
            stalled_id = stalled.id
        queue = _broker_refuses(runtime)
        reconcile_once(runtime)

        assert _given_up(runtime, given_up_job) == ("failed", "too_many_attempts")
        assert _failure_events(runtime, tenant_id) == [("preview.failed", given_up_preview)]

        _broker_back(queue)
        reconcile_once(runtime)
        assert _sent(queue, stalled_id)


def _sent(queue: Path, delivery_id: str) -> bool:
    """Whether a message naming `delivery_id` waits in the broker's folder (its body is base64)."""
    return any(delivery_id in _decoded(path.read_bytes()) for path in queue.glob("*.msg"))
