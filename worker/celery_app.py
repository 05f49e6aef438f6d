"""The worker's Celery app: the shared queue configuration plus roomfit's tasks."""

from __future__ import annotations

from core.queue import QUEUES, make_celery

celery_app = make_celery()
# The tasks register themselves on import; listing them here makes `celery worker` find them.
celery_app.conf.include = ["worker.tasks"]

__all__ = ["QUEUES", "celery_app"]
