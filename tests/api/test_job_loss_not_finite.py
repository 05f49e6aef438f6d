"""A training whose loss diverged (fp16 overflow: the worker records each step's loss as it is, NaN
or infinity) must not break its job's answers. JSON has no NaN: a POST that answers the Job (ops
cancel, retry) failed with a 500 (`answer()` refuses NaN) and the reads sent `null`, which the
schema (`loss`: [step, loss] floats) does not allow. Those points are left out."""

from __future__ import annotations

import math

from sqlalchemy import update

from core.job_state import new_job
from core.tables import Job
from tests.api.conftest import ApiEnv

FINITE = [[1.0, 0.5], [4.0, 0.25]]


def _diverged_job(env: ApiEnv, status: str) -> str:
    with env.session() as session:
        job = new_job(env.a.tenant_id, "train")
        session.add(job)
        session.commit()
        points = [[1, 0.5], [2, math.nan], [3, math.inf], [4, 0.25]]
        session.execute(update(Job).where(Job.id == job.id).values(loss_points=points, status=status))
        session.commit()
        return job.id


def test_a_diverged_training_can_be_cancelled(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    job_id = _diverged_job(env, "running")
    cancelled = env.client.post(f"/v1/ops/jobs/{job_id}/cancel", headers=env.ops())
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["loss"] == FINITE


def test_a_diverged_trainings_loss_is_floats_only(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    job_id = _diverged_job(env, "failed")
    got = env.client.get(f"/v1/jobs/{job_id}", headers=env.a.auth())
    assert got.status_code == 200 and got.json()["loss"] == FINITE
    page = env.client.get("/v1/ops/jobs", headers=env.ops())
    assert page.status_code == 200 and [item["loss"] for item in page.json()["items"]] == [FINITE]
    one = env.client.get(f"/v1/ops/jobs/{job_id}", headers=env.ops())
    assert one.status_code == 200 and one.json()["loss"] == FINITE
