"""Embedded mode's broker writes each message file whole (core.fs_transport): a worker that polls
the folder while a message is being written finds nothing yet, never half a message."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu.transport import filesystem
from kombu.transport.virtual import Empty

from core import fs_transport
from core.queue import enqueue, make_celery
from core.settings import Settings


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    return make_celery(Settings(_env_file=None, var_dir=tmp_path / "var"))  # type: ignore[call-arg]


def _poll(app: Celery) -> Any:
    """What a worker polling the `preview` queue takes now: a message, or None."""
    with app.connection_for_read() as conn:
        try:
            return conn.default_channel._get("preview")
        except Empty:
            return None


def _polling_midway(app: Celery, seen: list[Any], step: Callable[..., Any]) -> Callable[..., Any]:
    def midway(*args: Any, **kwargs: Any) -> Any:
        try:
            seen.append(_poll(app))
        except Exception as exc:  # what a worker's consumer loop would die of
            seen.append(exc)
        return step(*args, **kwargs)

    return midway


def test_a_poll_while_a_message_is_written_finds_nothing_then_all_of_it(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(fs_transport.os, "replace", _polling_midway(app, seen, os.replace))
    enqueue(app, "preview", "job_01")
    assert seen == [None]  # written, not yet renamed into place: not there for the worker
    monkeypatch.undo()
    message = _poll(app)
    assert message is not None and "job_01" in json.dumps(message)


def test_the_premise_kombus_own_transport_hands_a_poll_an_empty_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why core.fs_transport exists: kombu's writer creates the file, then locks and writes it."""
    app = make_celery(Settings(_env_file=None, var_dir=tmp_path / "var"))  # type: ignore[call-arg]
    app.conf.broker_transport = None  # kombu's own filesystem transport
    seen: list[Any] = []
    monkeypatch.setattr(filesystem, "lock", _polling_midway(app, seen, filesystem.lock))
    enqueue(app, "preview", "job_01")
    assert len(seen) == 1 and isinstance(seen[0], json.JSONDecodeError)
