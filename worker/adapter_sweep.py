"""Let go of the cached adapters of deleted and retrained subjects, in every preview worker process.

A preview paints its subject's *current* adapter: `paint_plan` reads `subjects.adapter_key` from the
row, and adapter keys carry their version (`tenants/T/subjects/S/adapter/{n}.safetensors`, never
rewritten once a subject is ready with it), so a cached adapter of a deleted subject, or an older
version of a retrained one, is never painted again. The sweep removes the copies: each process
that holds a painter runs it when the painter is made and then every `ADAPTER_SWEEP_SECONDS`. It
lists the adapter ids the painter holds (its memory LRU and the UNet's active adapter, full
fine-tunes, the adapter bank, and the machine's disk folder, which every worker process there
shares), asks the database which are still their subject's current `adapter_key`, and evicts the
rest from all of them. The database is the one truth in both modes (PostgreSQL distributed, SQLite
embedded), so nothing needs broadcasting, the API needs no hook, and a machine whose workers were
down catches up when one starts.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.blob_keys import ADAPTER_KEY
from core.repository import TenantRepository
from core.tables import Subject

if TYPE_CHECKING:
    from models import Painter
    from worker.runtime import Runtime

log = logging.getLogger("roomfit.worker")

# How often a preview worker process looks for adapters to drop; a pass is one small query per
# tenant among the adapters held (the disk bound keeps that at most ~1300 ids of 1.6 MB).
ADAPTER_SWEEP_SECONDS = 5.0
_IN_CHUNK = 500  # ids per IN (...) list


def stale_adapter_ids(session: Session, adapter_ids: Iterable[str]) -> list[str]:
    """The subject adapter ids among `adapter_ids` that are not their subject's current adapter (the
    subject was deleted or trained again). Ids of another shape are not the sweep's: kept."""
    by_tenant: dict[str, dict[str, list[str]]] = {}
    for adapter_id in dict.fromkeys(adapter_ids):
        found = ADAPTER_KEY.fullmatch(adapter_id)
        if found:
            by_tenant.setdefault(found["tenant"], {}).setdefault(found["subject"], []).append(adapter_id)
    stale: list[str] = []
    for tenant, held in by_tenant.items():
        repo = TenantRepository(session, tenant)
        subject_ids = list(held)
        current: dict[str, str | None] = {}
        for start in range(0, len(subject_ids), _IN_CHUNK):
            chunk = subject_ids[start : start + _IN_CHUNK]
            current.update((s.id, s.adapter_key) for s in repo.list(Subject, Subject.id.in_(chunk)))
        for subject_id, keys in held.items():
            stale += [key for key in keys if current.get(subject_id) != key]
    return stale


def held_adapter_ids(painter: Painter) -> list[str]:
    """Every adapter id the painter holds, in any of its tiers (the disk folder included)."""
    ids = painter.adapters.known_ids() + painter.full_weights.cached_ids()
    bank = getattr(painter, "bank", None)
    if bank is not None:
        ids += list(bank.resident())
    return list(dict.fromkeys(ids))


def drop_adapters(painter: Painter, adapter_ids: list[str]) -> list[str]:
    """Evict these adapters from every tier of the painter and from the machine's disk folder."""
    evicted = painter.adapters.evict_ids(adapter_ids)
    full = [i for i in painter.full_weights.cached_ids() if i in adapter_ids]
    for adapter_id in full:
        painter.full_weights.evict(adapter_id)
    bank = getattr(painter, "bank", None)
    banked = [i for i in bank.resident() if i in adapter_ids] if bank is not None else []
    for adapter_id in banked:
        bank.drop(adapter_id)  # type: ignore[union-attr]
    dropped = list(dict.fromkeys([*evicted.ids, *full, *banked]))
    if dropped:
        log.info(
            "adapter sweep: dropped %d adapter(s) of deleted or retrained subjects: %s "
            "(memory: %s; disk: %s; full fine-tunes: %s; bank: %s)",
            len(dropped),
            " ".join(dropped),
            " ".join(evicted.memory) or "-",
            " ".join(evicted.disk) or "-",
            " ".join(full) or "-",
            " ".join(banked) or "-",
        )
    return dropped


def sweep_once(runtime: Runtime, painter: Painter) -> list[str]:
    """One pass: the ids dropped."""
    held = held_adapter_ids(painter)
    if not held:
        return []
    with runtime.session() as session:
        stale = stale_adapter_ids(session, held)
    return drop_adapters(painter, stale) if stale else []


def start_adapter_sweeper(
    runtime: Runtime, painter: Painter, interval: float = ADAPTER_SWEEP_SECONDS
) -> threading.Event:
    """A first pass now (before the worker's first task: what was deleted while this machine's
    workers were down goes), then one every `interval` seconds in a daemon thread; set the returned
    event to stop it. It ends by itself once the runtime or the painter is gone (tests make their own)."""
    stop = threading.Event()
    runtime_ref, painter_ref = weakref.ref(runtime), weakref.ref(painter)

    def one_pass() -> bool:
        held_runtime, held_painter = runtime_ref(), painter_ref()
        if held_runtime is None or held_painter is None:
            return False
        try:
            sweep_once(held_runtime, held_painter)
        except Exception:  # the database is down: try again next period
            log.exception("adapter sweep failed")
        return True  # and neither is held while the thread waits

    def loop() -> None:
        while not stop.wait(interval) and one_pass():
            pass

    one_pass()

    threading.Thread(target=loop, name="adapter-sweep", daemon=True).start()
    return stop
