"""api.fast_reads answers `GET /v1/previews/{id}` past FastAPI's router: the same bytes as the route,
labelled the same in the metrics; whatever it refuses, the route answers (its problems and headers)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY

import api.fast_reads
from core.async_db import AsyncReader, PostgresReader, ThreadReader
from core.db import make_engine
from tests.api.conftest import ApiEnv, create_preview, ready_subject, succeed_preview
from tests.services import free_port


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


def test_a_database_that_went_away_is_503_on_the_fast_path_too(env: ApiEnv) -> None:
    """The fast read runs outside FastAPI's exception handlers: a database error there must still
    be the route's 503 `service_unavailable`, not a 500."""
    subject_id = ready_subject(env, env.a)
    preview_id = create_preview(env, env.a, subject_id)["id"]
    env.app.state.reader = gone_reader(env)
    for path in (f"/v1/previews/{preview_id}", f"/v1/subjects/{subject_id}"):
        response = env.client.get(path, headers=env.a.auth())
        assert response.status_code == 503, (path, response.text)
        assert response.json()["code"] == "service_unavailable"


def gone_reader(env: ApiEnv) -> AsyncReader:
    """A reader of the app's kind whose database is not there."""
    if env.settings.resolved_database_url.startswith("sqlite"):
        folder = env.settings.var_dir / "gone"
        broken = make_engine(f"sqlite:///{folder}/x.db")  # creates the folder ...
        folder.rmdir()  # ... which then vanishes: every connection fails
        return ThreadReader(broken)
    return PostgresReader(f"postgresql://postgres@127.0.0.1:{free_port()}/roomfit", 2)  # nothing listens
