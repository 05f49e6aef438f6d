"""What a preview is painted with: the subject's adapter, or (zero-shot) the base model and a
reference crop. One function decides, for the single and the batched preview path alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.tables import Preview, Subject
from worker.job_runner import JobFailed
from worker.runtime import Runtime

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class PaintPlan:
    mode: str  # "adapter" or "zero_shot"
    adapter_id: str | None  # the adapter's blob key; None: the base model paints
    adapter_version: int | None
    reference: Image.Image | None = None  # zero-shot: the product crop the base model paints from


def paint_plan(runtime: Runtime, preview: Preview, subject: Subject | None) -> PaintPlan:
    """The plan for `preview` of `subject` (rows read in the caller's session); JobFailed with
    `subject_not_ready` when there is nothing to paint from."""
    if subject is None or subject.status != "ready" or not subject.adapter_key:
        raise JobFailed("subject_not_ready", f"subject {preview.subject_id} has no ready adapter")
    return PaintPlan(mode="adapter", adapter_id=subject.adapter_key, adapter_version=subject.adapter_version)
