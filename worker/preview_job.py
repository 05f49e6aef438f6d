"""render_preview's work: paint queued previews, several at once, whatever their products.

A message is a turn (core.job_state.claim_next): the worker claims the fairest queued preview, then
up to `ROOMFIT_PREVIEW_BATCH` more for at most `ROOMFIT_PREVIEW_BATCH_WINDOW_MS` (each a claim of its
own: a conditional UPDATE and a lease, the database stays the truth). The window opens only when
another preview was already queued beside the first: a lone preview is painted at once. Previews
that share sampling settings (steps, guidance) are painted in one UNet batch, each with its own
adapter or, zero-shot, the base model and a reference crop (`models.Painter.paint_mixed`); each
job is then finished or failed on its own. A preview whose inputs cannot be read, or whose adapter
is broken, fails alone with its code; the others of its batch go on. Each job records its batch's id
and size in its timings. The messages of the extra jobs stay queued and are dropped by the claim
when they come.
"""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from PIL import Image

from core import job_state, previews
from core.blob_keys import preview_result_key
from core.blobstore import BlobNotFound
from core.ids import new_id
from core.repository import TenantRepository
from core.tables import Job, Preview, Subject
from worker import metrics
from worker.events import emit_event, preview_payload
from worker.job_runner import (
    JobContext,
    JobFailed,
    JobStopped,
    emit_given_up,
    give_back,
    heartbeats,
    settle,
    start_job,
)
from worker.paint_plan import PaintPlan, paint_plan
from worker.runtime import Runtime

log = logging.getLogger("roomfit.worker")


@dataclass
class _Row:
    """One claimed preview, read and ready to paint."""

    ctx: JobContext
    preview: Preview
    plan: PaintPlan
    room: Image.Image
    request: object  # models.PaintRequest (imported lazily: the API never loads torch)
    steps: int
    guidance: float
    timings: dict[str, float] = field(default_factory=dict)


def render_previews(runtime: Runtime, job_id: str) -> list[str]:
    """Claim a batch of previews (the first one fairest for this message), paint, finish each;
    returns each claimed job's outcome (for logs and tests), or ["skipped"]."""
    claims = _claim_batch(runtime, job_id)
    if not claims:
        return ["skipped"]
    try:
        started = [start_job(runtime, held, "preview") for held in claims]
    except Exception:  # a database blip before any work: none of the batch spends an attempt on it
        for held in claims:
            give_back(runtime, held)
        raise
    outcomes: dict[str, str] = {}
    with heartbeats([ctx for ctx, _ in started]):
        rows: list[_Row] = []
        for ctx, job in started:
            try:
                rows.append(_prepare(ctx, job))
            except Exception as exc:  # this preview alone: unreadable room, subject gone, ...
                outcomes[ctx.job_id] = settle(ctx, exc, transient="resend")
        groups: dict[tuple[int, float], list[_Row]] = defaultdict(list)
        for row in rows:
            groups[(row.steps, row.guidance)].append(row)
        for (steps, guidance), group in groups.items():
            outcomes.update(_paint_group(runtime, group, steps, guidance))
    for ctx, _ in started:
        metrics.job_ended("preview", outcomes.get(ctx.job_id, ""), ctx.claimed)
    log.info("previews painted as a batch of %d: %s", len(claims), outcomes)
    return list(outcomes.values())


def _claim_batch(runtime: Runtime, job_id: str) -> list[job_state.Claim]:
    s = runtime.settings
    limit = min(s.preview_batch, s.adapter_slots)
    claims: list[job_state.Claim] = []
    try:
        with runtime.session() as session:
            lease, attempts = s.lease_seconds, s.max_attempts
            first = job_state.claim_next(session, "preview", job_id, runtime.name, lease, attempts)
            if first is None:
                emit_given_up(session)
                return []
            claims.append(first)
            emit_given_up(session)
            window_ends = time.monotonic() + s.preview_batch_window_ms / 1000
            while len(claims) < limit:
                held = job_state.claim_fairest(session, "preview", runtime.name, lease, attempts)
                if held is not None:
                    claims.append(held)
                emit_given_up(session)
                if held is None and (len(claims) == 1 or time.monotonic() >= window_ends):
                    # Alone in the queue: waiting would only delay it (36 ms of the service's 115 ms
                    # overhead on a lone preview, BENCHMARKS.md), since a busy worker's next batch
                    # finds the queue full anyway.
                    break
                if held is None:
                    time.sleep(0.005)  # a burst's next previews are being written as we look
    except Exception:  # a database blip mid-batch: what was claimed is given back, not left to leases
        for held in claims:
            give_back(runtime, held)
        raise
    return claims


def _prepare(ctx: JobContext, job: Job) -> _Row:
    from models import DEFAULT_GUIDANCE_SCALE, InvalidImageError, PaintRequest, open_image, open_mask

    runtime = ctx.runtime
    started = time.perf_counter()
    with runtime.session() as session:
        repo = TenantRepository(session, job.tenant_id)
        preview = repo.get(Preview, job.preview_id or "")
        if preview is None:
            raise JobFailed("preview_not_found", f"preview {job.preview_id} no longer exists")
        plan = paint_plan(runtime, preview, repo.get(Subject, preview.subject_id))
        previews.mark_running(preview)
        session.commit()
        session.expunge_all()
    ctx.report(stage="loading", progress=0.02)
    try:
        room = open_image(runtime.blobs.get(preview.room_key), "room")
        mask = open_mask(runtime.blobs.get(preview.mask_key), room.size)
    except InvalidImageError as exc:  # the API checked both; a stored blob that fails is corrupt
        raise JobFailed("image_unreadable", str(exc)) from exc
    except BlobNotFound as exc:  # removed behind the service's back: nothing to paint, ever
        raise JobFailed("image_unreadable", "the stored room or mask of this preview is gone") from exc
    guidance = preview.guidance_scale if preview.guidance_scale is not None else DEFAULT_GUIDANCE_SCALE
    return _Row(
        ctx=ctx,
        preview=preview,
        plan=plan,
        room=room,
        request=PaintRequest(room=room, mask=mask, seed=preview.seed, reference=plan.reference),
        steps=preview.steps or runtime.settings.default_preview_steps,
        guidance=guidance,
        timings={"load_inputs": time.perf_counter() - started},
    )


def _paint_group(runtime: Runtime, group: list[_Row], steps: int, guidance: float) -> dict[str, str]:
    from models import AdapterError

    painter = runtime.painter  # loaded once per process
    batch = {"batch_id": new_id("bat"), "batch_size": len(group)}

    def on_step(done: int, total: int) -> None:
        for row in group:
            # a row that must stop is dropped after the batch; its batch-mates go on
            try:
                row.ctx.report(stage="painting", progress=0.05 + 0.9 * done / max(total, 1))
            except JobStopped:
                pass
            except job_state.LeaseLost:  # another worker holds this row's job now: only it stops
                row.ctx.stop_reason = "lease_lost"
        if all(row.ctx.stop_reason is not None for row in group):
            raise JobStopped("batch")  # nobody left to paint for (all cancelled, or the worker stopping)

    swaps_before, misses_before = painter.swap_seconds, painter.adapters.stats.misses
    paint_started = time.perf_counter()
    adapter_ids = [row.plan.adapter_id for row in group]
    try:
        results = painter.paint_mixed(
            [row.request for row in group],  # type: ignore[misc]
            adapter_ids,
            steps=steps,
            guidance_scale=guidance,
            progress=on_step,
        )
    except Exception as exc:  # the batch as a whole: each row ends by its own reason, or this error
        return {row.ctx.job_id: settle(row.ctx, _reason_of(row, exc), transient="resend") for row in group}
    finally:  # a failed paint swapped and loaded too
        loads = painter.adapters.stats.misses - misses_before
        needed = len({i for i in adapter_ids if i is not None})
        metrics.batch_painted(len(group), needed, loads, painter.swap_seconds - swaps_before)
    paint_seconds = time.perf_counter() - paint_started
    swap_seconds = painter.swap_seconds - swaps_before
    outcomes = {}
    for row, result in zip(group, results, strict=True):
        row.timings.update(paint=paint_seconds, adapter_swap=swap_seconds, batch_size=len(group))
        try:
            if row.ctx.stop_reason is not None:
                raise JobStopped(row.ctx.stop_reason)
            if isinstance(result, AdapterError):
                raise JobFailed(result.code, str(result))
            _store_and_finish(row, result, batch)
            outcomes[row.ctx.job_id] = "succeeded"
        except Exception as exc:
            outcomes[row.ctx.job_id] = settle(row.ctx, exc, transient="resend")
    return outcomes


def _reason_of(row: _Row, exc: Exception) -> Exception:
    if isinstance(exc, JobStopped) and row.ctx.stop_reason is not None:
        return JobStopped(row.ctx.stop_reason)
    return exc


def _store_and_finish(row: _Row, result: Image.Image, batch: dict[str, object]) -> None:
    runtime, preview = row.ctx.runtime, row.preview
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    key = preview_result_key(preview.tenant_id, preview.id)
    # Still ours, and for a lease from now, before the PNG goes where another attempt's may already
    # be: a worker that paused past its lease would otherwise write over the result of the worker that
    # took the preview over, which decided again (its subject may have become ready meanwhile) and
    # recorded another mode or adapter version. LeaseLost / JobCancelled: nothing is stored.
    with runtime.session() as session:
        job_state.heartbeat(session, row.ctx.held, runtime.settings.lease_seconds)
    # The same key on every attempt: a task run twice overwrites one result, never adds a second.
    runtime.blobs.put(key, buffer.getvalue(), content_type="image/png")
    row.timings["total"] = row.timings["load_inputs"] + row.timings["paint"]
    with runtime.session() as session:
        repo = TenantRepository(session, preview.tenant_id)
        stored = repo.get(Preview, preview.id)
        if stored is None:  # deleted while painting (its job cancelled): drop the result with it
            runtime.blobs.delete(key)
            raise JobStopped("cancelled")
        previews.finish(stored, key, row.timings)
        job_row = repo.get(Job, row.ctx.job_id)
        assert job_row is not None
        job_row.timings = {**job_row.timings, **{k: round(v, 4) for k, v in row.timings.items()}, **batch}
        try:
            # Checks, on the locked row, that no cancel came first; if one did, nothing above is kept.
            job_state.finish(session, row.ctx.held, "succeeded")
        except job_state.JobCancelled:
            session.rollback()
            runtime.blobs.delete(key)
            raise
        emit_event(session, stored.tenant_id, "preview.succeeded", preview_payload(stored))
