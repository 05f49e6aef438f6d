"""SIGTERM to a busy worker (what Kubernetes sends on a scale-down or a rollout, then SIGKILL after
the grace period): the worker exits within its grace, and the job it held is finished exactly once,
by it or, handed back, by the next worker. A training stopped this way resumes on another machine
(its own var folder) from the step it stopped at, with every loss point recorded once."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.clock import utcnow
from core.tables import Job, Preview, Subject, Worker
from tests.worker.conftest import make_tenant, submit_preview, submit_subject
from tests.worker.stack import Stack, WorkerProcess, ready_subject_with_random_adapter, wait_for

pytestmark = pytest.mark.integration

SLOW_PREVIEW_STEPS = 150  # 1.5 to 9 s on the tiny model, by the machine: long enough to be caught busy
# Outlasts a grace of 2 s (handed back 1.3 s after SIGTERM) on any machine we run: 7 s on one where
# 150 steps took 1.5 s, and a preview of 150 steps once fitted inside a grace of 3 s there.
HAND_BACK_PREVIEW_STEPS = 600


def _sigterm_and_time_exit(worker: WorkerProcess, grace: float) -> float:
    """SIGTERM, then the seconds until the process exited; fails past the grace (Kubernetes would
    SIGKILL it there) plus a little for the interpreter's own exit."""
    assert worker.process is not None
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout=grace + 5)
    except Exception as exc:
        raise AssertionError(f"still running {grace + 5}s after SIGTERM:\n{worker.log()[-3000:]}") from exc
    return time.monotonic() - sent


def _submit_slow_preview(
    stack: Stack, shared_models_dir: Path, steps: int = SLOW_PREVIEW_STEPS
) -> tuple[str, str, Image.Image, np.ndarray]:
    """A preview of many steps; the row is written before the message, so the worker reads them."""
    tenant_id = make_tenant(stack)
    subject_id = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir)
    return submit_preview(stack, tenant_id, subject_id, steps=steps)


def _painting(stack: Stack, job_id: str) -> bool:
    job = stack.row(Job, job_id)
    return job.stage == "painting" and (job.progress or 0) > 0.06


def _succeeded_once(stack: Stack, preview_id: str, job_id: str, room: Image.Image, mask: np.ndarray) -> Job:
    preview = wait_for(
        lambda: stack.finished(Preview, preview_id),
        180,
        "the preview to finish",
    )
    assert preview.status == "succeeded", (preview.error_code, preview.error_message)
    result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(preview.result_key))).convert("RGB"))
    assert np.array_equal(result[~mask], np.asarray(room)[~mask])
    job = stack.row(Job, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)  # a hand-back is not an attempt
    return job


@pytest.mark.slow
def test_a_preview_in_progress_finishes_before_the_worker_exits(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    grace = 60
    worker = stack.start_worker("preview", ROOMFIT_SHUTDOWN_GRACE_SECONDS=str(grace))
    worker.wait_ready()
    preview_id, job_id, room, mask = _submit_slow_preview(stack, shared_models_dir)
    wait_for(lambda: _painting(stack, job_id), 120, "the preview to be painting")

    took = _sigterm_and_time_exit(worker, grace)
    job = _succeeded_once(stack, preview_id, job_id, room, mask)
    assert job.worker is not None and job.worker.endswith(f":{worker.process.pid}")  # type: ignore[union-attr]
    assert f"job {job_id}: handed back" not in worker.log()
    # it signed off as it stopped: offline now, not three heartbeats (15 s) after its last one
    row = stack.row(Worker, job.worker)
    assert row.online_until <= utcnow()
    print(f"preview finished, worker exited {took:.1f}s after SIGTERM (grace {grace}s)")


@pytest.mark.slow
def test_a_preview_that_would_outlast_the_grace_is_handed_back(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    grace = 2  # a preview of 600 steps takes longer: it must be handed back, not cut off
    first = stack.start_worker("preview", ROOMFIT_SHUTDOWN_GRACE_SECONDS=str(grace))
    first.wait_ready()
    preview_id, job_id, room, mask = _submit_slow_preview(stack, shared_models_dir, HAND_BACK_PREVIEW_STEPS)
    wait_for(lambda: _painting(stack, job_id), 120, "the preview to be painting")

    took = _sigterm_and_time_exit(first, grace)
    assert f"job {job_id}: handed back" in first.log(), first.log()[-3000:]
    assert stack.row(Preview, preview_id).status != "succeeded"

    second = stack.start_worker("preview")
    job = _succeeded_once(stack, preview_id, job_id, room, mask)
    assert job.worker is not None and job.worker.endswith(f":{second.process.pid}")  # type: ignore[union-attr]
    print(f"preview handed back, worker exited {took:.1f}s after SIGTERM (grace {grace}s)")


@pytest.mark.slow
def test_a_training_checkpoints_hands_back_and_resumes_on_another_machine(distributed_stack: Stack) -> None:
    stack = distributed_stack
    grace, steps = 30, 100
    first = stack.start_worker("train", ROOMFIT_SHUTDOWN_GRACE_SECONDS=str(grace))
    tenant_id = make_tenant(stack)
    subject_id, job_id = submit_subject(stack, tenant_id, steps=steps)
    wait_for(lambda: len(stack.row(Job, job_id).loss_points) >= 5, 180, "training to be under way")

    took = _sigterm_and_time_exit(first, grace)
    assert f"job {job_id}: handed back" in first.log(), first.log()[-3000:]
    stopped = stack.row(Job, job_id)
    assert (stopped.status, stopped.attempts) == ("running", 0)
    stopped_at = max(step for step, _ in stopped.loss_points)
    assert 5 <= stopped_at < steps

    # Another machine: its own var folder, so only the blob store can carry the checkpoint.
    second = stack.start_worker("train", ROOMFIT_VAR_DIR=str(stack.folder / "other-machine"))
    subject = wait_for(
        lambda: stack.finished(Subject, subject_id),
        240,
        "the training to finish on the second worker",
    )
    assert subject.status == "ready", (subject.error_code, subject.error_message, second.log()[-3000:])
    assert "resuming from the checkpoint a stopped worker left" in second.log()
    assert f"resumed from step {stopped_at}" in second.log(), second.log()[-3000:]
    job = stack.row(Job, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert [step for step, _ in job.loss_points] == list(range(1, steps + 1))  # each step once
    assert stack.blobs.list(f"tenants/{tenant_id}/subjects/{subject_id}/checkpoint/") == []
    print(f"training stopped at step {stopped_at}, worker exited {took:.1f}s after SIGTERM (grace {grace}s)")
