"""A mixed batch's rows stay apart: embeddings from different devices meet on the UNet's, and a full
fine-tune that cannot be painted fails its own rows only, as a bad LoRA adapter does."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from models import BaseModel, Painter, PaintRequest
from models.errors import AdapterBaseMismatch, AdapterCorrupt, AdapterError, AdapterNotFound
from models.full_weights_format import export_unet_weights
from models.sampler import InpaintPipeline
from tests.models.conftest import STEPS, make_adapter_bytes, random_room


def _request(seed: int, **fields: object) -> PaintRequest:
    room = random_room(96, 80, seed=seed)
    mask = np.zeros((room.height, room.width), bool)
    mask[20:50, 30:70] = True
    return PaintRequest(room=room, mask=mask, seed=seed, **fields)  # type: ignore[arg-type]


def test_embeddings_from_different_devices_meet_on_the_unets(base: BaseModel) -> None:
    """An adapter row's embedding comes from its file (CPU, fp32 or whatever it was written in), a
    zero-shot row's from the image encoder (on the base's device): stacked as they came, a CUDA
    batch mixing both raised. `meta` stands in for CUDA here: torch.stack refuses meta with cpu."""
    on_device = copy.copy(base)  # the session's base stays on the CPU
    on_device.device, on_device.dtype = torch.device("meta"), torch.float16
    pipeline = InpaintPipeline(on_device)
    dim = base.image_encoder.proj_size
    adapter_row = _request(1, reference_embedding=torch.randn(1, dim, dtype=torch.float64))  # from a file
    encoder_row = _request(2, reference_embedding=torch.empty(1, dim, device="meta"))  # from the encoder
    cond = pipeline._embeddings([adapter_row, encoder_row, adapter_row])
    assert (cond.shape, cond.device, cond.dtype) == ((3, 1, dim), torch.device("meta"), torch.float16)


def test_on_one_device_the_embeddings_keep_their_values(base: BaseModel) -> None:
    dim = base.image_encoder.proj_size
    rows = [torch.randn(1, dim, dtype=torch.float64), torch.randn(1, dim)]
    cond = InpaintPipeline(base)._embeddings([_request(i, reference_embedding=r) for i, r in enumerate(rows)])
    assert cond.dtype == base.dtype and torch.equal(cond, torch.stack(rows).to(base.dtype))


@pytest.fixture(scope="module")
def full_files(own_base: BaseModel) -> dict[str, bytes]:
    """Full fine-tunes of `own_base`'s UNet (its own weights: what matters here is whether they load)."""
    embedding = torch.zeros(1, own_base.image_encoder.proj_size)
    good = export_unet_weights(own_base, reference_embedding=embedding)
    real_hash = own_base.weights_hash
    own_base.weights_hash = "f" * 64  # written as if for another base
    try:
        other_base = export_unet_weights(own_base, reference_embedding=embedding)
    finally:
        own_base.weights_hash = real_hash
    return {"full": good, "other_base": other_base, "truncated": good[:-100]}


@pytest.fixture
def make_lora(own_base: BaseModel) -> Callable[[int], bytes]:
    return lambda seed: make_adapter_bytes(own_base, seed)


@pytest.mark.parametrize(
    ("bad", "error"), [("other_base", AdapterBaseMismatch), ("truncated", AdapterCorrupt)]
)
def test_a_bad_full_fine_tune_fails_its_own_rows_only(
    own_base: BaseModel,
    full_files: dict[str, bytes],
    make_lora: Callable[[int], bytes],
    bad: str,
    error: type[AdapterError],
) -> None:
    store = {"lora": make_lora(1), bad: full_files[bad]}
    painter = Painter(own_base, lora_rank=4, loader=store.__getitem__)
    requests = [_request(0), _request(1), _request(2)]
    outcomes = painter.paint_mixed(requests, ["lora", bad, bad], steps=STEPS)
    assert isinstance(outcomes[1], error) and outcomes[2] is outcomes[1]
    expected = painter.paint([requests[0]], adapter_id="lora", steps=STEPS)[0]
    assert isinstance(outcomes[0], Image.Image) and outcomes[0].tobytes() == expected.tobytes()


def test_a_full_fine_tune_gone_when_painted_alone_fails_its_own_rows_only(
    own_base: BaseModel, full_files: dict[str, bytes], make_lora: Callable[[int], bytes]
) -> None:
    """With no fine-tune kept (full_weights_cached=0), `alone` reads the file again to paint it; a
    file deleted meanwhile fails that id's rows, not the rows already painted nor the next fine-tune."""
    store = {"lora": make_lora(1), "gone": full_files["full"], "full": full_files["full"]}
    reads: dict[str, int] = {}

    def loader(adapter_id: str) -> bytes:
        reads[adapter_id] = reads.get(adapter_id, 0) + 1
        if adapter_id == "gone" and reads[adapter_id] > 1:
            raise AdapterNotFound(f"no adapter {adapter_id!r}")
        return store[adapter_id]

    painter = Painter(own_base, lora_rank=4, loader=loader, full_weights_cached=0)
    requests = [_request(0), _request(1), _request(2)]
    outcomes = painter.paint_mixed(requests, ["lora", "gone", "full"], steps=STEPS)
    assert isinstance(outcomes[1], AdapterNotFound) and reads["gone"] == 2
    assert isinstance(outcomes[0], Image.Image) and isinstance(outcomes[2], Image.Image)
    expected = painter.paint([requests[2]], adapter_id="full", steps=STEPS)[0]
    assert outcomes[2].tobytes() == expected.tobytes()
