"""train_subject's work: annotate the photos, fine-tune the subject's LoRA, store the adapter.

Stages (written to the job row): annotating -> training -> saving. The adapter's version is fixed
on the job's first attempt and kept in `job.params`, so every attempt writes the same blob key: a
retried or duplicated job leaves exactly one adapter version. Checkpoints go to a local folder per
subject and version, so an attempt after a killed worker on the same machine resumes where it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from pathlib import Path

from core import job_state
from core.blob_keys import adapter_key, subject_prefix
from core.clock import utcnow
from core.tables import Job, Subject
from worker.events import emit_event, subject_payload
from worker.job_runner import JobContext, JobFailed, JobStopped

log = logging.getLogger("roomfit.worker")

# Progress over the whole job: annotation is quick, training is nearly all of it.
ANNOTATE_END, TRAIN_END = 0.1, 0.95


def train_subject_work(ctx: JobContext, job: Job) -> None:
    runtime = ctx.runtime
    version = _adapter_version(ctx, job)
    checkpoints = runtime.settings.var_dir.resolve() / "checkpoints" / f"{job.subject_id}-v{version}"
    try:
        _train(ctx, job, version, checkpoints)
    except JobStopped as stop:
        if stop.reason == "cancelled":
            # The subject is being deleted: nothing of it may outlive the delete, ours included.
            shutil.rmtree(checkpoints, ignore_errors=True)
            runtime.blobs.delete_prefix(subject_prefix(job.tenant_id, job.subject_id or ""))
        raise
    shutil.rmtree(checkpoints, ignore_errors=True)


def _adapter_version(ctx: JobContext, job: Job) -> int:
    with ctx.runtime.session() as session:
        row = session.get(Job, job.id)
        subject = session.get(Subject, job.subject_id)
        if row is None or subject is None:
            raise JobFailed("subject_not_found", f"subject {job.subject_id} no longer exists")
        if "adapter_version" not in row.params:
            row.params = {**row.params, "adapter_version": (subject.adapter_version or 0) + 1}
            session.commit()
        return int(row.params["adapter_version"])


def _train(ctx: JobContext, job: Job, version: int, checkpoints: Path) -> None:
    import torch

    from models import InvalidImageError, open_image
    from models.detector import NoObjectDetected, annotate_photos
    from models.training import TrainSettings, train_subject
    from models.training_pairs import SubjectPhoto as TrainingPhoto

    runtime = ctx.runtime
    settings = runtime.settings
    timings: dict[str, float] = {}

    # --- annotating: the product's box in every photo ---------------------------------------
    started = time.perf_counter()
    with runtime.session() as session:
        subject = session.get(Subject, job.subject_id)
        assert subject is not None
        subject.status = "annotating"
        session.commit()
        photos = list(subject.photos)
        label = subject.label
        session.expunge_all()
    ctx.report(stage="annotating", progress=0.01, force=True)
    images = []
    for photo in photos:
        try:
            images.append(open_image(runtime.blobs.get(photo.blob_key), f"photo {photo.index}"))
        except InvalidImageError as exc:
            raise JobFailed("image_unreadable", str(exc)) from exc
    given = [photo.box if photo.source == "given" else None for photo in photos]
    detector = runtime.detector if any(box is None for box in given) else None
    try:
        annotations = annotate_photos(
            images, detector=detector, boxes=given, label=label, names=[f"photo {p.index}" for p in photos]
        )
    except NoObjectDetected as exc:
        raise JobFailed(exc.code, str(exc)) from exc
    with runtime.session() as session:
        rows = session.get(Subject, job.subject_id).photos  # type: ignore[union-attr]
        for row, note in zip(rows, annotations, strict=True):
            row.box = [round(v, 1) for v in note.box] if note.box else None
            row.score, row.label, row.source = note.score, note.label, note.source
            row.unusable_reason = note.reason
        session.get(Subject, job.subject_id).status = "training"  # type: ignore[union-attr]
        session.commit()
    timings["annotate"] = time.perf_counter() - started
    ctx.report(stage="training", progress=ANNOTATE_END, timings=timings)

    # --- training: LoRA on the UNet, progress and losses to the job row ----------------------
    started = time.perf_counter()
    train_photos = [TrainingPhoto(images[i], note.box) for i, note in enumerate(annotations) if note.box]
    steps = int(job.params.get("steps") or settings.default_train_steps)
    train_settings = TrainSettings(
        steps=steps,
        seed=int(job.params.get("seed", 0)),
        rank=settings.lora_rank,
        batch_size=int(job.params.get("batch_size", 2 if settings.is_tiny else 4)),
        checkpoint_every=max(1, steps // 20),
    )

    def on_progress(p) -> None:  # type: ignore[no-untyped-def]
        fraction = ANNOTATE_END + (TRAIN_END - ANNOTATE_END) * p.step / max(p.total, 1)
        ctx.report(progress=fraction, loss_point=(p.step, p.loss))

    base = runtime.base_model
    info = {"subject": job.subject_id, "version": version}
    try:
        result = train_subject(
            base, train_photos, train_settings, progress=on_progress, checkpoint_dir=checkpoints, info=info
        )
    except torch.OutOfMemoryError:
        smaller = max(1, train_settings.batch_size // 2)
        log.warning(
            "job %s: out of memory at batch %d; retrying once at %d",
            job.id,
            train_settings.batch_size,
            smaller,
        )
        if smaller == train_settings.batch_size:
            raise JobFailed("out_of_memory", "training ran out of memory even at batch size 1") from None
        _free_accelerator_memory()
        try:
            result = train_subject(
                base,
                train_photos,
                dataclasses.replace(train_settings, batch_size=smaller),
                progress=on_progress,
                checkpoint_dir=checkpoints / f"batch{smaller}",
                info=info,
            )
        except torch.OutOfMemoryError:
            raise JobFailed(
                "out_of_memory",
                f"training ran out of memory at batch size {train_settings.batch_size} and {smaller}",
            ) from None
    timings["train"] = time.perf_counter() - started
    log.info(
        "job %s: trained %d steps in %.1fs (resumed from step %d), final loss %.4f",
        job.id,
        result.summary.steps,
        result.summary.seconds,
        result.summary.resumed_from_step,
        result.summary.final_loss,
    )

    # --- saving: one blob per version; the same key on every attempt ------------------------
    ctx.report(stage="saving", progress=TRAIN_END, timings=timings)
    data = result.artifact
    key = adapter_key(job.tenant_id, job.subject_id or "", version)
    runtime.blobs.put(key, data, content_type="application/vnd.roomfit.adapter+safetensors")
    ctx.check()  # cancelled while uploading: the handler above removes the blob again
    with runtime.session() as session:
        subject = session.get(Subject, job.subject_id)
        if subject is None:
            runtime.blobs.delete(key)
            raise JobStopped("cancelled")
        subject.status = "ready"
        subject.stage = None
        subject.adapter_version = version
        subject.adapter_key = key
        subject.adapter_bytes = len(data)
        subject.adapter_sha256 = hashlib.sha256(data).hexdigest()
        subject.adapter_rank = settings.lora_rank
        subject.adapter_base_model = base.model_id
        subject.error_code = subject.error_message = None
        subject.updated_at = utcnow()
        job_row = session.get(Job, job.id)
        assert job_row is not None
        job_row.timings = {**job_row.timings, **{k: round(v, 4) for k, v in timings.items()}}
        job_state.finish(session, ctx.held, "succeeded")
        emit_event(session, subject.tenant_id, "subject.ready", subject_payload(subject))


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
