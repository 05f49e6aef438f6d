"""API.md, line by line: every route with its statuses, fields and codes.

Routes are driven through the app on SQLite and PostgreSQL; the worker's part (statuses, results)
is simulated by writing rows and blobs as the worker would.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from core import heartbeats
from core.blob_keys import preview_prefix, subject_prefix
from core.clock import utcnow
from core.queue import job_ids_in_broker
from core.tables import Job, Preview, Subject, Webhook
from core.webhooks import sign, verify
from tests.api.conftest import (
    ApiEnv,
    build_env,
    create_preview,
    image_bytes,
    make_settings,
    mask_bytes,
    photos_files,
    ready_subject,
    succeed_preview,
)
from tests.services import S3Settings

SUBJECT_FIELDS = {"id", "name", "external_id", "status", "progress", "stage", "photos", "adapter", "error"}
SUBJECT_FIELDS |= {"created_at", "updated_at"}
PREVIEW_FIELDS = {
    "id",
    "subject_id",
    "status",
    "progress",
    "result_url",
    "error",
    "seed",
    "timings",
    "created_at",
}
PHOTO_FIELDS = {"index", "width", "height", "box", "score", "label", "source"}


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def _create(env: ApiEnv, name: str = "sofa", **data: str) -> dict[str, Any]:
    response = env.client.post(
        "/v1/subjects", headers=env.a.auth(), data={"name": name, **data}, files=photos_files(2)
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/subjects/{response.json()['id']}"
    return response.json()  # type: ignore[no-any-return]


# --- Subjects ----------------------------------------------------------------------------------


def test_create_subject_answers_202_with_a_subject_and_queues_training(env: ApiEnv) -> None:
    body = _create(env, external_id="SKU-9", label="couch")
    assert set(body) >= SUBJECT_FIELDS
    assert body["id"].startswith("sub_")
    assert (body["status"], body["progress"], body["stage"], body["adapter"], body["error"]) == (
        "queued", 0.0, None, None, None
    )  # fmt: skip
    assert body["external_id"] == "SKU-9"
    assert [p["index"] for p in body["photos"]] == [0, 1]
    assert all(set(p) == PHOTO_FIELDS and p["box"] is None for p in body["photos"])
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == body["id"])).one()
        assert (job.kind, job.status) == ("train", "queued")
        assert job.enqueued_at is not None
        photos = session.get(Subject, body["id"]).photos  # type: ignore[union-attr]
        assert all(env.blobs.exists(p.blob_key) for p in photos)
    assert job.id in (job_ids_in_broker(env.app.state.celery) or set())


def test_broker_down_still_answers_202_and_leaves_the_job_queued(sqlite_env: ApiEnv) -> None:
    env = sqlite_env

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("broker down")

    env.app.state.celery.send_task = refuse
    body = _create(env)
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == body["id"])).one()
    assert job.status == "queued" and job.enqueued_at is None  # the reconciler's to send


def test_list_subjects_newest_first_with_cursor_and_status(env: ApiEnv) -> None:
    ids = [_create(env, name=f"s{i}")["id"] for i in range(5)]
    ready = ready_subject(env, env.a)
    page = env.client.get("/v1/subjects?limit=2", headers=env.a.auth()).json()
    assert [s["id"] for s in page["items"]] == [ready, ids[4]]
    seen = [s["id"] for s in page["items"]]
    while page["next_cursor"]:
        page = env.client.get(
            f"/v1/subjects?limit=2&cursor={page['next_cursor']}", headers=env.a.auth()
        ).json()
        seen += [s["id"] for s in page["items"]]
    assert seen == [ready, *reversed(ids)]
    only_ready = env.client.get("/v1/subjects?status=ready", headers=env.a.auth()).json()
    assert [s["id"] for s in only_ready["items"]] == [ready]
    assert only_ready["next_cursor"] is None
    _problem(env.client.get("/v1/subjects?status=bogus", headers=env.a.auth()), 422, "validation_error")
    _problem(env.client.get("/v1/subjects?limit=0", headers=env.a.auth()), 422, "validation_error")
    _problem(env.client.get("/v1/subjects?limit=101", headers=env.a.auth()), 422, "validation_error")


def test_get_subject_shows_worker_progress_and_errors(env: ApiEnv) -> None:
    body = _create(env)
    with env.session() as session:
        session.execute(
            update(Subject)
            .where(Subject.id == body["id"])
            .values(status="failed", error_code="no_object_found", error_message="no couch", progress=0.3)
        )
        session.commit()
    got = env.client.get(f"/v1/subjects/{body['id']}", headers=env.a.auth()).json()
    assert got["status"] == "failed" and got["progress"] == 0.3
    assert got["error"] == {"code": "no_object_found", "message": "no couch"}
    ready = env.client.get(f"/v1/subjects/{ready_subject(env, env.a)}", headers=env.a.auth()).json()
    assert ready["adapter"] == {"bytes": 1234, "sha256": "0" * 64, "rank": 4, "base_model": "tiny"}
    assert ready["photos"][0]["box"] == [1, 2, 30, 40] and ready["photos"][0]["source"] == "detected"
    _problem(
        env.client.get("/v1/subjects/sub_01M8JXQWXADN45JA084RYC78C9", headers=env.a.auth()), 404, "not_found"
    )
    _problem(env.client.get("/v1/subjects/..%2F..", headers=env.a.auth()), 404, "not_found")


def test_delete_subject_removes_photos_adapter_previews_and_cancels_training(env: ApiEnv) -> None:
    body = _create(env)
    sid = body["id"]
    adapter = f"{subject_prefix(env.a.tenant_id, sid)}adapter/1.safetensors"
    env.blobs.put(adapter, b"weights")
    with env.session() as session:
        session.execute(update(Job).where(Job.subject_id == sid).values(status="running", worker="w1"))
        session.execute(update(Subject).where(Subject.id == sid).values(status="ready", adapter_key=adapter))
        session.commit()
    preview = create_preview(env, env.a, sid)
    succeed_preview(env, preview["id"])
    assert env.blobs.list(preview_prefix(env.a.tenant_id, preview["id"]))

    response = env.client.delete(f"/v1/subjects/{sid}", headers=env.a.auth())
    assert response.status_code == 204 and response.content == b""
    assert env.blobs.list(subject_prefix(env.a.tenant_id, sid)) == []
    assert env.blobs.list(preview_prefix(env.a.tenant_id, preview["id"])) == []
    with env.session() as session:
        assert session.get(Subject, sid) is None
        assert session.get(Preview, preview["id"]) is None
        train = session.scalars(select(Job).where(Job.subject_id == sid, Job.kind == "train")).one()
        assert train.status == "cancelled" and train.cancel_requested
    _problem(env.client.get(f"/v1/subjects/{sid}", headers=env.a.auth()), 404, "not_found")
    _problem(env.client.get(f"/v1/previews/{preview['id']}", headers=env.a.auth()), 404, "not_found")
    _problem(env.client.delete(f"/v1/subjects/{sid}", headers=env.a.auth()), 404, "not_found")


def test_train_again(env: ApiEnv) -> None:
    sid = _create(env)["id"]
    _problem(env.client.post(f"/v1/subjects/{sid}/train", headers=env.a.auth()), 409, "subject_busy")
    with env.session() as session:
        session.execute(update(Job).where(Job.subject_id == sid).values(status="succeeded"))
        session.execute(update(Subject).where(Subject.id == sid).values(status="ready", progress=1.0))
        session.commit()
    response = env.client.post(f"/v1/subjects/{sid}/train", headers=env.a.auth())
    assert response.status_code == 202
    assert response.json()["status"] == "queued" and response.json()["progress"] == 0.0
    with env.session() as session:
        assert len(session.scalars(select(Job).where(Job.subject_id == sid)).all()) == 2
    _problem(env.client.post("/v1/subjects/sub_nope/train", headers=env.a.auth()), 404, "not_found")


# --- Previews ----------------------------------------------------------------------------------


def test_create_preview_answers_202_with_a_preview(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    response = env.client.post(
        "/v1/previews",
        headers=env.a.auth(),
        data={"subject_id": sid, "seed": "1234", "steps": "12", "guidance_scale": "4.5"},
        files=[
            ("room", ("room.png", image_bytes(64, 48), "image/png")),
            (
                "mask",
                ("mask.png", mask_bytes(64, 48), "image/png"),
            ),
        ],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) >= PREVIEW_FIELDS
    assert response.headers["location"] == f"/v1/previews/{body['id']}"
    assert (body["status"], body["progress"], body["result_url"], body["error"]) == (
        "queued",
        0.0,
        None,
        None,
    )
    assert (body["seed"], body["steps"], body["guidance_scale"]) == (1234, 12, 4.5)
    assert (body["width"], body["height"]) == (64, 48)
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.preview_id == body["id"])).one()
        preview = session.get(Preview, body["id"])
        assert (job.kind, job.status, preview.job_id) == ("preview", "queued", job.id)  # type: ignore[union-attr]
        assert env.blobs.exists(preview.room_key) and env.blobs.exists(preview.mask_key)  # type: ignore[union-attr]
    assert job.id in (job_ids_in_broker(env.app.state.celery) or set())


def test_default_seed_is_random_and_returned(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    seeds = {create_preview(env, env.a, sid)["seed"] for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


def test_preview_result_streams_once_succeeded(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    preview = create_preview(env, env.a, sid)
    _problem(
        env.client.get(f"/v1/previews/{preview['id']}/result", headers=env.a.auth()), 409, "preview_not_ready"
    )
    png = succeed_preview(env, preview["id"])
    body = env.client.get(f"/v1/previews/{preview['id']}", headers=env.a.auth()).json()
    assert body["status"] == "succeeded" and body["result_url"] == f"/v1/previews/{preview['id']}/result"
    result = env.client.get(body["result_url"], headers=env.a.auth())
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    assert result.content == png


def test_preview_failure_is_reported(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    preview = create_preview(env, env.a, ready_subject(env, env.a))
    with env.session() as session:
        session.execute(
            update(Preview).values(
                status="failed", error_code="adapter_mismatch", error_message="rank 8 != 4"
            )
        )
        session.commit()
    body = env.client.get(f"/v1/previews/{preview['id']}", headers=env.a.auth()).json()
    assert (
        body["error"] == {"code": "adapter_mismatch", "message": "rank 8 != 4"} and body["result_url"] is None
    )


def test_publishable_key_makes_and_reads_its_own_previews_only(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    mine = create_preview(env, env.a, sid, kind="publishable")
    by_secret = create_preview(env, env.a, sid)
    pk = env.a.auth("publishable")
    assert env.client.get(f"/v1/previews/{mine['id']}", headers=pk).status_code == 200
    _problem(env.client.get(f"/v1/previews/{by_secret['id']}", headers=pk), 404, "not_found")
    succeed_preview(env, mine["id"])
    succeed_preview(env, by_secret["id"])
    assert env.client.get(f"/v1/previews/{mine['id']}/result", headers=pk).status_code == 200
    _problem(env.client.get(f"/v1/previews/{by_secret['id']}/result", headers=pk), 404, "not_found")
    # The secret key of the tenant sees every preview of the tenant.
    assert env.client.get(f"/v1/previews/{mine['id']}", headers=env.a.auth()).status_code == 200


def test_result_redirects_to_presigned_s3_url(tmp_path: Path, s3_settings: S3Settings) -> None:
    bucket = f"roomfit-api-{secrets.token_hex(4)}"
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'r.db'}",
        blob_url=f"s3://{bucket}",
        s3_endpoint_url=s3_settings.endpoint,
        s3_region=s3_settings.region,
        s3_access_key_id=s3_settings.access_key,
        s3_secret_access_key=s3_settings.secret_key,
        presign_seconds=60,
    )
    for env in build_env(settings):
        preview = create_preview(env, env.a, ready_subject(env, env.a))
        png = succeed_preview(env, preview["id"])
        response = env.client.get(
            f"/v1/previews/{preview['id']}/result", headers=env.a.auth(), follow_redirects=False
        )
        assert response.status_code == 307
        url = response.headers["location"]
        assert url.startswith(s3_settings.endpoint)
        assert "Expires=60" in url
        assert httpx.get(url, timeout=10).content == png
        # Another tenant gets no URL at all.
        other = env.client.get(
            f"/v1/previews/{preview['id']}/result", headers=env.b.auth(), follow_redirects=False
        )
        _problem(other, 404, "not_found")
        env.blobs.delete_prefix("tenants")


# --- Jobs and ops ------------------------------------------------------------------------------


def test_get_job(env: ApiEnv) -> None:
    sid = _create(env)["id"]
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == sid)).one()
        job.status, job.stage, job.progress, job.attempts = "running", "training", 0.5, 1
        job.loss_points = [[10, 0.25], [20, 0.2]]
        job.timings = {"annotate": 1.5}
        session.commit()
    body = env.client.get(f"/v1/jobs/{job.id}", headers=env.a.auth()).json()
    assert (body["kind"], body["status"], body["stage"], body["progress"], body["attempts"]) == (
        "train", "running", "training", 0.5, 1
    )  # fmt: skip
    assert body["loss"] == [[10, 0.25], [20, 0.2]] and body["timings"] == {"annotate": 1.5}
    assert body["error"] is None and body["subject_id"] == sid
    assert env.client.get(f"/v1/jobs/{job.id}", headers=env.ops()).json()["id"] == job.id
    _problem(env.client.get(f"/v1/jobs/{job.id}", headers=env.b.auth()), 404, "not_found")
    _problem(env.client.get("/v1/jobs/job_nope", headers=env.ops()), 404, "not_found")


def test_ops_queues_workers_jobs_retry_cancel(env: ApiEnv) -> None:
    sid = _create(env)["id"]
    _create(env, name="second")
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == sid)).one()
        job.status, job.error_code = "failed", "boom"
        heartbeats.record(session, "gpu-0:7", utcnow(), 5.0, host="gpu-0", pid=7, queues=["train"])
        session.commit()
    queues = env.client.get("/v1/ops/queues", headers=env.ops()).json()["queues"]
    train = next(q for q in queues if q["kind"] == "train")
    assert train["counts"] == {"failed": 1, "queued": 1}
    workers = env.client.get("/v1/ops/workers", headers=env.ops()).json()["workers"]
    assert [w["name"] for w in workers] == ["gpu-0:7"] and workers[0]["queues"] == ["train"]
    failed = env.client.get("/v1/ops/jobs?status=failed", headers=env.ops()).json()["items"]
    assert [j["id"] for j in failed] == [job.id] and failed[0]["tenant_id"] == env.a.tenant_id
    _problem(env.client.get("/v1/ops/jobs?status=nope", headers=env.ops()), 422, "validation_error")

    _problem(env.client.post(f"/v1/ops/jobs/{job.id}/cancel", headers=env.ops()), 409, "job_not_cancellable")
    retried = env.client.post(f"/v1/ops/jobs/{job.id}/retry", headers=env.ops())
    assert (
        retried.status_code == 202
        and retried.json()["status"] == "queued"
        and retried.json()["error"] is None
    )
    assert env.client.get(f"/v1/subjects/{sid}", headers=env.a.auth()).json()["status"] == "queued"
    assert job.id in (job_ids_in_broker(env.app.state.celery) or set())
    _problem(env.client.post(f"/v1/ops/jobs/{job.id}/retry", headers=env.ops()), 409, "job_not_retryable")
    cancelled = env.client.post(f"/v1/ops/jobs/{job.id}/cancel", headers=env.ops())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_requested"] is True
    assert env.client.get(f"/v1/subjects/{sid}", headers=env.a.auth()).json()["status"] == "cancelled"
    _problem(env.client.post("/v1/ops/jobs/job_nope/retry", headers=env.ops()), 404, "not_found")


def test_ops_page(sqlite_env: ApiEnv) -> None:
    page = sqlite_env.client.get("/ops")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/ops/jobs" in page.text and "sessionStorage" in page.text


def test_health_ready_metrics(sqlite_env: ApiEnv) -> None:
    client = sqlite_env.client
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "broker", "blob_store"}
    client.get("/v1/subjects", headers=sqlite_env.a.auth())
    metrics = client.get("/metrics").text
    assert 'roomfit_http_requests_total{method="GET",route="/v1/subjects",status="200"}' in metrics


# --- Webhooks ----------------------------------------------------------------------------------


def test_webhook_put_get_delete(env: ApiEnv) -> None:
    _problem(env.client.get("/v1/webhook", headers=env.a.auth()), 404, "not_found")
    put = env.client.put("/v1/webhook", headers=env.a.auth(), json={"url": "https://shop-a.example/hooks"})
    assert put.status_code == 200
    secret = put.json()["secret"]
    assert secret.startswith("whsec_") and put.json()["url"] == "https://shop-a.example/hooks"
    got = env.client.get("/v1/webhook", headers=env.a.auth()).json()
    assert got["url"] == "https://shop-a.example/hooks" and "secret" not in got
    assert set(got["events"]) == {"subject.ready", "subject.failed", "preview.succeeded", "preview.failed"}
    rotated = env.client.put(
        "/v1/webhook", headers=env.a.auth(), json={"url": "https://shop-a.example/v2"}
    ).json()
    assert rotated["secret"] != secret
    with env.session() as session:
        hook = session.scalars(select(Webhook).where(Webhook.tenant_id == env.a.tenant_id)).one()
        assert hook.secret == rotated["secret"] and hook.url.endswith("/v2")
    _problem(env.client.get("/v1/webhook", headers=env.b.auth()), 404, "not_found")
    assert env.client.delete("/v1/webhook", headers=env.a.auth()).status_code == 204
    _problem(env.client.get("/v1/webhook", headers=env.a.auth()), 404, "not_found")
    assert env.client.delete("/v1/webhook", headers=env.a.auth()).status_code == 204


def test_webhook_url_checks(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    for url in (
        "http://shop.example/h",
        "ftp://shop.example",
        "https://",
        "https://u:p@shop.example",
        "not a url",
        # inward, in every spelling (docs/api.md: public addresses only)
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.8/h",
        "https://192.168.1.1/h",
        "https://127.0.0.1:6379/",
        "https://[::ffff:169.254.169.254]/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://127.1/",
        "https://localhost/h",
    ):
        _problem(
            env.client.put("/v1/webhook", headers=env.a.auth(), json={"url": url}),
            422,
            "webhook_url_not_allowed",
        )
    _problem(env.client.put("/v1/webhook", headers=env.a.auth(), json={"nope": 1}), 422, "validation_error")
    _problem(
        env.client.put(
            "/v1/webhook",
            headers=env.a.auth(),
            content=b"{",
        ),
        422,
        "validation_error",
    )
    local = {"url": "http://localhost:9000/h"}
    _problem(env.client.put("/v1/webhook", headers=env.a.auth(), json=local), 422, "webhook_url_not_allowed")
    # A developer's own receiver: only under the development setting.
    app = env.client.app
    app.state.settings = env.settings.model_copy(update={"webhook_allow_private": True})  # type: ignore[attr-defined]
    assert env.client.put("/v1/webhook", headers=env.a.auth(), json=local).status_code == 200


def test_signature_matches_api_md() -> None:
    body = json.dumps({"type": "subject.ready", "data": {"id": "sub_1"}})
    header = sign("whsec_test", 1700000000, body)
    t, v1 = header.split(",")
    assert t == "t=1700000000"
    import hashlib
    import hmac

    expected = hmac.new(b"whsec_test", f"1700000000.{body}".encode(), hashlib.sha256).hexdigest()
    assert v1 == f"v1={expected}"
    assert sign("whsec_test", 1700000000, body.encode()) == header
    assert verify("whsec_test", header, body, now=1700000100)
    assert not verify("whsec_test", header, body, now=1700001000)  # too old
    assert not verify("whsec_other", header, body, now=1700000000)
    assert not verify("whsec_test", header, body + " ", now=1700000000)
    assert not verify("whsec_test", "garbage", body)
    assert verify("whsec_test", sign("whsec_test", int(time.time()), body), body)


# --- Rules for every call ----------------------------------------------------------------------


def test_unknown_routes_and_methods_are_problems(sqlite_env: ApiEnv) -> None:
    _problem(sqlite_env.client.get("/v1/nothing"), 404, "not_found")
    _problem(sqlite_env.client.patch("/v1/subjects", headers=sqlite_env.a.auth()), 405, "method_not_allowed")


def test_database_down_is_503(sqlite_env: ApiEnv, tmp_path: Path) -> None:
    from sqlalchemy.orm import sessionmaker

    from core.db import make_engine

    folder = tmp_path / "gone"
    broken = make_engine(f"sqlite:///{folder}/x.db")  # creates the folder ...
    folder.rmdir()  # ... which then vanishes: every connection fails
    sqlite_env.app.state.sessions = sessionmaker(bind=broken)
    _problem(sqlite_env.client.get("/v1/subjects", headers=sqlite_env.a.auth()), 503, "service_unavailable")


def test_openapi_and_docs(sqlite_env: ApiEnv) -> None:
    client = sqlite_env.client
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "/v1/subjects"), ("get", "/v1/subjects"), ("get", "/v1/subjects/{subject_id}"),
        ("delete", "/v1/subjects/{subject_id}"), ("post", "/v1/subjects/{subject_id}/train"),
        ("post", "/v1/previews"), ("get", "/v1/previews/{preview_id}"),
        ("get", "/v1/previews/{preview_id}/result"), ("get", "/v1/jobs/{job_id}"),
        ("get", "/v1/ops/queues"), ("get", "/v1/ops/workers"), ("get", "/v1/ops/jobs"),
        ("post", "/v1/ops/jobs/{job_id}/retry"), ("post", "/v1/ops/jobs/{job_id}/cancel"),
        ("put", "/v1/webhook"), ("get", "/v1/webhook"), ("delete", "/v1/webhook"),
        ("get", "/healthz"), ("get", "/readyz"),
    }  # fmt: skip
    present = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert expected <= present
    for method, path in expected:
        operation = spec["paths"][path][method]
        if path.startswith("/v1"):
            assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
            assert operation["responses"]["401"]["content"]["application/problem+json"]
        if method == "post":
            assert any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])), path
    form = spec["paths"]["/v1/subjects"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["photos"]["maxItems"] == 8
    assert spec["components"]["schemas"]["SubjectOut"]["properties"]["name"]["examples"]
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    assert client.get("/docs").status_code == 200
