"""core.logs: JSON lines with the context's ids, plain text for a terminal, keys redacted, one line
per record; a job's ids bound while the worker's job runner runs it; and Celery leaving the root
logger to roomfit's handler."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from core import logs

KEY = "sk_" + "A1b2" * 10 + "xyz"  # the shape of a roomfit key: prefix and 43 URL-safe characters


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    """The root logger as pytest left it, after a test that installs roomfit's handler."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers = handlers
    root.setLevel(level)


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_the_fields_and_the_context_s_ids(root_restored: logging.Logger) -> None:
    out = io.StringIO()
    logs.configure("INFO", "json", out, force=True)
    log = logging.getLogger("roomfit.test")
    with logs.bound(request_id="req_1", tenant_id="ten_1"):
        log.info("painted %d previews\nfor key %s", 2, KEY)
        with logs.bound(tenant_id=None, job_id="job_1"):
            log.warning("inner", extra={"subject_id": "sub_1"})
        try:
            raise ValueError(f"bad {KEY}")
        except ValueError:
            log.exception("crashed")
    log.info("after")

    assert len(out.getvalue().splitlines()) == 4  # the newline in a message starts no line
    first, inner, crashed, after = _lines(out)
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "roomfit.test",
        "message": "painted 2 previews\nfor key sk_[redacted]",
        "request_id": "req_1",
        "tenant_id": "ten_1",
    }
    assert first["time"].endswith("+00:00")
    assert inner["level"] == "WARNING"
    assert {k: inner.get(k) for k in logs.IDS} == {
        "request_id": "req_1",
        "tenant_id": None,  # unbound inside
        "job_id": "job_1",
        "subject_id": "sub_1",
        "preview_id": None,
    }
    assert "ValueError: bad sk_[redacted]" in crashed["exception"] and KEY not in out.getvalue()
    assert set(after) == {"time", "level", "logger", "message"}  # the ids ended with their block


def test_text_mode_gives_plain_lines_with_the_ids_at_the_end(root_restored: logging.Logger) -> None:
    out = io.StringIO()
    logs.configure("DEBUG", "text", out, force=True)
    with logs.bound(job_id="job_1"):
        logging.getLogger("roomfit.worker").debug("step\n2 of %s", KEY)

    (line,) = out.getvalue().splitlines()
    assert line.endswith(" DEBUG roomfit.worker step\\n2 of sk_[redacted] [job_id=job_1]"), line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_format_follows_the_environment_or_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.log_format(Terminal()) == "text"
    assert logs.log_format(io.StringIO()) == "json"  # a pipe, a file, a log collector
    monkeypatch.setenv(logs.FORMAT_ENV, "JSON")
    assert logs.log_format(Terminal()) == "json"
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="ROOMFIT_LOG_FORMAT is one of json, text"):
        logs.log_format()


def test_configure_keeps_one_handler_and_leaves_someone_else_s_logging_alone(
    root_restored: logging.Logger,
) -> None:
    root = root_restored
    assert root.handlers, "pytest's capture is someone else's handler"
    assert logs.configure("INFO") is None and not any(
        isinstance(h, logs._RoomfitHandler) for h in root.handlers
    )

    root.handlers = []
    first = logs.configure("INFO")
    second = logs.configure("WARNING")
    assert root.handlers == [second] and first is not second and root.level == logging.WARNING


def test_the_handler_writes_to_stderr_as_it_is_when_a_line_is_written(
    root_restored: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs.configure("INFO", "json", force=True)
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("roomfit.test").info("to the stderr of now")
    assert _lines(later)[0]["message"] == "to the stderr of now"


def test_celery_leaves_the_root_logger_to_roomfit(
    root_restored: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.app.log import Logging

    from worker.celery_app import celery_app

    monkeypatch.setattr(Logging, "_setup", False)  # once per process, as a worker starts
    for name in ("_MP_FORK_LOGLEVEL_", "_MP_FORK_LOGFILE_", "_MP_FORK_LOGFORMAT_"):
        monkeypatch.setenv(name, "")  # Celery writes these; undone after the test
    root_restored.handlers = []

    handled = celery_app.log.setup_logging_subsystem(loglevel=logging.INFO)

    assert handled  # a receiver set logging up: Celery's setup() then leaves stdout and stderr alone
    (handler,) = root_restored.handlers
    assert isinstance(handler, logs._RoomfitHandler) and root_restored.level == logging.INFO


def test_a_bad_format_stops_the_command_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`roomfit serve` and `roomfit worker` set logging up through one helper; `serve` is the cheap one."""
    import uvicorn
    from typer.testing import CliRunner

    from cli.main import app

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    result = CliRunner().invoke(app, ["serve"])

    assert result.exit_code == 2, (result.output, result.exception)
    assert json.loads(result.stderr) == {
        "error": "invalid_settings",
        "detail": "ROOMFIT_LOG_FORMAT is one of json, text, not 'xml'",
    }
