"""Painting with a full fine-tune: its weights copied into the UNet's own for one paint, the base's
copied back right after.

`FullWeightsSlot` sits beside the `AdapterCache` on one UNet (see `models.painter`). The first time a
full fine-tune is used, it keeps a CPU copy of the base UNet's own weights, in the UNet's dtype: one
more UNet in host memory (3.4 GB in fp32, 1.7 GB in fp16 for the real Paint-by-Example UNet; held
for the process's life). Applying a file is one in-place `copy_` per UNet weight (LoRA layers left
alone: the caller zeroes them), and the base weights are copied back as soon as the paint ends, even
when it fails, so whatever paints or trains next sees the base bit for bit.

At most `max_cached` files are kept ready to copy (CPU tensors in the UNet's dtype; LRU, evicted
before the next file is read, so the host holds at most `max_cached` of them plus the one being
read); a file not cached is read through the loader again. Reading one holds the file twice for a
moment (its bytes and its tensors). Everything a file could fail on is checked before the first
copy: a refused file leaves the UNet untouched.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from models.base_model import BaseModel
from models.errors import AdapterNotFound
from models.full_weights_format import UnetWeights, check_unet_weights, read_unet_weights, unet_own_tensors

FullWeightsLoader = Callable[[str], bytes]


@dataclass
class FullWeights:
    adapter_id: str
    tensors: dict[str, torch.Tensor]  # file key -> CPU tensor in the UNet's dtype
    reference_embedding: torch.Tensor  # [1, D]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:  # host memory it holds
        return sum(t.nbytes for t in self.tensors.values())


@dataclass
class FullWeightsStats:  # alike: AdapterCache's CacheStats; counters share their shape, nothing else
    loads: int = 0  # files read and converted
    hits: int = 0  # served from the cache
    evictions: int = 0
    swaps: int = 0  # fine-tunes copied in (each followed by the base copied back)
    swap_seconds: float = 0.0  # copying in and back


def read_checked(
    unet: torch.nn.Module, data: bytes, *, base_model_id: str, base_weights_hash: str
) -> tuple[UnetWeights, dict[str, torch.Tensor]]:
    """A full fine-tune's file, read and checked against `unet` before anything is copied (another
    base, a missing weight, a shape: the specific error), and the UNet's own tensors by file key."""
    weights = read_unet_weights(data)
    slots = unet_own_tensors(unet)
    check_unet_weights(
        weights,
        base_model_id=base_model_id,
        base_weights_hash=base_weights_hash,
        shapes={key: tuple(tensor.shape) for key, tensor in slots.items()},
    )
    return weights, slots


def copy_unet_weights(unet: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` (file keys, as `unet_own_tensors`) into the UNet's own weights, in place.

    The UNet's tensors are looked up on every call (a few hundred names: nothing beside the copy),
    since training may have replaced a parameter's `.data`."""
    with torch.no_grad():
        for key, slot in unet_own_tensors(unet).items():
            slot.copy_(tensors[key])


@contextmanager
def unet_weights_kept(unet: torch.nn.Module) -> Iterator[None]:
    """The UNet's own weights as they were on entry, put back on exit (a CPU copy in between):
    around a full fine-tuning that must leave a shared base model as it found it."""
    saved = {key: tensor.to("cpu", copy=True) for key, tensor in unet_own_tensors(unet).items()}
    try:
        yield
    finally:
        copy_unet_weights(unet, saved)


class FullWeightsSlot:
    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        base_model_id: str,
        base_weights_hash: str,
        loader: FullWeightsLoader | None = None,
        max_cached: int = 1,
    ) -> None:
        if max_cached < 0:
            raise ValueError("max_cached must be 0 or more")
        self.unet = unet
        self.base_model_id = base_model_id
        self.base_weights_hash = base_weights_hash
        self.loader = loader
        self.max_cached = max_cached
        self.stats = FullWeightsStats()
        self._cache: OrderedDict[str, FullWeights] = OrderedDict()
        self._base: dict[str, torch.Tensor] | None = None  # the base's own weights, made on first use
        self._lock = threading.RLock()

    def cached(self, adapter_id: str) -> FullWeights | None:
        """The cached fine-tune of that id (now the most recently used), or None; a plain dict miss
        when no full fine-tune is cached, so LoRA painting pays nothing for it."""
        if adapter_id not in self._cache:
            return None
        with self._lock:
            entry = self._cache.get(adapter_id)
            if entry is not None:
                self._cache.move_to_end(adapter_id)
                self.stats.hits += 1
            return entry

    def load(self, adapter_id: str, data: bytes | None = None) -> FullWeights:
        """The fine-tune of that id: from the cache, else from `data`, else through the loader.
        Raises (AdapterCorrupt, AdapterBaseMismatch, ...) touching nothing."""
        entry = self.cached(adapter_id)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._cache.get(adapter_id)  # read by another thread meanwhile
            if entry is not None:
                return entry
            while self._cache and len(self._cache) >= self.max_cached:  # room first: bounds the peak
                self._cache.popitem(last=False)
                self.stats.evictions += 1
            if data is None:
                if self.loader is None:
                    raise AdapterNotFound(f"full fine-tune {adapter_id!r}: not cached and no loader")
                data = self.loader(adapter_id)
            entry = self._prepare(adapter_id, data)
            self.stats.loads += 1
            if self.max_cached > 0:
                self._cache[adapter_id] = entry
            return entry

    @contextmanager
    def applied(self, weights: FullWeights) -> Iterator[FullWeights]:
        """The UNet's own weights are `weights` inside, the base's again after (even on an error).
        The caller holds the UNet (the AdapterCache's lock) and has zeroed its LoRA slots."""
        with self._lock:
            base = self._base_weights()
            started = time.perf_counter()
            try:
                copy_unet_weights(self.unet, weights.tensors)
                self.stats.swaps += 1
                self.stats.swap_seconds += time.perf_counter() - started
                yield weights
            finally:
                started = time.perf_counter()
                copy_unet_weights(self.unet, base)
                self.stats.swap_seconds += time.perf_counter() - started

    def evict(self, adapter_id: str) -> None:
        with self._lock:
            self._cache.pop(adapter_id, None)

    def cached_ids(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    @property
    def holds_base_copy(self) -> bool:
        return self._base is not None

    # --- inside ------------------------------------------------------------------------------

    def _base_weights(self) -> dict[str, torch.Tensor]:
        if self._base is None:
            self._base = {key: t.to("cpu", copy=True) for key, t in unet_own_tensors(self.unet).items()}
        return self._base

    def _prepare(self, adapter_id: str, data: bytes) -> FullWeights:
        weights, slots = read_checked(
            self.unet, data, base_model_id=self.base_model_id, base_weights_hash=self.base_weights_hash
        )
        tensors = {}
        for key, slot in slots.items():  # one at a time: the fp32 originals go as the copies come
            tensors[key] = weights.tensors.pop(key).to(dtype=slot.dtype).contiguous()
        return FullWeights(adapter_id, tensors, weights.reference_embedding, weights.info)


def start_from_unet_weights(base: BaseModel, data: bytes) -> None:
    """Make a full fine-tune (the domain stage's, say) the base's own UNet for good, to train or
    paint adapters on top of it: the paper's chain, scene pretraining, then one LoRA per product.

    The base is then another model, so its weights hash (what every adapter records, and what
    painting checks) becomes the old one combined with the file's sha256: an adapter trained on the
    chain is refused on the plain base, and the reverse."""
    weights, _ = read_checked(
        base.unet, data, base_model_id=base.model_id, base_weights_hash=base.weights_hash
    )
    copy_unet_weights(base.unet, weights.tensors)
    file_digest = hashlib.sha256(data).hexdigest()
    base.weights_hash = hashlib.sha256(f"{base.weights_hash}+{file_digest}".encode()).hexdigest()
