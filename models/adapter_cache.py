"""AdapterCache: which adapter the UNet paints with, swapped in place.

Three tiers: a memory LRU bounded in bytes (tensors already in the UNet's dtype and device), a disk
folder of adapter files under it (`AdapterDiskTier`: bounded in bytes, least recently used first,
shared safely by the processes of one machine), and the `loader` callback (the blob store) under that.

A swap is one `copy_` per LoRA tensor into parameter slots resolved once at construction, so
it costs what copying ~1M numbers costs. peft's `hotswap_adapter_from_state_dict` does the same
copies but looks every key up by name first (attrgetter + state_dict scans), which dominates its time.
Everything an adapter could fail on is checked before the first copy, so a failed activation leaves
the previous adapter active and intact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.adapter_disk import DEFAULT_DISK_BYTES, AdapterDiskTier
from models.adapter_format import AdapterFile, check_compatible, read_adapter
from models.errors import AdapterCorrupt, AdapterNotFound
from models.lora import lora_parameters, lora_spec_of

# loader(adapter_id) -> the file's bytes; a KeyError (the blob store's BlobNotFound) when there is
# none, which the cache raises as AdapterNotFound. Any other error (a store that is down) stands.
AdapterLoader = Callable[[str], bytes]

log = logging.getLogger("roomfit.models")


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
    evictions: int = 0  # from memory, for room
    disk_evictions: int = 0  # from disk, for room (this process's writes only)


@dataclass(frozen=True)
class Evicted:
    """What `AdapterCache.evict_ids` found: ids dropped from this process's memory (or UNet), and ids
    whose file it removed from the disk folder."""

    memory: list[str]
    disk: list[str]

    @property
    def ids(self) -> list[str]:
        return list(dict.fromkeys([*self.memory, *self.disk]))


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
        disk_bytes: int | None = DEFAULT_DISK_BYTES,
    ) -> None:
        """`disk_bytes`: the bound of the disk folder (None: unbounded), shared with every process
        using the same `disk_dir`; settable later through the `disk_bytes` attribute."""
        self.unet = unet
        self.base_model_id = base_model_id
        self.base_weights_hash = base_weights_hash
        self.spec = lora_spec_of(unet)
        self.memory_bytes = memory_bytes
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.disk = AdapterDiskTier(self.disk_dir, disk_bytes) if self.disk_dir is not None else None
        self.loader = loader
        self.stats = CacheStats()
        # Resolved once: the swap loop never looks a name up again.
        slots = lora_parameters(unet)
        self._keys = list(slots)
        self._slots = [param.data for param in slots.values()]
        self._slot_shapes = {key: tuple(param.shape) for key, param in slots.items()}
        self._b_slots = [i for i, key in enumerate(self._keys) if ".lora_B." in key]
        self._memory: OrderedDict[str, ActiveAdapter] = OrderedDict()
        self._replaced: list[Callable[[str], None]] = []  # told when `put` gives an id new bytes
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
                self._touch_disk(adapter_id)
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
        """Validate and cache adapter bytes without activating them (e.g. right after training).
        Bytes put under an id already in use replace it everywhere: the next activation copies the
        new weights, and copies held elsewhere (an adapter bank's slots) are dropped."""
        with self._lock:
            entry = self._prepare(adapter_id, data)
            self._remember(adapter_id, entry)
            self._write_disk(adapter_id, data)
            if self.active is not None and self.active.adapter_id == adapter_id:
                self.active = None  # the UNet's slots hold the old weights: activate copies again
            for listener in self._replaced:
                listener(adapter_id)

    def on_replaced(self, listener: Callable[[str], None]) -> None:
        """Call `listener(adapter_id)` whenever `put` stores bytes under an id (see `put`)."""
        self._replaced.append(listener)

    def evict(self, adapter_id: str) -> None:
        """Forget an adapter everywhere (e.g. a subject was deleted or retrained)."""
        self.evict_ids([adapter_id])

    def evict_ids(self, adapter_ids: Iterable[str]) -> Evicted:
        """Forget these adapters in memory, in the UNet (an active one's slots are zeroed) and on disk
        (for every process sharing the folder); what was found where."""
        ids = list(dict.fromkeys(adapter_ids))
        memory: list[str] = []
        with self._lock:
            for adapter_id in ids:
                entry = self._memory.pop(adapter_id, None)
                if entry is not None:
                    self._memory_used -= entry.nbytes
                    memory.append(adapter_id)
                if self.active is not None and self.active.adapter_id == adapter_id:
                    self._clear_active()
                    if entry is None:
                        memory.append(adapter_id)
            disk = self.disk.remove(ids) if self.disk is not None and ids else []
        return Evicted(memory=memory, disk=disk)

    def evict_prefix(self, prefix: str) -> Evicted:
        """Forget every adapter whose id starts with `prefix` (a subject's: `tenants/T/subjects/S/`)."""
        with self._lock:
            return self.evict_ids(i for i in self.known_ids() if i.startswith(prefix))

    def known_ids(self) -> list[str]:
        """Every adapter id this cache holds: in memory, active in the UNet, or in the disk folder
        (written by any process sharing it)."""
        with self._lock:
            ids = list(self._memory)
            if self.active is not None and getattr(self.unet, "roomfit_adapter_owner", None) is self:
                ids.append(self.active.adapter_id)
            ids += self.disk.ids() if self.disk is not None else []
            return list(dict.fromkeys(ids))

    @property
    def disk_bytes(self) -> int | None:
        """The disk folder's bound in bytes (None: unbounded, or no disk tier)."""
        return self.disk.max_bytes if self.disk is not None else None

    @disk_bytes.setter
    def disk_bytes(self, value: int | None) -> None:
        if self.disk is not None:
            self.disk.max_bytes = value

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
            self._touch_disk(adapter_id)  # used: its disk copy is recent too
            return entry
        self.stats.misses += 1
        entry = self._from_disk(adapter_id)
        if entry is None:
            if self.loader is None:
                raise AdapterNotFound(f"adapter {adapter_id!r} is not cached and there is no loader")
            try:
                data = self.loader(adapter_id)
            except KeyError as exc:
                # A mapping's "no such key", which the blob store's BlobNotFound is: the adapter is
                # gone. As an AdapterError it fails the rows painted with it, not their batch-mates.
                raise AdapterNotFound(f"adapter {adapter_id!r} not found: {exc}") from exc
            entry = self._prepare(adapter_id, data)  # raises before anything is written or copied
            self._write_disk(adapter_id, data)
        self._remember(adapter_id, entry)
        return entry

    def _from_disk(self, adapter_id: str) -> ActiveAdapter | None:
        if self.disk is None:
            return None
        data = self.disk.read(adapter_id)
        if data is None:
            return None
        try:
            entry = self._prepare(adapter_id, data)
        except AdapterCorrupt:
            self.disk.remove([adapter_id])  # a damaged cache file: fetch it again from the loader
            return None
        self.stats.disk_hits += 1
        return entry

    def _write_disk(self, adapter_id: str, data: bytes) -> None:
        if self.disk is None:
            return
        try:
            self.stats.disk_evictions += self.disk.write(adapter_id, data)
        except OSError as exc:
            # The disk tier is a cache: a full disk (or one over its quota) must not fail a paint
            # whose adapter was read and verified; the next use reads it from the loader again.
            log.warning("adapter %s not kept on disk (%s): painted from memory", adapter_id, exc)

    def _touch_disk(self, adapter_id: str) -> None:
        if self.disk is not None:
            self.disk.touch(adapter_id)

    def _clear_active(self) -> None:
        """The active adapter is being forgotten: none of its numbers stay in the UNet's slots."""
        if getattr(self.unet, "roomfit_adapter_owner", None) is self:
            with torch.no_grad():
                for slot in self._slots:
                    slot.zero_()  # B = 0: the base model paints, as after activate(None)
        self.active = None

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
