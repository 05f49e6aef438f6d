"""AdapterCache: which adapter the UNet paints with, swapped in place.

Three tiers: a memory LRU bounded in bytes (tensors already in the UNet's dtype and device), a disk
folder of adapter files under it, and the `loader` callback (the blob store) under that.

A swap is one `copy_` per LoRA tensor into parameter slots resolved once at construction, so
it costs what copying ~1M numbers costs. peft's `hotswap_adapter_from_state_dict` does the same
copies but looks every key up by name first (attrgetter + state_dict scans), which dominates its time.
Everything an adapter could fail on is checked before the first copy, so a failed activation leaves
the previous adapter active and intact.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.adapter_format import AdapterFile, check_compatible, read_adapter
from models.errors import AdapterCorrupt, AdapterNotFound
from models.lora import lora_parameters, lora_spec_of

AdapterLoader = Callable[[str], bytes]


@dataclass
class ActiveAdapter:
    adapter_id: str
    tensors: list[torch.Tensor]  # in slot order, slot dtype/device, lora_B pre-scaled for alpha
    reference_embedding: torch.Tensor  # [1, D]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


@dataclass
class CacheStats:
    hits: int = 0  # served from memory (or already active)
    misses: int = 0  # read from the disk cache or the loader
    disk_hits: int = 0
    swaps: int = 0  # copies into the UNet
    swap_seconds: float = 0.0
    evictions: int = 0


class AdapterCache:
    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        base_model_id: str,
        base_weights_hash: str,
        memory_bytes: int = 512 * 1024 * 1024,
        disk_dir: Path | str | None = None,
        loader: AdapterLoader | None = None,
    ) -> None:
        self.unet = unet
        self.base_model_id = base_model_id
        self.base_weights_hash = base_weights_hash
        self.spec = lora_spec_of(unet)
        self.memory_bytes = memory_bytes
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.loader = loader
        self.stats = CacheStats()
        # Resolved once: the swap loop never looks a name up again.
        slots = lora_parameters(unet)
        self._keys = list(slots)
        self._slots = [param.data for param in slots.values()]
        self._slot_shapes = {key: tuple(param.shape) for key, param in slots.items()}
        self._b_slots = [i for i, key in enumerate(self._keys) if ".lora_B." in key]
        self._memory: OrderedDict[str, ActiveAdapter] = OrderedDict()
        self._memory_used = 0
        self._lock = threading.RLock()
        self.active: ActiveAdapter | None = None
        self.activate(None)

    # --- public ------------------------------------------------------------------------------------

    def activate(self, adapter_id: str | None) -> ActiveAdapter | None:
        """Make `adapter_id` the UNet's adapter (None: no adapter, the base model paints)."""
        with self._lock:
            # Another AdapterCache on the same UNet may have copied since: then our `active` is stale.
            owner = getattr(self.unet, "roomfit_adapter_owner", None)
            if adapter_id is None:
                started = time.perf_counter()
                for i in self._b_slots:
                    self._slots[i].zero_()  # B = 0 -> B @ A = 0: the LoRA delta vanishes
                self._count_swap(started)
                self.active = None
                return None
            if owner is self and self.active is not None and self.active.adapter_id == adapter_id:
                self.stats.hits += 1
                return self.active
            entry = self._get(adapter_id)
            started = time.perf_counter()
            with torch.no_grad():
                for slot, tensor in zip(self._slots, entry.tensors, strict=True):
                    slot.copy_(tensor)
            self._count_swap(started)
            self.active = entry
            return entry

    @contextmanager
    def use(self, adapter_id: str | None) -> Iterator[ActiveAdapter | None]:
        """Hold the adapter active (other threads wait) while the caller paints with it."""
        with self._lock:
            yield self.activate(adapter_id)

    def put(self, adapter_id: str, data: bytes) -> None:
        """Validate and cache adapter bytes without activating them (e.g. right after training)."""
        with self._lock:
            self._remember(adapter_id, self._prepare(adapter_id, data))
            self._write_disk(adapter_id, data)

    def evict(self, adapter_id: str) -> None:
        """Forget an adapter everywhere (e.g. a subject was deleted or retrained)."""
        with self._lock:
            entry = self._memory.pop(adapter_id, None)
            if entry is not None:
                self._memory_used -= entry.nbytes
            if self.disk_dir is not None:
                self._disk_path(adapter_id).unlink(missing_ok=True)

    @property
    def memory_used(self) -> int:
        return self._memory_used

    def entry(self, adapter_id: str) -> ActiveAdapter:
        """An adapter's ready-to-copy tensors from the tiers (memory, disk, loader), without making it
        the UNet's active adapter: what an adapter bank copies into one of its slots."""
        with self._lock:
            return self._get(adapter_id)

    def peek(self, adapter_id: str) -> ActiveAdapter | None:
        """The in-memory entry of an adapter, without activating it or touching the LRU order."""
        with self._lock:
            return self._memory.get(adapter_id)

    def cached_ids(self) -> list[str]:
        with self._lock:
            return list(self._memory)

    # --- tiers -------------------------------------------------------------------------------------

    def _get(self, adapter_id: str) -> ActiveAdapter:
        entry = self._memory.get(adapter_id)
        if entry is not None:
            self._memory.move_to_end(adapter_id)
            self.stats.hits += 1
            return entry
        self.stats.misses += 1
        entry = self._from_disk(adapter_id)
        if entry is None:
            if self.loader is None:
                raise AdapterNotFound(f"adapter {adapter_id!r} is not cached and there is no loader")
            data = self.loader(adapter_id)
            entry = self._prepare(adapter_id, data)  # raises before anything is written or copied
            self._write_disk(adapter_id, data)
        self._remember(adapter_id, entry)
        return entry

    def _from_disk(self, adapter_id: str) -> ActiveAdapter | None:
        if self.disk_dir is None:
            return None
        path = self._disk_path(adapter_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = self._prepare(adapter_id, data)
        except AdapterCorrupt:
            path.unlink(missing_ok=True)  # a damaged cache file: fetch it again from the loader
            return None
        self.stats.disk_hits += 1
        return entry

    def _write_disk(self, adapter_id: str, data: bytes) -> None:
        if self.disk_dir is None:
            return
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.disk_dir, suffix=".part")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, self._disk_path(adapter_id))

    def _disk_path(self, adapter_id: str) -> Path:
        assert self.disk_dir is not None
        # ids are blob keys with slashes; hash them into flat, safe file names
        return self.disk_dir / (hashlib.sha256(adapter_id.encode()).hexdigest()[:32] + ".safetensors")

    def _remember(self, adapter_id: str, entry: ActiveAdapter) -> None:
        old = self._memory.pop(adapter_id, None)
        if old is not None:
            self._memory_used -= old.nbytes
        self._memory[adapter_id] = entry
        self._memory_used += entry.nbytes
        while self._memory_used > self.memory_bytes and self._memory:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.nbytes
            self.stats.evictions += 1

    def _prepare(self, adapter_id: str, data: bytes) -> ActiveAdapter:
        """Read, verify and convert an adapter to ready-to-copy tensors; raises, touching nothing."""
        adapter: AdapterFile = read_adapter(data)
        check_compatible(
            adapter,
            base_model_id=self.base_model_id,
            base_weights_hash=self.base_weights_hash,
            spec=self.spec,
            slot_shapes=self._slot_shapes,
        )
        # Same rank, maybe another alpha: fold the ratio into B so the UNet's scaling stays fixed.
        ratio = adapter.spec.alpha / self.spec.alpha
        tensors = []
        for key, slot in zip(self._keys, self._slots, strict=True):
            tensor = adapter.lora[key].to(device=slot.device, dtype=torch.float32)
            if ratio != 1.0 and ".lora_B." in key:
                tensor = tensor * ratio
            tensors.append(tensor.to(slot.dtype).contiguous())
        return ActiveAdapter(
            adapter_id=adapter_id,
            tensors=tensors,
            reference_embedding=adapter.reference_embedding,
            info=adapter.info,
        )

    def _count_swap(self, started: float) -> None:
        self.unet.roomfit_adapter_owner = self  # type: ignore[assignment]
        self.stats.swaps += 1
        self.stats.swap_seconds += time.perf_counter() - started
