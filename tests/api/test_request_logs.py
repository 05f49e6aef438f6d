"""The API's logs through real requests (api.access_log, core.logs): each request's line carries its
id and its tenant, the response returns the id, a hostile `X-Request-ID` is replaced and never
written, a 500 carries its id too, and text mode writes plain lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import logs
from tests.api.conftest import ApiEnv, create_preview, ready_subject

GENERATED = re.compile(r"req_[0-9A-Z]{26}")
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """roomfit's handler, writing to a buffer (pytest's own capture keeps the root logger otherwise)."""
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    handler = logs.configure("INFO", "json", out, force=True)
    assert handler is not None
    yield out
    logs.remove(handler)
    root.setLevel(level)


@pytest.fixture
def lines(captured: io.StringIO) -> Lines:
    return lambda: [json.loads(line) for line in captured.getvalue().splitlines()]


def _access(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [
        line for line in lines if line["logger"] == "roomfit.access" and line.get("request_id") == request_id
    ]
    assert len(found) == 1, lines
    return found[0]


def test_a_request_is_logged_with_its_id_and_tenant(sqlite_env: ApiEnv, lines: Lines) -> None:
    env = sqlite_env
    subject_id = ready_subject(env, env.a)
    preview_id = create_preview(env, env.a, subject_id)["id"]

    listed = env.client.get("/v1/subjects", headers={**env.a.auth(), "X-Request-ID": "shop-trace:42"})
    # The hot read, answered outside FastAPI's router (api.fast_reads): logged the same way.
    fast = env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth())
    anonymous = env.client.get("/v1/subjects")

    assert listed.status_code == 200 and listed.headers["x-request-id"] == "shop-trace:42"
    line = _access(lines(), "shop-trace:42")
    assert line["tenant_id"] == env.a.tenant_id
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/v1/subjects",
        "/v1/subjects",
        200,
    )
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")

    assert fast.status_code == 200 and GENERATED.fullmatch(fast.headers["x-request-id"])
    fast_line = _access(lines(), fast.headers["x-request-id"])
    assert (fast_line["tenant_id"], fast_line["route"]) == (env.a.tenant_id, "/v1/previews/{preview_id}")

    # No key, no tenant: and none left over from the requests before on the same client.
    assert anonymous.status_code == 401
    assert "tenant_id" not in _access(lines(), anonymous.headers["x-request-id"])


HOSTILE = (
    b"x" * 65,  # too long
    b'forged\n{"level": "ERROR"}',
    b"a\rb",
    b"nul\x00byte",
    b"bell\x07",
    b"two words",
    b"\xc3\xbcnicode",
    b"",
)


def test_a_hostile_request_id_is_replaced_not_logged(sqlite_env: ApiEnv, captured: io.StringIO) -> None:
    for hostile in HOSTILE:
        response = sqlite_env.client.get("/healthz", headers=[(b"X-Request-ID", hostile)])

        replaced = response.headers["x-request-id"]
        assert GENERATED.fullmatch(replaced), hostile
        written = captured.getvalue()
        assert replaced in written
        if hostile:
            assert hostile.decode("latin-1") not in written
            assert json.dumps(hostile.decode("latin-1"))[1:-1] not in written  # nor escaped
    assert all(json.loads(line) for line in captured.getvalue().splitlines())  # each line one object


def test_a_500_carries_its_request_id_and_its_error_is_logged_under_it(
    sqlite_env: ApiEnv, lines: Lines
) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    sqlite_env.app.add_api_route("/boom-for-test", boom)
    with TestClient(sqlite_env.app, raise_server_exceptions=False) as client:
        response = client.get("/boom-for-test", headers={"X-Request-ID": "trace-500"})

    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-500"
    errors = [line for line in lines() if line["level"] == "ERROR" and line.get("request_id") == "trace-500"]
    assert errors and "RuntimeError: a bug" in errors[0]["exception"]
    assert _access(lines(), "trace-500")["status"] == 500


def test_text_mode_writes_plain_lines(sqlite_env: ApiEnv, captured: io.StringIO) -> None:
    out = io.StringIO()
    handler = logs.configure("INFO", "text", out, force=True)  # replaces the JSON one
    assert handler is not None
    sqlite_env.client.get("/v1/subjects", headers={**sqlite_env.a.auth(), "X-Request-ID": "t-1"})

    (line,) = [line for line in out.getvalue().splitlines() if "roomfit.access" in line]
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO roomfit\.access GET /v1/subjects 200 [\d.]+ ms "
        rf"\[request_id=t-1 tenant_id={sqlite_env.a.tenant_id}\]",
        line,
    ), line
    assert captured.getvalue() == ""  # one handler at a time
    logs.remove(handler)
