"""The worker image's HEALTHCHECK: exit 0 when the roomfit worker in this container is alive, else 1.

A Celery ping alone cannot tell: the GPU pools run Celery's solo pool, which reads control messages
on the thread that runs the task (celery/celery#4967), so a worker painting a preview or training
for many minutes answers no ping. The check therefore passes when either

- a worker node of this host answers a ping (`roomfit worker` names its node `<queues>@<hostname>`,
  so the pattern `*@<hostname>` finds it whatever its queues), or
- a job held by a process of this host (`jobs.worker` is `<hostname>:<pid>`) is running with a
  heartbeat younger than ROOMFIT_LEASE_SECONDS: the worker is busy and its heartbeat thread alive.

It needs the broker and the database, so it is the container's health, not a restart rule: Docker
only reports it (`docker compose ps`). Kubernetes does not run it (see deploy/k8s/workers.yaml).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

PING_TIMEOUT_SECONDS = 10.0


def answers_ping(hostname: str) -> bool:
    from core.queue import make_celery

    replies = make_celery().control.ping(
        timeout=PING_TIMEOUT_SECONDS, pattern=f"*@{hostname}", matcher="glob", limit=1
    )
    return bool(replies)


def busy_here(hostname: str, now: datetime | None = None) -> bool:
    from sqlalchemy import select

    from core.clock import utcnow
    from core.db import session_scope
    from core.settings import get_settings
    from core.tables import Job

    fresh_since = (now or utcnow()) - timedelta(seconds=get_settings().lease_seconds)
    query = (
        select(Job.id)
        .where(Job.status == "running", Job.worker.startswith(f"{hostname}:", autoescape=True))
        .where(Job.heartbeat_at >= fresh_since)
        .limit(1)
    )
    with session_scope() as session:
        return session.execute(query).first() is not None


def healthy(hostname: str, checks: tuple[Callable[[str], bool], ...] = (answers_ping, busy_here)) -> bool:
    """The first check that says yes wins; a check that fails (broker or database down) says no."""
    for check in checks:
        try:
            if check(hostname):
                return True
        except Exception as exc:  # any failure of a check is "not shown healthy by it"
            print(f"{check.__name__}: {exc!r}", file=sys.stderr)
    return False


if __name__ == "__main__":
    sys.exit(0 if healthy(socket.gethostname()) else 1)
