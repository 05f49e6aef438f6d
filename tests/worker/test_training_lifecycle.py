"""A training's life off the happy path, run in-process on an embedded runtime with the tiny model
(real trainings of a few steps): an ops cancel keeps the subject's photos and current adapter; an
old failed training retried by ops after later ones succeeded trains the next version and leaves the
subject's adapter in place; a training that fails for good leaves no checkpoint for the next one;
another training's checkpoint under the same version is set aside, not failed on; a job given up
for too many attempts is told to the shop's webhook like any failure."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from api.services.jobs import cancel_job, retry_job
from api.services.subjects import train_again
from core.blob_keys import adapter_key, checkpoint_key, photo_key, subject_prefix
from core.clock import utcnow
from core.ids import new_id
from core.migrate import upgrade
from core.repository import OpsRepository, TenantRepository
from core.settings import Settings
from core.tables import Job, Subject, Tenant, Webhook, WebhookDelivery
from tests.worker.conftest import add_photos, product_photo
from worker import train_job
from worker.job_runner import JobContext, run_job
from worker.reconciler import reconcile_once
from worker.runtime import Runtime, reset_runtime

STEPS = 2  # a real training, as short as it gets


@pytest.fixture
def runtime(shared_models_dir: Path, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, var_dir=tmp_path / "var", models_dir=shared_models_dir, lease_seconds=30
    )
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    reset_runtime(runtime)  # webhook events read the process's runtime
    try:
        yield runtime
    finally:
        reset_runtime(None)


def _subject(runtime: Runtime, webhook: bool = False) -> tuple[str, str, str]:
    """A tenant and a subject with two photos and its first training job (not run): their ids."""
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
        session.add(tenant)
        session.flush()
        if webhook:
            session.add(Webhook(id=new_id("whk"), tenant_id=tenant.id, url="https://shop.test/h", secret="s"))
        subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="striped sofa", label="couch")
        session.add(subject)
        session.flush()
        add_photos(session, runtime.blobs, tenant.id, subject.id, [product_photo(i) for i in range(2)])
        params = {"steps": STEPS}
        job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, params=params)
        session.add(job)
        session.commit()
        return tenant.id, subject.id, job.id


def _again(runtime: Runtime, tenant_id: str, subject_id: str) -> str:
    """POST /v1/subjects/{id}/train (its message is not needed: run_job is called directly)."""
    with runtime.session() as session:
        repo = TenantRepository(session, tenant_id)
        train_again(repo, runtime.celery, runtime.settings, subject_id)
        [job] = [j for j in repo.jobs_of_subject(subject_id) if j.status == "queued"]
        job.params = {"steps": STEPS}
        session.commit()
        return job.id


def _retry(runtime: Runtime, job_id: str) -> None:
    """POST /v1/ops/jobs/{id}/retry (its message is not needed either)."""
    with runtime.session() as session:
        retry_job(OpsRepository(session), runtime.celery, job_id, runtime.settings.preview_retention_days)
        session.commit()


@contextmanager
def _unreadable(runtime: Runtime, key: str) -> Iterator[None]:
    """The photo at `key` is damaged for the block (a training of it fails for good), then mended."""
    kept = runtime.blobs.get(key)
    runtime.blobs.put(key, b"not a photo", content_type="image/png")
    try:
        yield
    finally:
        runtime.blobs.put(key, kept, content_type="image/png")


def _run(runtime: Runtime, job_id: str) -> str:
    return run_job(runtime, job_id, train_job.train_subject_work, kind="train")


def _row(runtime: Runtime, model: type, id_: str):  # type: ignore[no-untyped-def]
    with runtime.session() as session:
        row = session.get(model, id_)
        session.expunge_all()
        return row


def test_an_ops_cancel_keeps_the_subjects_photos_and_current_adapter(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id, subject_id, first = _subject(runtime)
    assert _run(runtime, first) == "succeeded"
    v1 = _row(runtime, Subject, subject_id).adapter_key
    second = _again(runtime, tenant_id, subject_id)

    real_train = train_job._train

    def cancelled_by_ops_once_started(ctx: JobContext, job: Job, version: int, folder: Path) -> None:
        with runtime.session() as session:  # POST /v1/ops/jobs/{id}/cancel, as the console sends it
            cancel_job(OpsRepository(session), second)
            session.commit()
        real_train(ctx, job, version, folder)  # its first progress write finds the cancel

    monkeypatch.setattr(train_job, "_train", cancelled_by_ops_once_started)
    assert _run(runtime, second) == "cancelled"
    monkeypatch.undo()

    subject = _row(runtime, Subject, subject_id)
    assert (subject.status, subject.adapter_key) == ("cancelled", v1)
    left = runtime.blobs.list(subject_prefix(tenant_id, subject_id))
    assert v1 in left and photo_key(tenant_id, subject_id, 0, "png") in left
    assert adapter_key(tenant_id, subject_id, 2) not in left

    # Retry (ops) trains it after all: photos and the replaced version are there for it.
    _retry(runtime, second)
    assert _run(runtime, second) == "succeeded"
    subject = _row(runtime, Subject, subject_id)
    assert (subject.status, subject.adapter_version) == ("ready", 2)
    assert runtime.blobs.exists(subject.adapter_key) and runtime.blobs.exists(v1)


def test_an_old_failed_training_retried_takes_the_next_version(runtime: Runtime) -> None:
    tenant_id, subject_id, first = _subject(runtime)
    assert _run(runtime, first) == "succeeded"  # v1
    with _unreadable(runtime, photo_key(tenant_id, subject_id, 0, "png")):
        failed = _again(runtime, tenant_id, subject_id)
        assert _run(runtime, failed) == "failed"  # it had taken version 2 on its first attempt
    assert _row(runtime, Job, failed).params["adapter_version"] == 2
    for _ in range(2):  # v2, then v3
        assert _run(runtime, _again(runtime, tenant_id, subject_id)) == "succeeded"
    assert _row(runtime, Subject, subject_id).adapter_version == 3

    _retry(runtime, failed)
    assert _run(runtime, failed) == "succeeded"
    subject = _row(runtime, Subject, subject_id)
    assert (subject.status, subject.adapter_version) == ("ready", 4)
    assert runtime.blobs.list(f"{subject_prefix(tenant_id, subject_id)}adapter/") == [
        adapter_key(tenant_id, subject_id, 3),  # the version it replaced, kept for a preview painting now
        subject.adapter_key,
    ]


def _checkpoint_of_another_training(runtime: Runtime, tmp_path: Path) -> bytes:
    """A real checkpoint file of a training with other settings, as a stopping worker leaves one."""
    from models.training import TrainSettings, train_subject
    from models.training_checkpoint import CHECKPOINT_FILE
    from models.training_pairs import SubjectPhoto as TrainingPhoto

    photos = [TrainingPhoto(*product_photo(seed)) for seed in (7, 8)]
    folder = tmp_path / "other-run"
    settings = TrainSettings(steps=2, seed=5, batch_size=1, checkpoint_every=1)
    train_subject(runtime.base_model, photos, settings, checkpoint_dir=folder)
    return (folder / CHECKPOINT_FILE).read_bytes()


def test_another_trainings_checkpoint_is_set_aside_and_a_failed_ones_forgotten(
    runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id, subject_id, first = _subject(runtime)
    left = checkpoint_key(tenant_id, subject_id, 1)
    stale = _checkpoint_of_another_training(runtime, tmp_path)

    # Failed for good (an unreadable photo) with a checkpoint left under its version: it goes too.
    runtime.blobs.put(left, stale, content_type="application/octet-stream")
    with _unreadable(runtime, photo_key(tenant_id, subject_id, 1, "png")):
        assert _run(runtime, first) == "failed"
    assert not runtime.blobs.exists(left)

    # The next training has the same version (none succeeded); another run's checkpoint there is
    # set aside and the training starts over, instead of failing `checkpoint_mismatch` every time.
    runtime.blobs.put(left, stale, content_type="application/octet-stream")
    with caplog.at_level(logging.WARNING, logger="roomfit.worker"):
        assert _run(runtime, _again(runtime, tenant_id, subject_id)) == "succeeded"
    assert "another training's; starting over" in caplog.text
    subject = _row(runtime, Subject, subject_id)
    assert (subject.status, subject.adapter_version) == ("ready", 1)
    assert not runtime.blobs.exists(left)


def test_a_job_given_up_tells_the_shops_webhook(runtime: Runtime) -> None:
    _, by_reconciler, killed = _subject(runtime, webhook=True)
    with runtime.session() as session:  # its worker was killed three times; the last lease ran out
        session.execute(
            update(Job)
            .where(Job.id == killed)
            .values(status="running", attempts=3, worker="gone:1", lease_expires_at=utcnow() - timedelta(1))
        )
        session.commit()
    reconcile_once(runtime)
    _, by_claim, queued = _subject(runtime, webhook=True)
    with runtime.session() as session:  # re-sent after its third attempt, not yet given up
        session.execute(update(Job).where(Job.id == queued).values(attempts=3))
        session.commit()
    assert _run(runtime, queued) == "skipped"

    with runtime.session() as session:
        deliveries = session.scalars(select(WebhookDelivery)).all()
        told = sorted((d.event, d.payload["data"]["id"]) for d in deliveries)
    assert told == sorted([("subject.failed", by_reconciler), ("subject.failed", by_claim)])
    for subject_id in (by_reconciler, by_claim):
        assert _row(runtime, Subject, subject_id).error_code == "too_many_attempts"


def test_a_photo_missing_from_the_store_fails_the_training_as_unreadable(runtime: Runtime) -> None:
    """The store lost a photo (its subject still there): the training fails for good, saying which
    photo, as a damaged one does; it used to fail as an internal error."""
    tenant_id, subject_id, job_id = _subject(runtime)
    runtime.blobs.delete(photo_key(tenant_id, subject_id, 1, "png"))
    assert _run(runtime, job_id) == "failed"
    job = _row(runtime, Job, job_id)
    assert job.error_code == "image_unreadable"
    assert job.error_message == "photo 1 is missing from the blob store"
    assert _row(runtime, Subject, subject_id).status == "failed"


def test_a_training_past_its_deadline_while_storing_leaves_no_adapter_file(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline passes while the adapter is uploaded: the job times out before the subject
    takes the file, so nothing will ever read it. It goes, and the subject's current adapter stays."""
    tenant_id, subject_id, first = _subject(runtime)
    assert _run(runtime, first) == "succeeded"
    v1 = _row(runtime, Subject, subject_id).adapter_key
    second = _again(runtime, tenant_id, subject_id)
    v2 = adapter_key(tenant_id, subject_id, 2)

    contexts: list[JobContext] = []
    real_train, real_put = train_job._train, runtime.blobs.put

    def remembered(ctx: JobContext, job: Job, version: int, folder: Path) -> None:
        contexts.append(ctx)
        real_train(ctx, job, version, folder)

    def slow_put(key: str, data: bytes, **kwargs: object) -> None:
        real_put(key, data, **kwargs)  # type: ignore[arg-type]
        if key == v2:  # the upload took until past the job's deadline
            contexts[0].deadline = 0.0

    monkeypatch.setattr(train_job, "_train", remembered)
    monkeypatch.setattr(runtime.blobs, "put", slow_put)
    assert _run(runtime, second) == "failed"
    monkeypatch.undo()

    assert _row(runtime, Job, second).error_code == "timeout"
    subject = _row(runtime, Subject, subject_id)
    assert (subject.adapter_key, subject.adapter_version) == (v1, 1)
    assert runtime.blobs.exists(v1)
    assert not runtime.blobs.exists(v2)
