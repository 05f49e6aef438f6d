"""Idempotency-Key on POSTs: replay for the same body, 409 for another, one subject under races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from core.clock import utcnow
from core.tables import IdempotencyRecord, Job, Subject
from tests.api.conftest import ApiEnv, image_bytes, photos_files


def _post(env: ApiEnv, key: str | None, name: str = "sofa", photos: int = 1, shop: Any = None) -> Any:
    headers = (shop or env.a).auth()
    if key is not None:
        headers["Idempotency-Key"] = key
    return env.client.post("/v1/subjects", headers=headers, data={"name": name}, files=photos_files(photos))


def _subjects(env: ApiEnv) -> int:
    with env.session() as session:
        return int(session.scalar(select(func.count()).select_from(Subject)) or 0)


def test_same_key_same_body_replays_first_answer(env: ApiEnv) -> None:
    first = _post(env, "order-1")
    assert first.status_code == 202
    again = _post(env, "order-1")  # multipart boundary differs: the content is what counts
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotency-replayed"] == "true"
    assert _subjects(env) == 1
    with env.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        record = session.scalars(select(IdempotencyRecord)).one()
        assert record.expires_at - record.created_at >= timedelta(hours=24)


def test_same_key_other_body_is_409(env: ApiEnv) -> None:
    assert _post(env, "order-2").status_code == 202
    reused = _post(env, "order-2", name="another sofa")
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    other_path = env.client.post(
        "/v1/previews",
        headers={**env.a.auth(), "Idempotency-Key": "order-2"},
        data={"subject_id": "sub_x"},
        files=[("room", ("r.png", image_bytes(), "image/png"))],
    )
    assert other_path.json()["code"] == "idempotency_key_reused"
    assert _subjects(env) == 1


def test_keys_are_per_api_key(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    a = _post(env, "shared")
    b = _post(env, "shared", shop=env.b)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_errors_release_the_key(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    bad = env.client.post(
        "/v1/subjects",
        headers={**env.a.auth(), "Idempotency-Key": "k"},
        data={"name": "sofa"},
        files=[("photos", ("x.jpg", b"text", "image/jpeg"))],
    )
    assert bad.status_code == 415
    # The same key with the same (bad) body is not replayed as a success; with a fixed body it works.
    assert _post(env, "k").status_code == 202


def test_expired_records_do_not_replay(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    first = _post(env, "old")
    with env.session() as session:
        session.execute(update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    second = _post(env, "old")
    assert second.status_code == 202 and second.json()["id"] != first.json()["id"]


def test_in_progress_key_is_409(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    from api.idempotency import request_digest

    with env.session() as session:
        session.add(
            IdempotencyRecord(
                id="idm_x",
                tenant_id=env.a.tenant_id,
                api_key_id=env.a.secret_id,
                key="busy",
                method="POST",
                path="/v1/subjects",
                request_hash=request_digest("POST", "/v1/subjects", "whatever"),
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(hours=24),
            )
        )
        session.commit()
    response = _post(env, "busy")
    # Another body than the running one: reused; the in-progress answer is for the same body.
    assert response.status_code == 409
    assert response.json()["code"] in ("idempotency_key_reused", "idempotency_key_in_progress")


def test_invalid_key_header(sqlite_env: ApiEnv) -> None:
    response = _post(sqlite_env, "x" * 300)
    assert response.status_code == 422 and response.json()["code"] == "invalid_idempotency_key"


def test_concurrent_duplicates_create_one_subject(env: ApiEnv) -> None:
    files = photos_files(3)

    def send(_: int) -> Any:
        return env.client.post(
            "/v1/subjects",
            headers={**env.a.auth(), "Idempotency-Key": "race"},
            data={"name": "sofa"},
            files=files,
        )

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}, statuses
    ok = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(ok) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_key_in_progress"
    assert _subjects(env) == 1


def test_train_again_is_idempotent(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject = _post(env, None).json()
    with env.session() as session:
        session.execute(update(Job).values(status="failed"))
        session.commit()
    headers = {**env.a.auth(), "Idempotency-Key": "retrain"}
    first = env.client.post(f"/v1/subjects/{subject['id']}/train", headers=headers)
    second = env.client.post(f"/v1/subjects/{subject['id']}/train", headers=headers)
    assert first.status_code == second.status_code == 202
    with env.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2


def test_ops_keys_replay_too(env: ApiEnv) -> None:
    """Ops keys belong to no tenant; their retries are replayed like any other key's."""
    subject = _post(env, None).json()
    with env.session() as session:
        job = session.scalars(select(Job).where(Job.subject_id == subject["id"])).one()
        job.status = "failed"
        session.commit()
    headers = {**env.ops(), "Idempotency-Key": "ops-retry"}
    first = env.client.post(f"/v1/ops/jobs/{job.id}/retry", headers=headers)
    again = env.client.post(f"/v1/ops/jobs/{job.id}/retry", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotency-replayed"] == "true" and again.json() == first.json()
    other = env.client.post(f"/v1/ops/jobs/{job.id}/cancel", headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    with env.session() as session:
        record = session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.key == "ops-retry")).one()
        assert record.tenant_id is None


def test_a_key_lost_three_times_in_a_row_is_409_with_retry_after(
    sqlite_env: ApiEnv, monkeypatch: Any
) -> None:
    """A claim that meets a concurrent insert three times (each read found nothing, each insert hit
    the unique key) gives up with 409 `idempotency_key_in_progress`, and tells the client when to
    retry, as the ordinary in-progress answer does."""
    from core.repository import IdempotencyRepository

    env = sqlite_env
    first = _post(env, "contended")
    assert first.status_code == 202
    real_find = IdempotencyRepository.find
    blind: list[str] = []

    def find_too_early(self: IdempotencyRepository, key: str) -> Any:
        if len(blind) < 3:  # the read ran before the other request's insert committed
            blind.append(key)
            return None
        return real_find(self, key)

    monkeypatch.setattr(IdempotencyRepository, "find", find_too_early)
    second = _post(env, "contended")
    assert len(blind) == 3
    assert second.status_code == 409 and second.json()["code"] == "idempotency_key_in_progress"
    assert second.headers["retry-after"] == "1"
    assert _subjects(env) == 1
