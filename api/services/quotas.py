"""Quotas: how much one tenant, or one publishable key, may have waiting at once.

A publishable key is public (it sits in every shopper's browser, and `Origin` is easy to fake outside
one), so what it can queue is bounded, and lower than what a shop's own secret key may queue. The
counts are read before the new job is added: two requests at the very same moment may both pass
the last free place, which overshoots a cap by a request or two and never by a burst.
"""

from __future__ import annotations

from api.problems import TOO_MANY_JOBS, VALIDATION_ERROR
from core.repository import TenantRepository
from core.settings import Settings

RETRY_AFTER_SECONDS = "10"  # about one preview's time: a place is free again by then


def check_preview_quota(repo: TenantRepository, settings: Settings, key_id: str, publishable: bool) -> None:
    if repo.active_jobs("preview") >= settings.max_queued_previews_per_tenant:
        raise TOO_MANY_JOBS(
            f"this shop has {settings.max_queued_previews_per_tenant} previews waiting; "
            "retry when one is done",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    if publishable and repo.active_previews_of_key(key_id) >= settings.max_queued_previews_per_key:
        raise TOO_MANY_JOBS(
            f"this key has {settings.max_queued_previews_per_key} previews waiting; retry when one is done",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


def check_training_quota(repo: TenantRepository, settings: Settings) -> None:
    if repo.active_jobs("train") >= settings.max_queued_trainings_per_tenant:
        raise TOO_MANY_JOBS(
            f"this shop has {settings.max_queued_trainings_per_tenant} subjects waiting to train; "
            "retry when one is done",
            headers={"Retry-After": "60"},
        )


def check_steps(steps: int | None, settings: Settings, publishable: bool) -> None:
    """Publishable keys get a lower ceiling on sampling steps: the painting time a stranger may ask."""
    if publishable and steps is not None and steps > settings.publishable_max_steps:
        raise VALIDATION_ERROR(f"steps: at most {settings.publishable_max_steps} with a publishable key")
