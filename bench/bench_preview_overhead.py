"""The service's own overhead on a preview, against calling the engine in-process on the same model.

    PYTHONPATH=. .venv/bin/python bench/bench_preview_overhead.py [--requests 20] [--steps 4]

One run starts, on loopback: PostgreSQL, Redis and SeaweedFS (tests/services.py), the API
(`roomfit serve`, uvicorn) and one preview worker (`roomfit worker --queues preview`), all in
distributed mode with the tiny model. A ready subject with an adapter is made, one preview warms
the worker (model and adapter cache), then N previews are made one after another as a shop would:
POST /v1/previews, poll GET /v1/previews/{id} every 20 ms (--poll) until it succeeded. Side by side, in this
process, the engine paints the same room, mask, seed and steps with the same adapter active
(`Painter.paint`, a cache hit): that is "the painting itself". The overhead is what the service adds
to it: multipart upload and checks, two blob writes, database rows, the Redis queue, the worker's
blob reads, the adapter cache lookup, the result PNG and its write, the polls.

The tiny model paints in milliseconds, so its ratio is the worst case. To put the overhead next to
a real painting, the same run also times one sampling step of a UNet of Paint-by-Example's real
size (860M parameters, random weights) in-process on this CPU: a real preview runs 30 such steps.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.accounts import create_key, create_tenant  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.tables import Subject  # noqa: E402
from models import Painter, PaintRequest, get_base_model, open_image, open_mask  # noqa: E402
from tests.services import all_services, free_port  # noqa: E402
from tests.worker.stack import Stack, ready_subject_with_random_adapter, tiny_distributed_env  # noqa: E402


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "roomfitbench" + os.urandom(8).hex()
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, data, ctype) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _request(method: str, url: str, key: str, body: bytes | None = None, ctype: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _real_unet_step_ms(workdir: Path, reps: int) -> float:
    """Median wall time of one sampling step of a real-size UNet (batch 1, 64x64 latents, CFG)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_batching import real_size_base  # the real-size UNet the batching bench uses

    base = real_size_base(workdir)
    painter = Painter(base, lora_rank=4)
    room = Image.new("RGB", (512, 512), (120, 110, 100))
    mask = np.zeros((512, 512), dtype=bool)
    mask[128:384, 128:384] = True
    request = PaintRequest(room=room, mask=mask, seed=0, reference=room)
    painter.paint([request], steps=1)  # warm-up
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        painter.paint([request], steps=1)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of every preview")
    parser.add_argument(
        "--poll",
        type=float,
        default=0.02,
        help="seconds between GETs (each GET also costs CPU the worker shares)",
    )
    parser.add_argument("--real-reps", type=int, default=3, help="real-size UNet steps timed (0: skip)")
    parser.add_argument(
        "--batch-window-ms",
        type=int,
        help="the worker's ROOMFIT_PREVIEW_BATCH_WINDOW_MS (default: the service's, 30): how long it "
        "waits for more queued previews to paint with the first",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="roomfit-bench-") as tmp:
        folder = Path(tmp)
        with all_services(folder) as (postgres, redis, seaweed):
            env = tiny_distributed_env(folder, postgres.url, redis.url, seaweed.settings)
            stack = Stack(env=env, folder=folder)
            settings: Settings = stack.settings
            upgrade(settings.resolved_database_url)
            with stack.session() as session:
                tenant = create_tenant(session, "bench")
                _, key = create_key(session, kind="secret", tenant=tenant)
                session.commit()
                tenant_id = tenant.id
            subject_id = ready_subject_with_random_adapter(stack, tenant_id, settings.resolved_models_dir)

            child_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
            child_env.update(env, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
            if args.batch_window_ms is not None:
                child_env["ROOMFIT_PREVIEW_BATCH_WINDOW_MS"] = str(args.batch_window_ms)
            port = free_port()
            me = [sys.executable, "-m", "cli.main"]
            api = _start([*me, "serve", "--port", str(port)], child_env, folder / "api.log")
            worker = _start([*me, "worker", "--queues", "preview,default"], child_env, folder / "worker.log")
            base_url = f"http://127.0.0.1:{port}"
            try:
                _wait_http(f"{base_url}/readyz")
                room = Image.fromarray(
                    np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
                )
                mask_array = np.zeros((300, 400), dtype=np.uint8)
                mask_array[80:220, 120:300] = 255
                body, ctype = _multipart(
                    {"subject_id": subject_id, "seed": "11", "steps": str(args.steps)},
                    {
                        "room": ("room.png", _png(room), "image/png"),
                        "mask": ("mask.png", _png(Image.fromarray(mask_array)), "image/png"),
                    },
                )

                def one_preview() -> tuple[float, dict]:
                    started = time.perf_counter()
                    preview = _request("POST", f"{base_url}/v1/previews", key, body, ctype)
                    while preview["status"] not in ("succeeded", "failed"):
                        time.sleep(args.poll)
                        preview = _request("GET", f"{base_url}/v1/previews/{preview['id']}", key)
                    elapsed = (time.perf_counter() - started) * 1000
                    if preview["status"] != "succeeded":
                        raise RuntimeError(f"preview failed: {preview}")
                    return elapsed, preview

                # The engine alone, in this process, on the same model folder and adapter. Loaded
                # before the loop so that service and engine alternate, one of each per round: a
                # machine whose load drifts during the run then weighs on both alike.
                base = get_base_model(
                    "tiny", device="cpu", tiny_dir=settings.resolved_models_dir / "tiny-pbe"
                )
                painter = Painter(base, lora_rank=4, loader=stack.blobs.get)
                with stack.session() as session:
                    adapter_id = session.get(Subject, subject_id).adapter_key
                request = PaintRequest(
                    room=open_image(_png(room)), mask=open_mask(_png(Image.fromarray(mask_array))), seed=11
                )
                painter.paint([request], adapter_id=adapter_id, steps=args.steps)  # warm-up, cache filled
                one_preview()  # warm-up: worker model loaded, adapter read from S3 into its cache

                service_ms, worker_paint_ms, engine_ms = [], [], []
                for _ in range(args.requests):
                    elapsed, preview = one_preview()
                    service_ms.append(elapsed)
                    worker_paint_ms.append(preview["timings"].get("paint", float("nan")) * 1000)
                    started = time.perf_counter()
                    painter.paint([request], adapter_id=adapter_id, steps=args.steps)
                    engine_ms.append((time.perf_counter() - started) * 1000)
            finally:
                for process in (api, worker):
                    os.killpg(process.pid, signal.SIGTERM)
                for process in (api, worker):
                    try:
                        process.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)

    real_step_ms = _real_unet_step_ms(Path(tempfile.mkdtemp()), args.real_reps) if args.real_reps else None
    service, engine = statistics.median(service_ms), statistics.median(engine_ms)
    overhead = service - engine
    print(f"\n## Preview overhead ({args.requests} previews, {args.steps} steps, tiny, poll {args.poll}s)\n")
    print("| measured | median ms | p90 ms |")
    print("| --- | ---: | ---: |")
    for name, values in (
        ("service: POST -> polled `succeeded` (API, S3, PostgreSQL, Redis, worker, cache hit)", service_ms),
        ("engine in-process: `Painter.paint`, same inputs, adapter cached", engine_ms),
        ("worker's own `paint` timing inside the service", worker_paint_ms),
    ):
        print(f"| {name} | {statistics.median(values):.1f} | {np.percentile(values, 90):.1f} |")
    # Per request, the service's time minus the painting that happened inside it: robust to the
    # worker painting slower or faster than this process does.
    around = statistics.median(s - p for s, p in zip(service_ms, worker_paint_ms, strict=True))
    print(f"\nservice overhead (service - engine medians) = {overhead:.1f} ms = {overhead / engine:.2f}x")
    print(
        f"service overhead (per request: service - its own paint) = {around:.1f} ms = {around / engine:.2f}x"
    )
    if real_step_ms is not None:
        print(
            f"one sampling step of the real-size UNet on this CPU: {real_step_ms:.0f} ms "
            f"(median of {args.real_reps})"
        )
        print(
            f"overhead vs one real-size step: {around / real_step_ms:.1%}; "
            f"vs a 30-step real paint: {around / (30 * real_step_ms):.2%}"
        )


if __name__ == "__main__":
    main()
