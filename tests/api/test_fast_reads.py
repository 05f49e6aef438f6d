"""api.fast_reads answers `GET /v1/previews/{id}` past FastAPI's router: the same bytes as the route,
labelled the same in the metrics; whatever it refuses, the route answers (its problems and headers)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

import api.fast_reads
from tests.api.conftest import ApiEnv, create_preview, ready_subject, succeed_preview


def _served(preview_id: str) -> float:
    labels = {"method": "GET", "route": "/v1/previews/{preview_id}", "status": "200"}
    return REGISTRY.get_sample_value("roomfit_http_requests_total", labels) or 0.0


@pytest.mark.parametrize("kind", ["secret", "publishable"])
def test_the_fast_answer_is_the_route_s_answer(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    subject_id = ready_subject(env, env.a)
    preview_id = create_preview(env, env.a, subject_id, kind=kind)["id"]
    succeed_preview(env, preview_id)
    calls: list[str] = []
    answer = api.fast_reads.FastPreviewRead._answer

    async def counted(self: api.fast_reads.FastPreviewRead, scope: dict, preview: str) -> bytes | None:  # type: ignore[type-arg]
        body = await answer(self, scope, preview)
        calls.append("fast" if body is not None else "route")
        return body

    monkeypatch.setattr(api.fast_reads.FastPreviewRead, "_answer", counted)
    before = _served(preview_id)
    fast = env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth(kind))
    assert calls == ["fast"] and fast.status_code == 200
    assert _served(preview_id) == before + 1  # counted under the route's template, not "unmatched"
    monkeypatch.setattr(api.fast_reads, "PATH", re.compile(r"(?!)"))  # nothing matches: the route answers
    routed = env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth(kind))
    assert calls == ["fast"] and routed.status_code == 200
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.headers.get("access-control-allow-origin") == routed.headers.get(
        "access-control-allow-origin"
    )
    assert fast.json()["result_url"] == f"/v1/previews/{preview_id}/result"


def test_what_it_refuses_the_route_answers(env: ApiEnv) -> None:
    subject_id = ready_subject(env, env.a)
    preview_id = create_preview(env, env.a, subject_id)["id"]
    path = f"/v1/previews/{preview_id}"
    assert env.client.get(path).json()["code"] == "unauthorized"
    assert env.client.get(path, headers=env.b.auth()).json()["code"] == "not_found"  # another tenant's
    other_origin = {**env.a.auth("publishable"), "Origin": "https://elsewhere.example"}
    assert env.client.get(path, headers=other_origin).json()["code"] == "origin_not_allowed"
    # a publishable key reads only the previews it made
    assert env.client.get(path, headers=env.a.auth("publishable")).json()["code"] == "not_found"
    assert env.client.get(path, headers=env.ops()).json()["code"] == "forbidden"
