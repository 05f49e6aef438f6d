"""A worker killed (kill -9) after Redis handed it a job's message and before it claimed the job
leaves the message in kombu's `unacked` hash, where Redis gives it back only after the visibility
timeout (the training deadline plus ten minutes: 70 min by default). The job is still `queued`;
the reconciler must send it again within its usual wait, not take that hidden message for one on
its way. A message handed over just now (a live worker about to claim) still counts, so a job is
not sent twice while its worker claims it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from core.ids import new_id
from core.queue import enqueue, job_ids_in_broker
from core.tables import Job
from tests.services import RedisServer
from tests.worker.conftest import in_process_runtime, training_job
from worker.reconciler import reconcile_once
from worker.runtime import Runtime

LEASE = 10  # the reconciler waits 2 × lease for a message it cannot see to show up


def _another_training(runtime: Runtime, beside: str) -> str:
    """A second queued training, of the same shop and subject as the job `beside`."""
    with runtime.session() as session:
        first = session.get(Job, beside)
        assert first is not None
        job = Job(id=new_id("job"), tenant_id=first.tenant_id, kind="train", subject_id=first.subject_id)
        session.add(job)
        session.commit()
        return job.id


def _taken_by_a_consumer(runtime: Runtime, seconds_ago: float) -> None:
    """What kombu's Redis transport does when a consumer takes the oldest message of `train`
    (BRPOP, then `QoS.append`): the message into `unacked`, its delivery time into `unacked_index`.
    The consumer then dies: nothing acknowledges or restores it."""
    with runtime.celery.connection_for_write() as conn:
        client = conn.default_channel.client
        raw = client.rpop("train")
        assert raw is not None
        tag = str(uuid.uuid4())
        client.zadd("unacked_index", {tag: time.time() - seconds_ago})
        client.hset("unacked", tag, json.dumps([json.loads(raw), "", "train"]))


def test_a_message_held_by_a_killed_consumer_does_not_hide_its_queued_job(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with in_process_runtime(tmp_path, broker_url=redis_server.url, lease_seconds=LEASE) as runtime:
        just_taken = training_job(runtime)
        enqueue(runtime.celery, "train", just_taken)
        _taken_by_a_consumer(runtime, seconds_ago=1)  # its worker is claiming it now
        assert reconcile_once(runtime) == []  # on its way: no second message

        held_by_the_dead = _another_training(runtime, beside=just_taken)
        enqueue(runtime.celery, "train", held_by_the_dead)
        _taken_by_a_consumer(runtime, seconds_ago=5 * LEASE)  # that worker was killed long ago
        assert reconcile_once(runtime) == [held_by_the_dead]
        assert held_by_the_dead in (job_ids_in_broker(runtime.celery) or set())
