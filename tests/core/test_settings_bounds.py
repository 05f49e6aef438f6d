"""Settings that pass their check must work where they are read: nonsense is refused at start
(`invalid_settings`), never accepted and then crashing a worker's reconciler, a claim, an
idempotent POST or the logging set-up later.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core import heartbeats, job_state
from core.clock import utcnow
from core.ids import new_id
from core.settings import Settings
from core.tables import Job, Subject, Tenant

# "Keep gone workers listed for ever", "a lease that never runs out", "keys kept for a century":
# values an operator may well write, each far past what a timedelta added to now can hold.
HUGE = 1e12


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _accepted(name: str, value: float) -> Settings | None:
    """The settings with `name=value`, or None when that value is refused."""
    try:
        return _settings(**{name: value})
    except ValidationError:
        return None


@pytest.mark.parametrize("value", [HUGE, float("inf")])
def test_a_worker_forget_window_is_refused_or_usable(session: Session, value: float) -> None:
    """worker.reconciler prunes heartbeats first in each pass: an OverflowError there fails every
    pass, so lost jobs were never re-sent and retention never ran."""
    settings = _accepted("worker_forget_seconds", value)
    if settings is None:
        return
    heartbeats.record(session, "w1", utcnow(), 5.0, host="h", pid=1, queues=["preview"])
    session.commit()
    heartbeats.prune(session, utcnow(), settings.worker_forget_seconds)
    listed = heartbeats.listed(session, utcnow(), settings.worker_forget_seconds)
    assert [w.row.name for w in listed] == ["w1"]


def test_the_longest_accepted_forget_window_works(session: Session) -> None:
    longest = _largest("worker_forget_seconds")
    heartbeats.prune(session, utcnow(), longest)
    assert heartbeats.listed(session, utcnow(), longest) == []


def _largest(name: str) -> float:
    """The field's upper bound (`le`), or HUGE when it has none."""
    for rule in Settings.model_fields[name].metadata:
        if getattr(rule, "le", None) is not None:
            return float(rule.le)
    return HUGE


@pytest.mark.parametrize("lease", [HUGE, "largest"])
def test_a_lease_is_refused_or_a_job_can_be_claimed_under_it(session: Session, lease: float | str) -> None:
    value = _largest("lease_seconds") if lease == "largest" else lease
    settings = _accepted("lease_seconds", value)
    if settings is None:
        return
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    session.add(tenant)
    session.flush()
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    session.add(subject)
    session.flush()
    job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, status="queued")
    session.add(job)
    session.commit()
    held = job_state.claim(session, job.id, "w1", settings.lease_seconds, settings.max_attempts)
    assert held is not None


@pytest.mark.parametrize("hours", [HUGE, "largest"])
def test_idempotency_hours_are_refused_or_a_record_can_expire(hours: float | str) -> None:
    """api.idempotency stamps each record `expires_at = now + timedelta(hours=idempotency_hours)`."""
    value = _largest("idempotency_hours") if hours == "largest" else hours
    settings = _accepted("idempotency_hours", int(value))
    if settings is None:
        return
    assert utcnow() + timedelta(hours=settings.idempotency_hours) > utcnow()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_upload_bytes", 0),
        ("max_upload_bytes", -1),
        ("max_pixels", 0),
        ("max_pixels", -5),
        ("log_level", "LOUD"),
        ("log_level", ""),
        ("rate_limit", "nonsense"),
        ("rate_limit", "0/minute"),
    ],
)
def test_nonsense_is_refused_when_settings_are_read(name: str, value: object) -> None:
    with pytest.raises(ValidationError, match=name):
        _settings(**{name: value})


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR", "CRITICAL"])
def test_a_log_level_accepted_is_one_logging_knows(level: str) -> None:
    settings = _settings(log_level=level)
    logging.getLogger("roomfit.test-review").setLevel(settings.log_level.upper())


def test_the_defaults_and_usual_values_still_pass() -> None:
    settings = _settings(
        rate_limit="600/minute", log_level="info", worker_forget_seconds=600, lease_seconds=6
    )
    assert settings.rate_limit == "600/minute" and settings.worker_forget_seconds == 600
