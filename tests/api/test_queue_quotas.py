"""Quotas (api.services.quotas): how much one shop, or one publishable key, may have waiting at once,
and the lower steps ceiling of a publishable key. Past a cap: 429 `too_many_jobs` with Retry-After;
a place is free again once a job ends; another shop is never held back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from core.tables import Job, Preview
from tests.api.conftest import (
    ApiEnv,
    Shop,
    build_env,
    make_settings,
    photos_files,
    post_preview,
    ready_subject,
)


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ApiEnv]:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'roomfit.db'}",
        max_queued_previews_per_tenant=3,
        max_queued_previews_per_key=2,
        max_queued_trainings_per_tenant=2,
        publishable_max_steps=10,
    )
    yield from build_env(settings)


def _too_many(response: Any, retry_after: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_jobs"
    assert response.headers["retry-after"] == retry_after


def test_previews_waiting_are_capped_per_publishable_key_and_per_shop(capped: ApiEnv) -> None:
    env = capped
    sid = ready_subject(env, env.a)
    made = [post_preview(env, env.a, sid, "publishable") for _ in range(2)]
    assert [r.status_code for r in made] == [202, 202]
    _too_many(post_preview(env, env.a, sid, "publishable"), "10")  # the key's share is taken
    # The shop's own secret key is not bound by the public key's share, only by the shop's.
    assert post_preview(env, env.a, sid).status_code == 202
    _too_many(post_preview(env, env.a, sid), "10")  # three waiting: the shop's cap
    assert post_preview(env, env.b, ready_subject(env, env.b)).status_code == 202  # another shop goes on

    ended = made[0].json()["id"]
    with env.session() as session:  # a worker painted one of the key's previews
        session.execute(update(Preview).where(Preview.id == ended).values(status="succeeded"))
        session.execute(update(Job).where(Job.preview_id == ended).values(status="succeeded"))
        session.commit()
    assert post_preview(env, env.a, sid, "publishable").status_code == 202


def test_subjects_waiting_to_train_are_capped_per_shop(capped: ApiEnv) -> None:
    env = capped

    def create(shop: Shop) -> Any:
        return env.client.post(
            "/v1/subjects", headers=shop.auth(), data={"name": "sofa"}, files=photos_files(1)
        )

    assert [create(env.a).status_code for _ in range(2)] == [202, 202]
    _too_many(create(env.a), "60")
    assert create(env.b).status_code == 202


def test_a_publishable_key_asks_for_at_most_its_steps(capped: ApiEnv) -> None:
    env = capped
    sid = ready_subject(env, env.a)
    assert post_preview(env, env.a, sid, "publishable", steps=10).status_code == 202
    refused = post_preview(env, env.a, sid, "publishable", steps=11)
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error", refused.text
    assert post_preview(env, env.a, sid, steps=11).status_code == 202  # a secret key: the general ceiling
