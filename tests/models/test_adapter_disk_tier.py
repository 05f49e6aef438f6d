"""The AdapterCache's disk tier: bounded in bytes, least recently used first, safe across processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest
import torch

from models import AdapterCache, BaseModel, Painter
from models.adapter_disk import AdapterDiskTier
from models.lora import lora_parameters
from tests.models.conftest import make_adapter_bytes


def key(subject: int, version: int = 1) -> str:
    return f"tenants/ten_t/subjects/sub_{subject:03d}/adapter/{version}.safetensors"


@pytest.fixture(scope="module")
def fifty(base: BaseModel) -> dict[str, bytes]:
    """50 small random adapters of the tiny base (LoRA injected as a Painter does)."""
    Painter(base, lora_rank=4)
    return {key(i): make_adapter_bytes(base, seed=i) for i in range(50)}


def make_cache(base: BaseModel, folder: Path, store: dict[str, bytes], **kwargs: object) -> AdapterCache:
    calls: list[str] = []

    def loader(adapter_id: str) -> bytes:
        calls.append(adapter_id)
        return store[adapter_id]

    cache = AdapterCache(
        base.unet,
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        disk_dir=folder,
        loader=loader,
        **kwargs,  # type: ignore[arg-type]
    )
    cache.loader_calls = calls  # type: ignore[attr-defined]
    return cache


def test_fifty_adapters_leave_the_ten_most_recently_used_on_disk(
    base: BaseModel, fifty: dict[str, bytes], tmp_path: Path
) -> None:
    one = max(len(data) for data in fifty.values())
    bound = 10 * one
    folder = tmp_path / "adapter-cache"
    # no memory tier: every use goes to the disk (a hit) or the loader (a write)
    cache = make_cache(base, folder, fifty, memory_bytes=0, disk_bytes=bound)
    ids = list(fifty)
    used: list[str] = []  # the order of use, most recent last

    def use(adapter_id: str) -> None:
        cache.activate(adapter_id)
        used.remove(adapter_id) if adapter_id in used else None
        used.append(adapter_id)
        assert cache.disk.used() <= bound  # type: ignore[union-attr]

    for adapter_id in ids:
        use(adapter_id)
    assert cache.disk.used() <= bound  # type: ignore[union-attr]
    assert sorted(cache.disk.ids()) == sorted(used[-10:]) == sorted(ids[40:])  # type: ignore[union-attr]
    assert cache.stats.disk_evictions == 40
    # Use two of the oldest on disk (disk hits: no loader call), then bring back one evicted long ago:
    # it must push out the least recently *used*, ids[42], not the oldest written, ids[40].
    for adapter_id in (ids[40], ids[41], ids[0]):
        use(adapter_id)
    assert cache.loader_calls.count(ids[40]) == 1 and cache.loader_calls.count(ids[0]) == 2  # type: ignore[attr-defined]
    assert cache.stats.disk_hits == 2
    on_disk = set(cache.disk.ids())  # type: ignore[union-attr]
    assert on_disk == set(used[-10:])
    assert ids[42] not in on_disk and {ids[40], ids[41], ids[0]} <= on_disk
    assert len(list(folder.glob("*.safetensors"))) == 10
    assert cache.disk.used() <= bound  # type: ignore[union-attr]


def test_a_memory_hit_counts_as_a_use_on_disk(
    base: BaseModel, fifty: dict[str, bytes], tmp_path: Path
) -> None:
    a, b, c, d = list(fifty)[:4]
    bound = 3 * max(len(fifty[i]) for i in (a, b, c, d))
    cache = make_cache(base, tmp_path / "cache", fifty, disk_bytes=bound)  # memory holds them all
    for adapter_id in (a, b, c, a):  # the second `a` is a memory hit (active: the fast path too)
        cache.activate(adapter_id)
    cache.activate(a)
    cache.activate(d)  # written to disk: b, used longest ago, makes room
    assert set(cache.disk.ids()) == {a, c, d}  # type: ignore[union-attr]


def test_the_bound_set_after_construction_holds_at_the_next_write(
    base: BaseModel, fifty: dict[str, bytes], tmp_path: Path
) -> None:
    ids = list(fifty)[:6]
    cache = make_cache(base, tmp_path / "cache", fifty, memory_bytes=0, disk_bytes=None)
    for adapter_id in ids[:5]:
        cache.activate(adapter_id)
    assert len(cache.disk.ids()) == 5  # type: ignore[union-attr]
    cache.disk_bytes = 2 * max(len(fifty[i]) for i in ids)  # as worker/runtime.py sets it
    cache.activate(ids[5])
    assert set(cache.disk.ids()) == {ids[4], ids[5]}  # type: ignore[union-attr]
    cache.disk_bytes = len(fifty[ids[0]]) - 1  # smaller than one adapter: nothing is kept
    cache.activate(ids[0])
    assert cache.disk.ids() == [] and cache.disk.used() == 0  # type: ignore[union-attr]


def test_evict_prefix_drops_a_subject_from_memory_unet_and_the_shared_disk(
    base: BaseModel, fifty: dict[str, bytes], tmp_path: Path
) -> None:
    store = {**fifty, key(7, 2): fifty[key(8)]}
    folder = tmp_path / "cache"
    first = make_cache(base, folder, store)
    second = make_cache(base, folder, store)  # another process's cache on the same folder
    second.activate(key(9))
    for adapter_id in (key(7), key(9), key(7, 2)):
        first.activate(adapter_id)  # key(7, 2) stays active in the UNet
    assert set(second.known_ids()) == {key(7), key(7, 2), key(9)}  # the folder's ids, written by `first`
    evicted = first.evict_prefix("tenants/ten_t/subjects/sub_007/")
    assert set(evicted.memory) == set(evicted.disk) == {key(7), key(7, 2)}
    assert first.cached_ids() == [key(9)] and first.active is None
    assert all(torch.all(p == 0) for p in lora_parameters(base.unet).values())  # nothing of it left
    assert second.known_ids() == [key(9)]
    assert not first.disk.path(key(7)).exists()  # type: ignore[union-attr]
    second.activate(key(7))  # used again: read from the loader, not from a stale copy
    assert second.loader_calls == [key(9), key(7)] and first.loader_calls == [key(7), key(7, 2)]  # type: ignore[attr-defined]


def test_leftovers_and_vanishing_files_are_handled(
    base: BaseModel, fifty: dict[str, bytes], tmp_path: Path
) -> None:
    folder = tmp_path / "cache"
    a, b = list(fifty)[:2]
    cache = make_cache(base, folder, fifty, memory_bytes=0)
    cache.activate(a)
    (folder / "adapter-dead.part").write_bytes(b"x" * 1000)  # a writer killed mid-write
    legacy = folder / ("0" * 32 + ".safetensors")  # an older roomfit's file: no id known
    legacy.write_bytes(fifty[b])
    assert cache.disk.ids() == [a]  # type: ignore[union-attr]
    # a file removed between a listing and its reading (another process evicted it): a miss
    cache.disk.path(a).unlink()  # type: ignore[union-attr]
    cache.activate(b)
    cache.activate(a)
    assert cache.loader_calls == [a, b, a]  # type: ignore[attr-defined]
    assert not legacy.exists() and not (folder / "adapter-dead.part").exists()
    assert set(cache.disk.ids()) == {a, b}  # type: ignore[union-attr]


# --- several processes on one folder -------------------------------------------------------------

PAYLOAD = 64 * 1024
BOUND = 10 * PAYLOAD


def churn(folder: str, seed: int, rounds: int) -> None:
    """One worker process's traffic: writes (some replacing), reads, removals, on shared ids."""
    rng = random.Random(seed)
    tier = AdapterDiskTier(folder, BOUND)
    for _ in range(rounds):
        adapter_id = key(rng.randrange(30))
        roll = rng.random()
        if roll < 0.6:
            tier.write(adapter_id, rng.randbytes(rng.randrange(PAYLOAD // 2, PAYLOAD + 1)))
        elif roll < 0.95:
            data = tier.read(adapter_id)
            assert data is None or PAYLOAD // 2 <= len(data) <= PAYLOAD
        else:
            tier.remove([adapter_id])


def on_disk(folder: Path) -> int:
    """Bytes of adapter files and adapter files in flight, as another process sees them now."""
    total = 0
    for name in os.listdir(folder):
        if name.endswith(".safetensors") or (name.startswith("adapter-") and name.endswith(".part")):
            with contextlib.suppress(FileNotFoundError):
                total += (folder / name).stat().st_size
    return total


def test_two_processes_writing_and_evicting_keep_the_bound(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    context = multiprocessing.get_context("fork")  # POSIX, as fcntl; nothing to re-import
    workers = [context.Process(target=churn, args=(str(folder), seed, 400)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    peak, samples = 0, 0
    while any(w.is_alive() for w in workers):
        peak = max(peak, on_disk(folder))
        samples += 1
        time.sleep(0.001)
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0, 0]  # neither crashed (a vanished file, a race)
    print(f"peak {peak} bytes over {samples} samples; bound {BOUND}; final {on_disk(folder)}")
    # A listing is no snapshot: it may count a file in flight and the file it replaces.
    assert peak <= BOUND + PAYLOAD
    tier = AdapterDiskTier(folder, BOUND)
    assert tier.used() <= BOUND
    assert len(tier.ids()) == len(list(folder.glob("*.safetensors")))  # the index names every file
    assert not list(folder.glob("*.part"))
