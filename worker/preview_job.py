"""render_preview's work: paint the subject into the room with its adapter (a LoRA adapter or a full
fine-tune: the painter tells them apart by the file), store the result."""

from __future__ import annotations

import io
import time

from core import job_state, previews
from core.blob_keys import preview_result_key
from core.repository import TenantRepository
from core.tables import Job, Preview, Subject
from worker.events import emit_event, preview_payload
from worker.job_runner import JobContext, JobFailed
from worker.paint_plan import paint_plan


def render_preview_work(ctx: JobContext, job: Job) -> None:
    from models import (
        DEFAULT_GUIDANCE_SCALE,
        AdapterError,
        InvalidImageError,
        PaintRequest,
        open_image,
        open_mask,
    )

    runtime = ctx.runtime
    timings: dict[str, float] = {}
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

    room_bytes = runtime.blobs.get(preview.room_key)
    mask_bytes = runtime.blobs.get(preview.mask_key)
    try:
        room = open_image(room_bytes, "room")
        mask = open_mask(mask_bytes, room.size)
    except InvalidImageError as exc:  # the API checked both; a stored blob that fails is corrupt
        raise JobFailed("image_unreadable", str(exc)) from exc
    timings["load_inputs"] = time.perf_counter() - started

    painter = runtime.painter  # loaded once per process
    steps = preview.steps or runtime.settings.default_preview_steps
    guidance = preview.guidance_scale if preview.guidance_scale is not None else DEFAULT_GUIDANCE_SCALE

    def on_step(done: int, total: int) -> None:
        ctx.report(stage="painting", progress=0.05 + 0.9 * done / max(total, 1))

    swaps_before = painter.swap_seconds
    paint_started = time.perf_counter()
    try:
        [result] = painter.paint(
            [PaintRequest(room=room, mask=mask, seed=preview.seed, reference=plan.reference)],
            adapter_id=plan.adapter_id,
            steps=steps,
            guidance_scale=guidance,
            progress=on_step,
        )
    except AdapterError as exc:
        raise JobFailed(exc.code, str(exc)) from exc
    timings["paint"] = time.perf_counter() - paint_started
    timings["adapter_swap"] = painter.swap_seconds - swaps_before  # a full fine-tune's: in and back

    buffer = io.BytesIO()
    result.save(buffer, format="PNG")
    key = preview_result_key(preview.tenant_id, preview.id)
    # The same key on every attempt: a task run twice overwrites one result, never adds a second.
    runtime.blobs.put(key, buffer.getvalue(), content_type="image/png")
    timings["total"] = time.perf_counter() - started

    with runtime.session() as session:
        row = TenantRepository(session, job.tenant_id).get(Preview, preview.id)
        if row is None:  # deleted while painting: drop the result with it
            runtime.blobs.delete(key)
            return
        previews.finish(row, key, timings)
        job_state.finish(session, ctx.held, "succeeded")
        emit_event(session, row.tenant_id, "preview.succeeded", preview_payload(row))
