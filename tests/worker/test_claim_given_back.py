"""A claim whose job never started (reading its row failed right after the claim: a database blip)
is given back at once, without spending an attempt. It used to wait out its lease, attempt spent:
three blips in a row failed a healthy job as too_many_attempts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from core import job_state
from core.clock import utcnow
from core.tables import Job
from tests.worker.conftest import in_process_runtime, training_job
from worker import job_runner


def test_a_claim_whose_job_could_not_start_is_given_back_unspent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_process_runtime(tmp_path) as runtime:
        job_id = training_job(runtime)

        def blip(*_args: object) -> None:
            raise OperationalError("SELECT jobs ...", {}, Exception("server closed the connection"))

        def never(*_args: object) -> None:
            raise AssertionError("the work ran")

        monkeypatch.setattr(job_runner, "start_job", blip)
        for _ in range(3):  # as many times as attempts allow
            with pytest.raises(OperationalError):
                job_runner.run_job(runtime, job_id, never, kind="train")
        monkeypatch.undo()

        with runtime.session() as session:
            row = session.get(Job, job_id)
            assert row is not None and row.attempts == 0
            assert row.lease_expires_at is not None and row.lease_expires_at <= utcnow()
            held = job_state.claim(session, job_id, "another", lease_seconds=60, max_attempts=3)
        assert held is not None and held.attempt == 1  # taken at once, its first attempt
