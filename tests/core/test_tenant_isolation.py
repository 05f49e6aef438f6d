"""Tenant isolation: no query of tenant A, made through the repository, returns tenant B's rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.db import make_engine, session_factory
from core.ids import new_id
from core.migrate import upgrade
from core.repository import TenantMismatch, TenantRepository
from core.tables import (
    TENANT_TABLES,
    ApiKey,
    Base,
    IdempotencyRecord,
    Job,
    Preview,
    Subject,
    SubjectPhoto,
    Tenant,
    Webhook,
    WebhookDelivery,
)

SUBJECT_EXTERNAL_ID = "SKU-1"  # the same SKU in both shops: lookups must still not cross


def _rows_for(tenant_id: str) -> list[Base]:
    """One row of every tenant table for this tenant (children after their parents)."""
    subject = Subject(id=new_id("sub"), tenant_id=tenant_id, name="sofa", external_id=SUBJECT_EXTERNAL_ID)
    return [
        ApiKey(id=new_id("key"), tenant_id=tenant_id, kind="secret", key_hash=new_id("h"), display="sk_x"),
        subject,
        SubjectPhoto(
            id=new_id("pho"),
            tenant_id=tenant_id,
            subject_id=subject.id,
            index=0,
            blob_key="k",
            width=8,
            height=8,
        ),
        Job(id=new_id("job"), tenant_id=tenant_id, kind="train", subject_id=subject.id),
        Preview(
            id=new_id("prv"),
            tenant_id=tenant_id,
            subject_id=subject.id,
            seed=1,
            width=8,
            height=8,
            room_key="r",
            mask_key="m",
        ),
        Webhook(id=new_id("whk"), tenant_id=tenant_id, url="https://shop.example/hook", secret="s"),
        WebhookDelivery(id=new_id("whd"), tenant_id=tenant_id, event="subject.ready"),
        IdempotencyRecord(
            id=new_id("idm"),
            tenant_id=tenant_id,
            api_key_id="key_x",
            key=new_id("ik"),
            method="POST",
            path="/v1/subjects",
            request_hash="0" * 64,
            expires_at=utcnow() + timedelta(hours=24),
        ),
    ]


@pytest.fixture
def two_tenants(database_url: str) -> Iterator[tuple[Callable[[], Session], dict[str, dict[type, Any]]]]:
    upgrade(database_url)
    engine: Engine = make_engine(database_url)
    make_session = session_factory(engine)
    rows: dict[str, dict[type, Any]] = {}
    with make_session() as session:
        for name in ("a", "b"):
            tenant = Tenant(id=new_id("ten"), name=name)
            session.add(tenant)
            session.flush()
            rows[name] = {}
            for row in _rows_for(tenant.id):
                session.add(row)
                session.flush()
                rows[name][type(row)] = row
            rows[name][Tenant] = tenant
        session.commit()
    yield make_session, rows
    engine.dispose()


def test_tenant_tables_lists_every_table_with_a_tenant() -> None:
    with_tenant = {t.name for t in Base.metadata.tables.values() if "tenant_id" in t.c}
    assert with_tenant == {m.__tablename__ for m in TENANT_TABLES}


@pytest.mark.parametrize("model", TENANT_TABLES, ids=lambda m: m.__tablename__)
def test_generic_queries_stay_in_their_tenant(two_tenants: Any, model: type[Base]) -> None:
    make_session, rows = two_tenants
    a, b = rows["a"], rows["b"]
    with make_session() as session:
        repo_a = TenantRepository(session, a[Tenant].id)
        assert [r.id for r in repo_a.list(model)] == [a[model].id]
        assert repo_a.count(model) == 1
        assert repo_a.get(model, a[model].id) is not None
        assert repo_a.get(model, b[model].id) is None
        assert session.scalars(repo_a.select(model)).all() == [repo_a.get(model, a[model].id)]


def test_domain_queries_stay_in_their_tenant(two_tenants: Any) -> None:
    make_session, rows = two_tenants
    a, b = rows["a"], rows["b"]
    with make_session() as session:
        repo_a = TenantRepository(session, a[Tenant].id)
        page, cursor = repo_a.subjects_page(status=None, limit=10, cursor=None)
        assert [s.id for s in page] == [a[Subject].id] and cursor is None
        found = repo_a.subject_by_external_id(SUBJECT_EXTERNAL_ID)
        assert found is not None and found.id == a[Subject].id
        assert repo_a.previews_of_subject(b[Subject].id) == []
        assert repo_a.jobs_of_subject(b[Subject].id) == []
        assert [p.id for p in repo_a.previews_of_subject(a[Subject].id)] == [a[Preview].id]


def test_repository_refuses_another_tenants_rows(two_tenants: Any) -> None:
    make_session, rows = two_tenants
    a, b = rows["a"], rows["b"]
    with make_session() as session:
        repo_a = TenantRepository(session, a[Tenant].id)
        foreign = session.get(Subject, b[Subject].id)
        with pytest.raises(TenantMismatch):
            repo_a.delete(foreign)
        with pytest.raises(TenantMismatch):
            repo_a.add(Subject(id=new_id("sub"), tenant_id=b[Tenant].id, name="x"))
        stamped = repo_a.add(Subject(id=new_id("sub"), name="mine"))
        assert stamped.tenant_id == a[Tenant].id


def test_subject_pages_walk_newest_first(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as session:
        tenant = Tenant(id=new_id("ten"), name="shop")
        session.add(tenant)
        ids = []
        for i in range(5):
            subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name=f"s{i}")
            session.add(subject)
            ids.append(subject.id)
        session.commit()
        repo = TenantRepository(session, tenant.id)
        seen, cursor = [], None
        while True:
            page, cursor = repo.subjects_page(status=None, limit=2, cursor=cursor)
            seen += [s.id for s in page]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)
    engine.dispose()
