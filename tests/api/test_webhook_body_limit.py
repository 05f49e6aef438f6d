"""`PUT /v1/webhook` checks the key before it reads the body, and reads at most a small body.

FastAPI reads (and parses) a body the route declares before any dependency runs, the key check
included: a caller without a key could make the API hold a 64 MiB body (three times over, parsed)
before answering 401, and invalid JSON without a key answered 422 instead of 401. The body is
pulled here chunk by chunk from a raw ASGI call, so a test sees how much of it the API read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from api.posts import MAX_SMALL_BODY
from tests.api.conftest import ApiEnv, asgi_request

MB = 1 << 20
URL = "https://shop-a.example/hooks"


def _put(env: ApiEnv, headers: dict[str, str], body: Iterator[bytes]) -> tuple[int, dict[str, Any]]:
    """PUT /v1/webhook through the ASGI app, which pulls `body` one chunk per receive()."""
    return asgi_request(env, "PUT", "/v1/webhook", headers, body)


def _counted(chunks: list[bytes], pulled: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        pulled[0] += 1
        yield chunk


def _big_json(megabytes: int, url: str = URL) -> list[bytes]:
    """A valid JSON body of `megabytes` 1 MiB chunks: a URL padded with spaces."""
    head = json.dumps({"url": url}).encode()
    return [head] + [b" " * MB] * (megabytes - 1)


def test_no_key_and_a_big_body_answers_401_unread(sqlite_env: ApiEnv) -> None:
    pulled = [0]
    chunks = _big_json(64)
    status, problem = _put(sqlite_env, {"Content-Type": "application/json"}, _counted(chunks, pulled))
    assert (status, problem["code"]) == (401, "unauthorized")
    assert pulled[0] <= 1, f"read {pulled[0]} of {len(chunks)} 1 MiB chunks before answering 401"


def test_wrong_kind_of_key_answers_403_unread(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    pulled = [0]
    headers = {**env.a.auth("publishable"), "Content-Type": "application/json"}
    status, problem = _put(env, headers, _counted(_big_json(16), pulled))
    assert (status, problem["code"]) == (403, "forbidden")
    assert pulled[0] <= 1


def test_no_key_and_invalid_json_answers_401(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    broken = b'{"url": "https://shop-a.example/ho'
    json_type = {"Content-Type": "application/json"}
    got = env.client.put("/v1/webhook", content=broken, headers=json_type)
    assert (got.status_code, got.json()["code"]) == (401, "unauthorized")
    # With a key the same body is still FastAPI's 422 for invalid JSON (the route reads it itself now).
    got = env.client.put("/v1/webhook", content=broken, headers={**env.a.auth(), **json_type})
    assert (got.status_code, got.json()["code"]) == (422, "validation_error")
    assert got.json()["errors"][0]["type"] == "json_invalid"
    for unparsable in (b'{"url": "\xff"}', b"[" * 30000):  # not UTF-8; nested too deep
        got = env.client.put("/v1/webhook", content=unparsable, headers={**env.a.auth(), **json_type})
        assert (got.status_code, got.json()["code"]) == (400, "bad_request")


def test_a_keyed_body_over_the_cap_answers_413_and_one_at_the_cap_is_used(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    headers = {**env.a.auth(), "Content-Type": "application/json"}
    head = json.dumps({"url": URL}).encode()
    at_cap = head + b" " * (MAX_SMALL_BODY - len(head))
    status, created = _put(env, headers, iter([at_cap]))
    assert status == 200 and created["url"] == URL and created["secret"]

    pulled = [0]
    chunks = _big_json(8, url="https://shop-a.example/other")
    status, problem = _put(env, headers, _counted(chunks, pulled))
    assert (status, problem.get("code")) == (413, "payload_too_large")
    assert pulled[0] <= 2, f"read {pulled[0]} of {len(chunks)} 1 MiB chunks before answering 413"
    # The refused PUT changed nothing.
    assert env.client.get("/v1/webhook", headers=env.a.auth()).json()["url"] == URL
