"""The job queue's configuration: queues `train`, `preview`, `webhooks` and `default`, broker and
backend from settings. Each is served by its own worker pool, so a long training never delays a
preview and a slow webhook receiver never holds a GPU. The API only sends task names and job ids
through it; the worker adds the tasks.

Embedded mode uses Celery's `filesystem://` transport under `var/broker`, so one laptop needs no
Redis. GPU tasks are long and must not be lost, hence late acks and a prefetch of one: a message is
acknowledged only when its task is done. Tasks store no results: the job row is the truth, and
nothing reads a task's return value.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from core import fs_transport
from core.settings import Settings, get_settings

log = logging.getLogger("roomfit.queue")

QUEUES = ("train", "preview", "webhooks", "default")


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
        # How often an idle worker lists the folder for a new message (kombu's default is 1 s):
        # a preview would wait half a second on average before any worker saw it. A listing of a
        # near-empty folder costs microseconds.
        "polling_interval": 0.1,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("roomfit")
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        # embedded: kombu's filesystem transport, with each message file written whole
        **({"broker_transport": fs_transport.TRANSPORT} if settings.embedded else {}),
        # No result backend: a stored result is one more write per preview (a Redis key kept a day;
        # in embedded mode a row in a SQLite file that only Celery beat, never run here, would prune).
        task_ignore_result=True,
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes={
            "roomfit.train_subject": {"queue": "train"},
            "roomfit.render_preview": {"queue": "preview"},
            "roomfit.deliver_webhook": {"queue": "webhooks"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    return app


TASK_FOR_KIND = {"train": "roomfit.train_subject", "preview": "roomfit.render_preview"}


def enqueue_delivery(app: Celery, delivery_id: str) -> None:
    """Put a webhook delivery's id on the `webhooks` queue (the row is the truth, as for jobs)."""
    app.send_task("roomfit.deliver_webhook", args=[delivery_id], queue="webhooks")


def enqueue(app: Celery, kind: str, job_id: str) -> None:
    """Put a job's id on its queue. The database row is the truth; the message only carries the id."""
    app.send_task(TASK_FOR_KIND[kind], args=[job_id], queue=kind)


def job_ids_in_broker(app: Celery, unacked_within: float | None = None) -> set[str] | None:
    """Job ids the broker holds (waiting or delivered-unacknowledged), or None if that can't be read.

    The reconciler uses this to tell "queued and on its way" from "queued but the broker lost it".
    Redis (kombu) keeps each queue as a list and unacknowledged messages in the `unacked` hash; the
    filesystem transport keeps one file per message. Task arguments appear verbatim in both.

    `unacked_within` (seconds): count only unacknowledged messages handed to a consumer that recently.
    A consumer killed (kill -9) before it claimed the job leaves its message in `unacked`, which Redis
    restores only after the visibility timeout (the training deadline plus ten minutes): counted, the
    job would wait that long. A live consumer claims its job within milliseconds of taking the message
    (or runs another job's turn, and the job gets another turn), so an old one is at worst a duplicate.
    """
    try:
        if _is_redis(app):
            return _ids_in_redis(app, unacked_within)
        if _is_filesystem(app):
            return _ids_in_folder(app)
    except Exception:
        return None
    return None


def _is_redis(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith(("redis://", "rediss://"))


def _is_filesystem(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith("filesystem://")


def queue_lengths(app: Celery) -> dict[str, int] | None:
    """Messages waiting per queue, when the broker can say so cheaply (Redis: LLEN; the embedded
    filesystem transport: its message files, which kombu names `<ms>_<uuid>.<queue>.msg` and
    removes when a worker takes one); else None."""
    try:
        if _is_redis(app):
            with app.connection_for_read() as conn:
                client = conn.default_channel.client
                return {name: int(client.llen(name)) for name in QUEUES}
        if _is_filesystem(app):
            names = os.listdir(app.conf.broker_transport_options["data_folder_in"])
            return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in QUEUES}
    except Exception:
        log.warning("could not read queue lengths from the broker", exc_info=True)
    return None


def ping_workers(app: Celery, timeout: float) -> dict[str, Any] | None:
    """The workers that answer Celery's ping within `timeout` seconds, by name; None when the
    broker carries no broadcast (filesystem, memory) or cannot be asked."""
    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://", "amqp://")):
        return None
    try:
        return app.control.inspect(timeout=timeout).ping() or {}
    except Exception:
        log.warning("celery inspect failed", exc_info=True)
        return None


def check_broker(app: Celery) -> None:
    """Return if the broker accepts a connection, else raise (for /readyz)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


_JOB_ID = re.compile(r"job_[0-9A-Z]{26}")


def _ids_in_redis(app: Celery, unacked_within: float | None = None) -> set[str]:
    found: set[str] = set()
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        client = channel.client
        names = [q.name for q in app.conf.task_queues]
        # kombu's priority sub-queues are named with a separator and the priority step.
        keys = [n for name in names for n in (name, *(f"{name}\x06\x16{p}" for p in (3, 6, 9)))]
        for key in keys:
            for raw in client.lrange(key, 0, -1):
                found.update(_JOB_ID.findall(_decoded(raw)))
        if unacked_within is None:
            held = client.hvals(channel.unacked_key)
        else:
            # kombu scores each delivery tag in `unacked_index` by when a consumer took it
            since = time.time() - unacked_within
            tags = client.zrange(channel.unacked_index_key, since, "+inf", byscore=True)
            held = client.hmget(channel.unacked_key, tags) if tags else []
        for raw in held:
            if raw is not None:  # acknowledged between the two reads
                found.update(_JOB_ID.findall(_decoded(raw)))
    return found


def _decoded(raw: bytes) -> str:
    """A kombu message: JSON whose body is base64 of the task's JSON arguments."""
    text = raw.decode("utf-8", "replace")
    found = [text]
    for match in re.finditer(r'"body":\s*"([A-Za-z0-9+/=]+)"', text):
        with contextlib.suppress(ValueError):
            found.append(base64.b64decode(match.group(1)).decode("utf-8", "replace"))
    return " ".join(found)


def _ids_in_folder(app: Celery) -> set[str]:
    folder = Path(app.conf.broker_transport_options["data_folder_in"])
    found: set[str] = set()
    for path in folder.glob("*.msg"):
        with contextlib.suppress(OSError):
            found.update(_JOB_ID.findall(_decoded(path.read_bytes())))
    return found
