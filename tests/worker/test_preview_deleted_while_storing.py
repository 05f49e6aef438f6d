"""A preview deleted (as DELETE /v1/previews/{id} does: its job cancelled, its row gone) just as its
result is stored: the result is dropped with it, and the job is counted as cancelled, not as a
preview painted (roomfit_jobs_total)."""

from __future__ import annotations

from pathlib import Path

from core.blob_keys import preview_prefix, preview_result_key
from core.job_state import request_cancel
from core.tables import Job, Preview
from tests.worker.conftest import make_tenant, painting_runtime, submit_preview
from tests.worker.stack import ready_subject_with_random_adapter
from worker import metrics
from worker.preview_job import render_previews


def _count(status: str) -> float:
    return metrics.JOBS.labels("preview", status)._value.get()


def test_a_preview_deleted_as_its_result_is_stored_is_counted_cancelled(
    tmp_path: Path, shared_models_dir: Path
) -> None:
    with painting_runtime(tmp_path, shared_models_dir) as runtime:
        tenant_id = make_tenant(runtime)  # type: ignore[arg-type]
        subject_id = ready_subject_with_random_adapter(runtime, tenant_id, shared_models_dir)  # type: ignore[arg-type]
        preview_id, job_id, _, _ = submit_preview(runtime, tenant_id, subject_id)  # type: ignore[arg-type]
        result_key = preview_result_key(tenant_id, preview_id)
        blobs = runtime.blobs
        put = blobs.put

        def put_then_delete_the_preview(key: str, data: bytes, **kwargs: object) -> None:
            put(key, data, **kwargs)  # type: ignore[arg-type]
            if key == result_key:  # the shop deletes the preview at this moment
                with runtime.session() as session:
                    job, preview = session.get(Job, job_id), session.get(Preview, preview_id)
                    assert job is not None and preview is not None
                    request_cancel(session, job)
                    session.delete(preview)
                    session.commit()
                blobs.delete_prefix(preview_prefix(tenant_id, preview_id))

        blobs.put = put_then_delete_the_preview  # type: ignore[method-assign]
        succeeded, cancelled = _count("succeeded"), _count("cancelled")

        outcomes = render_previews(runtime, job_id)

        assert outcomes == ["cancelled"]
        assert (_count("succeeded"), _count("cancelled")) == (succeeded, cancelled + 1)
        assert blobs.list(preview_prefix(tenant_id, preview_id)) == []
        with runtime.session() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "cancelled"
