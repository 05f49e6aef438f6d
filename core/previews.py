"""A preview's life, in one place: every change of a preview's status is a function here.

queued → running → succeeded | failed (or cancelled by ops). The API creates previews, the preview
worker runs and finishes them, `core.job_state` mirrors their job; nothing else assigns
`Preview.status` (tests/test_architecture.py holds the tree to that).

What a preview is painted with is decided here too, by one rule the API (at POST) and the preview
worker (when it paints) both apply: `paint_mode`. The API records its answer on the new row; the
worker decides again from the subject as it is then and records the final one (`record_mode`), so a
subject that became ready while an `auto` preview waited is painted with its adapter.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from core.clock import utcnow
from core.tables import Job, Preview, Subject

PREVIEW_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")  # nothing more will happen to it (core.retention)
# What a client may ask for, and what a preview is painted with.
RequestedMode = Literal["auto", "adapter", "zero_shot"]
PaintMode = Literal["adapter", "zero_shot"]
REQUESTED_MODES: tuple[str, ...] = RequestedMode.__args__  # type: ignore[attr-defined]
PAINT_MODES: tuple[str, ...] = PaintMode.__args__  # type: ignore[attr-defined]


def expires_at(preview: Preview, retention_days: float) -> datetime | None:
    """When core.retention deletes this preview: `retention_days` after it finished. None while it is
    queued or running, and when previews are kept until deleted (0)."""
    if retention_days <= 0 or preview.status not in FINISHED:
        return None
    return preview.updated_at + timedelta(days=retention_days)


def has_adapter(subject: Subject) -> bool:
    """Ready, with an adapter (or full fine-tune) to paint with."""
    return subject.status == "ready" and bool(subject.adapter_key)


def is_annotated(subject: Subject) -> bool:
    """Training or ready, with the product's box in at least one photo: a reference crop to paint
    from. A queued or annotating subject is not, even with boxes the caller gave or an earlier
    training found (they may change); nor is a failed or cancelled one."""
    return subject.status in ("training", "ready") and any(photo.box for photo in subject.photos)


def paint_mode(requested: str, subject: Subject) -> PaintMode | None:
    """What a preview of `subject` asked as `requested` is painted with now; None: it cannot be
    (the API answers 409 `subject_not_ready`, the worker fails the preview with that code).

    `adapter`: the subject's adapter, once ready. `zero_shot`: the base model and the subject's
    reference crop, once annotated (training or ready). `auto`: the adapter when ready, else
    zero-shot when annotated."""
    if requested in ("adapter", "auto") and has_adapter(subject):
        return "adapter"
    if requested in ("zero_shot", "auto") and is_annotated(subject):
        return "zero_shot"
    return None


def record_mode(preview: Preview, mode: PaintMode, adapter_version: int | None) -> None:
    """What `preview` is painted with: `adapter` and the adapter's version, or `zero_shot` (no
    version). The API records what it expects at POST; the worker records what it paints with."""
    if mode not in PAINT_MODES:
        raise ValueError(f"unknown paint mode {mode!r}")
    preview.mode = mode
    preview.adapter_version = adapter_version if mode == "adapter" else None


def new_preview(**fields: Any) -> Preview:
    """A queued preview with these columns (not yet added to a session)."""
    return Preview(status="queued", progress=0.0, **fields)


def reset_for_rendering(preview: Preview) -> None:
    """Back to `queued` with no progress or error: its job is retried."""
    preview.status = "queued"
    preview.progress = 0.0
    preview.error_code = None
    preview.error_message = None


def mark_running(preview: Preview) -> None:
    preview.status = "running"


def finish(preview: Preview, result_key: str, timings: dict[str, float]) -> None:
    """Painted: the result is stored under `result_key`."""
    preview.status = "succeeded"
    preview.result_key = result_key
    preview.progress = 1.0
    preview.timings = {k: round(v, 4) for k, v in timings.items()}
    preview.updated_at = utcnow()


# alike: core/subjects.py ends a subject the same way; each domain owns its own transitions.
def mark_cancelled(preview: Preview) -> None:
    """Its job was cancelled; a preview that already succeeded keeps its result and status."""
    if preview.status != "succeeded":
        preview.status = "cancelled"


def follow_job(preview: Preview, job: Job) -> None:
    """Show the job's progress; a failed or cancelled job ends the preview too."""
    preview.progress = job.progress
    if job.status in ("failed", "cancelled"):
        preview.status = job.status
        preview.error_code = job.error_code
        preview.error_message = job.error_message
