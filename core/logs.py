"""Logs of the API and the workers: one JSON object per line for a log collector, or plain lines for
a terminal, each carrying the ids of what it is about.

The ids travel in a context variable, not as arguments: the API binds `request_id` when a request
comes in and `tenant_id` once its key is known (api.request_ids, api.deps); a worker binds a job's
`job_id`, `subject_id` / `preview_id` and `tenant_id` while it runs it (worker.job_runner). A log call
anywhere below (core, a service, uvicorn's access log) then names them without being told. asyncio
copies the context into each task and `anyio.to_thread` into each thread it runs, so the ids follow a
request into its sync routes; a thread started by hand (a heartbeat) starts without them.

The format is `ROOMFIT_LOG_FORMAT` (`json` or `text`), read from the environment here rather than
from `core.settings`, so that a worker's Celery signal and the command line can set logging up before
anything reads the settings; unset, it is `text` when stderr is a terminal and `json` otherwise. The
level is the setting `log_level`.

Keys never reach a line: every message is passed through `redact` (a roomfit key has a prefix and 43
URL-safe characters, core.api_keys), whichever logger wrote it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

IDS = ("request_id", "tenant_id", "job_id", "subject_id", "preview_id")
# Fields a call may pass with `extra=` to be written as their own JSON keys (the access line's).
FIELDS = ("method", "path", "route", "status", "duration_ms")
FORMAT_ENV = "ROOMFIT_LOG_FORMAT"
FORMATS = ("json", "text")
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Loggers that uvicorn gives handlers of their own: once roomfit's handler is in place they write
# through it, so their lines are JSON too. Its access log is silenced instead: api.access_log writes
# one line per request, with the request's ids, and uvicorn's would be a second.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
UVICORN_ACCESS = "uvicorn.access"

KEY = re.compile(r"\b(sk|pk|ok)_[A-Za-z0-9_-]{16,}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_ids: ContextVar[Mapping[str, str]] = ContextVar("roomfit_log_ids", default=MappingProxyType({}))


def redact(text: str) -> str:
    return KEY.sub(lambda m: f"{m.group(1)}_[redacted]", text)


def current_ids() -> dict[str, str]:
    return dict(_ids.get())


def known(**ids: str | None) -> dict[str, str]:
    """The ids that have a value: what a log line or `bound` should carry."""
    return {name: value for name, value in ids.items() if value}


def bind(**ids: str | None) -> Token[Mapping[str, str]]:
    """Add (or, with None, remove) ids for the rest of this context; `unbind(token)` undoes it."""
    merged = {**_ids.get(), **{k: v for k, v in ids.items() if v is not None}}
    for name in (k for k, v in ids.items() if v is None):
        merged.pop(name, None)
    return _ids.set(merged)


def unbind(token: Token[Mapping[str, str]]) -> None:
    _ids.reset(token)


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


def _record_ids(record: logging.LogRecord) -> dict[str, str]:
    """The context's ids, or those a call passed itself (`extra={"job_id": ...}`: a batch's jobs)."""
    found = dict(_ids.get())
    for name in IDS:
        value = record.__dict__.get(name)
        if isinstance(value, str):
            found[name] = value
    return {name: found[name] for name in IDS if name in found}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", <ids>, "exception"?}` on one line: json.dumps escapes
    newlines and control characters, so a message can never start a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_record_ids(record),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [id=value ...]`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__(TEXT_LAYOUT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A message (a path from a request, say) may hold a newline: written escaped, it cannot
        # pass for a line of its own. A traceback, added after this, keeps its lines.
        record.message = CONTROL.sub(lambda m: repr(m.group())[1:-1], record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        ids = _record_ids(record)
        return f"{text} [{' '.join(f'{k}={v}' for k, v in ids.items())}]" if ids else text


class _RoomfitHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the stream given, or to whatever `sys.stderr` is when a line is written (as
    logging's last-resort handler does), so a replaced stderr (pytest's capture) is never left stale."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: IO[str] | None) -> None:
        self._fixed = value


def log_format(stream: IO[str] | None = None) -> str:
    """`ROOMFIT_LOG_FORMAT`, else `text` on a terminal and `json` otherwise; an unknown value is
    refused here, at startup, rather than quietly ignored."""
    chosen = os.environ.get(FORMAT_ENV, "").strip().lower()
    if chosen and chosen not in FORMATS:
        raise ValueError(f"{FORMAT_ENV} is one of {', '.join(FORMATS)}, not {chosen!r}")
    if chosen:
        return chosen
    out = stream if stream is not None else sys.stderr
    return "text" if getattr(out, "isatty", lambda: False)() else "json"


def configure(
    level: str | int, fmt: str | None = None, stream: IO[str] | None = None, *, force: bool = False
) -> logging.Handler | None:
    """Install roomfit's one handler on the root logger (replacing the one an earlier call installed)
    and route uvicorn's loggers through it; returns the handler.

    As `logging.basicConfig`, it does nothing (None) when the root logger already has a handler of
    someone else's, unless `force`: a program that embeds roomfit, or pytest's log capture, keeps
    its own logging."""
    chosen = fmt or log_format(stream)  # a bad ROOMFIT_LOG_FORMAT is refused in any case
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _RoomfitHandler)]
    if not force and len(ours) < len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    handler = _RoomfitHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in (*UVICORN_LOGGERS, UVICORN_ACCESS):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = name != UVICORN_ACCESS  # no handler, no propagation: uvicorn skips the line
    return handler


def remove(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
