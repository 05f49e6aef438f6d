"""A subject trained with ROOMFIT_TRAIN_MODE=full, on real worker processes: the train pool stores a
full fine-tune (and leaves its base model as it found it), and the preview pool paints it through
the same path as a LoRA subject's, putting the base weights back afterwards."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.tables import Preview, Subject
from models import Painter, PaintRequest, get_base_model, open_image, open_mask
from models.full_weights_format import file_format, read_unet_weights
from tests.worker.conftest import make_tenant, product_photo, submit_preview, submit_subject
from tests.worker.stack import Stack, ready_subject_with_random_adapter, wait_for

pytestmark = pytest.mark.integration


def _preview(
    stack: Stack, tenant_id: str, subject_id: str, worker_log: Callable[[], str]
) -> tuple[np.ndarray, bytes, bytes]:
    """(result pixels, room bytes, mask bytes) of a preview of the subject (seed 7)."""
    preview_id, _, _, _ = submit_preview(stack, tenant_id, subject_id, seed=7)
    row = wait_for(lambda: stack.finished(Preview, preview_id), 180, "the preview")
    assert row.status == "succeeded", (row.error_code, row.error_message, worker_log()[-3000:])
    result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(row.result_key))).convert("RGB"))
    return result, stack.blobs.get(row.room_key), stack.blobs.get(row.mask_key)


def test_a_full_fine_tuned_subject_paints_previews(distributed_stack: Stack, shared_models_dir: Path) -> None:
    stack = distributed_stack
    train = stack.start_worker("train", ROOMFIT_TRAIN_MODE="full")
    paint = stack.start_worker("preview,default")
    tenant_id = make_tenant(stack)
    photos = [product_photo(index) for index in range(2)]
    first, _ = submit_subject(stack, tenant_id, photos=photos)
    second, _ = submit_subject(stack, tenant_id, photos=photos)  # the same run again, on the same worker
    lora_subject = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir)

    subject = wait_for(lambda: stack.finished(Subject, first), 300, "the full fine-tuning")
    assert subject.status == "ready", (subject.error_code, subject.error_message, train.log()[-3000:])
    data = stack.blobs.get(subject.adapter_key)
    assert file_format(data) == "roomfit-unet"
    assert (len(data), hashlib.sha256(data).hexdigest()) == (subject.adapter_bytes, subject.adapter_sha256)
    assert subject.adapter_rank is None  # no LoRA, so no rank

    # previews: a LoRA subject, the full one, the LoRA subject again (the base weights came back)
    lora_before, _, _ = _preview(stack, tenant_id, lora_subject, paint.log)
    full, room_bytes, mask_bytes = _preview(stack, tenant_id, first, paint.log)
    lora_after, _, _ = _preview(stack, tenant_id, lora_subject, paint.log)
    assert np.array_equal(lora_before, lora_after)

    room = open_image(room_bytes, "room")
    mask = open_mask(mask_bytes, room.size)
    assert np.array_equal(full[~mask], np.asarray(room)[~mask])
    # what the worker painted is the fine-tune's painting, not the base's with its embedding
    base = get_base_model("tiny", device="cpu", tiny_dir=shared_models_dir / "tiny-pbe")
    painter = Painter(base, lora_rank=4, loader=stack.blobs.get)
    steps = stack.settings.default_preview_steps
    [expected] = painter.paint(
        [PaintRequest(room, mask, seed=7)], adapter_id=subject.adapter_key, steps=steps
    )
    embedding = read_unet_weights(data).reference_embedding
    [base_out] = painter.paint([PaintRequest(room, mask, seed=7, reference_embedding=embedding)], steps=steps)
    assert np.array_equal(full, np.asarray(expected))
    assert (full[mask] != np.asarray(base_out)[mask]).mean() > 0.5

    # the train worker put its base back: the same run on it gives the same weights
    again = wait_for(lambda: stack.finished(Subject, second), 300, "the second full fine-tuning")
    assert again.status == "ready", (again.error_code, again.error_message, train.log()[-3000:])
    one, two = read_unet_weights(data), read_unet_weights(stack.blobs.get(again.adapter_key))
    assert one.tensors.keys() == two.tensors.keys()
    assert all(torch.equal(one.tensors[k], two.tensors[k]) for k in one.tensors)
