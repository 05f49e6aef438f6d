"""How a preview worker fills a batch (worker.preview_job._claim_batch): a lone preview is painted at
once; a preview queued beside it opens the batch window, and what arrives within it joins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import job_state
from core.migrate import upgrade
from core.settings import Settings
from worker import preview_job
from worker.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    # A long window, so that a worker that waited in it would be seen asking many times.
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", preview_batch_window_ms=300)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    yield Runtime(settings)


def _queue(monkeypatch: pytest.MonkeyPatch, arrivals: list[str | None]) -> list[str | None]:
    """The first claim gets job-0; each later claim gets the next of `arrivals` (None: nothing
    queued at that moment, the last one for ever). Returns the log of what each claim got."""
    asked: list[str | None] = []

    def claim(job_id: str) -> job_state.Claim:
        return job_state.Claim(job_id=job_id, worker="test", attempt=1)

    def claim_next(*_: object) -> job_state.Claim:
        return claim("job-0")

    def claim_fairest(*_: object) -> job_state.Claim | None:
        got = arrivals.pop(0) if len(arrivals) > 1 else arrivals[0]
        asked.append(got)
        return claim(got) if got is not None else None

    monkeypatch.setattr(preview_job.job_state, "claim_next", claim_next)
    monkeypatch.setattr(preview_job.job_state, "claim_fairest", claim_fairest)
    return asked


def _claimed(runtime: Runtime) -> list[str]:
    return [held.job_id for held in preview_job._claim_batch(runtime, "job-0")]


def test_a_lone_preview_is_painted_without_waiting_for_company(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _queue(monkeypatch, [None])
    assert _claimed(runtime) == ["job-0"]
    assert asked == [None]  # asked once, then painted: no window


def test_a_preview_queued_beside_it_opens_the_window_for_more(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # job-1 is queued already; job-2 is written a few looks later, within the window
    asked = _queue(monkeypatch, ["job-1", None, None, "job-2", None])
    assert _claimed(runtime) == ["job-0", "job-1", "job-2"]
    assert asked[:4] == ["job-1", None, None, "job-2"]


def test_a_full_batch_stops_looking(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _queue(monkeypatch, ["job-1", "job-2", "job-3", "job-4", None])
    assert _claimed(runtime) == ["job-0", "job-1", "job-2", "job-3"]  # ROOMFIT_PREVIEW_BATCH: 4
    assert len(asked) == 3
