"""train_subject's work: annotate the photos, fine-tune the subject (its LoRA, or every UNet weight
when ROOMFIT_TRAIN_MODE=full), store the adapter (or full fine-tune) file.

Stages (written to the job row): annotating -> training -> saving. The adapter's version is fixed
on the job's first attempt and kept in `job.params`, so every attempt writes the same blob key: a
retried or duplicated job leaves exactly one adapter version. Checkpoints go to a local folder per
subject and version, so an attempt after a killed worker on the same machine resumes where it was.
A worker that is stopping (SIGTERM) checkpoints the step it is at and leaves that checkpoint in the
blob store, so the worker that takes the job next, on any machine, resumes there too.
A full fine-tuning trains the process's base model in place; its own weights are put back afterwards
(a CPU copy of the UNet meanwhile), so the next job starts from the base again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from core import job_state, subjects
from core.blob_keys import adapter_key, adapter_version_of, checkpoint_key, subject_prefix
from core.blobstore import BlobNotFound, BlobStore
from core.repository import TenantRepository
from core.subjects import AdapterRecord
from core.tables import Job, Subject
from worker.checkpoint_sweep import checkpoint_folder
from worker.events import emit_event, subject_payload
from worker.job_runner import TRANSIENT_ERRORS, JobContext, JobFailed, JobStopped
from worker.metrics import StepClock
from worker.runtime import Runtime

log = logging.getLogger("roomfit.worker")

# Progress over the whole job: annotation is quick, training is nearly all of it.
ANNOTATE_END, TRAIN_END = 0.1, 0.95
# A checkpoint larger than this (a full fine-tune's: weights and two optimizer moments, ~10 GB) is
# not uploaded on a stop; a LoRA one is a few MB.
CHECKPOINT_UPLOAD_MAX_BYTES = 256 * 1024 * 1024
# The blob's content type says which file it is (models.full_weights_format.file_format reads it too).
CONTENT_TYPES = {
    "lora": "application/vnd.roomfit.adapter+safetensors",
    "full": "application/vnd.roomfit.unet+safetensors",
}


def train_subject_work(ctx: JobContext, job: Job) -> None:
    runtime = ctx.runtime
    version = _adapter_version(ctx, job)
    checkpoints = checkpoint_folder(runtime.settings.var_dir, job.subject_id or "", version)
    left = checkpoint_key(job.tenant_id, job.subject_id or "", version)
    _fetch_checkpoint(ctx, left, checkpoints)
    try:
        _train(ctx, job, version, checkpoints)
    except JobStopped as stop:
        if stop.reason == "shutdown":
            _leave_checkpoint(ctx, left, checkpoints)
        elif stop.reason in ("cancelled", "timeout"):
            # Ended for good: a later training of the subject gets this version again while none
            # succeeds, and must not resume this one's state. (A lost lease leaves both alone: the
            # worker that holds the job now may be resuming from them.)
            _forget_own_adapter(runtime, job, version)
            _forget_checkpoint(runtime, left, checkpoints)
        raise
    except (job_state.LeaseLost, *TRANSIENT_ERRORS):
        raise  # another worker runs it now, or a retry will: either resumes from the checkpoint
    except Exception:  # failed for good (JobFailed, a crash): as when cancelled
        _forget_own_adapter(runtime, job, version)
        _forget_checkpoint(runtime, left, checkpoints)
        raise
    _forget_checkpoint(runtime, left, checkpoints)


def _forget_checkpoint(runtime: Runtime, key: str, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        runtime.blobs.delete(key)
    except Exception:  # how the job ended stands; a leftover is found stale by the next run's check
        log.warning("could not delete the checkpoint %s", key, exc_info=True)


def _forget_own_adapter(runtime: Runtime, job: Job, version: int) -> None:
    """What a training that ended without success (cancelled, past its deadline, failed for good)
    leaves. A deleted subject's every blob: the API deleted them with its rows, and this worker may
    have written more since. A subject that stays keeps its photos and current adapter; only this
    training's own adapter file goes (it may be stored already when the end comes between the upload
    and the commit), since no row will ever name it."""
    try:
        with runtime.session() as session:
            subject = TenantRepository(session, job.tenant_id).get(Subject, job.subject_id or "")
            current = subject.adapter_key if subject is not None else None
        if subject is None:
            runtime.blobs.delete_prefix(subject_prefix(job.tenant_id, job.subject_id or ""))
            return
        own = adapter_key(job.tenant_id, job.subject_id or "", version)
        if own != current:
            runtime.blobs.delete(own)
    except Exception:  # how the job ended stands; a leftover is overwritten by the next version
        log.warning("job %s: could not delete its own adapter files", job.id, exc_info=True)


def _fetch_checkpoint(ctx: JobContext, key: str, folder: Path) -> None:
    """A checkpoint a stopped worker left in the blob store, unless this machine has one of its own."""
    from models.training_checkpoint import CHECKPOINT_FILE

    if (folder / CHECKPOINT_FILE).is_file():
        return
    try:
        data = ctx.runtime.blobs.get(key)
    except BlobNotFound:
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{CHECKPOINT_FILE}.download"
    partial.write_bytes(data)
    partial.replace(folder / CHECKPOINT_FILE)  # whole or not at all, as save_checkpoint writes it
    log.info("job %s: resuming from the checkpoint a stopped worker left (%d bytes)", ctx.job_id, len(data))


def _leave_checkpoint(ctx: JobContext, key: str, folder: Path) -> None:
    """This worker is stopping: put its checkpoint where the next worker, on any machine, finds it."""
    from models.training_checkpoint import CHECKPOINT_FILE

    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return
    size = path.stat().st_size
    if size > CHECKPOINT_UPLOAD_MAX_BYTES:
        log.warning("job %s: checkpoint of %d bytes kept on this machine only", ctx.job_id, size)
        return
    ctx.runtime.blobs.put(key, path.read_bytes(), content_type="application/octet-stream")
    log.info("job %s: checkpoint (%d bytes) left in the blob store for the next worker", ctx.job_id, size)


def _adapter_version(ctx: JobContext, job: Job) -> int:
    with ctx.runtime.session() as session:
        repo = TenantRepository(session, job.tenant_id)
        row = repo.get(Job, job.id)
        subject = repo.get(Subject, job.subject_id or "")
        if row is None or subject is None:
            raise JobFailed("subject_not_found", f"subject {job.subject_id} no longer exists")
        if "adapter_version" not in row.params:
            row.params = {**row.params, "adapter_version": (subject.adapter_version or 0) + 1}
            session.commit()
        return int(row.params["adapter_version"])


def _train(ctx: JobContext, job: Job, version: int, checkpoints: Path) -> None:
    from models import InvalidImageError, RoomfitModelError, open_image
    from models.subject_training import annotate_and_train
    from models.training import StopTraining, TrainSettings
    from models.training_checkpoint import CheckpointMismatch

    runtime = ctx.runtime
    settings = runtime.settings
    timings: dict[str, float] = {}
    step_clock = StepClock()

    # --- annotating: the product's box in every photo ---------------------------------------
    started = time.perf_counter()
    with runtime.session() as session:
        subject = TenantRepository(session, job.tenant_id).get(Subject, job.subject_id or "")
        assert subject is not None
        subjects.mark_annotating(subject)
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
        except BlobNotFound as exc:  # gone from the store (with its subject: then the cancel stands)
            missing = f"photo {photo.index} is missing from the blob store"
            raise JobFailed("image_unreadable", missing) from exc

    def on_annotated(notes) -> None:  # type: ignore[no-untyped-def]
        with runtime.session() as session:
            row = TenantRepository(session, job.tenant_id).get(Subject, job.subject_id or "")
            assert row is not None
            subjects.record_boxes(row, notes)
            session.commit()
        timings["annotate"] = time.perf_counter() - started
        ctx.report(stage="training", progress=ANNOTATE_END, timings=timings)
        step_clock.start()

    # --- training: LoRA (or every weight) of the UNet, progress and losses to the job row ------
    steps = int(job.params.get("steps") or settings.default_train_steps)
    mode = settings.train_mode
    train_settings = TrainSettings(
        steps=steps,
        seed=int(job.params.get("seed", 0)),
        mode=mode,
        rank=settings.lora_rank,
        # the paper's batch (TrainSettings' default) on real models; 2 keeps tiny runs fast
        batch_size=int(job.params.get("batch_size", 2 if settings.is_tiny else TrainSettings().batch_size)),
        micro_batch_size=settings.train_micro_batch,
        checkpoint_every=max(1, steps // 20),
    )

    def on_progress(p) -> None:  # type: ignore[no-untyped-def]
        step_clock.step_done()  # first: a step that then stops the training was done all the same
        if ctx.stopping():  # this step is checkpointed, its loss kept; then handed back below
            ctx.keep_loss_point((p.step, p.loss))
            raise StopTraining
        fraction = ANNOTATE_END + (TRAIN_END - ANNOTATE_END) * p.step / max(p.total, 1)
        ctx.report(progress=fraction, loss_point=(p.step, p.loss))

    base = runtime.base_model

    def train() -> Any:
        with _unet_held_for(mode, runtime):
            return annotate_and_train(
                base,
                images,
                train_settings,
                boxes=[photo.box if photo.source == "given" else None for photo in photos],
                detector=lambda: runtime.detector,
                label=label,
                names=[f"photo {p.index}" for p in photos],
                on_annotated=on_annotated,
                progress=on_progress,
                checkpoint_dir=checkpoints,
                info={"subject": job.subject_id, "version": version},
            )

    try:
        try:
            trained = train()
        except CheckpointMismatch:
            # Another training's state under this version's folder (other settings, a base model
            # changed by a deploy): the shop cannot fix that, so start over rather than fail.
            log.warning("job %s: checkpoint in %s is another training's; starting over", job.id, checkpoints)
            shutil.rmtree(checkpoints, ignore_errors=True)
            trained = train()
    except RoomfitModelError as exc:  # no product found, out of memory even at batch 1, ...
        raise JobFailed(exc.code, str(exc)) from exc
    except StopTraining as stop:
        raise JobStopped("shutdown") from stop
    result = trained.result
    timings["train"] = time.perf_counter() - started - timings.get("annotate", 0.0)
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
    runtime.blobs.put(key, data, content_type=CONTENT_TYPES[mode])
    ctx.check()  # cancelled while uploading: the handler above removes the blob again
    with runtime.session() as session:
        repo = TenantRepository(session, job.tenant_id)
        subject = repo.get(Subject, job.subject_id or "")
        if subject is None:
            runtime.blobs.delete(key)
            raise JobStopped("cancelled")
        replaced = subject.adapter_version
        adapter = AdapterRecord(
            version=version,
            key=key,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            rank=settings.lora_rank if mode == "lora" else None,  # no LoRA: no rank
            base_model=base.model_id,
        )
        subjects.mark_ready(subject, adapter)
        job_row = repo.get(Job, job.id)
        assert job_row is not None
        job_row.timings = {**job_row.timings, **{k: round(v, 4) for k, v in timings.items()}}
        try:
            # Checks, on the locked row, that no cancel came first; if one did, nothing above is kept.
            job_state.finish(session, ctx.held, "succeeded")
        except job_state.JobCancelled:
            session.rollback()
            raise JobStopped("cancelled") from None
        emit_event(session, subject.tenant_id, "subject.ready", subject_payload(subject))
    if replaced:
        forget_superseded_adapters(runtime.blobs, job.tenant_id, job.subject_id or "", replaced, key)


def forget_superseded_adapters(
    blobs: BlobStore, tenant_id: str, subject_id: str, replaced: int, current: str
) -> list[str]:
    """Delete the subject's adapter versions older than `replaced`, the one a training just replaced;
    their keys. Nothing paints them any more (a preview reads its subject's current `adapter_key`
    when it is painted; workers let go of cached copies, worker.adapter_sweep), and a full fine-tune's
    weighs 1.7 GB. The replaced version stays, for a preview that is being painted with it now, and
    so does `current` whatever its number. A store that refuses is logged and tried again at the
    next training."""
    gone = []
    for key in blobs.list(f"{subject_prefix(tenant_id, subject_id)}adapter/"):
        version = adapter_version_of(key)
        if version is None or version >= replaced or key == current:
            continue
        try:
            blobs.delete(key)
        except Exception:  # the adapter is ready and its job done: a leftover is only bytes
            log.warning("subject %s: could not delete superseded adapter %s", subject_id, key, exc_info=True)
            continue
        gone.append(key)
    if gone:
        log.info("subject %s: deleted %d superseded adapter versions", subject_id, len(gone))
    return gone


def _unet_held_for(mode: str, runtime: Runtime) -> AbstractContextManager[object]:
    """Full mode trains the process's base UNet in place: its own weights are put back afterwards,
    and a painter of this process (a worker serving previews too) is held, its LoRA slots zeroed."""
    held = ExitStack()
    if mode == "full":
        from models.full_weights_slot import unet_weights_kept

        painter = runtime.loaded_painter
        if painter is not None:
            held.enter_context(painter.adapters.use(None))
        held.enter_context(unet_weights_kept(runtime.base_model.unet))
    return held
