"""A cancel that meets work already done (core.job_state.request_cancel): its job is cancelled, but
a subject that is already ready keeps its status and adapter, and a preview that already succeeded
keeps its status and result (core.subjects / core.previews `mark_cancelled`). That is what ops or a
shop's deletion sees when a worker's last commit lands between reading the job and cancelling it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.ids import new_id
from core.job_state import request_cancel
from core.tables import Job, Preview, Subject, Tenant


def _ready_subject(session: Session) -> Subject:
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    session.add(tenant)
    session.flush()
    subject = Subject(
        id=new_id("sub"),
        tenant_id=tenant.id,
        name="sofa",
        status="ready",
        progress=1.0,
        adapter_version=1,
        adapter_key=f"tenants/{tenant.id}/subjects/x/adapter/1.safetensors",
    )
    session.add(subject)
    session.flush()
    return subject


def test_a_ready_subject_keeps_its_adapter_when_its_training_is_cancelled(session: Session) -> None:
    subject = _ready_subject(session)
    job = Job(
        id=new_id("job"), tenant_id=subject.tenant_id, kind="train", subject_id=subject.id, status="running"
    )
    session.add(job)
    session.commit()

    request_cancel(session, job)
    session.commit()
    session.refresh(subject)
    assert job.status == "cancelled"
    assert (subject.status, subject.adapter_version) == ("ready", 1) and subject.adapter_key


def test_a_succeeded_preview_keeps_its_result_when_its_job_is_cancelled(session: Session) -> None:
    subject = _ready_subject(session)
    preview_id, job_id = new_id("prv"), new_id("job")
    preview = Preview(
        id=preview_id,
        tenant_id=subject.tenant_id,
        subject_id=subject.id,
        job_id=job_id,
        status="succeeded",
        progress=1.0,
        seed=1,
        width=64,
        height=48,
        room_key="room",
        mask_key="mask",
        result_key="result",
    )
    job = Job(
        id=job_id,
        tenant_id=subject.tenant_id,
        kind="preview",
        subject_id=subject.id,
        preview_id=preview_id,
        status="running",
    )
    session.add_all([preview, job])
    session.commit()

    request_cancel(session, job)
    session.commit()
    session.refresh(preview)
    assert job.status == "cancelled"
    assert (preview.status, preview.result_key) == ("succeeded", "result")
