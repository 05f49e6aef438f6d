"""The API's hot-path reader on a real PostgreSQL (core.async_db.PostgresReader, asyncpg): rows as the
sync engine gives them, a server that dropped its connections, a server that is not there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, literal, select
from sqlalchemy.exc import OperationalError

from core.accounts import ACTIVE_KEY, create_key, create_tenant, hash_key
from core.async_db import PostgresReader, async_reader, conninfo, first, read_target
from core.db import make_engine, session_factory
from core.ids import new_id
from core.migrate import upgrade
from core.repository import key_with_row
from core.settings import InvalidSetting
from core.tables import Preview, Subject
from tests.loops import run_async
from tests.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(fresh_postgres_url: str) -> tuple[str, str, str]:
    """A database with one tenant, a key with two origins and a preview with timings: its URL, the
    key's plaintext and the preview's id."""
    upgrade(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    with session_factory(engine)() as session:
        tenant = create_tenant(session, "shop")
        _, key = create_key(
            session, kind="publishable", tenant=tenant, origins=["https://a.example", "https://b.example"]
        )
        subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa", status="ready")
        session.add(subject)
        session.flush()  # no relationship() orders the two inserts
        preview = Preview(
            id=new_id("prv"),
            tenant_id=tenant.id,
            subject_id=subject.id,
            status="succeeded",
            progress=1.0,
            seed=7,
            steps=20,
            width=64,
            height=48,
            room_key="r",
            mask_key="m",
            timings={"paint_seconds": 0.25, "stages": ["load", "paint"]},
        )
        session.add(preview)
        session.commit()
        preview_id = preview.id
    engine.dispose()
    return fresh_postgres_url, key, preview_id


def test_rows_are_what_the_sync_engine_reads(seeded: tuple[str, str, str]) -> None:
    url, key, preview_id = seeded
    engine = make_engine(url)
    statement = key_with_row(Preview)
    values = {"key_hash": hash_key(key), "id": preview_id}
    with engine.connect() as connection:
        expected = connection.execute(statement, values).one()

    async def read() -> object:
        reader = PostgresReader(conninfo(engine), 2)
        try:
            return await first(reader, statement, values)
        finally:
            await reader.dispose()

    row = run_async(read())
    engine.dispose()
    assert row is not None
    assert row._asdict() == expected._asdict()  # type: ignore[attr-defined]
    # the columns that a driver could hand back differently: JSON, time, float, NULL
    assert row.key_origins == ["https://a.example", "https://b.example"]  # type: ignore[attr-defined]
    assert row.timings == {"paint_seconds": 0.25, "stages": ["load", "paint"]}  # type: ignore[attr-defined]
    assert isinstance(row.created_at, datetime) and row.created_at.utcoffset() == UTC.utcoffset(None)  # type: ignore[attr-defined]
    assert row.progress == 1.0 and row.result_key is None  # type: ignore[attr-defined]


def test_connections_the_server_dropped_are_replaced(seeded: tuple[str, str, str]) -> None:
    url, key, _ = seeded
    engine = make_engine(url)
    dsn = conninfo(engine)
    engine.dispose()

    async def read_twice_with_a_restart_between() -> tuple[object, object, int]:
        reader = PostgresReader(dsn, size=3)
        try:
            # three reads at once: three idle connections kept
            await asyncio.gather(*(reader.rows(ACTIVE_KEY, {"key_hash": hash_key(key)}) for _ in range(3)))
            with psycopg.connect(dsn, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            after = await first(reader, ACTIVE_KEY, {"key_hash": hash_key(key)})
            again = await first(reader, ACTIVE_KEY, {"key_hash": hash_key(key)})
            return after, again, ended[0] if ended else 0
        finally:
            await reader.dispose()

    after, again, ended = run_async(read_twice_with_a_restart_between())
    assert ended == 3
    assert after is not None and after.key_kind == "publishable"  # type: ignore[attr-defined]
    assert again is not None and again.key_kind == "publishable"  # type: ignore[attr-defined]


def test_reads_past_the_bound_wait_for_a_connection(fresh_postgres_url: str) -> None:
    """`size` is the most connections a reader opens: twelve slow reads at once share two backends
    (ROOMFIT_DATABASE_READ_CONNECTIONS; fewer backends competing for the database's cores shorten
    the slowest reads, BENCHMARKS.md)."""
    engine = make_engine(fresh_postgres_url)
    dsn = conninfo(engine)
    engine.dispose()
    slow = select(func.pg_backend_pid().label("pid"), func.pg_sleep(literal(0.05)).label("slept"))

    async def twelve_at_once() -> list[int]:
        reader = PostgresReader(dsn, size=2)
        try:
            found = await asyncio.gather(*(first(reader, slow, {}) for _ in range(12)))
            return [row.pid for row in found]
        finally:
            await reader.dispose()

    pids = run_async(twelve_at_once())
    assert len(pids) == 12 and len(set(pids)) == 2


def test_a_database_that_is_not_there_is_an_operational_error(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/roomfit"  # nothing listens there

    async def read() -> None:
        reader = PostgresReader(dsn, 2)
        try:
            await reader.rows(select(Preview.id).where(Preview.id == "x"), {})
        finally:
            await reader.dispose()

    # OperationalError is what api.problems answers with 503 service_unavailable.
    with pytest.raises(OperationalError):
        run_async(read())


@pytest.mark.parametrize(
    "query",
    [
        "connect_timeout=3",
        "keepalives=1&keepalives_idle=30&keepalives_count=3",
        "fallback_application_name=shop-api",
    ],
)
def test_libpq_keywords_of_the_url_that_asyncpg_does_not_read(fresh_postgres_url: str, query: str) -> None:
    """A URL the sync engine and LISTEN (libpq) take works for the hot reads too: before, asyncpg
    sent these keywords to the server as settings and every read failed (unrecognized parameter)."""
    engine = make_engine(f"{fresh_postgres_url}?{query}")
    with engine.connect() as connection:  # libpq's side takes it
        connection.exec_driver_sql("SELECT 1")
    named = select(func.current_setting("application_name").label("name"))

    async def read() -> object:
        reader = async_reader(engine, 1)
        try:
            return await first(reader, named, {})
        finally:
            await reader.dispose()

    row = run_async(read())
    engine.dispose()
    assert row is not None
    if "fallback_application_name" in query:
        assert row.name == "shop-api"  # type: ignore[attr-defined]
    expected = 3.0 if "connect_timeout" in query else 10.0
    assert read_target(make_engine(f"{fresh_postgres_url}?{query}")).connect_timeout == expected


@pytest.mark.parametrize("query", ["channel_binding=require", "hostaddr=10.0.0.9", "connect_timeout=soon"])
def test_keywords_it_cannot_honour_are_refused_by_name(query: str) -> None:
    """Dropping `channel_binding=require` or `hostaddr` would connect less safely or elsewhere: the
    API refuses to start instead, naming the keyword and never the URL (it holds the password)."""
    engine = make_engine(f"postgresql+psycopg://roomfit:s3cret@db.example/roomfit?{query}")
    with pytest.raises(InvalidSetting, match=query.partition("=")[0]) as refused:
        async_reader(engine, 4)
    assert "s3cret" not in str(refused.value)
