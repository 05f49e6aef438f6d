"""`roomfit tenants delete` works in an order (core.tenant_deletion): the shop's keys revoked and
committed first, then its queued and running jobs cancelled and committed, then its blobs, then its
rows, then its blobs again, for a worker that was finishing meanwhile may have written a result
under the shop's prefix. Each commit is watched as it happens, with a worker writing a result
after every one of them; nothing of the shop may be left."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from core.accounts import create_key, create_tenant
from core.blob_keys import tenant_prefix
from core.blobstore import LocalBlobStore
from core.db import make_engine, session_factory
from core.ids import new_id
from core.job_state import ACTIVE
from core.migrate import upgrade
from core.tables import ApiKey, Job, Subject, Tenant
from core.tenant_deletion import delete_tenant


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'roomfit.db'}"
    upgrade(url)
    made = make_engine(url)
    yield made
    made.dispose()


@dataclass(frozen=True)
class Moment:
    """The shop as another process sees it right after one of the deletion's commits."""

    tenant_listed: bool
    keys_usable: int
    jobs_active: int


def _seen(engine: Engine, tenant_id: str) -> Moment:
    with Session(engine) as fresh:
        return Moment(
            tenant_listed=fresh.get(Tenant, tenant_id) is not None,
            keys_usable=int(
                fresh.scalar(
                    select(func.count())
                    .select_from(ApiKey)
                    .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                )
                or 0
            ),
            jobs_active=int(
                fresh.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
                )
                or 0
            ),
        )


def test_keys_then_jobs_are_settled_before_the_blobs_go_and_late_results_go_too(
    engine: Engine, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    with session_factory(engine)() as session:
        shop = create_tenant(session, "shop-a")
        create_key(session, kind="secret", tenant=shop)
        create_key(session, kind="publishable", tenant=shop, origins=["https://shop-a.example"])
        session.flush()
        subject = Subject(id=new_id("sub"), tenant_id=shop.id, name="sofa", status="training")
        session.add(subject)
        session.flush()
        for status in ("queued", "running"):
            session.add(
                Job(id=new_id("job"), tenant_id=shop.id, kind="train", subject_id=subject.id, status=status)
            )
        session.commit()
        prefix = tenant_prefix(shop.id)
        blobs.put(prefix + f"subjects/{subject.id}/photos/0.png", b"a product photo")
        late = prefix + "previews/prv_late/result.png"

        moments: list[Moment] = []

        def after_commit(_: Any) -> None:
            moments.append(_seen(engine, shop.id))
            # A worker painting for the shop finishes now, before its next heartbeat tells it to stop.
            blobs.put(late, b"a shopper's room, painted")

        event.listen(session, "after_commit", after_commit)
        deleted = delete_tenant(session, blobs, shop)
        event.remove(session, "after_commit", after_commit)

    assert (deleted.keys, deleted.jobs_cancelled) == (2, 2)
    listed = [moment for moment in moments if moment.tenant_listed]
    assert listed, moments
    # The first commit already refuses the shop's keys: nothing new arrives while the rest runs.
    assert listed[0].keys_usable == 0, moments
    # By the last commit before its rows go (and its blobs with them), no job of it is left to run.
    assert listed[-1] == Moment(tenant_listed=True, keys_usable=0, jobs_active=0), moments
    assert not moments[-1].tenant_listed
    # The result written after the rows were gone is deleted too: no photo that nothing leads to.
    assert blobs.list(prefix) == []
