"""A job that fails (or crashes) after it was cancelled ends cancelled (worker/job_runner.py,
`settle`): the cancel stands in its row, and so in what the worker reports and counts. It used to
count `failed` and log a crash for a training whose subject the shop had just deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import job_state
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job
from tests.worker.conftest import claimed_training
from worker.job_runner import JobFailed, settle, start_job
from worker.runtime import Runtime


@pytest.mark.parametrize("error", [JobFailed("image_unreadable", "cannot read photo 0"), KeyError("bug")])
def test_a_job_that_fails_after_its_cancel_ends_cancelled(tmp_path: Path, error: Exception) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path / "var")  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    held = claimed_training(runtime)
    ctx, _ = start_job(runtime, held, "train")
    with runtime.session() as session:  # ops cancels it; the worker has not looked yet
        row = session.get(Job, held.job_id)
        assert row is not None
        job_state.request_cancel(session, row)
        session.commit()

    assert settle(ctx, error) == "cancelled"
    with runtime.session() as session:
        row = session.get(Job, held.job_id)
        assert row is not None and (row.status, row.error_code) == ("cancelled", None)
