"""The worker's Celery app: the shared queue configuration plus roomfit's tasks, and roomfit's logs."""

from __future__ import annotations

from typing import Any

from celery import signals

from core import logs
from core.queue import QUEUES, make_celery

celery_app = make_celery()
# The tasks register themselves on import; listing them here makes `celery worker` find them.
celery_app.conf.include = ["worker.tasks"]


@signals.setup_logging.connect
def _roomfit_logs(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery empties the root logger and installs its own handler, unless a receiver of this signal
    sets logging up (celery.app.log.Logging.setup_logging_subsystem); then it also leaves stdout and
    stderr alone. So a worker writes roomfit's lines (core.logs: JSON with the job's ids, or text),
    as `roomfit worker` and `celery -A worker.celery_app worker` alike."""
    logs.configure(loglevel or "INFO")


__all__ = ["QUEUES", "celery_app"]
