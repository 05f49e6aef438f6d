"""Load on the REST API: `GET /v1/previews/{id}` and `POST /v1/previews` (enqueue only).

Distributed mode on loopback, as in production minus the network: PostgreSQL and Redis started by
`tests/services.py`, the API under uvicorn in its own processes, a local blob folder, no workers (a
POST stores room and mask, writes its rows and puts the job id on Redis; nothing consumes it). The
load comes from a separate process: `wrk` when installed (`apt-get install wrk`), else a built-in
asyncio client (httpx). Each connection sends its next request when the previous one is answered
(closed loop), so latency is what one client sees at that concurrency.

    PYTHONPATH=. .venv/bin/python bench/bench_api_load.py --connections 50 --duration 20

Prints a markdown table (requests/s, p50, p99, non-2xx) and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.accounts import create_key, create_tenant  # noqa: E402
from core.db import make_engine, session_factory  # noqa: E402
from core.ids import new_id  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.tables import Subject  # noqa: E402
from tests.services import PostgresServer, RedisServer, free_port, wait_for_port  # noqa: E402

BOUNDARY = "roomfitbenchboundary"


# --- the request bodies ------------------------------------------------------------------------


def _png(array: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()


def preview_body(subject_id: str, width: int, height: int) -> bytes:
    """multipart/form-data for POST /v1/previews: a JPEG room and a PNG mask of its size."""
    rng = np.random.default_rng(0)
    room = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").save(
        room, "JPEG", quality=90
    )
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = 255
    parts = [
        (b'name="subject_id"', b"", subject_id.encode()),
        (b'name="room"; filename="room.jpg"', b"Content-Type: image/jpeg\r\n", room.getvalue()),
        (b'name="mask"; filename="mask.png"', b"Content-Type: image/png\r\n", _png(mask, "L")),
    ]
    out = b""
    for disposition, extra, data in parts:
        out += f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: form-data; " + disposition + b"\r\n"
        out += extra + b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


# --- load generators ---------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def run_wrk(
    url: str,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    connections: int,
    duration: int,
    threads: int,
    folder: Path,
) -> dict[str, Any]:
    script = folder / f"{method.lower()}.lua"
    lines = [f'wrk.method = "{method}"']
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        (folder / "body.bin").write_bytes(body)
        lines.append(
            f'local f = io.open("{folder / "body.bin"}", "rb"); wrk.body = f:read("*all"); f:close()'
        )
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"\b(50|75|90|99)%\s+([\d.]+(?:us|ms|s|m))", out))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "generator": "wrk",
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


async def _closed_loop(url: str, method: str, headers: dict[str, str], body: bytes | None, connections: int,
                       duration: float) -> dict[str, Any]:  # fmt: skip
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    bad = 0
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + duration

        async def one_client() -> None:
            nonlocal bad
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.request(method, url, headers=headers, content=body)
                latencies.append((time.perf_counter() - started) * 1000)
                bad += not 200 <= response.status_code < 300

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "generator": "httpx",
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "non_2xx": bad,
        "socket_errors": "",
    }


def _httpx_process(args: tuple[Any, ...], out: Any) -> None:
    out.put(asyncio.run(_closed_loop(*args)))


def run_httpx(url: str, method: str, headers: dict[str, str], body: bytes | None, connections: int,
              duration: int) -> dict[str, Any]:  # fmt: skip
    """The built-in generator, in a process of its own so it does not share the server's GIL."""
    queue: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    process = multiprocessing.Process(
        target=_httpx_process, args=((url, method, headers, body, connections, duration), queue)
    )
    process.start()
    result = queue.get(timeout=duration + 120)
    process.join()
    return result


# --- the stack ---------------------------------------------------------------------------------


WIDGET_ORIGIN = "https://shop.example"


def seed(database_url: str) -> tuple[str, str]:
    """A tenant with a secret key and a ready subject; returns (key, subject id). The tenant also
    has a publishable key for `WIDGET_ORIGIN` (`publishable_key`)."""
    engine = make_engine(database_url)
    with session_factory(engine)() as session:
        tenant = create_tenant(session, "bench-shop")
        _, key = create_key(session, kind="secret", tenant=tenant)
        _, publishable = create_key(session, kind="publishable", tenant=tenant, origins=[WIDGET_ORIGIN])
        subject = Subject(
            id=new_id("sub"),
            tenant_id=tenant.id,
            name="bench sofa",
            status="ready",
            progress=1.0,
            adapter_version=1,
            adapter_key=f"tenants/{tenant.id}/subjects/bench/adapter/1.safetensors",
        )
        session.add(subject)
        session.commit()
        subject_id = subject.id
    engine.dispose()
    PUBLISHABLE[key] = publishable
    return key, subject_id


PUBLISHABLE: dict[str, str] = {}  # secret key -> its tenant's publishable key, made by `seed`


def start_uvicorn(
    target: str, port: int, workers: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", target, "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--no-access-log", "--log-level", "warning"),
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def profiled(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (`pip install py-spy`) sampling the server and its workers while the load runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    command = [spy, "record", "--subprocesses", "--pid", str(pid), "--duration", str(seconds)]
    return subprocess.Popen([*command, "--format", "raw", "--output", str(out), "--nonblocking"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server process and its children (uvicorn's workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for task in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found] + [g for c in found for g in _children(int(c))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each measured run")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--room", default="640x480", help="room photo size for POST, WxH")
    parser.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--only", help="run only the rows whose name contains this text")
    parser.add_argument("--profile", type=Path, help="py-spy profile (collapsed stacks) of roomfit's GET run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    width, height = (int(v) for v in args.room.split("x"))

    folder = Path(tempfile.mkdtemp(prefix="roomfit-bench-api-"))
    postgres = PostgresServer(folder / "postgres").start()
    redis = RedisServer(folder / "redis").start()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        database_url = postgres.create_database("roomfit_bench")
        upgrade(database_url)
        key, subject_id = seed(database_url)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ROOMFIT_VAR_DIR": str(folder / "var"),
            "ROOMFIT_DATABASE_URL": database_url,
            "ROOMFIT_BROKER_URL": redis.url,
            "ROOMFIT_BLOB_URL": f"file://{folder / 'blobs'}",
            "ROOMFIT_RATE_LIMIT": "100000000/minute",  # measure the API, not the limiter's refusals
            # nothing consumes the queue: the quotas on queued previews would refuse the POSTs
            "ROOMFIT_MAX_QUEUED_PREVIEWS_PER_TENANT": "100000000",
            "ROOMFIT_MAX_QUEUED_PREVIEWS_PER_KEY": "100000000",
            "ROOMFIT_LOG_LEVEL": "WARNING",
            "PEER_DATABASE_URL": database_url,
        }
        ports = {name: free_port() for name in ("roomfit", "peer", "ceiling")}
        targets = {"roomfit": "api.app:create_app", "peer": "bench.peer_app:create_app",
                   "ceiling": "bench.peer_app:constant_app"}  # fmt: skip
        for name, target in targets.items():
            servers.append(start_uvicorn(target, ports[name], args.api_workers, env, folder / f"{name}.log"))
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        auth = {"Authorization": f"Bearer {key}"}
        body = preview_body(subject_id, width, height)
        post_headers = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        first = httpx.post(f"{base['roomfit']}/v1/previews", headers=post_headers, content=body, timeout=30)
        first.raise_for_status()
        preview_id = first.json()["id"]
        read = f"/v1/previews/{preview_id}"
        # The widget's read: a publishable key from its listed origin, of a preview that key made.
        widget = {"Authorization": f"Bearer {PUBLISHABLE[key]}", "Origin": WIDGET_ORIGIN}
        made = httpx.post(f"{base['roomfit']}/v1/previews", headers={**post_headers, **widget}, content=body)
        made.raise_for_status()
        widget_read = f"{base['roomfit']}/v1/previews/{made.json()['id']}"

        scenarios = [
            ("framework ceiling: FastAPI returning a constant", "GET", base["ceiling"] + read, auth, None),
            ("template-style peer: GET /v1/previews/{id}", "GET", base["peer"] + read, auth, None),
            ("roomfit GET /v1/previews/{id}", "GET", base["roomfit"] + read, auth, None),
            ("roomfit GET /v1/previews/{id}, the widget's key + Origin", "GET", widget_read, widget, None),
            (f"roomfit POST /v1/previews ({width}x{height} JPEG room + PNG mask)", "POST",
             f"{base['roomfit']}/v1/previews", post_headers, body),
        ]  # fmt: skip
        results = []
        for name, method, url, headers, payload in scenarios:
            if args.only and args.only not in name:
                continue
            for seconds, keep in ((args.warmup, False), (args.duration, True)):
                if seconds <= 0:
                    continue
                spy = None
                server = servers[0 if name.startswith("roomfit") else 1 if "peer" in name else 2]
                cpu_before = cpu_seconds(server.pid)
                if keep and args.profile and name.startswith("roomfit GET"):
                    spy = profiled(servers[0].pid, seconds, args.profile)
                if generator == "wrk":
                    result = run_wrk(
                        url, method, headers, payload, args.connections, seconds, args.wrk_threads, folder
                    )
                else:
                    result = run_httpx(url, method, headers, payload, args.connections, seconds)
                if spy is not None:
                    spy.wait()
                result["server_cpu_ms"] = (
                    1000 * (cpu_seconds(server.pid) - cpu_before) / max(1, result["requests"])
                )
                if keep:
                    results.append({"route": name, "connections": args.connections, **result})
        print(
            f"\n{args.connections} concurrent clients, {args.duration} s each, {args.api_workers} uvicorn "
            f"workers per server, {os.cpu_count()} CPUs shared by server, PostgreSQL, Redis and the load "
            f"generator ({generator})\n"
        )
        peer = next((r["rps"] for r in results if r["route"].startswith("template-style")), None)
        print(
            "| target | requests/s | vs peer | p50 ms | p99 ms | server CPU ms/request | requests | non-2xx |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            ratio = f"{r['rps'] / peer:.2f}x" if peer else "-"
            cells = [r["route"], f"{r['rps']:.0f}", ratio, f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                     f"{r['server_cpu_ms']:.2f}"]  # fmt: skip
            print("| " + " | ".join([*cells, str(r["requests"]), str(r["non_2xx"])]) + " |")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if all(r["non_2xx"] == 0 for r in results) else 1
    finally:
        for server in servers:
            stop(server)
        redis.stop()
        postgres.discard()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
