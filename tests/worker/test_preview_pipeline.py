"""The preview pool end to end, on real worker processes: stored adapter in, painted room out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.tables import Job, Preview
from tests.worker.conftest import make_tenant, submit_preview
from tests.worker.stack import Stack, ready_subject_with_random_adapter, wait_for

pytestmark = pytest.mark.integration


def test_preview_worker_paints_inside_the_mask_only(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    subject_id = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir)
    worker = stack.start_worker("preview,default")
    preview_id, job_id, room, mask = submit_preview(stack, tenant_id, subject_id)
    worker.wait_ready()

    row = wait_for(lambda: stack.finished(Preview, preview_id), 120, "the preview to finish")
    assert row.status == "succeeded", (row.error_code, row.error_message, worker.log()[-3000:])
    result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(row.result_key))).convert("RGB"))
    room_pixels = np.asarray(room)
    assert result.shape == room_pixels.shape
    assert np.array_equal(result[~mask], room_pixels[~mask])  # the room untouched outside the mask
    assert not np.array_equal(result[mask], room_pixels[mask])  # and painted inside it
    assert {"paint", "adapter_swap", "total"} <= set(row.timings)
    with stack.session() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempts, job.progress) == ("succeeded", 1, 1.0)
