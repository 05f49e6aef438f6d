"""What is left of a deleted preview or subject goes after `ROOMFIT_PREVIEW_RETENTION_DAYS` too: its
job rows and the settled webhook deliveries about it (core.retention.forget_old_history), deleted
by the reconciler pass every worker runs. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from core.clock import utcnow
from core.ids import new_id
from core.retention import HistorySwept, forget_old_history
from core.tables import Job, WebhookDelivery
from core.webhooks import new_delivery
from tests.api.conftest import ApiEnv, create_preview, ready_subject, succeed_preview
from worker.reconciler import HISTORY_SWEEP_SECONDS, reconcile_once
from worker.runtime import Runtime


def _expired(table: str) -> float:
    """The worker's /metrics counter of history rows deleted, for one table."""
    return REGISTRY.get_sample_value("roomfit_history_rows_expired_total", {"table": table}) or 0.0


def _age_job(env: ApiEnv, job_id: str, status: str, days_ago: float) -> None:
    with env.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=status, updated_at=utcnow() - timedelta(days=days_ago))
        )
        session.commit()


def _preview_job(env: ApiEnv, subject_id: str, *, deleted: bool, status: str, days_ago: float) -> str:
    """A preview's job that ended `days_ago`; its preview deleted through the API, or kept."""
    preview = create_preview(env, env.a, subject_id)["id"]
    succeed_preview(env, preview)
    with env.session() as session:
        job_id = session.scalars(select(Job.id).where(Job.preview_id == preview)).one()
    if deleted:
        assert env.client.delete(f"/v1/previews/{preview}", headers=env.a.auth()).status_code == 204
    _age_job(env, job_id, status, days_ago)
    return job_id


def _training_job(env: ApiEnv, subject_id: str, status: str, days_ago: float) -> str:
    with env.session() as session:
        job = Job(id=new_id("job"), tenant_id=env.a.tenant_id, kind="train", subject_id=subject_id)
        session.add(job)
        session.commit()
    _age_job(env, job.id, status, days_ago)
    return job.id


def _delivery(env: ApiEnv, status: str, days_ago: float) -> str:
    delivery = new_delivery(env.a.tenant_id, "preview.succeeded", {"id": new_id("prv")})
    with env.session() as session:
        session.add(delivery)
        session.commit()
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(status=status, updated_at=utcnow() - timedelta(days=days_ago))
        )
        session.commit()
    return delivery.id


def _left(env: ApiEnv, model: Any, ids: list[str]) -> list[str]:
    with env.session() as session:
        found = set(session.scalars(select(model.id).where(model.id.in_(ids))))
    return [row_id for row_id in ids if row_id in found]


def test_the_reconciler_deletes_the_history_of_what_is_gone(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    gone_subject = ready_subject(env, env.a, name="sold out")
    old_of_deleted = _preview_job(env, sid, deleted=True, status="succeeded", days_ago=31)
    failed_of_deleted = _preview_job(env, sid, deleted=True, status="failed", days_ago=45)
    young_of_deleted = _preview_job(env, sid, deleted=True, status="succeeded", days_ago=10)
    # its preview is still there (it finished just now, as far as the preview sweep can tell)
    old_of_kept = _preview_job(env, sid, deleted=False, status="succeeded", days_ago=40)
    training_of_ready = _training_job(env, sid, "succeeded", days_ago=90)
    training_of_gone = _training_job(env, gone_subject, "succeeded", days_ago=40)
    running_of_gone = _training_job(env, gone_subject, "running", days_ago=40)
    assert env.client.delete(f"/v1/subjects/{gone_subject}", headers=env.a.auth()).status_code == 204
    # Deleting the subject cancelled that training; set it running again, as a worker that has not
    # noticed yet leaves it: a job that has not ended is never deleted.
    _age_job(env, running_of_gone, "running", 40)
    delivered = _delivery(env, "delivered", days_ago=31)
    given_up = _delivery(env, "failed", days_ago=60)
    pending = _delivery(env, "pending", days_ago=60)  # still to be sent: never deleted
    recent = _delivery(env, "delivered", days_ago=5)
    jobs_before, deliveries_before = _expired("jobs"), _expired("webhook_deliveries")

    reconcile_once(Runtime(env.settings))

    jobs = [old_of_deleted, failed_of_deleted, young_of_deleted, old_of_kept]
    jobs += [training_of_ready, training_of_gone, running_of_gone]
    assert _left(env, Job, jobs) == [young_of_deleted, old_of_kept, training_of_ready, running_of_gone]
    deliveries = [delivered, given_up, pending, recent]
    assert _left(env, WebhookDelivery, deliveries) == [pending, recent]
    assert _expired("jobs") == jobs_before + 3
    assert _expired("webhook_deliveries") == deliveries_before + 2
    # the job of a preview that is still there is read as before
    assert env.client.get(f"/v1/jobs/{old_of_kept}", headers=env.a.auth()).status_code == 200


def test_a_pass_deletes_at_most_a_batch_of_each_oldest_first(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    older = _preview_job(env, sid, deleted=True, status="succeeded", days_ago=50)
    newer = _preview_job(env, sid, deleted=True, status="cancelled", days_ago=40)
    old_delivery, new_delivery_ = _delivery(env, "delivered", 50), _delivery(env, "failed", 40)
    with env.session() as session:
        assert forget_old_history(session, utcnow(), 30, batch=1) == HistorySwept(jobs=1, deliveries=1)
    assert _left(env, Job, [older, newer]) == [newer]
    assert _left(env, WebhookDelivery, [old_delivery, new_delivery_]) == [new_delivery_]
    with env.session() as session:
        assert forget_old_history(session, utcnow(), 30, batch=1) == HistorySwept(jobs=1, deliveries=1)
        assert forget_old_history(session, utcnow(), 30, batch=1) == HistorySwept()


def test_retention_zero_keeps_the_history(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    _preview_job(env, sid, deleted=True, status="succeeded", days_ago=3650)
    _delivery(env, "delivered", days_ago=3650)
    with env.session() as session:
        assert forget_old_history(session, utcnow(), 0) == HistorySwept()
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1


def test_each_worker_sweeps_the_history_every_ten_minutes(env: ApiEnv) -> None:
    """Not every reconciler pass: the trainings of subjects that still exist are read each time."""
    sid = ready_subject(env, env.a)
    runtime = Runtime(env.settings)
    reconcile_once(runtime)  # the process's first pass sweeps
    assert runtime.history_sweep_due - time.monotonic() > HISTORY_SWEEP_SECONDS - 60
    job = _preview_job(env, sid, deleted=True, status="succeeded", days_ago=31)
    reconcile_once(runtime)
    assert _left(env, Job, [job]) == [job]  # the next pass, within ten minutes: kept for now
    runtime.history_sweep_due = time.monotonic()  # ten minutes later
    reconcile_once(runtime)
    assert _left(env, Job, [job]) == []
