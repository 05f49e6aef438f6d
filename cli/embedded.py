"""`roomfit up`: the whole service on one machine, as a small process supervisor.

It migrates, makes a dev tenant on first start, then runs the API and three workers (the `train`,
`preview` and `webhooks` + `default` pools, as in production) as child processes. Each child leads
its own process group, so stopping kills whatever the child started too. A child that dies (say a
worker killed for memory) is started again; one that keeps dying, Ctrl-C or SIGTERM stops them all,
and nothing is left behind. With `ROOMFIT_WORKER_METRICS_PORT` set, each worker serves /metrics on
its own port, from that one on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from core.accounts import create_key, create_tenant
from core.db import session_scope
from core.migrate import upgrade
from core.settings import InvalidSetting, Settings, get_settings
from core.tables import Tenant

STOP_GRACE_SECONDS = 10.0
# A child that dies is started again (an out-of-memory kill of one worker must not end the service),
# unless it keeps dying: more than this many restarts within the window stops everything.
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60.0
WORKERS = ("worker-train", "worker-preview", "worker-webhooks")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    restarts: list[float] = field(default_factory=list)


def worker_metrics_ports(first: int, workers: list[str]) -> dict[str, int]:
    """Each worker child its own /metrics port, from ROOMFIT_WORKER_METRICS_PORT on in the order
    started: on one machine a port serves one process, so a shared one left all but the first
    without metrics. Empty when the setting is 0 (off)."""
    if not first:
        return {}
    if first + len(workers) - 1 > 65535:
        raise InvalidSetting(
            f"ROOMFIT_WORKER_METRICS_PORT={first}: roomfit up serves {len(workers)} workers' metrics "
            f"on it and the {len(workers) - 1} ports after it; give one at most {65536 - len(workers)}"
        )
    return {name: first + index for index, name in enumerate(workers)}


def run_embedded(settings: Settings, host: str, port: int) -> int:
    # before anything is made: a first start's keys are shown once, so nothing may fail after them
    ports = worker_metrics_ports(settings.worker_metrics_port, list(WORKERS))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    var_dir = settings.var_dir.resolve()
    upgrade(settings.resolved_database_url)
    dev_keys = _bootstrap_dev_tenant(host, port, var_dir)

    # Children read the same settings; pin the state folder to an absolute path so a child started
    # from another working folder still finds it.
    env = {**os.environ, "ROOMFIT_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, "-m", "cli.main"]
    train, preview, webhooks = WORKERS
    specs = [
        ("api", [*me, "serve", "--host", host, "--port", str(port)]),
        (train, [*me, "worker", "--queues", "train", "--name", f"train-{os.getpid()}@%h"]),
        (preview, [*me, "worker", "--queues", "preview", "--name", f"preview-{os.getpid()}@%h"]),
        # Webhook deliveries and small tasks: their own pool, so a slow receiver never holds a GPU.
        (webhooks, [*me, "worker", "--queues", "webhooks,default", "--name", f"webhooks-{os.getpid()}@%h"]),
    ]
    children: list[Child] = []
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        for name, argv in specs:
            own = {**env, "ROOMFIT_WORKER_METRICS_PORT": str(ports[name])} if name in ports else env
            children.append(Child(name, argv, own, _start(argv, own)))
        _banner(settings, host, port, var_dir, dev_keys, children, ports)
        while not stopping:
            for child in children:
                code = child.process.poll()
                if code is None:
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
                if len(child.restarts) >= MAX_RESTARTS:
                    print(
                        f"roomfit: {child.name} exited with {code} {len(child.restarts) + 1} times within "
                        f"{RESTART_WINDOW_SECONDS:.0f} s; stopping everything",
                        file=sys.stderr,
                    )
                    return code or 1
                # Whatever the dead child started goes with it before its successor starts.
                _signal_group(child.process, signal.SIGKILL)
                child.restarts.append(now)
                child.process = _start(child.argv, child.env)
                print(
                    f"roomfit: {child.name} exited with {code}; restarted as pid {child.process.pid}",
                    file=sys.stderr,
                )
            time.sleep(0.3)
        print("roomfit: stopping ...", file=sys.stderr)
        return 0
    finally:
        _stop_all(children)


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Its own process group: stopping the child stops whatever it started too.
    return subprocess.Popen(argv, env=env, start_new_session=True)


def _stop_all(children: list[Child]) -> None:
    """SIGTERM every child's process group, then SIGKILL whatever is left after the grace time."""
    for child in children:
        _signal_group(child.process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for child in children:
        # Even a child that exited may have left grandchildren in its group.
        _signal_group(child.process, signal.SIGKILL)
        child.process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


# The dev publishable key, for the demo shop page (api/routes/demo.py reads it). Publishable keys are
# public by design (every shopper's browser holds one); the secret key is never written anywhere.
DEV_PUBLISHABLE_KEY_FILE = "dev-publishable-key.txt"


def _bootstrap_dev_tenant(host: str, port: int, var_dir: Path | None = None) -> dict[str, str] | None:
    """On the very first start (no tenant yet) make tenant `dev` with a secret and a publishable key,
    and write the publishable one to `{var_dir}/dev-publishable-key.txt` for the demo page."""
    with session_scope() as session:
        if session.scalar(select(func.count()).select_from(Tenant)):
            return None
        tenant = create_tenant(session, "dev")
        origins = sorted({f"http://{host}:{port}", f"http://localhost:{port}", f"http://127.0.0.1:{port}"})
        _secret_row, secret = create_key(session, kind="secret", tenant=tenant)
        _pub_row, publishable = create_key(session, kind="publishable", tenant=tenant, origins=origins)
        tenant_id = tenant.id
    folder = var_dir if var_dir is not None else get_settings().var_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEV_PUBLISHABLE_KEY_FILE).write_text(publishable + "\n", encoding="utf-8")
    return {"tenant": tenant_id, "secret": secret, "publishable": publishable}


def _banner(
    settings: Settings,
    host: str,
    port: int,
    var_dir: Path,
    dev_keys: dict[str, str] | None,
    children: list[Child],
    metrics_ports: dict[str, int],
) -> None:
    lines = [
        "",
        f"roomfit is up at http://{host}:{port}   (docs: /docs, ops: /ops, health: /readyz)",
        f"  state folder : {var_dir}",
        "  processes    : " + ", ".join(f"{c.name}={c.process.pid}" for c in children),
    ]
    if metrics_ports:
        lines.append(
            "  /metrics     : "
            + ", ".join(f"{name} on :{number}" for name, number in metrics_ports.items())
            + f" ({settings.worker_metrics_host})"
        )
    if settings.is_tiny:
        lines += [
            "",
            "  !!! ROOMFIT_BASE_MODEL=tiny: a random-weight model of the real architecture.",
            "  !!! Every pipeline step is real, but painted images are noise. For real previews:",
            "  !!!   ROOMFIT_BASE_MODEL=Fantasy-Studio/Paint-by-Example \\",
            "  !!!   ROOMFIT_DETECTOR=facebook/detr-resnet-50 make run",
        ]
    if dev_keys:
        lines += [
            "",
            "  First start: made tenant 'dev'. These keys are shown ONCE (only their hashes are stored):",
            f"    secret key      : {dev_keys['secret']}",
            f"    publishable key : {dev_keys['publishable']}",
        ]
    lines += ["", "  Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
