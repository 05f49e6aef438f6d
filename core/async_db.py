"""Reads for the API's hot async paths (key lookups, status reads, event streams) without the thread
pool and with as little per-read work as the driver allows.

Statements are SQLAlchemy `select`s built once with `bindparam`s (so the tables stay the one
description of the schema) and run with a dict of values:

- PostgreSQL: compiled once to asyncpg's SQL ($1, $2 ...) and run on asyncpg's connections (its
  protocol is compiled; it prepares each statement once per connection). Measured side by side on
  one loop with 25 readers: 0.10 ms of client CPU per one-row read against psycopg's 0.22-0.23 ms
  (and SQLAlchemy's asyncio engine's 0.7-1.8 ms before that; BENCHMARKS.md). No transaction wraps
  a read (no BEGIN, no ROLLBACK); the session's time zone is UTC and JSON columns are decoded, so
  rows carry what `core.tables` gives the rest of roomfit. Rows are named tuples of the selected
  columns. LISTEN (api.event_streams) stays on psycopg, which the workers and the sync engine use.
- SQLite (embedded mode, one laptop): the sync engine, with its WAL and busy_timeout pragmas, in a
  worker thread.

Async connections belong to the event loop that opened them. A server has one loop per process,
but Starlette's TestClient without `with` runs each request on a loop of its own, so `PerLoop`
keeps one set per running loop and forgets it with the loop (a driver's pool with background tasks
would outlive such loops; what is needed here is a stack of idle connections and a bound).
Driver errors are raised as SQLAlchemy's (`OperationalError` for a database that is not there), so
the API's handlers answer a database that is down with 503 whichever path read it.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import anyio.to_thread
import asyncpg
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.sql import Select

from core.settings import InvalidSetting

T = TypeVar("T")
Params = Mapping[str, Any]
CONNECT_TIMEOUT = 10.0  # seconds; a database that does not answer is a 503, not a hung request


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

    def __init__(self, dsn: str, size: int, connect_timeout: float) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.idle: list[asyncpg.Connection] = []
        self.slots = asyncio.Semaphore(size)

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(
            self.dsn, timeout=self.connect_timeout, server_settings={"TimeZone": "UTC"}
        )
        # JSON columns come back decoded, as SQLAlchemy hands them to the rest of roomfit.
        for name in ("json", "jsonb"):
            await connection.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        return connection

    @asynccontextmanager
    async def connection(self, fresh: bool = False) -> AsyncIterator[asyncpg.Connection]:
        async with self.slots:
            connection = self.idle.pop() if self.idle and not fresh else await self._connect()
            try:
                yield connection
            except BaseException:
                connection.terminate()  # in an unknown state (a cancelled read, say): never reused
                raise
            self.idle.append(connection)

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()


@dataclass(frozen=True)
class _Compiled:
    statement: Select[Any]
    sql: str
    names: tuple[str, ...]  # the bind parameters in the order of $1, $2 ...
    defaults: dict[str, Any]
    row: type[tuple[Any, ...]]  # a named tuple of the selected columns


# asyncpg's errors that mean "the server is not there (now)": worth one more try on a new
# connection, then the API's 503 (SQLAlchemy's OperationalError, as the sync engine raises it).
_UNAVAILABLE = (
    OSError,  # TimeoutError and ConnectionError among them
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


def _sqlalchemy_error(sql: str, values: Params, exc: Exception) -> DBAPIError:
    """The SQLAlchemy exception the sync engine would raise for the same failure."""
    if isinstance(exc, _UNAVAILABLE):
        return OperationalError(sql, dict(values), exc)
    if getattr(exc, "sqlstate", "").startswith("22"):  # data exception: a value the column refuses
        return DataError(sql, dict(values), exc)
    return DBAPIError(sql, dict(values), exc)


class PostgresReader:
    def __init__(self, dsn: str, size: int, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._loops = PerLoop(lambda: _Connections(dsn, size, connect_timeout))
        self._dialect = pg_asyncpg.dialect()
        self._sql: dict[int, _Compiled] = {}

    def _compiled(self, statement: Select[Any]) -> _Compiled:
        known = self._sql.get(id(statement))
        if known is None or known.statement is not statement:  # keyed by identity: statements are constants
            compiled = statement.compile(dialect=self._dialect)
            columns = [column.key for column in statement.selected_columns]
            known = self._sql[id(statement)] = _Compiled(
                statement,
                str(compiled),
                tuple(compiled.positiontup or ()),
                dict(compiled.params),
                namedtuple("Row", columns),  # type: ignore[misc]
            )
        return known

    async def rows(self, statement: Select[Any], params: Params) -> Sequence[Any]:
        compiled = self._compiled(statement)
        values = [params[name] if name in params else compiled.defaults[name] for name in compiled.names]
        connections = self._loops.get()
        for fresh in (False, True):
            try:
                async with connections.connection(fresh) as connection:
                    found = await connection.fetch(compiled.sql, *values)
                return [compiled.row._make(record) for record in found]  # type: ignore[attr-defined]
            except _UNAVAILABLE as exc:
                # Likely an idle connection the server closed (restart, idle timeout): a read may be
                # tried once more, on a new connection.
                if fresh:
                    raise _sqlalchemy_error(compiled.sql, params, exc) from exc
            except asyncpg.PostgresError as exc:
                raise _sqlalchemy_error(compiled.sql, params, exc) from exc
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
    """What psycopg (LISTEN) connects to for the database of a PostgreSQL `engine`: a postgresql://
    URL (asyncpg's is `read_target`'s)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


# libpq's connection keywords that asyncpg does not read: it would pass them to the server as
# settings, which refuses them at connect, so a URL the sync engine and LISTEN take (libpq reads
# them all) would fail every hot read. Those that only tune the client are applied or left to the
# OS; those that decide where or how safely to connect are refused at startup, never dropped.
_CLIENT_TUNING = frozenset({"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"})
_NOT_HONOURED = frozenset(
    {
        "hostaddr", "require_auth", "channel_binding", "requirepeer", "requiressl", "sslcompression",
        "sslcertmode", "sslcrldir", "sslsni", "sslkeylogfile", "gssencmode", "gssdelegation",
        "load_balance_hosts", "replication", "min_protocol_version", "max_protocol_version",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ReadTarget:
    dsn: str  # for asyncpg: the URL without the keywords it does not read
    connect_timeout: float  # seconds: the URL's connect_timeout when above 0, else CONNECT_TIMEOUT


def read_target(engine: Engine) -> ReadTarget:
    """What asyncpg connects to for the database of a PostgreSQL `engine`, from the same URL.
    Raises InvalidSetting naming the libpq keywords it cannot honour (not the URL: it holds a password)."""
    url = engine.url.set(drivername="postgresql")
    query = dict(url.query)
    refused = sorted(set(query) & _NOT_HONOURED)
    if refused:
        raise InvalidSetting(
            f"ROOMFIT_DATABASE_URL sets {', '.join(refused)}, which the API's reads (asyncpg) cannot "
            "honour; remove it from the URL or enforce it at the database"
        )
    timeout = CONNECT_TIMEOUT
    if "connect_timeout" in query:
        given = query.pop("connect_timeout")
        try:
            seconds = float(given if isinstance(given, str) else given[-1])
        except ValueError:
            raise InvalidSetting(f"ROOMFIT_DATABASE_URL: connect_timeout={given!r} is not a number") from None
        timeout = seconds if seconds > 0 else CONNECT_TIMEOUT  # libpq's 0 waits forever: a read may not
    fallback = query.pop("fallback_application_name", None)
    if fallback is not None:
        query.setdefault("application_name", fallback)
    for key in _CLIENT_TUNING:
        query.pop(key, None)
    return ReadTarget(url.set(query=query).render_as_string(hide_password=False), timeout)


def listen_conninfo(engine: Engine) -> str | None:
    """What psycopg connects to for LISTEN (api.event_streams.Feed); None: not PostgreSQL."""
    return conninfo(engine) if engine.dialect.name == "postgresql" else None


def async_reader(engine: Engine, connections: int) -> AsyncReader:
    """The reader for the database `engine` is connected to; PostgreSQL: at most `connections` per
    event loop."""
    if engine.dialect.name == "postgresql":
        target = read_target(engine)
        return PostgresReader(target.dsn, connections, target.connect_timeout)
    return ThreadReader(engine)


async def first(reader: AsyncReader, statement: Select[Any], params: Params) -> Any | None:
    found = await reader.rows(statement, params)
    return found[0] if found else None
