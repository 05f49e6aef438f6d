"""The job queue's configuration: queues `train`, `preview` and `default`, broker and backend from
settings. The API only sends task names and job ids through it; the worker adds the tasks.

Embedded mode uses Celery's `filesystem://` transport under `var/broker` and a SQLite result
backend, so one laptop needs no Redis. GPU tasks are long and must not be lost, hence late acks and
a prefetch of one: a message is acknowledged only when its task is done.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings, get_settings

QUEUES = ("train", "preview", "default")


def broker_options(settings: Settings) -> dict[str, object]:
    if not settings.embedded:
        # A Redis broker re-delivers an unacknowledged message after this long; longer than any
        # job's deadline, so a slow training is not delivered twice while it runs.
        return {"visibility_timeout": settings.train_timeout_seconds + 600}
    folder = settings.broker_folder
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # One folder for in and out: producers (the API) and consumers (workers) share it.
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("roomfit")
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        result_backend=settings.resolved_result_backend,
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes={
            "roomfit.train_subject": {"queue": "train"},
            "roomfit.render_preview": {"queue": "preview"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


TASK_FOR_KIND = {"train": "roomfit.train_subject", "preview": "roomfit.render_preview"}


def enqueue(app: Celery, kind: str, job_id: str) -> None:
    """Put a job's id on its queue. The database row is the truth; the message only carries the id."""
    app.send_task(TASK_FOR_KIND[kind], args=[job_id], queue=kind)
