"""Every expected failure of `roomfit` is one line on stderr and an exit code, never a traceback.

One JSON line, `{"error": code, "detail": ...}`: exit 2 for what the user must change (arguments,
settings, a database not migrated), 1 for what does not answer. `--debug` or ROOMFIT_LOG_LEVEL=DEBUG
shows the traceback. The console script itself is run once per behaviour, to prove nothing else
reaches stderr."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from cli.errors import RoomfitGroup, RoomfitTyper, explain
from cli.main import app
from core.migrate import upgrade
from core.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parent.parent
ROOMFIT = ROOT / ".venv" / "bin" / "roomfit"
runner = CliRunner()

# Every command of cli/main.py that reads or writes the database, run as a user would first try it.
DB_COMMANDS = [
    ["tenants", "create", "acme"],
    ["tenants", "list"],
    ["tenants", "delete", "acme", "--yes"],
    ["keys", "create", "--kind", "ops"],
    ["keys", "create", "--kind", "secret", "--tenant", "acme"],
    ["keys", "list", "--revoked"],
    ["keys", "revoke", "key_nope"],
]
# ... and those that do not (or migrate themselves). A new command must be put in one list or the other.
OTHER_COMMANDS = {"paint", "train", "eval", "doctor", "up", "serve", "worker", "migrate"}


def error_line(result: Result, exit_code: int) -> dict[str, Any]:
    """The one JSON line a failed command printed on stderr (and nothing else there)."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    error = json.loads(lines[0])
    assert set(error) == {"error", "detail"}, error
    return error


@pytest.fixture
def fresh(embedded_env: Settings) -> Iterator[Settings]:
    """Embedded settings in an empty folder; env changes by the test are read (cache cleared)."""
    yield embedded_env
    get_settings.cache_clear()


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ROOMFIT_DATABASE_URL", url)
    get_settings.cache_clear()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


# --- the database ---------------------------------------------------------------------------------


def test_every_database_command_is_listed() -> None:
    """The parametrized tests below cover each database command of cli/main.py."""
    found = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))
        if not hasattr(command, "commands") and command.callback.__module__ == "cli.main":
            found.add(" ".join(path))

    walk(typer.main.get_command(app), ())
    for name, sub in typer.main.get_command(app).commands.items():  # commands registered from elsewhere
        if not hasattr(sub, "commands"):
            found.add(name)
    assert found == {" ".join(c[:2]) for c in DB_COMMANDS} | OTHER_COMMANDS


@pytest.mark.parametrize("args", DB_COMMANDS, ids=lambda a: " ".join(a[:2]) + " " + a[-1])
def test_database_commands_before_migrate_say_so(
    args: list[str], fresh: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_database(monkeypatch, database_url)
    error = error_line(runner.invoke(app, args), 2)
    assert error["error"] == "not_migrated"
    assert "roomfit migrate" in error["detail"] and "no roomfit tables" in error["detail"]
    if database_url.startswith("sqlite"):
        assert not Path(make_url(database_url).database or "").exists()  # asking made no SQLite file


def test_an_older_schema_says_migrate(fresh: Settings, database_url: str, monkeypatch) -> None:
    use_database(monkeypatch, database_url)
    upgrade(database_url, "0001")
    error = error_line(runner.invoke(app, ["tenants", "create", "acme"]), 2)
    assert error["error"] == "not_migrated" and "revision 0001" in error["detail"]
    assert "roomfit migrate" in error["detail"]
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    made = runner.invoke(app, ["tenants", "create", "acme"])
    assert made.exit_code == 0 and json.loads(made.stdout)["name"] == "acme"


def test_a_schema_from_a_newer_roomfit_is_named(fresh: Settings, monkeypatch) -> None:
    from sqlalchemy import create_engine, text

    assert runner.invoke(app, ["migrate"]).exit_code == 0
    engine = create_engine(fresh.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    error = error_line(runner.invoke(app, ["keys", "revoke", "key_x"]), 2)
    assert error["error"] == "schema_unknown" and "9999" in error["detail"]


def test_an_unreachable_database_is_one_line_without_its_password(fresh: Settings, monkeypatch) -> None:
    use_database(monkeypatch, f"postgresql+psycopg://shop:s3cret@127.0.0.1:{closed_port()}/roomfit")
    for args in (["tenants", "create", "acme"], ["migrate"]):
        error = error_line(runner.invoke(app, args), 1)
        assert error["error"] == "database_unavailable" and "refused" in error["detail"].lower()
        assert "s3cret" not in error["detail"] and "shop:***@" in error["detail"]


@pytest.mark.parametrize("url", ["nonsense", "mysql+nodriver://u@host/db"])
def test_a_bad_database_url_names_the_setting(url: str, fresh: Settings, monkeypatch) -> None:
    use_database(monkeypatch, url)
    for args in (["tenants", "create", "acme"], ["migrate"]):
        error = error_line(runner.invoke(app, args), 2)
        assert error["error"] == "invalid_settings" and "ROOMFIT_DATABASE_URL" in error["detail"]


def test_sql_errors_elsewhere_get_the_same_diagnosis(fresh: Settings) -> None:
    """A command that skips `require_migrated` and hits a missing table is told to migrate too; once
    the database is fine, the same error is a bug and stays an exception."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    def query() -> OperationalError:
        engine = create_engine(fresh.resolved_database_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT * FROM tenants"))
        except OperationalError as exc:
            return exc
        finally:
            engine.dispose()
        raise AssertionError("the query worked")

    problem = explain(query())
    assert problem is not None and problem.code == "not_migrated" and problem.exit_code == 2
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    engine = create_engine(fresh.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE api_keys"))  # broken after migrating: not the user's mistake to fix
        conn.execute(text("DROP TABLE tenants"))
    engine.dispose()
    assert explain(query()) is None


# --- arguments and settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--kind", "root"], "--kind is one of"),
        (["keys", "create", "--kind", "secret", "--tenant", "nope"], "no tenant"),
        (["keys", "revoke", "key_nope"], "no key"),
        (["worker", "--queues", "gpu"], "unknown queue"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str, fresh: Settings) -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    error = error_line(runner.invoke(app, args), 2)
    assert error["error"] == "invalid_argument" and message in error["detail"]


@pytest.mark.parametrize(
    "args",
    [["tenants", "create"], ["keys", "create"], ["nosuch"], ["doctor", "--timeout", "soon"], ["--nope"], []],
)
def test_usage_errors_exit_2(args: list[str], fresh: Settings) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # an exit with typer's usage message, not an error


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("ROOMFIT_PORT", "abc", ["tenants", "create", "acme"]),
        ("ROOMFIT_DTYPE", "fp8", ["doctor"]),
        ("ROOMFIT_PRESIGN_SECONDS", "1", ["migrate"]),
    ],
)
def test_bad_settings_name_the_variable(
    variable: str, value: str, args: list[str], fresh, monkeypatch
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    error = error_line(runner.invoke(app, args), 2)
    assert error["error"] == "invalid_settings"
    assert error["detail"].startswith(f"{variable}={value!r}: "), error


# --- the handler itself, on exceptions of every kind ---------------------------------------------


def _raising(exc: Exception) -> RoomfitTyper:
    demo = RoomfitTyper(cls=RoomfitGroup, pretty_exceptions_enable=False)

    @demo.callback()
    def root(debug: bool = typer.Option(False, "--debug")) -> None: ...

    @demo.command()
    def boom() -> None:
        raise exc

    return demo


def _kombu_error() -> Exception:
    from kombu.exceptions import OperationalError

    return OperationalError("Error 111 connecting to localhost:6379. Connection refused.")


def _blob_error() -> Exception:
    from core.blobstore import BlobStoreUnavailable

    return BlobStoreUnavailable("could not connect to http://127.0.0.1:1")


def _setting_error() -> Exception:
    from core.settings import InvalidSetting

    return InvalidSetting("ROOMFIT_DATABASE_URL sets channel_binding, which the API's reads cannot honour")


@pytest.mark.parametrize(
    ("make", "code", "exit_code"),
    [
        (_kombu_error, "broker_unavailable", 1),
        (_blob_error, "blob_store_unavailable", 1),
        (_setting_error, "invalid_settings", 2),
    ],
)
def test_known_failures_become_one_line(make, code: str, exit_code: int, fresh: Settings) -> None:
    """(A model that is not there: tests/test_doctor.py, which pays for importing torch anyway.)"""
    demo = _raising(make())
    assert error_line(runner.invoke(demo, ["boom"]), exit_code)["error"] == code
    debug = runner.invoke(demo, ["--debug", "boom"])  # the exception itself, for its traceback
    assert type(debug.exception).__name__ == type(make()).__name__


def test_a_bug_stays_an_exception_in_process(fresh: Settings) -> None:
    """CliRunner (the tests) sees a bug's exception; only the console script folds it (below)."""
    result = runner.invoke(_raising(RuntimeError("bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "bug"


# --- the console script ------------------------------------------------------------------------


def run_roomfit(tmp_path: Path, *args: str, command: tuple[str, ...] = (str(ROOMFIT),), **env: str):
    """The console script (or `command`) in `tmp_path`, with no ROOMFIT_ variable but `env`'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    clean.update(ROOMFIT_VAR_DIR=str(tmp_path / "var"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [*command, *args], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60
    )


def test_the_console_script_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = run_roomfit(tmp_path, "tenants", "create", "acme")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert json.loads(line)["error"] == "not_migrated" and done.stdout == ""
    bad = run_roomfit(tmp_path, "tenants", "create", "acme", ROOMFIT_PORT="abc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert json.loads(bad.stderr)["detail"].startswith("ROOMFIT_PORT='abc'")


@pytest.mark.parametrize("how", ["--debug", "ROOMFIT_LOG_LEVEL=DEBUG"])
def test_debug_shows_the_traceback(how: str, tmp_path: Path) -> None:
    flags, env = ([how], {}) if how == "--debug" else ([], {"ROOMFIT_LOG_LEVEL": "DEBUG"})
    done = run_roomfit(tmp_path, *flags, "tenants", "create", "acme", **env)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr and "roomfit migrate" in done.stderr


def test_the_console_script_folds_a_bug_into_one_line(tmp_path: Path) -> None:
    """RoomfitTyper.__call__, as the console script calls it: a bug is one `internal_error` line
    (exit 1) unless debugging."""
    script = "from tests.test_cli_errors import _raising; _raising(RuntimeError('bug\\nsecond line'))()"
    command = (sys.executable, "-c", script)
    done = run_roomfit(tmp_path, "boom", command=command)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    error = json.loads(line)
    assert error["error"] == "internal_error" and "RuntimeError: bug second line" in error["detail"]
    assert "--debug" in error["detail"]
    debug = run_roomfit(tmp_path, "--debug", "boom", command=command)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
