"""Run one job: claim it, keep its lease alive, enforce its deadline, and record how it ended.

Celery's solo pool (one model per process) enforces no time limits, so a heartbeat thread here both
extends the lease and watches the deadline and cancellation; the job's own progress callbacks call
`JobContext.check()`, which raises `JobStopped` so the work unwinds cleanly between two steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from core import dispatch, job_state, logs
from core.blobstore import BlobStoreUnavailable
from core.repository import OpsRepository
from core.tables import Job, Preview, Subject
from worker import metrics, shutdown
from worker.events import emit_event, preview_payload, subject_payload
from worker.runtime import Runtime

log = logging.getLogger("roomfit.worker")

# Errors that say "try again later", not "this job is wrong": Celery retries them with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (BlobStoreUnavailable, OperationalError, PoolTimeout)
INTERNAL_ERROR_MESSAGE = "an internal error stopped this job; it is logged under {job_id}"
REPORT_INTERVAL_SECONDS = 1.0  # progress rows are written at most this often...
# ...unless progress moved this far since the last write: a job of a few seconds (a small training
# on a fast GPU) still moves its bar a few times instead of jumping from its start to its end.
REPORT_PROGRESS_STEP = 0.25


class JobFailed(Exception):
    """A permanent failure with a stable code (unreadable photos, no object, ...): no retry."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobStopped(Exception):
    """Raised inside the work when it must stop: cancelled, past its deadline, lease lost, or the
    worker stopping ("shutdown", see worker.shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class JobContext:
    runtime: Runtime
    held: job_state.Claim
    deadline: float
    kind: str = "preview"
    stop_reason: str | None = None
    claimed: float = field(default_factory=time.monotonic)  # for roomfit_job_duration_seconds
    log_ids: dict[str, str] = field(default_factory=dict)  # job, tenant, subject, preview (core.logs)
    _last_report: float = 0.0
    _last_progress: float = 0.0
    _stage: str | None = None
    _pending: dict[str, object] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.held.job_id

    def check(self) -> None:
        if self.stop_reason is None and time.monotonic() > self.deadline:
            self.stop_reason = "timeout"
        if self.stop_reason is None and self.stopping():
            self.stop_reason = "shutdown"
        if self.stop_reason is not None:
            raise JobStopped(self.stop_reason)

    def stopping(self) -> bool:
        """True once this worker is stopping and this job may not run on (worker.shutdown's rule)."""
        return shutdown.must_stop(self.kind, self.runtime.settings.shutdown_grace_seconds)

    def report(
        self,
        *,
        stage: str | None = None,
        progress: float | None = None,
        loss_point: tuple[int, float] | None = None,
        timings: dict[str, float] | None = None,
        force: bool = False,
    ) -> None:
        """Write progress, at most once a second unless `force`, the stage changes or progress moved
        by REPORT_PROGRESS_STEP."""
        self.check()
        now = time.monotonic()
        if loss_point is not None:
            self.keep_loss_point(loss_point)
        stage_changed = stage is not None and stage != self._stage
        moved = progress is not None and progress - self._last_progress >= REPORT_PROGRESS_STEP
        if not (force or stage_changed or moved or now - self._last_report >= REPORT_INTERVAL_SECONDS):
            if progress is not None:
                self._pending["progress"] = progress
            return
        self._write(stage=stage, progress=progress, timings=timings)
        self._last_report = now
        if progress is not None:
            self._last_progress = progress
        if stage is not None:
            self._stage = stage

    def keep_loss_point(self, point: tuple[int, float]) -> None:
        """Hold a loss point for the next write (`report`, or `flush` when the job is handed back)."""
        self._pending.setdefault("loss_points", []).append(point)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Write what is held back (progress, loss points), without checking whether to stop: a job
        handed back keeps every loss point its steps produced."""
        if self._pending:
            self._write()

    def _write(
        self,
        *,
        stage: str | None = None,
        progress: float | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        pending_progress = progress if progress is not None else self._pending.pop("progress", None)
        points = self._pending.pop("loss_points", [])
        try:
            with self.runtime.session() as session:
                for point in points[:-1]:  # type: ignore[index]
                    job_state.report(session, self.held, loss_point=point)
                job_state.report(
                    session,
                    self.held,
                    stage=stage,
                    progress=pending_progress,  # type: ignore[arg-type]
                    loss_point=points[-1] if points else None,  # type: ignore[index]
                    timings=timings,
                )
        except job_state.JobCancelled:  # seen before the heartbeat saw it: stop the same way
            self.stop_reason = "cancelled"
            raise JobStopped("cancelled") from None
        self._pending.clear()


def _timeout_for(runtime: Runtime, kind: str) -> int:
    s = runtime.settings
    return s.train_timeout_seconds if kind == "train" else s.preview_timeout_seconds


def run_job(
    runtime: Runtime, job_id: str, work: Callable[[JobContext, Job], None], kind: str | None = None
) -> str:
    """Claim the next fair job of `kind` (see core.job_state.claim_next; the message named
    `job_id`) and run `work(ctx, job)`; returns how it ended (for logs and tests).

    Outcomes: "skipped" (not ours to run), "succeeded", "failed", "cancelled", "lease_lost",
    "handed_back" (this worker is stopping; the job was re-queued for another).
    Transient errors release the lease and re-raise, so Celery's autoretry sends the job again.
    """
    s = runtime.settings
    with runtime.session() as session:
        if kind is None:  # a caller that names the job, not the queue: the job's own kind
            named = OpsRepository(session).job(job_id)
            if named is None:
                return "skipped"
            kind = named.kind
        held = job_state.claim_next(session, kind, job_id, runtime.name, s.lease_seconds, s.max_attempts)
        emit_given_up(session)
    if held is None:
        return "skipped"
    if held.job_id != job_id:
        log.info("message of job %s: ran job %s, fairer across tenants", job_id, held.job_id)
    try:
        ctx, job = start_job(runtime, held, kind)
    except Exception:  # a database blip before any work: not the job's fault, nor an attempt of it
        give_back(runtime, held)
        raise  # Celery's autoretry sends it again (a transient error), or the crash is logged
    with logs.bound(**ctx.log_ids), heartbeats([ctx]):
        try:
            work(ctx, job)
            outcome = "succeeded"
        except Exception as exc:
            outcome = settle(ctx, exc)  # re-raises a transient error, for Celery's retry
    metrics.job_ended(kind, outcome, ctx.claimed)
    log.info("job %s %s in %.2fs", ctx.job_id, outcome, time.monotonic() - ctx.claimed, extra=ctx.log_ids)
    return outcome


def give_back(runtime: Runtime, held: job_state.Claim) -> None:
    """A claim nothing will run: its lease ends now and its attempt is not counted (a hand-back), so
    it does not wait out a lease and spend an attempt on a failure that was not its own."""
    try:
        with runtime.session() as session:
            job_state.hand_back(session, held)
    except Exception:  # the database is still down: the lease runs out and the reconciler re-sends it
        log.warning("job %s: claim not given back; it waits out its lease", held.job_id, exc_info=True)


def start_job(runtime: Runtime, held: job_state.Claim, kind: str) -> tuple[JobContext, Job]:
    """The context of a claimed job (its deadline starts now) and its row, detached."""
    with runtime.session() as session:
        job = OpsRepository(session).job(held.job_id)
        assert job is not None
        session.expunge(job)
    ids = logs.known(
        job_id=job.id, tenant_id=job.tenant_id, subject_id=job.subject_id, preview_id=job.preview_id
    )
    log.info("job %s (%s) attempt %d started", held.job_id, kind, held.attempt, extra=ids)
    metrics.job_claimed(kind, job.created_at, job.enqueued_at, job.started_at, held.ran_before)
    deadline = time.monotonic() + _timeout_for(runtime, kind)
    return JobContext(runtime, held, deadline=deadline, kind=kind, log_ids=ids), job


def settle(ctx: JobContext, exc: Exception, transient: str = "raise") -> str:
    """Record how a job that raised `exc` ended; returns the outcome. A transient error gives the
    lease back and is raised again, so Celery's autoretry sends the job again (`transient="raise"`),
    or, for a job of a batch whose batch-mates go on, the job gets a new message ("resend")."""
    with logs.bound(**ctx.log_ids):  # a batch's jobs are settled one by one, outside run_job's ids
        return _settle(ctx, exc, transient)


def _settle(ctx: JobContext, exc: Exception, transient: str) -> str:
    runtime, held, job_id = ctx.runtime, ctx.held, ctx.job_id
    if isinstance(exc, JobStopped):
        return _on_stopped(ctx, exc.reason)
    if isinstance(exc, job_state.LeaseLost):
        log.warning("job %s: another worker took it over; this run's results are dropped", job_id)
        return "lease_lost"
    if isinstance(exc, job_state.JobCancelled):  # found cancelled when its result was written
        return _on_stopped(ctx, "cancelled")
    if isinstance(exc, JobFailed):
        log.warning("job %s failed: %s: %s", job_id, exc.code, exc.message)
        return _finish(runtime, held, "failed", exc.code, exc.message)
    if isinstance(exc, TRANSIENT_ERRORS):
        log.warning("job %s: transient error, will retry: %s", job_id, exc)
        # First: a heartbeat landing after the release would take the lease back for another
        # third of a minute, and the retry's claim would find it held.
        ctx.stop_reason = "released"
        _release(runtime, held)
        if transient == "raise":
            raise exc
        _resend(runtime, job_id)
        return "retrying"
    # A bug of ours: the details go to the log under the job's id; the row (which a shop and,
    # through its subject, a shopper can read) gets a message that says nothing of internals.
    log.error("job %s crashed", job_id, exc_info=exc)
    return _finish(runtime, held, "failed", "internal_error", INTERNAL_ERROR_MESSAGE.format(job_id=job_id))


@contextmanager
def heartbeats(contexts: Sequence[JobContext]) -> Iterator[None]:
    """One thread keeps the leases of these jobs alive while the block runs (see _heartbeat_loop)."""
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(contexts, stop), daemon=True, name="heartbeat")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)


def _heartbeat_loop(contexts: Sequence[JobContext], stop: threading.Event) -> None:
    if not contexts:
        return
    runtime = contexts[0].runtime
    lease = runtime.settings.lease_seconds
    renewed = {ctx.job_id: time.monotonic() for ctx in contexts}  # claimed (a lease began) just now
    # A third of the lease: two beats may be missed (a GC pause, a slow database) before the
    # reconciler takes the job as orphaned.
    while not stop.wait(max(1.0, lease / 3)):
        for ctx in contexts:
            if ctx.stop_reason is not None:
                continue  # stopping already: its lease is not ours to extend
            if time.monotonic() > ctx.deadline:
                ctx.stop_reason = "timeout"
            try:
                with runtime.session() as session:
                    job_state.heartbeat(session, ctx.held, lease)
                renewed[ctx.job_id] = time.monotonic()
            except job_state.JobCancelled:
                ctx.stop_reason = "cancelled"
            except job_state.LeaseLost:
                ctx.stop_reason = "lease_lost"
            except Exception:  # a database blip: keep beating; the lease has slack for it
                log.exception("job %s: heartbeat failed", ctx.job_id)
                if time.monotonic() - renewed[ctx.job_id] >= lease:
                    # No beat for a whole lease: another worker may hold the job now, and running on
                    # would run it twice at once. Stop without writing, as when the lease is lost.
                    log.warning("job %s: lease not renewed for %d s; stopping", ctx.job_id, lease)
                    ctx.stop_reason = "lease_lost"


def _on_stopped(ctx: JobContext, reason: str) -> str:
    runtime, held, kind = ctx.runtime, ctx.held, ctx.kind
    if reason == "lease_lost":
        log.warning("job %s: another worker holds it now; stopping without writing", held.job_id)
        return "lease_lost"
    if reason == "cancelled":
        return _finish(runtime, held, "cancelled", None, None)
    if reason == "released":  # given back for a retry already (_settle)
        return "retrying"
    if reason == "shutdown":
        return _hand_back(ctx)
    timeout = _timeout_for(runtime, kind)
    return _finish(runtime, held, "failed", "timeout", f"the job ran past its deadline ({timeout} s)")


def _finish(
    runtime: Runtime, held: job_state.Claim, status: str, code: str | None, message: str | None
) -> str:
    """Mark the job `status`; returns how it ended: `status`, or what was found first (a cancel, or
    another worker's lease), which stands and is what the job's metrics count."""
    try:
        with runtime.session() as session:
            job_state.finish(session, held, status, code, message)
            if status == "failed":
                _emit_failure(session, held.job_id)
    except job_state.LeaseLost:
        log.warning("job %s: lease lost before it could be marked %s", held.job_id, status)
        return "lease_lost"
    except job_state.JobCancelled:  # cancelled first: the cancel stands
        log.info("job %s: cancelled before it could be marked %s", held.job_id, status)
        return "cancelled"
    return status


def emit_given_up(session: Session) -> None:
    """`subject.failed` / `preview.failed` for the jobs this session gave up for too many attempts
    (core.job_state.give_up, in a claim or a reconciler pass), as for any other failure."""
    for job_id in job_state.given_up(session):
        job = OpsRepository(session).job(job_id)
        if job is not None and (job.status, job.error_code) == ("failed", "too_many_attempts"):
            _emit_failure(session, job_id)


def _emit_failure(session: Session, job_id: str) -> None:
    """`subject.failed` / `preview.failed` for the shop's webhook."""
    job = OpsRepository(session).job(job_id)
    target = job_state.target_of(session, job) if job is not None else None
    if isinstance(target, Subject):
        emit_event(session, target.tenant_id, "subject.failed", subject_payload(target))
    elif isinstance(target, Preview):
        emit_event(session, target.tenant_id, "preview.failed", preview_payload(target))


def _hand_back(ctx: JobContext) -> str:
    """This worker is stopping: the job goes back to its queue with a fresh message, so another
    worker starts it at once instead of waiting out the lease (the reconciler's way)."""
    runtime, held = ctx.runtime, ctx.held
    try:
        ctx.flush()
    except job_state.LeaseLost:
        return "lease_lost"
    except JobStopped:  # cancelled meanwhile (flush says so): nothing to hand back
        return _on_stopped(ctx, "cancelled")
    with runtime.session() as session:
        if not job_state.hand_back(session, held):
            return "lease_lost"
        job = OpsRepository(session).job(held.job_id)
        assert job is not None
        dispatch.send(session, runtime.celery, job)  # never raises; the reconciler covers a refusal
    log.warning("job %s: handed back, this worker is stopping", held.job_id)
    return "handed_back"


def _resend(runtime: Runtime, job_id: str) -> None:
    try:
        with runtime.session() as session:
            job = OpsRepository(session).job(job_id)
            if job is not None:
                dispatch.send(session, runtime.celery, job)  # never raises
    except Exception:  # the database is what failed: the reconciler re-sends it once the lease ends
        log.exception("job %s: could not send it again", job_id)


def _release(runtime: Runtime, held: job_state.Claim) -> None:
    """Let the job be claimed again at once (by this worker's retry or any other)."""
    try:
        with runtime.session() as session:
            job_state.release(session, held)
    except Exception:  # the database may be what failed; the lease then simply expires
        log.exception("job %s: could not release the lease", held.job_id)
