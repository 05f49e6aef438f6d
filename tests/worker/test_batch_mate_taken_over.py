"""One preview of a batch taken over by another worker (its lease expired: a long pause, a slow
database) must not cost its batch-mates their paint: they are finished by this worker, and only the
taken-over preview is left to the worker that holds it now."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core import job_state
from core.clock import utcnow
from core.tables import Job, Preview
from tests.worker.conftest import make_tenant, painting_runtime, submit_preview
from tests.worker.stack import ready_subject_with_random_adapter
from worker import preview_job
from worker.job_runner import JobContext
from worker.preview_job import render_previews

OTHER_WORKER = "other-host:1"


def test_a_batch_mate_taken_over_does_not_stop_the_others(
    tmp_path: Path, shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lease_seconds: this worker's own heartbeat does not beat during the test
    with painting_runtime(tmp_path, shared_models_dir, lease_seconds=3600) as runtime:
        tenant_id = make_tenant(runtime)  # type: ignore[arg-type]
        subject_id = ready_subject_with_random_adapter(runtime, tenant_id, shared_models_dir)  # type: ignore[arg-type]
        kept_preview, kept_job, _, _ = submit_preview(runtime, tenant_id, subject_id, seed=1)  # type: ignore[arg-type]
        lost_preview, lost_job, _, _ = submit_preview(runtime, tenant_id, subject_id, seed=2)  # type: ignore[arg-type]

        prepare = preview_job._prepare

        def prepare_then_lose_one(ctx: JobContext, job: Job) -> object:
            row = prepare(ctx, job)
            if ctx.job_id == lost_job:  # its lease runs out, and another worker's claim takes it
                with runtime.session() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == lost_job)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                    )
                    session.commit()
                    assert job_state.claim(session, lost_job, OTHER_WORKER, 3600, 3) is not None
            return row

        monkeypatch.setattr(preview_job, "_prepare", prepare_then_lose_one)
        outcomes = render_previews(runtime, kept_job)

        assert sorted(outcomes) == ["lease_lost", "succeeded"], outcomes
        with runtime.session() as session:
            kept, lost = session.get(Job, kept_job), session.get(Job, lost_job)
            assert kept is not None and lost is not None
            assert (kept.status, kept.attempts) == ("succeeded", 1)
            assert session.get(Preview, kept_preview).status == "succeeded"  # type: ignore[union-attr]
            # the other worker's job: nothing of this run written over it
            assert (lost.status, lost.worker) == ("running", OTHER_WORKER)
            assert session.get(Preview, lost_preview).result_key is None  # type: ignore[union-attr]
