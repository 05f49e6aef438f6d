"""Values a client sends that overflow Python's own limits answer their route's 422, never a 500:
a `boxes` field nested deeper than the JSON parser recurses or holding an integer too large for a
float, and an ops `since` / `until` that leaves the years 1-9999 once turned into UTC."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ApiEnv, photos_files


def _client(env: ApiEnv) -> TestClient:
    # A 500 must come back as an answer here, not as the exception behind it (the app is already
    # started by the fixture's client).
    return TestClient(env.app, raise_server_exceptions=False)


def _assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, response.text
    return problem


@pytest.mark.parametrize(
    "boxes",
    [
        "[" * 30000,  # deeper than the JSON parser recurses
        "[[" + "9" * 400 + ", 0, 1, 1]]",  # an integer no float holds
        "[[0, 0, 1, " + "9" * 400 + "]]",
    ],
    ids=["nested-too-deep", "huge-int-x0", "huge-int-y1"],
)
def test_boxes_that_overflow_answer_invalid_boxes(sqlite_env: ApiEnv, boxes: str) -> None:
    env = sqlite_env
    got = _client(env).post(
        "/v1/subjects", headers=env.a.auth(), data={"name": "sofa", "boxes": boxes}, files=photos_files(1)
    )
    _assert_problem(got, 422, "invalid_boxes")


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("since=0001-01-01T00:00:00%2B05:00", "since"),  # 0000-12-31T19:00 UTC
        ("until=9999-12-31T23:00:00-05:00", "until"),  # 10000-01-01T04:00 UTC
    ],
)
def test_ops_job_times_outside_the_years_in_utc_answer_422(sqlite_env: ApiEnv, query: str, name: str) -> None:
    env = sqlite_env
    got = _client(env).get(f"/v1/ops/jobs?{query}", headers=env.ops())
    problem = _assert_problem(got, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["query", name]
    # The same times within the years still list (an empty page here).
    within = query.replace("0001-01-01", "0001-01-02").replace("9999-12-31T23", "9999-12-31T17")
    assert _client(env).get(f"/v1/ops/jobs?{within}", headers=env.ops()).json()["items"] == []
