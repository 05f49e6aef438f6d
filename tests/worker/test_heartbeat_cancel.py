"""The heartbeat notices a cancel by itself (worker/job_runner.py, `_heartbeat_loop`): a job busy in
one long step, writing no progress, is told to stop at its next check."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core import job_state
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job
from tests.worker.conftest import claimed_training
from worker.job_runner import JobStopped, heartbeats, start_job
from worker.runtime import Runtime


def test_a_job_cancelled_while_it_reports_nothing_is_stopped_by_its_heartbeat(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", lease_seconds=5)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    held = claimed_training(runtime)
    job_id = held.job_id
    ctx, _ = start_job(runtime, held, "train")
    ctx.check()  # running, not cancelled yet

    with runtime.session() as session:  # the ops console cancels it
        row = session.get(Job, job_id)
        assert row is not None
        job_state.request_cancel(session, row)
        session.commit()

    with heartbeats([ctx]):
        # one long step: no report of its own reads the row; only the heartbeat can see the cancel
        for _ in range(600):  # up to 30 s; a beat comes every 1.7 s at this lease
            if ctx.stop_reason is not None:
                break
            time.sleep(0.05)
    assert ctx.stop_reason == "cancelled"
    with pytest.raises(JobStopped, match="cancelled"):
        ctx.check()
