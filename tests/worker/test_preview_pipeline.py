"""The preview pool end to end, on real worker processes: stored adapter in, painted room out."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.blob_keys import adapter_key
from core.tables import Job, Preview, Subject
from models import get_base_model, inject_lora, write_adapter
from models.lora import lora_parameters, lora_spec_of
from tests.worker.conftest import make_tenant, submit_preview
from tests.worker.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def ready_subject_with_random_adapter(stack: Stack, tenant_id: str, models_dir: Path, seed: int = 3) -> str:
    """A `ready` subject whose adapter is random but well-formed, as training would leave it."""
    base = get_base_model("tiny", device="cpu", tiny_dir=models_dir / "tiny-pbe")
    if getattr(base.unet, "roomfit_lora", None) is None:
        base.lora = inject_lora(base.unet, rank=4)
    generator = torch.Generator().manual_seed(seed)
    lora = {
        k: torch.randn(tuple(p.shape), generator=generator) * 0.5
        for k, p in lora_parameters(base.unet).items()
    }
    data = write_adapter(
        lora,
        reference_embedding=torch.randn((1, base.image_encoder.proj_size), generator=generator),
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        spec=lora_spec_of(base.unet),
    )
    from core.ids import new_id

    subject_id = new_id("sub")
    key = adapter_key(tenant_id, subject_id, 1)
    stack.blobs.put(key, data, content_type="application/octet-stream")
    with stack.session() as session:
        session.add(
            Subject(
                id=subject_id,
                tenant_id=tenant_id,
                name="random",
                status="ready",
                adapter_version=1,
                adapter_key=key,
                adapter_bytes=len(data),
                adapter_sha256=hashlib.sha256(data).hexdigest(),
                adapter_rank=4,
                adapter_base_model="tiny",
            )
        )
        session.commit()
    return subject_id


def _preview_done(stack: Stack, preview_id: str) -> Preview | None:
    with stack.session() as session:
        row = session.get(Preview, preview_id)
        return row if row is not None and row.status in ("succeeded", "failed") else None


def test_preview_worker_paints_inside_the_mask_only(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    subject_id = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir)
    worker = stack.start_worker("preview,default")
    preview_id, job_id, room, mask = submit_preview(stack, tenant_id, subject_id)
    worker.wait_ready()

    row = wait_for(lambda: _preview_done(stack, preview_id), 120, "the preview to finish")
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
