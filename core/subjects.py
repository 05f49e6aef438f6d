"""A subject's life, in one place: every change of a subject's status is a function here.

queued → annotating → training → ready, or failed / cancelled. The API (create, train again,
delete), the train worker and the job transitions of `core.job_state` call these; nothing else
assigns `Subject.status` (tests/test_architecture.py holds the tree to that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.clock import utcnow
from core.ids import new_id
from core.tables import Job, Subject, SubjectPhoto

SUBJECT_STATUSES = ("queued", "annotating", "training", "ready", "failed", "cancelled")


@dataclass(frozen=True)
class AdapterRecord:
    """What a finished training stored: the adapter's blob and what it was trained with."""

    version: int
    key: str
    bytes: int
    sha256: str
    rank: int | None  # None: a full fine-tune (every UNet weight), which has no LoRA rank
    base_model: str


class PhotoNote(Protocol):
    """What annotation found in one photo (models.detector.PhotoAnnotation has these fields)."""

    box: Sequence[float] | None
    score: float | None
    label: str | None
    source: str | None
    reason: str | None


def new_subject(name: str, external_id: str | None, label: str | None) -> Subject:
    """A queued subject (not yet added to a session)."""
    return Subject(
        id=new_id("sub"), name=name, external_id=external_id, label=label, status="queued", progress=0.0
    )


def new_photo(
    subject: Subject, index: int, blob_key: str, size: tuple[int, int], box: list[float] | None
) -> SubjectPhoto:
    """A photo row of `subject`; a box given by the caller is recorded as `given`."""
    photo = SubjectPhoto(
        id=new_id("pho"),
        subject_id=subject.id,
        index=index,
        blob_key=blob_key,
        width=size[0],
        height=size[1],
        box=box,
        source="given" if box else None,
    )
    subject.photos.append(photo)
    return photo


def reset_for_training(subject: Subject) -> None:
    """Back to `queued` with no progress, stage or error: a new training (or a retried one) starts."""
    subject.status = "queued"
    subject.progress = 0.0
    subject.stage = None
    subject.error_code = None
    subject.error_message = None


def mark_annotating(subject: Subject) -> None:
    subject.status = "annotating"


def record_boxes(subject: Subject, notes: Sequence[PhotoNote]) -> None:
    """The product's box (or why there is none) in every photo, in photo order; then `training`."""
    for row, note in zip(subject.photos, notes, strict=True):
        row.box = stored_box(note.box) if note.box else None
        row.score, row.label, row.source = note.score, note.label, note.source
        row.unusable_reason = note.reason
    subject.status = "training"


def stored_box(box: Sequence[float]) -> list[float]:
    """A box to 0.1 px, rounded outwards (x0, y0 down; x1, y1 up): it still holds every pixel the
    product was found in, and a thin box a shop gave ([10, 10, 10.04, 50]) keeps a width, since a
    training started again trains on the stored box (rounded to nearest it became [10, 10, 10, 50],
    which nothing can train on). Within a photo, as the box was: its sides are whole pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [_tenths(x0, math.floor), _tenths(y0, math.floor), _tenths(x1, math.ceil), _tenths(y1, math.ceil)]


def _tenths(value: float, whole: Callable[[float], int]) -> float:
    # rounded to 6 places first: 10.3 * 10 is 103.00000000000001, whose ceiling would be 10.4
    return whole(round(value * 10, 6)) / 10


def mark_ready(subject: Subject, adapter: AdapterRecord) -> None:
    subject.status = "ready"
    subject.stage = None
    subject.adapter_version = adapter.version
    subject.adapter_key = adapter.key
    subject.adapter_bytes = adapter.bytes
    subject.adapter_sha256 = adapter.sha256
    subject.adapter_rank = adapter.rank
    subject.adapter_base_model = adapter.base_model
    subject.error_code = subject.error_message = None
    subject.updated_at = utcnow()


def mark_cancelled(subject: Subject) -> None:
    """Its training was cancelled; a subject that is already ready keeps its adapter and status."""
    if subject.status != "ready":
        subject.status = "cancelled"


def follow_job(subject: Subject, job: Job) -> None:
    """Show the training job's progress and stage; a failed or cancelled job ends the subject too."""
    subject.progress = job.progress
    subject.stage = job.stage
    if job.status in ("failed", "cancelled"):
        subject.status = job.status
        subject.error_code = job.error_code
        subject.error_message = job.error_message
