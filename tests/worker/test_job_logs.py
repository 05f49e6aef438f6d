"""The job runner's log lines name the job, its tenant and its subject (core.logs), those of the work
it runs included, in-process on SQLite; the ids end with the job."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from core import logs
from core.tables import Job
from tests.worker.conftest import training_job
from tests.worker.test_job_runner import _load, runtime  # noqa: F401 (a fixture)
from worker.job_runner import JobContext, JobFailed, run_job
from worker.runtime import Runtime


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    written = io.StringIO()
    handler = logs.configure("INFO", "json", written, force=True)
    assert handler is not None
    yield written
    logs.remove(handler)
    root.setLevel(level)


def test_a_job_s_lines_carry_its_ids(runtime: Runtime, out: io.StringIO) -> None:  # noqa: F811
    job_id = training_job(runtime)
    job, _ = _load(runtime, job_id)

    def work(ctx: JobContext, job: Job) -> None:
        logging.getLogger("roomfit.models").info("annotating photo 0")
        raise JobFailed("no_object_found", "no object found in photo 0")

    assert run_job(runtime, job_id, work) == "failed"
    logging.getLogger("roomfit.worker").info("waiting for the next task")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ids = {"job_id": job_id, "tenant_id": job.tenant_id, "subject_id": job.subject_id}
    by_message = {line["message"]: line for line in lines}
    for message in (
        f"job {job_id} (train) attempt 1 started",
        "annotating photo 0",
        f"job {job_id} failed: no_object_found: no object found in photo 0",
    ):
        assert {k: by_message[message].get(k) for k in ids} == ids, message
    ended = next(
        line for message, line in by_message.items() if message.startswith(f"job {job_id} failed in")
    )
    assert {k: ended.get(k) for k in ids} == ids
    assert not set(by_message["waiting for the next task"]) & set(logs.IDS)
