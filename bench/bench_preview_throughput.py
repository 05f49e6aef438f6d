"""End-to-end preview throughput of one preview worker, batching on vs off, in the same run.

    PYTHONPATH=. .venv/bin/python bench/bench_preview_throughput.py [--previews 32] [--subjects 8] [--reps 2]

On loopback: PostgreSQL, Redis and SeaweedFS (tests/services.py) and one preview worker process
(`roomfit worker --queues preview`, tiny model, distributed mode). Eight ready subjects, each with
its own (random, well-formed) adapter. Each round starts a fresh worker, waits until it is ready,
then queues 32 previews spread over the 8 subjects at once, as the API does (blobs, rows, then one
message each; tests/worker/conftest.py's submit_preview), and times from the first submission until
every preview has succeeded. "off" is ROOMFIT_PREVIEW_BATCH=1 (one preview per UNet batch, as
before mixed batches); "on" is ROOMFIT_PREVIEW_BATCH=8 (up to 8 previews, whatever their products,
per batch). Rounds alternate off/on so both see the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.accounts import create_tenant  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import Job, Preview  # noqa: E402
from models import ensure_tiny_model  # noqa: E402
from tests.services import all_services  # noqa: E402
from tests.worker.conftest import submit_preview  # noqa: E402
from tests.worker.stack import Stack, ready_subject_with_random_adapter, tiny_distributed_env  # noqa: E402

MODES = {"off": "1", "on": "8"}


def one_round(stack: Stack, tenant_id: str, subjects: list[str], previews: int, batch: str) -> dict:
    worker = stack.start_worker("preview", ROOMFIT_PREVIEW_BATCH=batch)
    try:
        worker.wait_ready()
        started = time.perf_counter()
        ids = [
            submit_preview(stack, tenant_id, subjects[i % len(subjects)], seed=i)[0] for i in range(previews)
        ]
        submitted = time.perf_counter() - started
        while True:
            with stack.session() as session:
                rows = [session.get(Preview, pid) for pid in ids]
                if all(r is not None and r.status in ("succeeded", "failed") for r in rows):
                    jobs = [session.get(Job, r.job_id) for r in rows]  # type: ignore[union-attr]
                    break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        failed = [r.id for r in rows if r.status != "succeeded"]  # type: ignore[union-attr]
        if failed:
            raise RuntimeError(f"previews failed: {failed}\n{worker.log()[-3000:]}")
        sizes = [j.timings.get("batch_size", 1) for j in jobs]  # type: ignore[union-attr]
        return {
            "seconds": elapsed,
            "previews_per_s": previews / elapsed,
            "submit_seconds": submitted,
            "batches": len({j.timings.get("batch_id") for j in jobs}),  # type: ignore[union-attr]
            "mean_batch": statistics.mean(sizes),
        }
    finally:
        worker.stop()
        stack.workers.remove(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previews", type=int, default=32)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2, help="rounds of each mode, alternating")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="roomfit-bench-") as tmp:
        folder = Path(tmp)
        with all_services(folder) as (postgres, redis, seaweed):
            env = tiny_distributed_env(folder, postgres.url, redis.url, seaweed.settings)
            env["ROOMFIT_LOG_LEVEL"] = "INFO"  # the worker's "ready." line is what the round waits for
            stack = Stack(env=env, folder=folder)
            upgrade(stack.settings.resolved_database_url)
            ensure_tiny_model(folder / "models" / "tiny-pbe")
            with stack.session() as session:
                tenant_id = create_tenant(session, "bench").id
                session.commit()
            subjects = [
                ready_subject_with_random_adapter(stack, tenant_id, folder / "models", seed=s)
                for s in range(args.subjects)
            ]
            results: dict[str, list[dict]] = {mode: [] for mode in MODES}
            try:
                for rep in range(args.reps):
                    for mode, batch in MODES.items():
                        result = one_round(stack, tenant_id, subjects, args.previews, batch)
                        results[mode].append(result)
                        print(f"round {rep + 1} batching {mode}: {result}", flush=True)
            finally:
                stack.stop_all()

    print(
        f"\n{args.previews} previews over {args.subjects} subjects queued at once, one preview worker "
        f"(tiny, CPU), {args.reps} rounds each, alternating\n"
    )
    print("| batching | previews/s (median) | seconds (median) | UNet batches | mean batch |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, rounds in results.items():
        print(
            f"| {mode} (ROOMFIT_PREVIEW_BATCH={MODES[mode]}) "
            f"| {statistics.median(r['previews_per_s'] for r in rounds):.2f} "
            f"| {statistics.median(r['seconds'] for r in rounds):.2f} "
            f"| {statistics.median(r['batches'] for r in rounds):.0f} "
            f"| {statistics.median(r['mean_batch'] for r in rounds):.2f} |"
        )
    on, off = (statistics.median(r["previews_per_s"] for r in results[m]) for m in ("on", "off"))
    print(f"\nbatching on / off: {on / off:.2f}x")


if __name__ == "__main__":
    main()
