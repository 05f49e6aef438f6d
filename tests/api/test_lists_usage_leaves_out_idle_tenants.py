"""`GET /v1/ops/usage` leaves out a tenant with nothing created or failed today and nothing queued or
running (docs/api.md). A tenant whose only job today is one made earlier that *succeeded* or was
*cancelled* today has nothing to count: it was listed all the same, a row of zeros."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from core.clock import utcnow
from core.job_state import new_job
from core.tables import Job
from tests.api.conftest import ApiEnv


def _old_job_finished_now(env: ApiEnv, tenant_id: str, status: str) -> None:
    """A job made days ago that ended a moment ago (`status`)."""
    with env.session() as session:
        job = new_job(tenant_id, "preview")
        session.add(job)
        session.commit()
        long_ago = utcnow() - timedelta(days=3)
        values = {"created_at": long_ago, "status": status, "finished_at": utcnow()}
        session.execute(update(Job).where(Job.id == job.id).values(**values))
        session.commit()


def test_a_tenant_whose_old_jobs_ended_today_without_failing_is_left_out(env: ApiEnv) -> None:
    _old_job_finished_now(env, env.b.tenant_id, "succeeded")
    _old_job_finished_now(env, env.b.tenant_id, "cancelled")
    _old_job_finished_now(env, env.a.tenant_id, "failed")  # failed today: counted, so listed

    response = env.client.get("/v1/ops/usage", headers=env.ops())
    assert response.status_code == 200, response.text
    rows = [
        (t["tenant_id"], t["created_today"], t["queued_now"], t["running_now"], t["failed_today"])
        for t in response.json()["tenants"]
    ]
    # Past midnight UTC between the write and the read, a.'s failure is yesterday's and a. is left out too.
    assert rows in ([(env.a.tenant_id, 0, 0, 0, 1)], [])
    assert env.b.tenant_id not in {row[0] for row in rows}
