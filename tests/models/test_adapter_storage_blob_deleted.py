"""An adapter gone from the blob store (its subject deleted, or a version forgotten after two more
trainings) while a preview planned with it waits in a batch: that preview fails with
adapter_not_found, and its batch-mates are painted.

The worker's loader is the blob store's `get`, which raises `BlobNotFound` (a KeyError), not an
AdapterError: `Painter.paint_mixed` let it through, and the whole batch failed as internal_error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.blobstore import LocalBlobStore
from models import AdapterNotFound, BaseModel, Painter, PaintRequest
from tests.models.conftest import STEPS, make_adapter_bytes, random_room

KEPT = "tenants/ten_t/subjects/sub_a/adapter/1.safetensors"
GONE = "tenants/ten_t/subjects/sub_b/adapter/1.safetensors"


@pytest.fixture
def blobs(base: BaseModel, tmp_path: Path) -> LocalBlobStore:
    Painter(base, lora_rank=4)  # LoRA slots injected before adapters of them are made
    store = LocalBlobStore(tmp_path / "blobs")
    for seed, key in enumerate((KEPT, GONE)):
        store.put(key, make_adapter_bytes(base, seed=seed), content_type="application/octet-stream")
    return store


def request() -> PaintRequest:
    mask = np.zeros((80, 96), bool)
    mask[16:64, 24:72] = True
    return PaintRequest(random_room(96, 80), mask, seed=2)


def test_a_deleted_adapter_fails_its_own_row_only(
    base: BaseModel, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    painter = Painter(base, lora_rank=4, disk_dir=tmp_path / "adapter-cache", loader=blobs.get)
    blobs.delete(GONE)
    kept, gone = painter.paint_mixed([request(), request()], [KEPT, GONE], steps=STEPS)
    assert isinstance(kept, Image.Image)
    assert isinstance(gone, AdapterNotFound) and gone.code == "adapter_not_found"
    assert GONE in str(gone)
    [alone] = painter.paint([request()], adapter_id=KEPT, steps=STEPS)
    assert kept.tobytes() == alone.tobytes()


def test_a_deleted_adapter_painted_alone_is_adapter_not_found(
    base: BaseModel, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    painter = Painter(base, lora_rank=4, disk_dir=tmp_path / "adapter-cache", loader=blobs.get)
    painter.adapters.activate(KEPT)
    blobs.delete(GONE)
    with pytest.raises(AdapterNotFound):
        painter.paint([request()], adapter_id=GONE, steps=STEPS)
    assert painter.adapters.active is not None and painter.adapters.active.adapter_id == KEPT
