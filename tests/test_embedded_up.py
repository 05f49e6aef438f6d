"""`roomfit up` in a temporary folder: migrates, serves, runs the workers, starts a killed worker
again, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli.embedded import _bootstrap_dev_tenant
from core.db import engine_for
from core.migrate import upgrade
from core.settings import Settings

READY_TIMEOUT = 180.0
WORKERS = 3  # train, preview, webhooks


def _process_running(root: int, argument: str) -> int:
    """The pid below `root` whose command line holds `argument`."""
    for pid in _descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if argument in cmdline and _alive(pid):
            return pid
    raise AssertionError(f"no process with {argument!r} below {root}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc (children of children included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_roomfit_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        status, body = 0, {}
        while time.monotonic() < deadline and proc.poll() is None:
            seen |= _descendants(proc.pid)
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = 0
            output = log_path.read_text(errors="replace")
            if status == 200 and output.count("ready.") >= WORKERS:  # every Celery worker is ready
                break
            time.sleep(0.5)
        output = log_path.read_text(errors="replace")
        assert status == 200, f"/readyz never answered 200 ({body}); log:\n{output[-4000:]}"
        assert output.count("ready.") >= WORKERS, output[-4000:]
        assert set(body["checks"]) == {"database", "broker", "blob_store"}
        assert "secret key      : sk_" in output and "publishable key : pk_" in output
        assert "ROOMFIT_BASE_MODEL=tiny" in output  # the banner says loudly that images are noise
        assert (tmp_path / "var" / "roomfit.db").exists()  # state stays in the working folder
        seen |= _descendants(proc.pid)
        assert len(seen) >= 1 + WORKERS, "expected the API and three worker processes"

        # The preview worker dies as a worker killed for memory does: SIGKILL, no goodbye.
        painter = _process_running(proc.pid, "--queues preview")
        os.kill(painter, signal.SIGKILL)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and log_path.read_text(errors="replace").count("ready.") <= WORKERS:
            seen |= _descendants(proc.pid)
            time.sleep(0.5)
        output = log_path.read_text(errors="replace")
        assert "worker-preview exited with -9; restarted" in output, output[-4000:]
        assert output.count("ready.") == WORKERS + 1, output[-4000:]  # the new one is ready
        assert proc.poll() is None and _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert _process_running(proc.pid, "--queues preview") != painter
        seen |= _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    left = [pid for pid in seen if _alive(pid)]
    assert not left, f"processes left behind: {left}"
    assert proc.returncode == 0


def test_second_start_makes_no_new_keys(embedded_env: Settings) -> None:
    """The dev tenant is made on the first start only; a restart must not print fresh keys."""
    upgrade(embedded_env.resolved_database_url)
    first = _bootstrap_dev_tenant("127.0.0.1", 8000)
    assert first is not None and first["secret"].startswith("sk_")
    assert _bootstrap_dev_tenant("127.0.0.1", 8000) is None
    engine_for(embedded_env.resolved_database_url).dispose()
