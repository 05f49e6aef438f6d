"""A bank slot dropped while a mixed batch is being set up still paints what the batch was given.

The adapter sweep (worker.adapter_sweep.drop_adapters, its own thread) evicts a retrained subject's
old version from the AdapterCache, then drops it from the AdapterBank under the bank's lock only.
`Painter._paint_bank` holds the cache's lock, calls `bank.place` (slots chosen, lock released),
then `bank.rows` (slots gathered): a drop landing between the two zeroed a slot the batch had been
given, and a preview planned with that version was painted by the base model, recorded as painted
with its adapter. The sweep runs just when a version is replaced, when previews of it are in flight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from models import BaseModel, Painter, PaintRequest
from tests.models.conftest import STEPS, make_adapter_bytes, random_room

OLD = "tenants/ten_t/subjects/sub_a/adapter/1.safetensors"  # replaced by a training meanwhile
OTHER = "tenants/ten_t/subjects/sub_b/adapter/1.safetensors"


def test_a_slot_dropped_between_place_and_rows_paints_its_adapter(base: BaseModel) -> None:
    Painter(base, lora_rank=4)
    store = {OLD: make_adapter_bytes(base, seed=1), OTHER: make_adapter_bytes(base, seed=2)}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__)
    mask = np.zeros((80, 96), bool)
    mask[16:64, 24:72] = True
    requests = [PaintRequest(random_room(96, 80), mask, seed=5)] * 2
    expected = painter.paint_mixed(requests, [OLD, OTHER], steps=STEPS)
    assert all(isinstance(image, Image.Image) for image in expected)

    place = painter.bank.place

    def place_then_swept(adapter_ids: Sequence[str | None]) -> list[int]:
        slots = place(adapter_ids)
        painter.bank.drop(OLD)  # the sweeper thread's bank step, landing before `rows`
        return slots

    painter.bank.place = place_then_swept  # type: ignore[method-assign]
    again = painter.paint_mixed(requests, [OLD, OTHER], steps=STEPS)
    assert [image.tobytes() for image in again] == [image.tobytes() for image in expected]  # type: ignore[union-attr]
    assert OLD not in painter.bank.resident()  # dropped all the same: the next batch fills it again
