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

from cli.embedded import _bootstrap_dev_tenant, worker_metrics_ports
from core.db import engine_for
from core.migrate import upgrade
from core.settings import InvalidSetting, Settings

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


def _free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now."""
    for _ in range(50):
        first, held = _free_port(), []
        try:
            for number in range(first, first + count):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", number))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError(f"no {count} free ports in a row")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


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
    port, metrics = _free_port(), _free_ports_in_a_row(WORKERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["ROOMFIT_WORKER_METRICS_PORT"], env["ROOMFIT_WORKER_METRICS_HOST"] = str(metrics), "127.0.0.1"
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
        # each worker serves its own /metrics, from the setting's port on (one port is one process)
        for number in range(metrics, metrics + WORKERS):
            assert "roomfit_training_steps_total" in _metrics(number)
        assert f"worker-preview on :{metrics + 1}" in output

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
        assert "roomfit_preview_batch_size" in _metrics(metrics + 1)  # the restarted one, same port
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


def test_worker_metrics_ports_follow_the_setting_and_fit_below_65536() -> None:
    names = ["worker-train", "worker-preview", "worker-webhooks"]
    assert worker_metrics_ports(0, names) == {}
    assert worker_metrics_ports(9808, names) == {
        "worker-train": 9808,
        "worker-preview": 9809,
        "worker-webhooks": 9810,
    }
    assert worker_metrics_ports(65533, names)["worker-webhooks"] == 65535
    with pytest.raises(InvalidSetting, match=r"ROOMFIT_WORKER_METRICS_PORT=65534: .* at most 65533"):
        worker_metrics_ports(65534, names)


def test_an_unusable_metrics_port_stops_up_before_anything_is_made(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "up", "--port", str(_free_port())],
        cwd=tmp_path,
        env={
            **env,
            "ROOMFIT_WORKER_METRICS_PORT": "65535",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "invalid_settings" in done.stderr and "ROOMFIT_WORKER_METRICS_PORT=65535" in done.stderr
    assert not (tmp_path / "var").exists()  # no database, so no dev keys made and never shown
