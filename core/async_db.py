"""Reads for the API's hot async paths (key lookups, status reads, event streams) without the thread
pool and with as little per-read work as the driver allows.

Statements are SQLAlchemy `select`s built once with `bindparam`s (so the tables stay the one
description of the schema) and run with a dict of values:

- PostgreSQL: compiled once to psycopg's SQL and run on psycopg's own async connections. Measured
  side by side (bench/bench_api_load.py's history in BENCHMARKS.md) SQLAlchemy's asyncio engine spent
  0.7 to 1.8 ms of CPU per one-row read here against 0.25 ms for psycopg alone; a status read is
  two such reads. Connections are autocommit (no BEGIN before a read, no ROLLBACK after it) with
  the session's time zone UTC, so timestamps come back as `core.tables.UTCDateTime` gives them.
- SQLite (embedded mode, one laptop): the sync engine, with its WAL and busy_timeout pragmas, in a
  worker thread.

Async connections belong to the event loop that opened them. A server has one loop per process,
but Starlette's TestClient without `with` runs each request on a loop of its own, so `PerLoop`
keeps one set per running loop and forgets it with the loop (psycopg_pool's background tasks
would outlive such loops; what is needed here is a stack of idle connections and a bound).
Driver errors are raised as SQLAlchemy's (`DBAPIError.instance`), so the API's handlers answer a
database that is down with 503 whichever path read it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

import anyio.to_thread
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

T = TypeVar("T")
Params = Mapping[str, Any]


class PerLoop(Generic[T]):
    """One `make()` per running event loop (see the module's docstring)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        made = self._made.get(loop)
        if made is None:
            made = self._made[loop] = self._make()
        return made

    def made(self) -> list[T]:
        return list(self._made.values())


class AsyncReader(Protocol):
    async def rows(self, statement: Select[Any], params: Params) -> Sequence[Any]:
        """Every row of `statement` with `params` bound; a row's columns are its attributes."""
        ...

    async def dispose(self) -> None: ...


class _Connections:
    """One loop's connections: at most `size` in use at once, idle ones reused newest first."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self, fresh: bool = False) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.slots:
            if self.idle and not fresh:
                connection = self.idle.pop()
            else:
                connection = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, row_factory=namedtuple_row, options="-c TimeZone=UTC"
                )
            try:
                yield connection
            except BaseException:
                await connection.close()  # in an unknown state: never hand it out again
                raise
            self.idle.append(connection)

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()


class PostgresReader:
    def __init__(self, conninfo: str, size: int = 20) -> None:
        self._loops = PerLoop(lambda: _Connections(conninfo, size))
        self._dialect = pg_psycopg.dialect()
        self._sql: dict[int, tuple[Select[Any], str, dict[str, Any]]] = {}

    def _compiled(self, statement: Select[Any]) -> tuple[str, dict[str, Any]]:
        known = self._sql.get(id(statement))
        if known is None or known[0] is not statement:  # keyed by identity: statements are constants
            compiled = statement.compile(dialect=self._dialect)
            known = self._sql[id(statement)] = (statement, str(compiled), dict(compiled.params))
        return known[1], known[2]

    async def rows(self, statement: Select[Any], params: Params) -> Sequence[Any]:
        sql, defaults = self._compiled(statement)
        values = {**defaults, **params}
        connections = self._loops.get()
        for fresh in (False, True):
            try:
                async with connections.connection(fresh) as connection:
                    return await (await connection.execute(sql, values)).fetchall()  # type: ignore[arg-type]
            except psycopg.OperationalError as exc:
                # Likely an idle connection the server closed (restart, idle timeout): a read may be
                # tried once more, on a new connection.
                if fresh:
                    raise DBAPIError.instance(sql, values, exc, psycopg.Error) from exc
            except psycopg.Error as exc:
                raise DBAPIError.instance(sql, values, exc, psycopg.Error) from exc
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        for connections in self._loops.made():
            await connections.close()


class ThreadReader:
    """SQLite: the sync engine (its WAL and busy_timeout pragmas) in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def rows(self, statement: Select[Any], params: Params) -> Sequence[Any]:
        return await anyio.to_thread.run_sync(self._rows, statement, params)

    def _rows(self, statement: Select[Any], params: Params) -> Sequence[Any]:
        with self._engine.connect() as connection:
            return connection.execute(statement, dict(params)).all()

    async def dispose(self) -> None:
        return None


def conninfo(engine: Engine) -> str:
    """What psycopg itself connects to for the database of a PostgreSQL `engine`."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen_conninfo(engine: Engine) -> str | None:
    """What psycopg connects to for LISTEN (api.event_streams.Feed); None: not PostgreSQL."""
    return conninfo(engine) if engine.dialect.name == "postgresql" else None


def async_reader(engine: Engine) -> AsyncReader:
    """The reader for the database `engine` is connected to."""
    if engine.dialect.name == "postgresql":
        return PostgresReader(conninfo(engine))
    return ThreadReader(engine)


async def first(reader: AsyncReader, statement: Select[Any], params: Params) -> Any | None:
    found = await reader.rows(statement, params)
    return found[0] if found else None
