"""AdapterBank: several LoRA adapters on the device at once, one per row of a UNet batch.

A preview worker serves many products, so the previews waiting at any moment are mostly for
different adapters. The bank lets one UNet forward pass paint them together: every LoRA layer gets a
bank of `slots` adapters (A: [S+1, r, in], B: [S+1, out, r]; slot 0 is "no adapter", all zeros), and
a batch names one slot per row. Each layer then adds, per row, `(x @ A[slot].T) @ B[slot].T * scale`
with two batched matmuls (`torch.bmm`), in place of peft's one shared adapter. At rank 4 that is
under 1 % of the UNet's arithmetic, so a mixed batch costs what a same-adapter batch does.

Slots are filled by in-place copies of the `AdapterCache`'s prepared tensors (its memory, disk and
loader tiers stay the source), least recently used slot first; the bank's tensors never change
shape, so a compiled UNet sees the same graph whatever adapters are in it. A batch that uses one
adapter for every row does not come here: `Painter.paint` swaps it into peft's own layers (the
single-adapter path is as fast as before).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from models.adapter_cache import ActiveAdapter, AdapterCache
from models.lora import ADAPTER_NAME, lora_parameters, lora_spec_of

NO_ADAPTER = 0  # the slot of rows painted by the base model


@dataclass
class _Layer:
    module: torch.nn.Module  # peft's LoRA Linear around the attention projection
    a_index: int  # position of its lora_A / lora_B tensors in the AdapterCache's slot order
    b_index: int
    a_bank: torch.Tensor  # [S+1, r, in]
    b_bank: torch.Tensor  # [S+1, out, r]
    scaling: float
    rows_a: torch.Tensor | None = None  # [rows, in, r], gathered once per batch
    rows_b: torch.Tensor | None = None  # [rows, r, out]


class AdapterBank:
    def __init__(self, unet: torch.nn.Module, cache: AdapterCache, slots: int = 8) -> None:
        if slots < 1:
            raise ValueError("an adapter bank needs at least one slot")
        lora_spec_of(unet)  # raises when the UNet carries no LoRA
        self.unet = unet
        self.cache = cache
        self.slots = slots
        keys = list(lora_parameters(unet))  # the order of the cache's prepared tensors too
        self._layers: list[_Layer] = []
        for a_index, key in enumerate(keys):
            if ".lora_A." not in key:
                continue
            path = key.rsplit(".lora_A.", 1)[0]
            module = unet.get_submodule(path)
            a = module.lora_A[ADAPTER_NAME].weight  # type: ignore[index]
            b = module.lora_B[ADAPTER_NAME].weight  # type: ignore[index]
            self._layers.append(
                _Layer(
                    module=module,
                    a_index=a_index,
                    b_index=keys.index(key.replace(".lora_A.", ".lora_B.")),
                    a_bank=torch.zeros((slots + 1, *a.shape), dtype=a.dtype, device=a.device),
                    b_bank=torch.zeros((slots + 1, *b.shape), dtype=b.dtype, device=b.device),
                    scaling=float(module.scaling[ADAPTER_NAME]),  # type: ignore[index]
                )
            )
        self._resident: OrderedDict[str, int] = OrderedDict()  # adapter id -> slot, LRU order
        self._lock = threading.RLock()
        cache.on_replaced(self.drop)  # new bytes under a resident id: its slot must not paint the old
        self.fills = 0  # slot copies made (a resident adapter costs none)

    # --- slots -------------------------------------------------------------------------------------

    def place(self, adapter_ids: Sequence[str | None]) -> list[int]:
        """The slot of each id (None: NO_ADAPTER), copying the adapters not yet resident into the least
        recently used slots. Raises what the cache raises (AdapterError) before changing any slot
        for that id; ids of one call never push each other out."""
        with self._lock:
            wanted = list(dict.fromkeys(i for i in adapter_ids if i is not None))
            if len(wanted) > self.slots:
                raise ValueError(f"{len(wanted)} adapters in one batch; the bank holds {self.slots}")
            entries = {i: self.cache.entry(i) for i in wanted if i not in self._resident}
            for adapter_id in wanted:
                if adapter_id in self._resident:
                    self._resident.move_to_end(adapter_id)
            for adapter_id, entry in entries.items():
                self._fill(self._free_slot(keep=set(wanted)), adapter_id, entry)
            return [NO_ADAPTER if i is None else self._resident[i] for i in adapter_ids]

    def drop(self, adapter_id: str) -> None:
        """Forget an adapter (its subject was deleted or retrained): no later `place` hands out its
        slot for it; the slot is free, its numbers overwritten when it is filled again.

        Not zeroed here: a drop may come (the adapter sweep's thread) after a batch's `place` was
        given the slot and before its `rows` gather it, and that batch must paint the adapter it
        asked for. A slot is refilled only by `place`, which the painter calls under the
        AdapterCache's lock for the whole of a batch, so a slot given out is not overwritten."""
        with self._lock:
            self._resident.pop(adapter_id, None)

    def resident(self) -> dict[str, int]:
        with self._lock:
            return dict(self._resident)

    def _free_slot(self, keep: set[str]) -> int:
        used = set(self._resident.values())
        for slot in range(1, self.slots + 1):
            if slot not in used:
                return slot
        for adapter_id, slot in self._resident.items():  # least recently used first
            if adapter_id not in keep:
                del self._resident[adapter_id]
                return slot
        raise AssertionError("place() checked that the batch fits the bank")

    @torch.no_grad()
    def _fill(self, slot: int, adapter_id: str, entry: ActiveAdapter) -> None:
        for layer in self._layers:
            layer.a_bank[slot].copy_(entry.tensors[layer.a_index])
            layer.b_bank[slot].copy_(entry.tensors[layer.b_index])
        self._resident[adapter_id] = slot
        self.fills += 1

    # --- painting ----------------------------------------------------------------------------------

    @contextmanager
    def rows(self, slots: torch.Tensor | Sequence[int]) -> Iterator[None]:
        """While inside, the UNet paints row i of its batch with the adapter in slot `slots[i]` (a
        batch of exactly len(slots) rows). peft's own LoRA path is switched off meanwhile."""
        with self._lock:
            index = torch.as_tensor(slots, dtype=torch.long)
            hooks = []
            try:
                for layer in self._layers:
                    device = layer.a_bank.device
                    rows = index.to(device)
                    # gathered once for the whole paint: the rows' slots do not change between steps
                    layer.rows_a = layer.a_bank.index_select(0, rows).transpose(1, 2).contiguous()
                    layer.rows_b = (layer.b_bank.index_select(0, rows) * layer.scaling).transpose(1, 2)
                    layer.rows_b = layer.rows_b.contiguous()
                    layer.module._disable_adapters = True  # type: ignore[assignment]
                    hooks.append(layer.module.register_forward_hook(_per_row_delta(layer)))
                yield
            finally:
                for hook in hooks:
                    hook.remove()
                for layer in self._layers:
                    layer.module._disable_adapters = False  # type: ignore[assignment]
                    layer.rows_a = layer.rows_b = None


def _per_row_delta(layer: _Layer):  # type: ignore[no-untyped-def]
    def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        assert layer.rows_a is not None and layer.rows_b is not None
        x = args[0]
        rows = layer.rows_a.shape[0]
        if x.shape[0] != rows:
            raise ValueError(f"the adapter bank was given {rows} row slots for a batch of {x.shape[0]}")
        flat = x.reshape(rows, -1, x.shape[-1]).to(layer.rows_a.dtype)  # [rows, tokens, in]
        delta = torch.bmm(torch.bmm(flat, layer.rows_a), layer.rows_b)  # [rows, tokens, out]
        return output + delta.reshape(output.shape).to(output.dtype)

    return hook
