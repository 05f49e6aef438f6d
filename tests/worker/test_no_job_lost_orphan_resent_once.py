"""A job whose worker was killed (lease expired) was sent again by every reconciler pass of every
worker (each half a lease) until some worker took it: with the pool busy for an hour that is a
hundred messages for one job on the `train` list, which KEDA reads as a hundred trainings waiting
(deploy/k8s/autoscaling.yaml scales on its length). Once re-sent, the job is waited for like a queued
one: sent again only when its message is not in the broker (lost to a wipe), or, when the broker
cannot be read, after `requeue_after`; and again at once if the worker that took it dies too."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from core import dispatch, job_state
from core.clock import utcnow
from core.queue import job_ids_in_broker
from core.tables import Job
from tests.worker.conftest import claimed_training, in_process_runtime
from worker.reconciler import reconcile_once
from worker.runtime import Runtime


def _lease_runs_out(runtime: Runtime, job_id: str) -> None:
    with runtime.session() as session:  # its worker was killed: no heartbeat since
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()


def test_an_orphaned_job_is_sent_again_once_not_every_pass(tmp_path: Path) -> None:
    with in_process_runtime(tmp_path, lease_seconds=10) as runtime:
        orphan = claimed_training(runtime).job_id
        _lease_runs_out(runtime, orphan)
        assert reconcile_once(runtime) == [orphan]
        assert reconcile_once(runtime) == []  # its message waits in the broker: no second one
        assert orphan in (job_ids_in_broker(runtime.celery) or set())

        with runtime.session() as session:  # the broker cannot be read: wait `requeue_after`
            kept = dispatch.reconcile(
                session,
                enqueue=lambda *_: None,
                in_broker=None,
                max_attempts=3,
                requeue_after=timedelta(seconds=20),
            )
            assert kept == []

        for path in (runtime.settings.broker_folder / "queue").glob("*.msg"):
            path.unlink()  # the broker lost its data
        assert reconcile_once(runtime) == [orphan]

        with runtime.session() as session:  # a worker takes it, and is killed in turn
            assert job_state.claim(session, orphan, "w2", 10, max_attempts=3) is not None
        _lease_runs_out(runtime, orphan)
        assert reconcile_once(runtime) == [orphan]
