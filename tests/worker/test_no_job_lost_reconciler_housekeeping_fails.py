"""A reconciler pass did its housekeeping (old events, forgotten workers' rows, stalled webhook
deliveries) before it re-sent lost jobs, in the same pass: any of those failing (a lock timeout, a
bug such as the `worker_forget_seconds` overflow that once failed every pass at its first step)
kept every lost job unsent, on every pass for as long as it failed. Re-sending jobs comes first and
does not depend on them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from core import events, heartbeats
from core.queue import job_ids_in_broker
from core.repository import OpsRepository
from tests.worker.conftest import in_process_runtime, training_job
from worker.reconciler import reconcile_once

BROKEN = {
    "old events": (events, "prune"),
    "forgotten workers": (heartbeats, "prune"),
    "stalled deliveries": (OpsRepository, "stalled_deliveries"),
}


@pytest.mark.parametrize("step", list(BROKEN))
def test_a_failing_housekeeping_step_does_not_keep_a_lost_job_unsent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    with in_process_runtime(tmp_path) as runtime:
        lost = training_job(runtime)  # committed; its sender was killed before the message went out

        def broken(*_: object, **__: object) -> object:
            raise RuntimeError(f"{step}: failed")

        owner, name = BROKEN[step]
        monkeypatch.setattr(owner, name, broken)
        with contextlib.suppress(RuntimeError):  # the pass may report the failure; the loop logs it
            reconcile_once(runtime)
        assert lost in (job_ids_in_broker(runtime.celery) or set())
