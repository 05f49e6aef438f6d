"""The job pipeline on real worker processes (issue 5): photos to a ready subject, then a preview;
kill -9 mid-training; Redis wiped; previews beside a long training; a task run twice."""

from __future__ import annotations

import hashlib
import io
import re
import time

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from core.queue import enqueue
from core.tables import Job, Preview, Subject
from tests.worker.conftest import make_tenant, submit_preview, submit_subject
from tests.worker.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def _adapter_versions(stack: Stack, tenant_id: str, subject_id: str) -> list[str]:
    return stack.blobs.list(f"tenants/{tenant_id}/subjects/{subject_id}/adapter/")


def test_photos_to_ready_subject_to_preview(distributed_stack: Stack) -> None:
    """The rows and blobs behind the pipeline (embedded mode: tests/worker/test_end_to_end.py)."""
    stack = distributed_stack
    train = stack.start_worker("train")
    preview = stack.start_worker("preview,default")
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id)

    subject = wait_for(lambda: stack.finished(Subject, subject_id), 180, "the subject to be trained")
    assert subject.status == "ready", (subject.error_code, subject.error_message, train.log()[-3000:])
    adapter = stack.blobs.get(subject.adapter_key)
    assert hashlib.sha256(adapter).hexdigest() == subject.adapter_sha256
    assert len(adapter) == subject.adapter_bytes
    assert _adapter_versions(stack, tenant_id, subject_id) == [subject.adapter_key]
    job = stack.row(Job, job_id)
    assert (job.status, job.attempts, job.progress) == ("succeeded", 1, 1.0)
    assert [step for step, _ in job.loss_points] == list(range(1, 7))  # every step's loss recorded
    assert {"annotate", "train"} <= set(job.timings)

    preview_id, _, room, mask = submit_preview(stack, tenant_id, subject_id)
    done = wait_for(lambda: stack.finished(Preview, preview_id), 120, "the preview")
    assert done.status == "succeeded", (done.error_code, done.error_message, preview.log()[-3000:])
    result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(done.result_key))).convert("RGB"))
    assert np.array_equal(result[~mask], np.asarray(room)[~mask])


def test_killed_train_worker_loses_no_job(distributed_stack: Stack) -> None:
    stack = distributed_stack
    first = stack.start_worker("train")
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id, steps=40)

    def training_midway() -> bool:
        job = stack.row(Job, job_id)
        return job.stage == "training" and len(job.loss_points) >= 3

    wait_for(training_midway, 180, "training to be under way")
    first.kill9()
    assert stack.row(Job, job_id).status == "running"  # the database still believes in it

    second = stack.start_worker("train")
    subject = wait_for(
        lambda: stack.finished(Subject, subject_id), 240, "the job to finish on the new worker"
    )
    assert subject.status == "ready", (subject.error_code, subject.error_message, second.log()[-3000:])
    job = stack.row(Job, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert _adapter_versions(stack, tenant_id, subject_id) == [subject.adapter_key]  # exactly one version
    assert hashlib.sha256(stack.blobs.get(subject.adapter_key)).hexdigest() == subject.adapter_sha256
    # The second attempt resumed from the first one's last checkpoint rather than from step 0.
    resumed = re.search(r"resumed from step (\d+)", second.log())
    assert resumed and int(resumed.group(1)) >= 2, second.log()[-2000:]
    # Points the killed worker had not flushed yet are lost; every step after the resume is there.
    assert {step for step, _ in job.loss_points} >= set(range(int(resumed.group(1)) + 1, 41))


def test_redis_wiped_while_jobs_wait(distributed_stack: Stack, redis_server) -> None:  # type: ignore[no-untyped-def]
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    # No worker yet: the jobs wait in Redis, which then loses everything.
    submitted = [submit_subject(stack, tenant_id) for _ in range(3)]
    assert len(redis_server_keys(redis_server)) > 0
    redis_server.restart(wipe=True)
    assert redis_server_keys(redis_server) == []

    worker = stack.start_worker("train")
    for subject_id, _ in submitted:
        subject = wait_for(lambda s=subject_id: stack.finished(Subject, s), 240, f"subject {subject_id}")
        assert subject.status == "ready", (subject.error_code, worker.log()[-3000:])
    for subject_id, job_id in submitted:
        job = stack.row(Job, job_id)
        assert (job.status, job.attempts) == ("succeeded", 1)  # each ran once
        assert len(_adapter_versions(stack, tenant_id, subject_id)) == 1


def redis_server_keys(server) -> list[bytes]:  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        return client.keys("*")
    finally:
        client.close()


def test_preview_does_not_wait_for_training(distributed_stack: Stack) -> None:
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    train = stack.start_worker("train")
    preview_worker = stack.start_worker("preview,default")
    ready_id, _ = submit_subject(stack, tenant_id)
    wait_for(lambda: stack.finished(Subject, ready_id) or None, 180, "the first subject")
    preview_worker.wait_ready()

    long_id, long_job = submit_subject(stack, tenant_id, steps=60)
    wait_for(lambda: stack.row(Job, long_job).stage == "training", 120, "the long training to start")
    preview_id, preview_job, _, _ = submit_preview(stack, tenant_id, ready_id)
    wait_for(lambda: stack.finished(Preview, preview_id), 120, "the preview")
    subject = wait_for(lambda: stack.finished(Subject, long_id), 300, "the long training")
    assert subject.status == "ready", train.log()[-2000:]
    p_job, t_job = stack.row(Job, preview_job), stack.row(Job, long_job)
    assert p_job.status == "succeeded"
    # The preview started and finished while the training was running.
    assert t_job.started_at < p_job.started_at < p_job.finished_at < t_job.finished_at


def test_a_task_run_twice_leaves_one_result(distributed_stack: Stack) -> None:
    stack = distributed_stack
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id)
    enqueue(stack.celery, "train", job_id)  # the same job id, twice on the queue
    worker = stack.start_worker("train")
    subject = wait_for(lambda: stack.finished(Subject, subject_id), 180, "the subject")
    assert subject.status == "ready", worker.log()[-3000:]
    preview_id, preview_job, _, _ = submit_preview(stack, tenant_id, subject_id)
    enqueue(stack.celery, "preview", preview_job)
    stack.start_worker("preview,default")
    wait_for(lambda: stack.finished(Preview, preview_id), 120, "the preview")
    time.sleep(3)  # let the duplicate messages be consumed too
    wait_for(lambda: "not claimable" in worker.log(), 30, "the duplicate train message to be dropped")

    assert _adapter_versions(stack, tenant_id, subject_id) == [subject.adapter_key]
    assert stack.row(Job, job_id).attempts == 1
    assert stack.row(Job, preview_job).attempts == 1
    assert stack.blobs.list(f"tenants/{tenant_id}/previews/{preview_id}/") == [
        f"tenants/{tenant_id}/previews/{preview_id}/{name}" for name in ("mask.png", "result.png", "room.png")
    ]
    with stack.session() as session:
        assert (
            len(session.scalars(select(Job).where(Job.subject_id == subject_id, Job.kind == "train")).all())
            == 1
        )
