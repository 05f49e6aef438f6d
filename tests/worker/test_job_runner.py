"""The job runner's policy, in-process: permanent errors fail at once with their code, transient ones
give the lease back and propagate (Celery's autoretry sends the job again), bugs become
`internal_error`, and a job that is not claimable is skipped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import job_state
from core.blobstore import BlobStoreUnavailable
from core.clock import utcnow
from core.ids import new_id
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job, Subject, Tenant
from tests.worker.conftest import training_job
from worker.job_runner import JobContext, JobFailed, heartbeats, run_job, settle, start_job
from worker.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", lease_seconds=30)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    yield Runtime(settings)


def _load(runtime: Runtime, job_id: str) -> tuple[Job, Subject]:
    with runtime.session() as session:
        job = session.get(Job, job_id)
        return job, session.get(Subject, job.subject_id)  # type: ignore[union-attr,return-value]


def test_permanent_failure_fails_at_once_with_its_code(runtime: Runtime) -> None:
    job_id = training_job(runtime)

    def work(ctx: JobContext, job: Job) -> None:
        ctx.report(stage="annotating", progress=0.05)
        raise JobFailed("no_object_found", "no object found in photo 0, photo 1")

    assert run_job(runtime, job_id, work) == "failed"
    job, subject = _load(runtime, job_id)
    assert (job.status, job.error_code, job.attempts) == ("failed", "no_object_found", 1)
    assert (subject.status, subject.error_code) == ("failed", "no_object_found")
    assert "photo 0" in subject.error_message
    assert run_job(runtime, job_id, work) == "skipped"  # failed stays failed: no second run


def test_transient_error_releases_the_job_for_a_retry(runtime: Runtime) -> None:
    job_id = training_job(runtime)
    calls: list[int] = []

    def flaky(ctx: JobContext, job: Job) -> None:
        calls.append(ctx.held.attempt)
        if len(calls) == 1:
            raise BlobStoreUnavailable("S3 endpoint refused the connection")
        ctx.report(progress=1.0, force=True)
        from core import job_state

        with runtime.session() as session:
            job_state.finish(session, ctx.held, "succeeded")

    with pytest.raises(BlobStoreUnavailable):  # propagated: Celery's autoretry takes it from here
        run_job(runtime, job_id, flaky)
    job, _ = _load(runtime, job_id)
    assert job.status == "running" and job.lease_expires_at <= utcnow()  # free for the retry now
    assert run_job(runtime, job_id, flaky) == "succeeded"
    job, _ = _load(runtime, job_id)
    assert (job.status, job.attempts, calls) == ("succeeded", 2, [1, 2])


def test_a_bug_becomes_internal_error_named_only_in_the_log(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = training_job(runtime)

    def buggy(ctx: JobContext, job: Job) -> None:
        raise KeyError("secret-internal-detail")

    with caplog.at_level("ERROR", logger="roomfit.worker"):
        assert run_job(runtime, job_id, buggy) == "failed"
    job, subject = _load(runtime, job_id)
    assert job.error_code == subject.error_code == "internal_error"
    # What a shop (or, through the subject, a shopper) reads says nothing of internals ...
    for message in (job.error_message, subject.error_message):
        assert "secret-internal-detail" not in message and "KeyError" not in message
        assert job_id in message
    # ... and the log has all of it, under the job's id.
    crash = [r for r in caplog.records if job_id in r.getMessage() and r.exc_info]
    assert crash and "secret-internal-detail" in str(crash[0].exc_info[1])


def test_progress_writes_are_batched_but_stage_changes_are_not(runtime: Runtime) -> None:
    job_id = training_job(runtime)
    seen: list[tuple[str | None, float, int]] = []

    def work(ctx: JobContext, job: Job) -> None:
        for step in range(1, 51):  # 50 reports well inside one second: few writes
            ctx.report(progress=step / 100, loss_point=(step, 1.0 / step))
        current, _ = _load(runtime, job_id)
        seen.append((current.stage, current.progress, len(current.loss_points)))
        ctx.report(stage="saving", progress=0.9)
        current, _ = _load(runtime, job_id)
        seen.append((current.stage, current.progress, len(current.loss_points)))
        raise JobFailed("test_stop", "stop here")

    run_job(runtime, job_id, work)
    (stage0, _, points0), (stage1, progress1, points1) = seen
    assert stage0 is None and points0 < 50  # batched
    assert (stage1, progress1, points1) == ("saving", 0.9, 50)  # a stage change flushes everything


def test_a_job_faster_than_the_write_interval_still_moves_its_bar(runtime: Runtime) -> None:
    """Reports well inside one second still write each time progress moved a quarter of the bar."""
    job_id = training_job(runtime)
    written: list[float] = []

    def work(ctx: JobContext, job: Job) -> None:
        for step in range(1, 101):
            ctx.report(progress=step / 100)
            current, _ = _load(runtime, job_id)
            if not written or current.progress != written[-1]:
                written.append(current.progress)
        raise JobFailed("test_stop", "stop here")

    run_job(runtime, job_id, work)
    assert written == [0.01, 0.26, 0.51, 0.76], written  # the first report, then every quarter


@pytest.fixture
def stopping(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make this process a worker that got SIGTERM `seconds_ago` (what Celery's warm shutdown does)."""
    from worker import shutdown

    def stop(seconds_ago: float = 0.0) -> None:
        monkeypatch.setattr(shutdown, "_stopping_since", time.monotonic() - seconds_ago)

    monkeypatch.setattr(shutdown, "_stopping_since", None)
    return stop


def _sent_messages(runtime: Runtime) -> list[str]:
    """Job ids waiting in the embedded broker's folder."""
    from core.queue import job_ids_in_broker

    return sorted(job_ids_in_broker(runtime.celery) or set())


def test_a_stopping_worker_hands_its_training_back_with_every_loss_point(runtime: Runtime, stopping) -> None:  # type: ignore[no-untyped-def]
    job_id = training_job(runtime)
    steps_run: list[int] = []

    def training(ctx: JobContext, job: Job) -> None:
        for step in range(1, 100):
            if step == 4:
                stopping()  # SIGTERM arrives during step 4
            steps_run.append(step)
            ctx.report(progress=step / 100, loss_point=(step, 1.0 / step))

    assert run_job(runtime, job_id, training) == "handed_back"
    assert steps_run == [1, 2, 3, 4]  # a training stops at its next check, not at the grace's end
    job, _ = _load(runtime, job_id)
    # back for the next worker at once: lease over, this attempt not counted, a new message sent
    assert job.status == "running" and job.lease_expires_at <= utcnow()
    assert job.attempts == 0
    assert job_id in _sent_messages(runtime)
    assert [step for step, _ in job.loss_points] == [1, 2, 3]  # step 4's check stopped it first


def test_a_stopping_worker_lets_a_preview_finish_within_the_grace(runtime: Runtime, stopping) -> None:  # type: ignore[no-untyped-def]
    job_id = _preview_job(runtime)
    stopping(seconds_ago=1.0)  # grace 30 s (the default): plenty left

    def painting(ctx: JobContext, job: Job) -> None:
        for step in range(10):
            ctx.report(stage="painting", progress=step / 10)
        from core import job_state

        with runtime.session() as session:
            job_state.finish(session, ctx.held, "succeeded")

    assert run_job(runtime, job_id, painting) == "succeeded"


def test_a_preview_that_cannot_finish_within_the_grace_is_handed_back(runtime: Runtime, stopping) -> None:  # type: ignore[no-untyped-def]
    job_id = _preview_job(runtime)
    painted: list[int] = []

    def painting(ctx: JobContext, job: Job) -> None:
        for step in range(10):
            if step == 2:
                stopping(seconds_ago=runtime.settings.shutdown_grace_seconds - 1)  # past grace less margin
            painted.append(step)
            ctx.report(stage="painting", progress=step / 10, force=True)

    assert run_job(runtime, job_id, painting) == "handed_back"
    assert painted == [0, 1, 2]
    job = _load_job(runtime, job_id)
    assert (job.attempts, job.status) == (0, "running") and job.lease_expires_at <= utcnow()
    assert job_id in _sent_messages(runtime)


def test_a_cancelled_job_is_not_handed_back(runtime: Runtime, stopping) -> None:  # type: ignore[no-untyped-def]
    """Cancel wins over a stop: the job stays cancelled, no message is sent for it."""
    job_id = training_job(runtime)

    def training(ctx: JobContext, job: Job) -> None:
        from core import job_state

        with runtime.session() as session:
            job_state.request_cancel(session, session.get(Job, job_id))
            session.commit()
        stopping()
        ctx.report(progress=0.5, loss_point=(1, 0.5), force=True)

    assert run_job(runtime, job_id, training) == "lease_lost"
    assert _load_job(runtime, job_id).status == "cancelled"
    assert job_id not in _sent_messages(runtime)


def _preview_job(runtime: Runtime) -> str:
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name="shop")
        job = Job(id=new_id("job"), tenant_id=tenant.id, kind="preview", tenant=tenant)
        session.add_all([tenant, job])
        session.commit()
        return job.id


def _load_job(runtime: Runtime, job_id: str) -> Job:
    with runtime.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_lease_given_back_for_a_retry_is_not_taken_back_by_a_heartbeat(tmp_path: Path) -> None:
    """A transient error gives the lease back; the job's heartbeat thread, still running until the
    job's block ends, must not extend it again, or the retry would find the job held."""
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", lease_seconds=5)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    job_id = training_job(runtime)
    with runtime.session() as session:
        held = job_state.claim(session, job_id, runtime.name, settings.lease_seconds, max_attempts=3)
    assert held is not None
    ctx, _ = start_job(runtime, held, "train")
    with heartbeats([ctx]):
        with pytest.raises(BlobStoreUnavailable):
            settle(ctx, BlobStoreUnavailable("the store is down"))
        time.sleep(2.5)  # a beat comes every 1.7 s at this lease
    with runtime.session() as session:
        again = job_state.claim(session, job_id, "another", settings.lease_seconds, max_attempts=3)
    assert again is not None and again.attempt == 2
