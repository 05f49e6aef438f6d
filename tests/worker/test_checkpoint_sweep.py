"""A training's checkpoints on a worker's disk outlive it only while a job may resume them: the
reconciler pass deletes those of subjects with no training queued or running (worker.checkpoint_sweep)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from core.ids import new_id
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job, Subject, Tenant
from worker.checkpoint_sweep import checkpoint_folder, forget_stale_checkpoints
from worker.reconciler import reconcile_once
from worker.runtime import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(_env_file=None, var_dir=tmp_path / "var")  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    yield Runtime(settings)


def _training(runtime: Runtime, status: str) -> str:
    """A subject with one training job in `status`, and a checkpoint of it on this machine."""
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
        subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa", tenant=tenant)
        job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, tenant=tenant)
        session.add_all([tenant, subject, job])
        session.commit()
        session.execute(update(Job).where(Job.id == job.id).values(status=status))
        session.commit()
        subject_id = subject.id
    folder = checkpoint_folder(runtime.settings.var_dir, subject_id, 1)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"weights and optimizer state")
    return subject_id


def _left(runtime: Runtime) -> list[str]:
    return sorted(p.name for p in (runtime.settings.var_dir / "checkpoints").iterdir())


def test_the_reconciler_deletes_checkpoints_no_job_will_resume(runtime: Runtime) -> None:
    queued, running = _training(runtime, "queued"), _training(runtime, "running")
    failed, cancelled = _training(runtime, "failed"), _training(runtime, "cancelled")
    done = _training(runtime, "succeeded")
    stray = runtime.settings.var_dir / "checkpoints" / "notes"  # not a checkpoint's name: not ours
    stray.mkdir()

    reconcile_once(runtime)

    assert _left(runtime) == sorted([f"{queued}-v1", f"{running}-v1", "notes"])
    for gone in (failed, cancelled, done):
        assert not checkpoint_folder(runtime.settings.var_dir, gone, 1).exists()
    assert (checkpoint_folder(runtime.settings.var_dir, running, 1) / "checkpoint.pt").is_file()


def test_a_checkpoint_of_an_older_version_goes_once_the_subjects_training_ends(runtime: Runtime) -> None:
    subject = _training(runtime, "running")
    older = checkpoint_folder(runtime.settings.var_dir, subject, 0)
    older.mkdir()  # left by an earlier training of the same subject
    with runtime.session() as session:
        assert forget_stale_checkpoints(session, runtime.settings.var_dir) == []
        session.execute(update(Job).where(Job.subject_id == subject).values(status="failed"))
        session.commit()
        assert forget_stale_checkpoints(session, runtime.settings.var_dir) == [
            f"{subject}-v0",
            f"{subject}-v1",
        ]
    assert _left(runtime) == []


def test_a_machine_that_never_trained_has_nothing_to_sweep(runtime: Runtime) -> None:
    with runtime.session() as session:
        assert forget_stale_checkpoints(session, runtime.settings.var_dir) == []
