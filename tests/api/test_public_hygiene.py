"""What the public sees, and only that (issue "Safe to face the public", finding 6): CORS names
the listed origin and only for the key's own shop, HTML pages carry a strict CSP, keys never reach
the access log, and a worker's crash text never reaches a client."""

from __future__ import annotations

import logging

from api.access_log import RedactKeys, redact
from tests.api.conftest import ORIGIN_A, ORIGIN_B, ApiEnv, ready_subject


def test_cors_names_the_listed_origin_not_the_requests_spelling(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    shouting = ORIGIN_A.upper() + "/"  # HTTPS://SHOP-A.EXAMPLE/
    preflight = {"Access-Control-Request-Method": "POST", "Origin": shouting}
    answer = env.client.options("/v1/previews", headers=preflight)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == ORIGIN_A

    subject_id = ready_subject(env, env.a)
    headers = {**env.a.auth("publishable"), "Origin": shouting}
    real = env.client.get(f"/v1/subjects/{subject_id}", headers=headers)
    assert real.status_code == 200
    assert real.headers["access-control-allow-origin"] == ORIGIN_A


def test_an_origin_listed_by_one_shop_gets_nothing_on_another_shops_answers(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_b = ready_subject(env, env.b)
    # Shop B's own secret key, called from a page on shop A's (listed) origin: no CORS grant.
    with_b_secret = {**env.b.auth(), "Origin": ORIGIN_A}
    answer = env.client.get(f"/v1/subjects/{subject_b}", headers=with_b_secret)
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    # Shop B's publishable key from shop A's origin is refused (403 origin_not_allowed).
    with_b_pub = {**env.b.auth("publishable"), "Origin": ORIGIN_A}
    refused = env.client.get(f"/v1/subjects/{subject_b}", headers=with_b_pub)
    assert refused.status_code == 403
    # Shop B's publishable key from its own origin: granted, to that origin only.
    own = env.client.get(f"/v1/subjects/{subject_b}", headers=env.b.auth("publishable"))
    assert own.headers["access-control-allow-origin"] == ORIGIN_B


def test_html_pages_carry_a_strict_content_security_policy(sqlite_env: ApiEnv) -> None:
    page = sqlite_env.client.get("/ops")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp and "script-src 'sha256-" in csp
    assert page.headers["x-frame-options"] == "DENY"


def test_keys_are_redacted_from_the_access_log() -> None:
    key = "pk_" + "A1b2" * 11
    assert redact(f"GET /v1/previews/prv_1?key={key} HTTP/1.1") == (
        "GET /v1/previews/prv_1?key=pk_[redacted] HTTP/1.1"
    )
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/subjects?token=sk_{'x' * 43}", "1.1", 200), None,
    )  # fmt: skip
    RedactKeys().filter(record)
    line = record.getMessage()
    assert "sk_[redacted]" in line and "x" * 43 not in line
    assert redact("sub_01J0000000000000000000000 prv_ok") == "sub_01J0000000000000000000000 prv_ok"
