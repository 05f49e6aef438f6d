"""The worker's Celery app: the shared queue configuration plus roomfit's tasks."""

from __future__ import annotations

from core.queue import QUEUES, make_celery

celery_app = make_celery()

__all__ = ["QUEUES", "celery_app"]
