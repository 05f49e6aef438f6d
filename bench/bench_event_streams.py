"""One API process holding many `/events` streams: its memory and CPU, and how long an event takes
from a worker's report to the client.

Distributed mode on loopback: PostgreSQL (whose NOTIFY wakes the API) and Redis (rate limits)
started by `tests/services.py`, one `uvicorn` process (one worker) serving roomfit. N previews are
queued, each with its job claimed as a worker claims it. A client process of its own (plain asyncio
sockets, so that the bound is the client's and its cost stays small) opens one stream per preview
and waits until every stream has sent its first event. Then this process plays the worker: in each
round it reports a new progress for every job with `core.job_state.report` (one transaction each,
as a worker writes them), noting when each commit returned; the client notes when each event
arrived. Latency is arrival minus commit, both on this machine's clock.

    PYTHONPATH=. .venv/bin/python bench/bench_event_streams.py --streams 1000 --rounds 5

Prints a markdown table; `--json PATH` keeps every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.bench_api_load import cpu_seconds, seed, start_uvicorn, stop  # noqa: E402
from core import job_state  # noqa: E402
from core.db import make_engine, session_factory  # noqa: E402
from core.ids import new_id  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import Job, Preview, Subject  # noqa: E402
from tests.services import PostgresServer, RedisServer, free_port  # noqa: E402


# --- the client ----------------------------------------------------------------------------------
async def _follow(port: int, key: str, preview_id: str, seen: list[tuple[str, float, float]],
                  opened: list[int], want: int) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/previews/{preview_id}/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    buffer, got = b"", 0
    while got < want:
        size = int((await reader.readline()).strip(), 16)  # chunked transfer encoding
        if size == 0:
            break
        buffer += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    if got == 0:
                        opened[0] += 1
                    else:
                        seen.append((preview_id, data["progress"], time.time()))
                    got += 1
    writer.close()


def _client(port: int, key: str, previews: list[str], want: int, out: Any) -> None:
    seen: list[tuple[str, float, float]] = []
    opened = [0]

    async def run() -> None:
        tasks = [asyncio.create_task(_follow(port, key, p, seen, opened, want)) for p in previews]
        while opened[0] < len(previews):
            await asyncio.sleep(0.05)
        out.put(("open", opened[0]))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)

    asyncio.run(run())
    out.put(("seen", seen))


# --- the server side -----------------------------------------------------------------------------
def _rss_mib(pid: int) -> float:
    total = 0.0
    for task in [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        for line in Path(f"/proc/{task}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def queued_previews(database_url: str, tenant_id: str, subject_id: str, n: int) -> list[job_state.Claim]:
    """N previews with their jobs, each claimed as a worker claims it."""
    sessions = session_factory(make_engine(database_url))
    held = []
    with sessions() as session:
        for _ in range(n):
            preview_id, job_id = new_id("prv"), new_id("job")
            session.add(Preview(id=preview_id, tenant_id=tenant_id, subject_id=subject_id, job_id=job_id,
                                seed=1, width=64, height=64, room_key="r", mask_key="m"))  # fmt: skip
            session.add(Job(id=job_id, tenant_id=tenant_id, kind="preview", preview_id=preview_id))
        session.commit()
        for job in session.scalars(select(Job).where(Job.kind == "preview")):
            claim = job_state.claim(session, job.id, "bench-worker", 3600, 3)
            assert claim is not None
            held.append(claim)
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="progress reports per job")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="roomfit-bench-sse-"))
    postgres = PostgresServer(folder / "postgres").start()
    redis = RedisServer(folder / "redis").start()
    server = None
    try:
        database_url = postgres.create_database("roomfit_bench")
        upgrade(database_url)
        key, subject_id = seed(database_url)
        sessions = session_factory(make_engine(database_url))
        with sessions() as session:
            tenant_id = session.get(Subject, subject_id).tenant_id  # type: ignore[union-attr]
        held = queued_previews(database_url, tenant_id, subject_id, args.streams)
        with sessions() as session:
            previews = [session.get(Job, h.job_id).preview_id for h in held]  # type: ignore[union-attr]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOMFIT_VAR_DIR": str(folder / "var"),
               "ROOMFIT_DATABASE_URL": database_url, "ROOMFIT_BROKER_URL": redis.url,
               "ROOMFIT_BLOB_URL": f"file://{folder / 'blobs'}", "ROOMFIT_RATE_LIMIT": "100000000/minute",
               "ROOMFIT_LOG_LEVEL": "WARNING"}  # fmt: skip
        port = free_port()
        server = start_uvicorn("api.app:create_app", port, 1, env, folder / "api.log")
        idle_rss = _rss_mib(server.pid)
        queue: multiprocessing.Queue[Any] = multiprocessing.Queue()
        client = multiprocessing.Process(target=_client, args=(port, key, previews, args.rounds + 1, queue))
        started = time.perf_counter()
        client.start()
        _, opened = queue.get(timeout=300)
        open_seconds = time.perf_counter() - started
        open_rss = _rss_mib(server.pid)
        cpu_before = cpu_seconds(server.pid)
        committed: dict[tuple[str, float], float] = {}
        report_started = time.perf_counter()
        with sessions() as session:
            for round_ in range(1, args.rounds + 1):
                progress = round(round_ / (args.rounds + 1), 4)
                for claim, preview_id in zip(held, previews, strict=True):
                    job_state.report(session, claim, progress=progress)
                    committed[(preview_id, progress)] = time.time()
        report_seconds = time.perf_counter() - report_started
        _, seen = queue.get(timeout=600)
        client.join()
        cpu = cpu_seconds(server.pid) - cpu_before
        peak_rss = _rss_mib(server.pid)
        latencies = sorted(1000 * (arrived - committed[(pid, p)]) for pid, p, arrived in seen)
        cuts = statistics.quantiles(latencies, n=100)
        result = {
            "streams": opened,
            "events": len(latencies),
            "expected_events": args.streams * args.rounds,
            "open_seconds": open_seconds,
            "rss_idle_mib": idle_rss,
            "rss_open_mib": open_rss,
            "rss_after_mib": peak_rss,
            "report_seconds": report_seconds,
            "api_cpu_seconds": cpu,
            "api_cpu_ms_per_event": 1000 * cpu / max(1, len(latencies)),
            "latency_p50_ms": cuts[49],
            "latency_p99_ms": cuts[98],
            "latency_max_ms": latencies[-1],
        }
        print(f"\n{opened} streams on one API process (1 uvicorn worker), {args.rounds} progress reports per "
              f"job, {os.cpu_count()} CPUs shared by the API, PostgreSQL, Redis, the reporting 'worker' and "
              "the client\n")  # fmt: skip
        print(
            "| streams | events (expected) | API RSS idle / open / after MiB | API CPU ms per event "
            "| report → client p50 / p99 / max ms |"
        )
        print("| ---: | ---: | ---: | ---: | ---: |")
        rss = f"{idle_rss:.0f} / {open_rss:.0f} / {peak_rss:.0f}"
        delays = f"{cuts[49]:.1f} / {cuts[98]:.1f} / {latencies[-1]:.1f}"
        events = f"{len(latencies)} ({result['expected_events']})"
        print(f"| {opened} | {events} | {rss} | {result['api_cpu_ms_per_event']:.2f} | {delays} |")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0 if len(latencies) == result["expected_events"] else 1
    finally:
        if server is not None:
            stop(server)
        redis.stop()
        postgres.discard()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
