"""The worker heartbeat: every `ROOMFIT_WORKER_HEARTBEAT_SECONDS` a worker process writes its row of
`workers` (core.heartbeats), which `/v1/ops/workers` and the ops gauges read.

It runs in a daemon thread of the process that runs the tasks (worker.startup), so the adapter cache
numbers it reports are the ones `worker.metrics` counts in this process. A process killed outright
writes nothing more; its row goes offline when its window passes. One that stops cleanly (SIGTERM,
Ctrl-C) signs off (`Heartbeat.sign_off`): its row is offline from that moment.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from core import heartbeats
from core.clock import utcnow
from worker import metrics
from worker.runtime import Runtime

log = logging.getLogger("roomfit.worker")

MODEL_QUEUES = ("train", "preview")


@dataclass
class AdapterCounts:
    """The adapter numbers a heartbeat reports, read from this process's Prometheus counters (the
    one count /metrics shows too; this thread has no painter of its own to ask)."""

    hits: int
    misses: int
    swap_seconds_mean: float | None


def adapter_cache_stats() -> AdapterCounts:
    """This process's adapter cache hits and misses, and mean swap time per batch, so far."""
    values: dict[str, float] = {}
    for collector in (metrics.ADAPTER_CACHE, metrics.ADAPTER_SWAP):
        for family in collector.collect():
            for sample in family.samples:
                key = sample.name + "/" + sample.labels.get("result", "")
                values[key] = sample.value
    swaps = values.get("roomfit_adapter_swap_seconds_count/", 0.0)
    return AdapterCounts(
        hits=int(values.get("roomfit_adapter_cache_total/hit", 0)),
        misses=int(values.get("roomfit_adapter_cache_total/miss", 0)),
        swap_seconds_mean=values.get("roomfit_adapter_swap_seconds_sum/", 0.0) / swaps if swaps else None,
    )


def gpu_memory() -> tuple[int | None, int | None]:
    """(bytes this process holds reserved, the device's total) when this process uses CUDA, else
    (None, None). torch is not imported here: a worker without a model never loads it, and a CUDA
    context is not made just to be reported."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None, None
    device = torch.cuda.current_device()
    _free, total = torch.cuda.mem_get_info(device)
    return int(torch.cuda.memory_reserved(device)), int(total)


def beat(runtime: Runtime, queues: Sequence[str]) -> None:
    """Write this process's row once."""
    cache = adapter_cache_stats()
    used, total = gpu_memory()
    has_model = bool(set(queues) & set(MODEL_QUEUES))
    with runtime.session() as session:
        heartbeats.record(
            session,
            runtime.name,
            utcnow(),
            runtime.settings.worker_heartbeat_seconds,
            host=runtime.name.rpartition(":")[0],
            pid=os.getpid(),
            queues=list(queues),
            base_model=runtime.settings.base_model if has_model else None,
            adapter_cache_hits=cache.hits,
            adapter_cache_misses=cache.misses,
            adapter_swap_seconds_mean=cache.swap_seconds_mean,
            gpu_memory_used_bytes=used,
            gpu_memory_total_bytes=total,
        )
        session.commit()


@dataclass
class Heartbeat:
    runtime: Runtime
    stop: threading.Event
    thread: threading.Thread

    def sign_off(self) -> None:
        """No more beats, and the row offline from now rather than after three missed beats. Waits
        for a beat in flight first, so it cannot land after the sign-off and put the row back."""
        self.stop.set()
        self.thread.join(timeout=self.runtime.settings.worker_heartbeat_seconds + 10)
        try:
            with self.runtime.session() as session:
                heartbeats.sign_off(session, self.runtime.name, utcnow())
                session.commit()
        except Exception:  # the database is down: the row goes offline when its window passes
            log.exception("worker sign-off failed")


def start_heartbeat(runtime: Runtime, queues: Sequence[str]) -> Heartbeat:
    """Beat now, then every `worker_heartbeat_seconds` in a daemon thread, until signed off."""
    stop = threading.Event()
    period = runtime.settings.worker_heartbeat_seconds

    def loop() -> None:
        while True:
            try:
                beat(runtime, queues)
            except Exception:  # the database is down: the row goes stale, the worker keeps working
                log.exception("worker heartbeat failed")
            if stop.wait(period):
                return

    thread = threading.Thread(target=loop, name="worker-heartbeat", daemon=True)
    thread.start()
    return Heartbeat(runtime, stop, thread)
