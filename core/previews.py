"""A preview's life, in one place: every change of a preview's status is a function here.

queued → running → succeeded | failed (or cancelled by ops). The API creates previews, the preview
worker runs and finishes them, `core.job_state` mirrors their job; nothing else assigns
`Preview.status` (tests/test_architecture.py holds the tree to that).
"""

from __future__ import annotations

from typing import Any

from core.clock import utcnow
from core.tables import Job, Preview

PREVIEW_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


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
