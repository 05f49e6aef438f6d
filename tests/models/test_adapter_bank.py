"""Mixed-adapter batches: previews of different products painted in one UNet batch, each row with its
own adapter from the AdapterBank, equal what each paints alone with its adapter."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from models import BaseModel, Painter, PaintRequest
from models.adapter_bank import NO_ADAPTER, AdapterBank
from models.errors import AdapterCorrupt, AdapterNotFound
from tests.models.conftest import STEPS, random_room

PIXEL_TOLERANCE = 2  # bmm per row vs peft's shared Linear: float rounding only (fp32, CPU)


def _request(seed: int) -> PaintRequest:
    room = random_room(96 + 8 * seed, 80, seed=seed)
    mask = np.zeros((room.height, room.width), bool)
    mask[15:65, 20 + seed : 70 + seed] = True
    return PaintRequest(room=room, mask=mask, seed=seed)


def _diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


@pytest.fixture
def store(adapter_bytes: Callable[..., bytes]) -> dict[str, bytes]:
    return {f"adapter-{i}": adapter_bytes(10 + i) for i in range(4)}


@pytest.fixture
def mixed_painter(base: BaseModel, store: dict[str, bytes]) -> Painter:
    return Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=4)


def _alone(painter: Painter, request: PaintRequest, adapter_id: str | None) -> Image.Image:
    return painter.paint([request], adapter_id=adapter_id, steps=STEPS)[0]


def test_four_adapters_in_one_batch_equal_each_painted_alone(mixed_painter: Painter, store) -> None:  # type: ignore[no-untyped-def]
    ids = list(store)
    requests = [_request(i) for i in range(4)]
    mixed = mixed_painter.paint_mixed(requests, ids, steps=STEPS)
    alone = [_alone(mixed_painter, r, a) for r, a in zip(requests, ids, strict=True)]
    diffs = [_diff(m, a) for m, a in zip(mixed, alone, strict=True)]  # type: ignore[arg-type]
    print(f"mixed batch of 4 adapters vs each alone: max pixel difference per request {diffs}")
    assert max(diffs) <= PIXEL_TOLERANCE
    # and the adapters matter: each request painted with another's adapter differs clearly
    swapped = _alone(mixed_painter, requests[0], ids[1])
    assert _diff(swapped, alone[0]) > 10 * PIXEL_TOLERANCE
    assert mixed_painter.bank.fills == 4


def test_a_batch_sharing_one_adapter_is_the_swap_path(mixed_painter: Painter, store) -> None:  # type: ignore[no-untyped-def]
    requests = [_request(i) for i in range(3)]
    shared = mixed_painter.paint_mixed(requests, ["adapter-2"] * 3, steps=STEPS)
    today = mixed_painter.paint(requests, adapter_id="adapter-2", steps=STEPS)
    assert [_diff(a, b) for a, b in zip(shared, today, strict=True)] == [0, 0, 0]  # type: ignore[arg-type]
    assert mixed_painter.bank.fills == 0  # the bank was not used at all
    # the bank path with every row on one slot paints the same, within float rounding
    entries = {"adapter-2": mixed_painter.adapters.entry("adapter-2")}
    banked = mixed_painter._paint_bank(requests, ["adapter-2"] * 3, entries, STEPS, 5.0, None)
    assert max(_diff(a, b) for a, b in zip(banked, today, strict=True)) <= PIXEL_TOLERANCE


def test_a_row_without_adapter_is_painted_by_the_base_model(
    mixed_painter: Painter, reference: Image.Image
) -> None:
    plain = _request(1)
    plain.reference = reference  # the base model needs a reference crop (zero-shot)
    mixed = mixed_painter.paint_mixed([_request(0), plain], ["adapter-0", None], steps=STEPS)
    assert _diff(mixed[1], _alone(mixed_painter, plain, None)) <= PIXEL_TOLERANCE  # type: ignore[arg-type]
    assert _diff(mixed[0], _alone(mixed_painter, _request(0), "adapter-0")) <= PIXEL_TOLERANCE  # type: ignore[arg-type]


def test_refilling_a_slot_a_b_a_stays_exact(base: BaseModel, store: dict[str, bytes], reference) -> None:  # type: ignore[no-untyped-def]
    """One slot, filled with A, then B, then A again: A paints exactly as it did the first time."""
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=1)
    plain = _request(3)
    plain.reference = reference
    requests = [_request(0), plain]
    first = painter.paint_mixed(requests, ["adapter-0", None], steps=STEPS)
    painter.paint_mixed(requests, ["adapter-1", None], steps=STEPS)
    again = painter.paint_mixed(requests, ["adapter-0", None], steps=STEPS)
    assert [_diff(a, b) for a, b in zip(first, again, strict=True)] == [0, 0]  # type: ignore[arg-type]
    assert painter.bank.fills == 3 and painter.bank.resident() == {"adapter-0": 1}


def test_the_single_adapter_path_is_untouched_by_a_mixed_batch(mixed_painter: Painter, store) -> None:  # type: ignore[no-untyped-def]
    request = _request(2)
    before = _alone(mixed_painter, request, "adapter-3")
    mixed_painter.paint_mixed([_request(i) for i in range(4)], list(store), steps=STEPS)
    assert _diff(_alone(mixed_painter, request, "adapter-3"), before) == 0


def test_one_bad_adapter_fails_its_own_request_only(base: BaseModel, store: dict[str, bytes]) -> None:
    store = {**store, "damaged": store["adapter-0"][:64]}  # cut short: not a readable file
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=4)

    def loader(adapter_id: str) -> bytes:
        if adapter_id == "gone":
            raise AdapterNotFound("no adapter 'gone'")
        return store[adapter_id]

    painter.adapters.loader = painter._lora_loader
    painter._loader = loader
    requests = [_request(i) for i in range(4)]
    outcomes = painter.paint_mixed(requests, ["adapter-1", "damaged", "gone", "adapter-2"], steps=STEPS)
    assert isinstance(outcomes[1], AdapterCorrupt) and isinstance(outcomes[2], AdapterNotFound)
    assert _diff(outcomes[0], _alone(painter, requests[0], "adapter-1")) <= PIXEL_TOLERANCE  # type: ignore[arg-type]
    assert _diff(outcomes[3], _alone(painter, requests[3], "adapter-2")) <= PIXEL_TOLERANCE  # type: ignore[arg-type]


def test_the_bank_holds_what_it_was_sized_for(base: BaseModel, store: dict[str, bytes]) -> None:
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=2)
    with pytest.raises(ValueError, match="3 adapters in one batch; the bank holds 2"):
        painter.bank.place(["adapter-0", "adapter-1", "adapter-2"])
    assert painter.bank.place(["adapter-0", None, "adapter-0", "adapter-1"]) == [1, NO_ADAPTER, 1, 2]
    assert painter.bank.place(["adapter-2", "adapter-1"]) == [1, 2]  # LRU: adapter-0's slot reused
    with pytest.raises(ValueError, match="row slots for a batch"), painter.bank.rows([1, 2, 1]):
        painter.base.unet(torch.zeros(2, 9, 8, 8), 1, encoder_hidden_states=torch.zeros(2, 1, 32))


def test_a_bank_needs_lora(tiny_folder) -> None:  # type: ignore[no-untyped-def]
    from models import load_base_model
    from models.adapter_cache import AdapterCache

    bare = load_base_model("tiny", tiny_dir=tiny_folder, device="cpu")
    with pytest.raises(ValueError, match="no roomfit LoRA"):
        AdapterBank(bare.unet, AdapterCache.__new__(AdapterCache), slots=2)


def test_new_bytes_under_a_used_id_replace_it_on_both_paths(mixed_painter: Painter, store) -> None:  # type: ignore[no-untyped-def]
    """`put` under an id the UNet (swap path) or the bank (mixed path) already holds: each then paints
    with the new weights, as a painter that only ever saw the new bytes does."""
    request, other = _request(0), _request(1)
    fresh = Painter(mixed_painter.base, lora_rank=4, loader=store.__getitem__, adapter_slots=4)
    expected = _alone(fresh, request, "adapter-2")
    assert _diff(expected, _alone(fresh, request, "adapter-0")) > 0  # the two adapters do differ

    _alone(mixed_painter, request, "adapter-0")  # active in the UNet
    mixed_painter.adapters.put("adapter-0", store["adapter-2"])
    assert _diff(_alone(mixed_painter, request, "adapter-0"), expected) == 0

    mixed_painter.paint_mixed([request, other], ["adapter-3", "adapter-1"], steps=STEPS)  # resident
    mixed_painter.adapters.put("adapter-3", store["adapter-2"])
    mixed = mixed_painter.paint_mixed([request, other], ["adapter-3", "adapter-1"], steps=STEPS)
    fresh_mixed = fresh.paint_mixed([request, other], ["adapter-2", "adapter-1"], steps=STEPS)
    assert [_diff(a, b) for a, b in zip(mixed, fresh_mixed, strict=True)] == [0, 0]
