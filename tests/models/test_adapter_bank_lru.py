"""The adapter bank gives up the least recently *used* slot: an adapter painted again keeps its slot
over one that was filled later but not used since (models/adapter_bank.py, `place`)."""

from __future__ import annotations

from collections.abc import Callable

from models import BaseModel, Painter


def test_an_adapter_used_again_keeps_its_slot_over_one_used_less_recently(
    base: BaseModel, adapter_bytes: Callable[..., bytes]
) -> None:
    store = {f"a{i}": adapter_bytes(20 + i) for i in range(3)}
    painter = Painter(base, lora_rank=4, loader=store.__getitem__, adapter_slots=2)
    bank = painter.bank
    assert bank.place(["a0", "a1"]) == [1, 2]
    assert bank.place(["a0"]) == [1]  # resident: no copy, but it counts as a use
    assert bank.place(["a2"]) == [2]  # a1 is now the least recently used: its slot goes
    assert bank.resident() == {"a0": 1, "a2": 2}
    assert bank.fills == 3
