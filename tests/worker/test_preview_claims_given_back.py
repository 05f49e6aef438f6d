"""Previews claimed as a batch that a database blip stops before any painting are given back at
once, their attempts unspent. They used to wait out their leases, an attempt spent each: three blips
failed healthy previews as too_many_attempts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from core import job_state
from core.clock import utcnow
from core.tables import Job
from tests.worker.conftest import make_tenant, painting_runtime, submit_preview
from tests.worker.stack import ready_subject_with_random_adapter
from worker import preview_job


def _blip(*_args: object, **_kwargs: object) -> None:
    raise OperationalError("SELECT jobs ...", {}, Exception("server closed the connection"))


@pytest.mark.parametrize("where", ["claiming the batch's second", "starting the claimed"])
def test_a_batch_stopped_by_a_database_blip_gives_its_claims_back(
    tmp_path: Path, shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    with painting_runtime(tmp_path, shared_models_dir, preview_batch=4, adapter_slots=4) as runtime:
        tenant_id = make_tenant(runtime)  # type: ignore[arg-type]
        subject_id = ready_subject_with_random_adapter(runtime, tenant_id, shared_models_dir)  # type: ignore[arg-type]
        jobs = [submit_preview(runtime, tenant_id, subject_id, seed=i)[1] for i in range(2)]  # type: ignore[arg-type]
        if where == "starting the claimed":
            monkeypatch.setattr(preview_job, "start_job", _blip)
        else:  # the batch's first claim made (claim_next may ask claim_fairest itself), then a blip
            real, claimed = job_state.claim_fairest, []

            def first_then_blip(*args: object, **kwargs: object) -> object:
                if claimed:
                    _blip()
                held = real(*args, **kwargs)  # type: ignore[arg-type]
                claimed.extend([held] if held is not None else [])
                return held

            monkeypatch.setattr(job_state, "claim_fairest", first_then_blip)

        with pytest.raises(OperationalError):
            preview_job.render_previews(runtime, jobs[0])
        monkeypatch.undo()

        with runtime.session() as session:
            for job_id in jobs:
                row = session.get(Job, job_id)
                assert row is not None and row.attempts == 0, (job_id, row and row.attempts)
                assert row.lease_expires_at is None or row.lease_expires_at <= utcnow()
        # each job's own message, as the broker still holds them: both painted now, none refused
        outcomes = [o for job_id in jobs for o in preview_job.render_previews(runtime, job_id)]
        assert sorted(o for o in outcomes if o != "skipped") == ["succeeded", "succeeded"]
