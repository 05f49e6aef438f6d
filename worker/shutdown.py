"""Graceful stop: what a worker does between SIGTERM and its exit.

Kubernetes (a scale-down, a rollout) and `docker compose stop` send SIGTERM, wait the grace period,
then SIGKILL. Celery takes SIGTERM as its warm shutdown: it consumes no new message and exits once
the task in hand returns. This module decides how soon that task returns:

- a preview runs on while it can still end inside `ROOMFIT_SHUTDOWN_GRACE_SECONDS` (previews take
  seconds); past that, less a margin for the hand-back itself, it stops between two steps;
- a training stops at its next step at once: it could run for many minutes, and its checkpoint lets
  the next worker continue from that step.

A stopped job is handed back (`core.job_state.hand_back`: lease ended, attempt not counted) and its
message sent again, so another worker takes it at once rather than after the lease expires.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

log = logging.getLogger("roomfit.worker")

# Seconds kept back from the grace period for what follows a stop: the checkpoint upload, the
# hand-back's UPDATE and the new message.
HAND_BACK_MARGIN_SECONDS = 5.0

_stopping_since: float | None = None


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(how: str = "", **_: Any) -> None:
    # Runs inside Celery's signal handler: only record the time; the job notices at its next check.
    if how == "Warm":
        begin_stopping()


def begin_stopping() -> None:
    """Mark this process as stopping (what SIGTERM does; tests of the policy call it directly)."""
    global _stopping_since
    if _stopping_since is None:
        _stopping_since = time.monotonic()
        log.warning("worker stopping: no new jobs; the job in hand finishes or is handed back")


def must_stop(kind: str, grace_seconds: float) -> bool:
    """Whether a running job of `kind` has to stop now because this worker is stopping."""
    if _stopping_since is None:
        return False
    if kind == "train":
        return True
    margin = min(HAND_BACK_MARGIN_SECONDS, grace_seconds / 3)
    return time.monotonic() - _stopping_since >= grace_seconds - margin
