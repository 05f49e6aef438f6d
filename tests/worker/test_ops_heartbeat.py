"""A worker process's heartbeat row (worker.heartbeat), in-process on SQLite (embedded mode): what
it says of the process, and that it moves with the adapter cache counters."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.clock import utcnow
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Worker
from tests.worker.stack import wait_for
from worker import metrics
from worker.heartbeat import beat, start_heartbeat
from worker.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", worker_heartbeat_seconds=0.05)  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    yield Runtime(settings)


def _row(runtime: Runtime) -> Worker:
    with runtime.session() as session:
        row = session.get(Worker, runtime.name)
        assert row is not None
        return row


def test_a_heartbeat_describes_the_process_and_its_adapter_cache(runtime: Runtime) -> None:
    beat(runtime, ["preview"])
    first = _row(runtime)
    assert (first.host, first.pid, first.queues) == (socket.gethostname(), os.getpid(), ["preview"])
    assert first.base_model == "tiny"
    assert (first.gpu_memory_used_bytes, first.gpu_memory_total_bytes) == (None, None)  # no CUDA here
    assert first.online_until > first.last_seen

    # Two painted batches: 3 adapters (1 read from disk) in 0.2 s, then 1 adapter (cached) in 0.4 s.
    metrics.batch_painted(size=4, adapters=3, loads=1, swap_seconds=0.2)
    metrics.batch_painted(size=1, adapters=1, loads=0, swap_seconds=0.4)
    beat(runtime, ["preview"])
    second = _row(runtime)
    assert second.adapter_cache_hits - first.adapter_cache_hits == 3
    assert second.adapter_cache_misses - first.adapter_cache_misses == 1
    assert second.adapter_swap_seconds_mean is not None
    assert second.started_at == first.started_at and second.last_seen > first.last_seen


def test_a_worker_without_a_model_names_none(runtime: Runtime) -> None:
    beat(runtime, ["webhooks", "default"])
    assert _row(runtime).base_model is None


def test_the_heartbeat_thread_keeps_writing_until_stopped(runtime: Runtime) -> None:
    heartbeat = start_heartbeat(runtime, ["train"])
    seen: set[object] = set()

    def beats() -> bool:
        with runtime.session() as session:
            row = session.get(Worker, runtime.name)
            if row is not None:
                seen.add(row.last_seen)
        return len(seen) >= 3  # three distinct heartbeats: the loop goes on after the first

    try:
        wait_for(beats, 10, "three heartbeats", interval=0.02)
    finally:
        signing_off = utcnow()
        heartbeat.sign_off()
    row = _row(runtime)
    assert row.queues == ["train"]
    # offline from its sign-off, not three beats (0.15 s) after its last one
    assert signing_off <= row.online_until <= utcnow()
    assert not heartbeat.thread.is_alive()
