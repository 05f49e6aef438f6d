"""A worker's /metrics (worker/metrics.py): on a real worker process, each counter and histogram moves
by exactly the jobs it ran; and the in-process rules (which port, which attempt waited since when)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from core import job_state
from core.ids import new_id
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job, Tenant
from tests.worker.conftest import make_tenant, png_bytes, product_photo, submit_preview, submit_subject
from tests.worker.stack import Stack, ready_subject_with_random_adapter, wait_for
from worker import metrics
from worker.runtime import Runtime

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TRAIN_STEPS = 6  # COMMON_ENV's ROOMFIT_TRAIN_STEPS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _run(stack: Stack, job_id: str, timeout: float = 180) -> str:
    """Wait for one job at a time: each preview is then a batch of its own, its counts known."""
    return str(wait_for(lambda: stack.finished(Job, job_id), timeout, f"job {job_id} to finish").status)


@pytest.mark.integration
@pytest.mark.slow
def test_a_workers_metrics_move_by_exactly_the_jobs_it_ran(
    embedded_stack: Stack, shared_models_dir: Path
) -> None:
    stack = embedded_stack
    tenant_id = make_tenant(stack)
    first = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir, seed=3)
    second = ready_subject_with_random_adapter(stack, tenant_id, shared_models_dir, seed=4)
    port = _free_port()
    # One solo process for both queues: its one registry counts the training and the previews.
    worker = stack.start_worker(
        "train,preview", ROOMFIT_WORKER_METRICS_PORT=str(port), ROOMFIT_PREVIEW_BATCH="1"
    )
    worker.wait_ready()
    before = _scrape(port)

    _, train_job = submit_subject(stack, tenant_id)
    assert _run(stack, train_job) == "succeeded", worker.log()[-3000:]
    for subject_id in (first, second, first):  # two loads, then the first adapter from memory
        _, job_id, _, _ = submit_preview(stack, tenant_id, subject_id)
        assert _run(stack, job_id) == "succeeded", worker.log()[-3000:]
    # A room whose PNG is cut short: its header reads, its pixels do not, so the job fails alone.
    truncated = png_bytes(product_photo(5, size=(101, 77))[0])[:200]
    _, broken_job, _, _ = submit_preview(stack, tenant_id, first, room=(truncated, "image/png"))
    assert _run(stack, broken_job) == "failed", worker.log()[-3000:]
    after = _scrape(port)

    def moved(name: str, **labels: str) -> float:
        return _moved(before, after, name, **labels)

    assert moved("roomfit_jobs_total", kind="train", status="succeeded") == 1
    assert moved("roomfit_jobs_total", kind="preview", status="succeeded") == 3
    assert moved("roomfit_jobs_total", kind="preview", status="failed") == 1
    assert moved("roomfit_job_duration_seconds_count", kind="train") == 1
    assert moved("roomfit_job_duration_seconds_count", kind="preview") == 4
    assert moved("roomfit_queue_wait_seconds_count", kind="train") == 1
    assert moved("roomfit_queue_wait_seconds_count", kind="preview") == 4
    assert moved("roomfit_adapter_cache_total", result="miss") == 2
    assert moved("roomfit_adapter_cache_total", result="hit") == 1
    assert moved("roomfit_adapter_swap_seconds_count") == 3  # one per painted batch
    assert moved("roomfit_preview_batch_size_count") == 3  # the broken room was never painted
    assert moved("roomfit_preview_batch_size_bucket", le="1.0") == 3
    assert moved("roomfit_training_steps_total") == TRAIN_STEPS
    assert moved("roomfit_training_step_seconds_count") == TRAIN_STEPS
    assert moved("roomfit_training_step_seconds_sum") > 0
    assert 0 < moved("roomfit_job_duration_seconds_sum", kind="train") < 600


# --- in-process rules --------------------------------------------------------------------------


def test_metrics_are_off_unless_a_port_is_given_and_a_taken_port_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert metrics.serve(0, "127.0.0.1") is None
    with pytest.raises(ValidationError):
        Settings(worker_metrics_port="nine")  # refused when the settings are read: the worker says so
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.serve(port, "127.0.0.1") is None
    assert "not served" in caplog.text


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_first_run_waited_since_its_creation_a_later_one_since_its_last_send() -> None:
    made = datetime(2026, 1, 1, tzinfo=UTC)
    sent_again, claimed = made + timedelta(seconds=50), made + timedelta(seconds=60)
    sum_before = _value("roomfit_queue_wait_seconds_sum", kind="metrics-test")
    metrics.job_claimed("metrics-test", made, sent_again, claimed, ran_before=False)  # 60 s
    metrics.job_claimed("metrics-test", made, sent_again, claimed, ran_before=True)  # 10 s
    metrics.job_claimed("metrics-test", made, None, claimed, ran_before=True)  # never sent again: 60 s
    assert _value("roomfit_queue_wait_seconds_sum", kind="metrics-test") - sum_before == 130


def test_a_handed_back_job_is_claimed_again_as_one_that_ran_before(tmp_path: Path) -> None:
    """A hand-back does not count an attempt, so the next claim is attempt 1 again; its queue wait
    must still start at its re-send, not at its creation (through the whole first run)."""
    settings = Settings(_env_file=None, var_dir=tmp_path / "var")  # type: ignore[call-arg]
    upgrade(settings.resolved_database_url)
    runtime = Runtime(settings)
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
        session.add(tenant)
        session.flush()
        job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", params={})
        session.add(job)
        session.commit()
        first = job_state.claim(session, job.id, "w1", lease_seconds=60, max_attempts=3)
        assert first is not None and (first.attempt, first.ran_before) == (1, False)
        assert job_state.hand_back(session, first)
        again = job_state.claim(session, job.id, "w2", lease_seconds=60, max_attempts=3)
        assert again is not None and (again.attempt, again.ran_before) == (1, True)


def test_each_adapter_of_a_batch_is_one_hit_or_one_miss() -> None:
    hits = _value("roomfit_adapter_cache_total", result="hit")
    misses = _value("roomfit_adapter_cache_total", result="miss")
    metrics.batch_painted(size=4, adapters=3, loads=1, swap_seconds=0.01)
    metrics.batch_painted(size=2, adapters=1, loads=2, swap_seconds=0.0)  # reloaded within: one miss
    metrics.batch_painted(size=1, adapters=0, loads=0, swap_seconds=0.0)  # zero-shot: none
    assert _value("roomfit_adapter_cache_total", result="hit") - hits == 2
    assert _value("roomfit_adapter_cache_total", result="miss") - misses == 2


def test_only_a_jobs_ends_are_counted() -> None:
    before = {s: _value("roomfit_jobs_total", kind="metrics-test", status=s) for s in metrics.FINISHED}
    for outcome in ("succeeded", "lease_lost", "retrying", "handed_back", "skipped"):
        metrics.job_ended("metrics-test", outcome, claimed=0.0)
    moved = {s: _value("roomfit_jobs_total", kind="metrics-test", status=s) - v for s, v in before.items()}
    assert moved == {"succeeded": 1, "failed": 0, "cancelled": 0, "handed_back": 1}
