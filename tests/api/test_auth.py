"""Keys, permissions, origins, CORS and rate limits (API.md "Keys" and "Rules for every call")."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.accounts import create_key, revoke_key, tenant_by_name_or_id
from tests.api.conftest import (
    ORIGIN_A,
    ORIGIN_B,
    ApiEnv,
    build_env,
    make_settings,
    photos_files,
    ready_subject,
)

PROBLEM = "application/problem+json"


def _problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "sk_nobearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer sk_unknown"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
def test_missing_or_bad_key_is_401_with_www_authenticate(sqlite_env: ApiEnv, headers: dict[str, str]) -> None:
    response = sqlite_env.client.get("/v1/subjects", headers=headers)
    _problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_revoked_key_stops_at_once(env: ApiEnv) -> None:
    assert env.client.get("/v1/subjects", headers=env.a.auth()).status_code == 200
    with env.session() as session:
        revoke_key(session, env.a.secret_id)
        session.commit()
    _problem(env.client.get("/v1/subjects", headers=env.a.auth()), 401, "unauthorized")
    # ... and the publishable key revoked likewise, for preview reads
    with env.session() as session:
        revoke_key(session, env.a.publishable_id)
        session.commit()
    _problem(env.client.get("/v1/subjects/sub_x", headers=env.a.auth("publishable")), 401, "unauthorized")


def test_publishable_key_may_not_create_subjects(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    response = env.client.post(
        "/v1/subjects", headers=env.a.auth("publishable"), data={"name": "sofa"}, files=photos_files(1)
    )
    _problem(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/subjects"),
        ("DELETE", "/v1/subjects/sub_01M8JXQWXADN45JA084RYC78C9"),
        ("POST", "/v1/subjects/sub_01M8JXQWXADN45JA084RYC78C9/train"),
        ("GET", "/v1/jobs/job_01M8JXQWXADN45JA084RYC78C9"),
        ("GET", "/v1/webhook"),
        ("GET", "/v1/ops/queues"),
    ],
)
def test_publishable_key_is_limited_to_its_routes(sqlite_env: ApiEnv, method: str, path: str) -> None:
    env = sqlite_env
    _problem(env.client.request(method, path, headers=env.a.auth("publishable")), 403, "forbidden")


def test_publishable_key_from_unlisted_or_missing_origin(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_id = ready_subject(env, env.a)
    for origin in (ORIGIN_B, "https://evil.example", "null"):
        headers = {"Authorization": f"Bearer {env.a.publishable}", "Origin": origin}
        _problem(env.client.get(f"/v1/subjects/{subject_id}", headers=headers), 403, "origin_not_allowed")
    headers = {"Authorization": f"Bearer {env.a.publishable}"}
    _problem(env.client.get(f"/v1/subjects/{subject_id}", headers=headers), 403, "origin_not_allowed")
    # Listed origin: allowed, case and trailing slash do not matter.
    headers = {"Authorization": f"Bearer {env.a.publishable}", "Origin": ORIGIN_A.upper() + "/"}
    assert env.client.get(f"/v1/subjects/{subject_id}", headers=headers).status_code == 200


def test_publishable_key_sees_subject_status_fields_only(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_id = ready_subject(env, env.a)
    body = env.client.get(f"/v1/subjects/{subject_id}", headers=env.a.auth("publishable")).json()
    assert set(body) == {"id", "status", "progress", "stage", "error"}
    assert body["status"] == "ready"
    full = env.client.get(f"/v1/subjects/{subject_id}", headers=env.a.auth()).json()
    assert {"name", "photos", "adapter"} <= set(full)


def test_ops_key_scope(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    _problem(env.client.get("/v1/subjects", headers=env.ops()), 403, "forbidden")
    _problem(env.client.post("/v1/previews", headers=env.ops()), 403, "forbidden")
    _problem(env.client.get("/v1/ops/queues", headers=env.a.auth()), 403, "forbidden")
    assert env.client.get("/v1/ops/queues", headers=env.ops()).status_code == 200


def test_cors_preflight_answers_listed_origins_alone(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = env.client.options("/v1/previews", headers={"Origin": ORIGIN_A, **preflight})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN_A
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "Idempotency-Key" in ok.headers["access-control-allow-headers"]
    bad = env.client.options("/v1/previews", headers={"Origin": "https://evil.example", **preflight})
    assert bad.status_code == 403
    assert "access-control-allow-origin" not in bad.headers

    # The real request: the header only for a listed origin.
    subject_id = ready_subject(env, env.a)
    real = env.client.get(f"/v1/subjects/{subject_id}", headers=env.a.auth("publishable"))
    assert real.headers["access-control-allow-origin"] == ORIGIN_A
    exposed = real.headers["access-control-expose-headers"]
    assert "Location" in exposed and "X-Request-ID" in exposed  # a widget can quote its request's id
    other = env.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert env.client.get("/healthz").headers.get("access-control-allow-origin") is None


def test_cors_follows_keys_as_they_change(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    preflight = {"Origin": "https://new.example", "Access-Control-Request-Method": "GET"}
    assert env.client.options("/v1/subjects/x", headers=preflight).status_code == 403
    with env.session() as session:
        tenant = tenant_by_name_or_id(session, "shop-a")
        row, _ = create_key(session, kind="publishable", tenant=tenant, origins=["https://new.example"])
        session.commit()
    assert env.client.options("/v1/subjects/x", headers=preflight).status_code == 204
    with env.session() as session:
        revoke_key(session, row.id)
        session.commit()
    assert env.client.options("/v1/subjects/x", headers=preflight).status_code == 403


def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", rate_limit="3/minute")
    for env in build_env(settings):
        for _ in range(3):
            assert env.client.get("/v1/subjects", headers=env.a.auth()).status_code == 200
        response = env.client.get("/v1/subjects", headers=env.a.auth())
        _problem(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # Per key: the other shop's key is not affected.
        assert env.client.get("/v1/subjects", headers=env.b.auth()).status_code == 200


def test_rate_limit_shared_through_redis(tmp_path: Path, redis_url: str) -> None:
    """Distributed mode: the counters live in Redis, so two API processes share one limit."""
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'r.db'}", rate_limit="2/minute", broker_url=redis_url
    )
    for env in build_env(settings):
        from api.rate_limit import RateLimiter

        other = RateLimiter.from_settings(settings)  # a second replica
        assert "Redis" in type(other.storage).__name__
        assert other.check(env.a.secret_id).allowed
        assert env.client.get("/v1/subjects", headers=env.a.auth()).status_code == 200
        _problem(env.client.get("/v1/subjects", headers=env.a.auth()), 429, "rate_limited")
