"""The heartbeat notices a cancel by itself (worker/job_runner.py, `_heartbeat_loop`): a job busy in
one long step, writing no progress, is told to stop at its next check. So is one whose lease the
heartbeat could not renew for a whole lease (another worker may hold the job by then)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

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


def test_a_job_whose_lease_cannot_be_renewed_for_a_whole_lease_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is unreachable from this worker for longer than a lease: another worker may take
    the job over meanwhile, so running on would run it twice at once. It stops, writing nothing."""
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", lease_seconds=5)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    held = claimed_training(runtime)
    ctx, _ = start_job(runtime, held, "train")
    beats: list[float] = []

    def unreachable(*_args: object) -> None:
        beats.append(time.monotonic())
        raise OperationalError("UPDATE jobs ...", {}, Exception("connection refused"))

    monkeypatch.setattr(job_state, "heartbeat", unreachable)
    with heartbeats([ctx]):
        for _ in range(400):  # up to 20 s; a beat comes every 1.7 s at this lease
            if ctx.stop_reason is not None:
                break
            time.sleep(0.05)
    assert ctx.stop_reason == "lease_lost"
    assert len(beats) >= 2  # it kept trying through the blip before giving up
    with pytest.raises(JobStopped, match="lease_lost"):
        ctx.check()
