"""One line instead of a traceback: how every `roomfit` command reports a failure the user can fix.

The root command group (`RoomfitGroup`) runs every command and turns the failures a user can act on
into one JSON line on stderr, `{"error": code, "detail": message}` (the shape `roomfit paint`,
`train` and `eval` already print), and an exit code:

- 2 (`USAGE`): the user must change something: an argument, a setting (`ROOMFIT_PORT=abc`), a model
  setting naming no model, or a database without roomfit's tables (run `roomfit migrate`);
- 1 (`DOWN`): something the command needs does not answer: the database, the broker, the blob store.

`--debug` (before the command) or `ROOMFIT_LOG_LEVEL=DEBUG` lets the exception through, traceback
and all. Anything else is a bug: CliRunner and the tests see the exception itself, while the console
script (`RoomfitTyper.__call__`) still prints one `internal_error` line unless debugging.

`database_report` is the one place that says whether the database is reachable and migrated: the
database commands call `require_migrated` first, any other command that hits a SQL error gets the
same diagnosis, and `roomfit doctor` shows it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from typer.core import TyperGroup

from core.settings import InvalidSetting, get_settings

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from pydantic import ValidationError

USAGE, DOWN, BUG = 2, 1, 1
DATABASE_TIMEOUT_SECONDS = 5.0
MIGRATE_HINT = "run `roomfit migrate` (or `roomfit up`, which migrates first)"


class CliError(Exception):
    """A failure the user can fix, said in one line: raised anywhere under a command."""

    def __init__(self, code: str, detail: str, exit_code: int = USAGE) -> None:
        super().__init__(detail)
        self.code, self.detail, self.exit_code = code, detail, exit_code


def fail(code: str, detail: str, exit_code: int = USAGE) -> NoReturn:
    """Print the one error line and end the command with `exit_code`."""
    typer.echo(json.dumps({"error": code, "detail": detail}), err=True)
    raise typer.Exit(exit_code)


def one_line(text: str, limit: int = 400) -> str:
    """`text` with its line breaks and runs of spaces folded (driver errors span several lines)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def redact(url: str) -> str:
    """`url` without its password (database and broker URLs carry one in distributed mode)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# --- the database ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseReport:
    """What `database_report` found: `problem` is None when the schema is at this roomfit's head."""

    url: str  # redacted
    revision: str | None
    heads: tuple[str, ...]
    problem: CliError | None


def database_report(url: str, timeout: float = DATABASE_TIMEOUT_SECONDS) -> DatabaseReport:
    """Connect to `url` (within about `timeout` seconds) and compare alembic's revision with ours.

    Reads alembic's own version table, so it is the same question on SQLite and PostgreSQL, asked
    without parsing driver messages. A SQLite file that is not there is not created by asking."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from core.migrate import alembic_config

    shown = redact(url)
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = tuple(script.get_heads())
    try:
        parsed = make_url(url)
        sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        if sqlite_file and not Path(str(parsed.database)).is_file():
            revision = None
        else:
            revision = _current_revision(url, timeout)
    except ArgumentError as exc:  # not a URL, or a dialect or driver that is not installed
        detail = f"ROOMFIT_DATABASE_URL={shown!r}: {one_line(str(exc))}"
        return DatabaseReport(shown, None, heads, CliError("invalid_settings", detail))
    except Exception as exc:  # refused, unknown host, bad password, timeout: all "cannot use it"
        detail = f"cannot reach the database {shown}: {_reason(exc)}"
        return DatabaseReport(shown, None, heads, CliError("database_unavailable", detail, DOWN))
    return DatabaseReport(shown, revision, heads, _schema_problem(shown, revision, script))


def _current_revision(url: str, timeout: float) -> str | None:
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    # A throwaway engine, not core.db's pooled one: it carries the connect timeout, and a probe
    # must leave no pool behind in the process it ran in.
    backend = make_url(url).get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args = {"timeout": timeout}
    elif backend == "postgresql":
        connect_args = {"connect_timeout": max(1, round(timeout))}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _schema_problem(shown: str, revision: str | None, script: ScriptDirectory) -> CliError | None:
    heads = script.get_heads()
    if revision in heads:
        return None
    if revision is None:
        return CliError("not_migrated", f"the database {shown} has no roomfit tables yet: {MIGRATE_HINT}")
    try:
        script.get_revision(revision)
    except Exception:  # alembic's ResolutionError or CommandError: a revision it has no script for
        return CliError(
            "schema_unknown",
            f"the database {shown} is at revision {revision}, which this roomfit does not know "
            f"(migrated by a newer roomfit?); this one needs {', '.join(heads)}",
        )
    return CliError(
        "not_migrated",
        f"the database {shown} is at revision {revision}, this roomfit needs {', '.join(heads)}: "
        f"{MIGRATE_HINT}",
    )


def require_migrated() -> None:
    """Raise the CliError that says why the configured database cannot be used, if it cannot."""
    problem = database_report(get_settings().resolved_database_url).problem
    if problem is not None:
        raise problem


def _reason(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver's error and appends SQL and a link; the driver's own says it best.
    inner = getattr(exc, "orig", None) or exc
    return one_line(f"{type(inner).__name__}: {inner}")


# --- what an exception means to the user --------------------------------------------------------


def settings_problem(exc: ValidationError) -> str:
    """The first invalid setting, named as its environment variable: `ROOMFIT_PORT='abc': ...`."""
    errors = exc.errors()
    first = errors[0]
    name = "ROOMFIT_" + "_".join(str(part) for part in first["loc"]).upper()
    given = repr(first.get("input"))
    given = given if len(given) <= 80 else given[:77] + "..."
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}={given}: {first['msg']}{more}"


def explain(exc: Exception) -> CliError | None:
    """The one line an exception stands for, or None when it is not one the user can fix (a bug).

    Only modules already imported are consulted: an exception of a module nobody imported cannot be
    the one raised, and importing `models` (torch) just to say so would cost seconds."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, InvalidSetting):
        return CliError("invalid_settings", one_line(str(exc)))
    loaded = sys.modules
    pydantic_errors = loaded.get("pydantic_core")
    if pydantic_errors is not None and isinstance(exc, pydantic_errors.ValidationError):
        if exc.title == "Settings":
            return CliError("invalid_settings", settings_problem(exc))
        return None
    sql = loaded.get("sqlalchemy.exc")
    if sql is not None and isinstance(exc, sql.DBAPIError | sql.ArgumentError):
        # Missing table, refused connection, bad URL: ask the database what is wrong rather than
        # parse the driver's message; a database that is fine after all means the error is a bug.
        try:
            return database_report(get_settings().resolved_database_url).problem
        except Exception:  # the diagnosis failed too: the original error is the one to show
            return None
    model_errors = loaded.get("models.errors")
    if model_errors is not None and isinstance(exc, model_errors.RoomfitModelError):
        return CliError(exc.code, one_line(str(exc)))  # type: ignore[attr-defined]
    return _service_problem(exc)


def _service_problem(exc: Exception) -> CliError | None:
    kombu_errors = sys.modules.get("kombu.exceptions")
    if kombu_errors is not None and isinstance(exc, kombu_errors.OperationalError):
        broker = redact(get_settings().resolved_broker_url)
        return CliError("broker_unavailable", f"cannot reach the broker {broker}: {one_line(str(exc))}", DOWN)
    blobs = sys.modules.get("core.blobstore")
    if blobs is not None and isinstance(exc, blobs.BlobStoreUnavailable):
        return CliError(
            "blob_store_unavailable", f"the blob store does not answer: {one_line(str(exc))}", DOWN
        )
    return None


# --- the root command ---------------------------------------------------------------------------


@dataclass
class _Run:
    debug: bool | None = None  # set once the root group knows (--debug parsed); None before


_run = _Run()


def debug_requested(flag: bool = False) -> bool:
    """`--debug`, or ROOMFIT_LOG_LEVEL=DEBUG (from the settings, or the variable when they are the
    very thing that failed to load)."""
    if flag:
        return True
    try:
        level = get_settings().log_level
    except Exception:
        level = os.environ.get("ROOMFIT_LOG_LEVEL", "")
    return level.strip().upper() == "DEBUG"


class RoomfitGroup(TyperGroup):
    """The root group: every command runs inside its `invoke`, so one handler serves them all."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        _run.debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code chosen, usage errors: typer already says them in its own way
        except Exception as exc:
            _run.debug = debug_requested(_run.debug)
            problem = None if _run.debug else explain(exc)
            if problem is None:
                raise
            fail(problem.code, problem.detail, problem.exit_code)


class RoomfitTyper(typer.Typer):
    """The root app: the console script calls it, and it is the last stop of an unexpected error."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if debug_requested(bool(_run.debug)):
                raise
            detail = f"{type(exc).__name__}: {one_line(str(exc))} (run again with --debug for the traceback)"
            typer.echo(json.dumps({"error": "internal_error", "detail": detail}), err=True)
            raise SystemExit(BUG) from None
