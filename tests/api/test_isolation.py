"""Two tenants: no route lets one read, list, change or delete the other's subjects, previews,
jobs or results (result URLs included). Run on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.tables import Job, Preview, Subject
from tests.api.conftest import (
    ApiEnv,
    create_preview,
    image_bytes,
    mask_bytes,
    photos_files,
    ready_subject,
    succeed_preview,
)


def _a_objects(env: ApiEnv) -> dict[str, str]:
    queued = env.client.post(
        "/v1/subjects", headers=env.a.auth(), data={"name": "a", "external_id": "SKU"}, files=photos_files(1)
    ).json()["id"]
    ready = ready_subject(env, env.a)
    preview = create_preview(env, env.a, ready)["id"]
    succeed_preview(env, preview)
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == queued)).one().id
        preview_job = session.scalars(select(Job).where(Job.preview_id == preview)).one().id
    return {"queued": queued, "ready": ready, "preview": preview, "job": job, "preview_job": preview_job}


def _is_404(response: Any) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


def test_no_route_crosses_tenants(env: ApiEnv) -> None:
    a = _a_objects(env)
    before = _snapshot(env, a)
    c = env.client
    for kind in ("secret", "publishable"):
        headers = env.b.auth(kind)
        _is_404(c.get(f"/v1/subjects/{a['queued']}", headers=headers))
        _is_404(c.get(f"/v1/subjects/{a['ready']}", headers=headers))
        _is_404(c.get(f"/v1/previews/{a['preview']}", headers=headers))
        _is_404(c.get(f"/v1/previews/{a['preview']}/result", headers=headers))
        _is_404(
            c.post(
                "/v1/previews",
                headers=headers,
                data={"subject_id": a["ready"]},
                files=[
                    ("room", ("r.png", image_bytes(64, 48), "image/png")),
                    ("mask", ("m.png", mask_bytes(64, 48), "image/png")),
                ],
            )
        )
    secret = env.b.auth()
    _is_404(c.delete(f"/v1/subjects/{a['queued']}", headers=secret))
    _is_404(c.delete(f"/v1/subjects/{a['ready']}", headers=secret))
    _is_404(c.post(f"/v1/subjects/{a['ready']}/train", headers=secret))
    _is_404(c.get(f"/v1/jobs/{a['job']}", headers=secret))
    _is_404(c.get(f"/v1/jobs/{a['preview_job']}", headers=secret))
    listed = c.get("/v1/subjects", headers=secret).json()
    assert listed["items"] == [] and listed["next_cursor"] is None
    assert c.get(f"/v1/subjects?cursor=sub_{'Z' * 26}", headers=secret).json()["items"] == []
    # The same external_id is free in the other shop.
    other = c.post(
        "/v1/subjects", headers=secret, data={"name": "b", "external_id": "SKU"}, files=photos_files(1)
    )
    assert other.status_code == 202
    # B's own objects are not visible to A either.
    _is_404(c.get(f"/v1/subjects/{other.json()['id']}", headers=env.a.auth()))
    assert [s["id"] for s in c.get("/v1/subjects", headers=env.a.auth()).json()["items"]] == [
        a["ready"],
        a["queued"],
    ]
    # Webhooks are per tenant.
    c.put("/v1/webhook", headers=env.a.auth(), json={"url": "https://shop-a.example/h"})
    _is_404(c.get("/v1/webhook", headers=secret))
    assert c.delete("/v1/webhook", headers=secret).status_code == 204
    assert c.get("/v1/webhook", headers=env.a.auth()).status_code == 200

    assert _snapshot(env, a) == before, "tenant A's objects changed"
    assert c.get(f"/v1/previews/{a['preview']}/result", headers=env.a.auth()).status_code == 200


def _snapshot(env: ApiEnv, a: dict[str, str]) -> dict[str, Any]:
    with env.session() as session:
        subjects = {
            s.id: (s.status, s.name)
            for s in session.scalars(select(Subject).where(Subject.id.in_([a["queued"], a["ready"]])))
        }
        preview = session.get(Preview, a["preview"])
        jobs = {j.id: j.status for j in session.scalars(select(Job).where(Job.tenant_id == env.a.tenant_id))}
        blobs = env.blobs.list(f"tenants/{env.a.tenant_id}")
        return {
            "subjects": subjects,
            "preview": preview.status if preview else None,
            "jobs": jobs,
            "blobs": blobs,
        }


def test_idempotency_keys_do_not_cross_tenants(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    first = env.client.post(
        "/v1/subjects",
        headers={**env.a.auth(), "Idempotency-Key": "k1"},
        data={"name": "a"},
        files=photos_files(1),
    )
    second = env.client.post(
        "/v1/subjects",
        headers={**env.b.auth(), "Idempotency-Key": "k1"},
        data={"name": "a"},
        files=photos_files(1),
    )
    assert second.status_code == 202 and "idempotency-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    with env.session() as session:
        owner = session.get(Subject, second.json()["id"])
        assert owner is not None and owner.tenant_id == env.b.tenant_id
