"""A preview taken over by another worker (this one's lease ran out between its paint and storing the
result: a long pause) while its subject became ready: the other worker decides again, paints with the
adapter, records `adapter` and version 1, and succeeds. The first worker, which painted zero-shot, must
then store nothing: its PNG written over the other's would leave a result painted zero-shot under a
row that says `adapter` (docs/api.md, "When the mode is fixed")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.blob_keys import preview_result_key
from core.clock import utcnow
from core.tables import Job, Preview, Subject
from tests.worker.conftest import add_photos, make_tenant, painting_runtime, product_photo, submit_preview
from tests.worker.stack import ready_subject_with_random_adapter
from worker import preview_job
from worker.preview_job import render_previews

OTHER_WORKER = "other-host:1"


def test_a_taken_over_preview_keeps_the_result_its_row_describes(
    tmp_path: Path, shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lease_seconds: this worker's own heartbeat thread does not beat during the test
    with painting_runtime(tmp_path, shared_models_dir, lease_seconds=3600) as runtime:
        tenant_id = make_tenant(runtime)  # type: ignore[arg-type]
        subject_id = ready_subject_with_random_adapter(runtime, tenant_id, shared_models_dir)  # type: ignore[arg-type]
        with runtime.session() as session:
            add_photos(session, runtime.blobs, tenant_id, subject_id, [product_photo(i) for i in range(2)])
            # Still training (its adapter v1 not ready yet): an `auto` preview is painted zero-shot.
            session.execute(update(Subject).where(Subject.id == subject_id).values(status="training"))
            session.commit()
        preview_id, job_id, _, _ = submit_preview(runtime, tenant_id, subject_id)  # type: ignore[arg-type]
        result_key = preview_result_key(tenant_id, preview_id)

        store = preview_job._store_and_finish
        taken_over: list[bytes] = []  # the other worker's result, once it has stored it
        calls: list[str] = []

        def take_over_first(row: preview_job._Row, result: object, batch: dict[str, object]) -> None:
            calls.append(row.ctx.held.worker)
            if len(calls) > 1:  # the other worker's own store
                store(row, result, batch)  # type: ignore[arg-type]
                return
            assert row.plan.mode == "zero_shot"
            # This worker pauses past its lease; meanwhile the subject becomes ready and another
            # worker claims the preview, paints it with the adapter and finishes it.
            with runtime.session() as session:
                session.execute(update(Subject).where(Subject.id == subject_id).values(status="ready"))
                session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
                session.commit()
            own_name = runtime.name
            runtime.name = OTHER_WORKER
            try:
                assert render_previews(runtime, job_id) == ["succeeded"]
            finally:
                runtime.name = own_name
            taken_over.append(runtime.blobs.get(result_key))
            store(row, result, batch)  # type: ignore[arg-type]  # then this worker wakes up

        monkeypatch.setattr(preview_job, "_store_and_finish", take_over_first)
        assert render_previews(runtime, job_id) == ["lease_lost"]

        with runtime.session() as session:
            preview, job = session.get(Preview, preview_id), session.get(Job, job_id)
            assert preview is not None and job is not None
            assert (job.status, job.worker) == ("succeeded", OTHER_WORKER)
            assert (preview.status, preview.mode, preview.adapter_version) == ("succeeded", "adapter", 1)
        # The result is the one painted with the adapter, as the row says, not the zero-shot one.
        assert runtime.blobs.get(result_key) == taken_over[0]
