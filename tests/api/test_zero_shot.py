"""Zero-shot previews at the API (docs/api.md, Previews): the `mode` field against every subject
status, what the Preview says it is painted with, and every refusal (409 `subject_not_ready`, 422
`validation_error`). The worker's side is tests/worker/test_zero_shot.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from api.schemas import PreviewOut
from core.db import make_engine
from core.ids import new_id
from core.migrate import downgrade, upgrade
from core.previews import REQUESTED_MODES
from core.tables import Preview, Subject, SubjectPhoto
from tests.api.conftest import ApiEnv, Shop, image_bytes, mask_bytes

BOX = [1.0, 2.0, 30.0, 40.0]
# subject status -> what each mode is painted with (None: 409 subject_not_ready); docs/api.md's table
EXPECTED: dict[str, dict[str, str | None]] = {
    "queued": {"auto": None, "adapter": None, "zero_shot": None},
    "annotating": {"auto": None, "adapter": None, "zero_shot": None},
    "training": {"auto": "zero_shot", "adapter": None, "zero_shot": "zero_shot"},
    "ready": {"auto": "adapter", "adapter": "adapter", "zero_shot": "zero_shot"},
    "failed": {"auto": None, "adapter": None, "zero_shot": None},
    "cancelled": {"auto": None, "adapter": None, "zero_shot": None},
}


def _subject(env: ApiEnv, shop: Shop, status: str, boxes: list[list[float] | None] | None = None) -> str:
    """A subject in `status`, its photos boxed as given (default: one photo with a box). A queued or
    annotating subject keeps boxes its caller gave, so they are there too: the status decides."""
    boxes = [BOX] if boxes is None else boxes
    ready = status == "ready"
    with env.session() as session:
        subject = Subject(
            id=new_id("sub"),
            tenant_id=shop.tenant_id,
            name="sofa",
            status=status,
            progress=1.0 if ready else 0.3,
            adapter_version=2 if ready else None,
            adapter_key=f"tenants/{shop.tenant_id}/subjects/x/adapter/2.safetensors" if ready else None,
        )
        session.add(subject)
        for index, box in enumerate(boxes):
            session.add(
                SubjectPhoto(
                    id=new_id("pho"),
                    tenant_id=shop.tenant_id,
                    subject_id=subject.id,
                    index=index,
                    blob_key=f"k{index}",
                    width=64,
                    height=48,
                    box=box,
                    source="given" if box else None,
                )
            )
        session.commit()
        return subject.id


def _post(
    env: ApiEnv, subject_id: str, mode: str | None = None, kind: str = "secret", **extra: str
) -> httpx.Response:
    data = {"subject_id": subject_id, **extra}
    if mode is not None:
        data["mode"] = mode
    return env.client.post(
        "/v1/previews",
        headers=env.a.auth(kind),
        data=data,
        files=[
            ("room", ("room.png", image_bytes(64, 48), "image/png")),
            ("mask", ("mask.png", mask_bytes(64, 48), "image/png")),
        ],
    )


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def _previews(env: ApiEnv) -> int:
    with env.session() as session:
        return int(session.scalar(select(func.count()).select_from(Preview)) or 0)


def _row(env: ApiEnv, preview_id: str) -> Preview:
    with env.session() as session:
        row = session.get(Preview, preview_id)
        assert row is not None
        return row


def test_every_mode_against_every_subject_status(env: ApiEnv) -> None:
    """On SQLite and PostgreSQL: what each (status, mode) answers, and what the row records."""
    for status, by_mode in EXPECTED.items():
        subject_id = _subject(env, env.a, status)
        for mode, painted in by_mode.items():
            before = _previews(env)
            response = _post(env, subject_id, mode)
            if painted is None:
                detail = _problem(response, 409, "subject_not_ready")["detail"]
                assert subject_id in detail and status in detail
                assert _previews(env) == before  # refused before anything is stored
                continue
            assert response.status_code == 202, (status, mode, response.text)
            body = response.json()
            assert (body["mode"], body["adapter_version"]) == (
                painted,
                2 if painted == "adapter" else None,
            ), (status, mode)
            row = _row(env, body["id"])
            assert (row.requested_mode, row.mode, row.adapter_version) == (
                mode,
                painted,
                body["adapter_version"],
            )
            got = env.client.get(f"/v1/previews/{body['id']}", headers=env.a.auth()).json()
            assert (got["mode"], got["adapter_version"]) == (painted, body["adapter_version"])


@pytest.mark.parametrize("status", ["training", "ready"])
def test_mode_defaults_to_auto(sqlite_env: ApiEnv, status: str) -> None:
    env = sqlite_env
    subject_id = _subject(env, env.a, status)
    for sent in (None, ""):  # absent, or sent empty
        response = _post(env, subject_id, sent)
        assert response.status_code == 202, response.text
        assert response.json()["mode"] == EXPECTED[status]["auto"]
        assert _row(env, response.json()["id"]).requested_mode == "auto"


def test_training_subject_without_a_box_is_not_ready(sqlite_env: ApiEnv) -> None:
    """Training but no photo boxed (annotation found nothing; the training is about to fail): nothing
    to paint from, in any mode. One box among unboxed photos is enough."""
    env = sqlite_env
    unboxed = _subject(env, env.a, "training", boxes=[None, None])
    for mode in REQUESTED_MODES:
        _problem(_post(env, unboxed, mode), 409, "subject_not_ready")
    one_box = _subject(env, env.a, "training", boxes=[None, BOX])
    assert _post(env, one_box, "zero_shot").json()["mode"] == "zero_shot"


def test_adapter_mode_refusal_says_why(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_id = _subject(env, env.a, "training")
    detail = _problem(_post(env, subject_id, "adapter"), 409, "subject_not_ready")["detail"]
    assert detail == f"subject {subject_id} is training; mode adapter needs a ready subject"
    queued = _subject(env, env.a, "queued")
    detail = _problem(_post(env, queued, "auto"), 409, "subject_not_ready")["detail"]
    assert "queued" in detail and "annotated" in detail


@pytest.mark.parametrize("mode", ["bogus", "AUTO", "zero-shot", "1"])
def test_unknown_mode_is_a_validation_error(sqlite_env: ApiEnv, mode: str) -> None:
    env = sqlite_env
    subject_id = _subject(env, env.a, "ready")
    body = _problem(_post(env, subject_id, mode), 422, "validation_error")
    assert [error["loc"][-1] for error in body["errors"]] == ["mode"], body
    assert _previews(env) == 0


def test_bad_mode_answers_422_before_the_subject_is_looked_at(sqlite_env: ApiEnv) -> None:
    """A bad field is the client's first problem, even for a subject that is not ready or not there."""
    env = sqlite_env
    queued = _subject(env, env.a, "queued")
    _problem(_post(env, queued, "bogus"), 422, "validation_error")
    _problem(_post(env, "sub_01M8JXQWXADN45JA084RYC78C9", "bogus"), 422, "validation_error")
    _problem(_post(env, "sub_01M8JXQWXADN45JA084RYC78C9", "zero_shot"), 404, "not_found")


def test_another_tenants_training_subject_is_not_found(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    theirs = _subject(env, env.b, "training")
    _problem(_post(env, theirs, "zero_shot"), 404, "not_found")


def test_publishable_key_makes_zero_shot_previews(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    training = _subject(env, env.a, "training")
    pk = env.a.auth("publishable")
    made = _post(env, training, kind="publishable")
    assert made.status_code == 202, made.text
    assert (made.json()["mode"], made.json()["adapter_version"]) == ("zero_shot", None)
    explicit = _post(env, training, "zero_shot", kind="publishable")
    assert explicit.json()["mode"] == "zero_shot"
    got = env.client.get(f"/v1/previews/{made.json()['id']}", headers=pk).json()
    assert got["mode"] == "zero_shot"
    # The same refusals as a secret key.
    _problem(_post(env, training, "adapter", kind="publishable"), 409, "subject_not_ready")
    _problem(_post(env, _subject(env, env.a, "queued"), kind="publishable"), 409, "subject_not_ready")
    _problem(_post(env, training, "bogus", kind="publishable"), 422, "validation_error")
    ready = _subject(env, env.a, "ready")
    assert _post(env, ready, kind="publishable").json()["mode"] == "adapter"
    assert _post(env, ready, "zero_shot", kind="publishable").json()["mode"] == "zero_shot"


def test_idempotency_key_covers_the_mode(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    ready = _subject(env, env.a, "ready")

    def post(mode: str) -> httpx.Response:
        return env.client.post(
            "/v1/previews",
            headers={**env.a.auth(), "Idempotency-Key": "zero-shot-1"},
            data={"subject_id": ready, "mode": mode, "seed": "5"},
            files=[
                ("room", ("room.png", image_bytes(64, 48), "image/png")),
                ("mask", ("mask.png", mask_bytes(64, 48), "image/png")),
            ],
        )

    first = post("zero_shot")
    assert first.status_code == 202 and first.json()["mode"] == "zero_shot"
    again = post("zero_shot")
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    _problem(post("adapter"), 409, "idempotency_key_reused")


def test_openapi_documents_the_field_and_the_preview_fields(sqlite_env: ApiEnv) -> None:
    document = sqlite_env.client.get("/openapi.json").json()
    form = document["paths"]["/v1/previews"]["post"]["requestBody"]["content"]["multipart/form-data"]
    mode = form["schema"]["properties"]["mode"]
    assert (mode["enum"], mode["default"]) == (list(REQUESTED_MODES), "auto")
    preview = document["components"]["schemas"]["PreviewOut"]
    assert preview["properties"]["mode"]["enum"] == ["adapter", "zero_shot"]
    assert {"mode", "adapter_version"} <= set(preview["required"])


def test_previews_from_before_migration_0003_read_as_adapter(database_url: str) -> None:
    """A preview row of an older release (revision 0002) reads as asked for and painted with an
    adapter (what it could only be then), of unknown version. Down again keeps the row."""
    upgrade(database_url, "0002")
    now = datetime.now(UTC)
    rows = [
        ("tenants", {"id": "ten_old", "name": "old", "created_at": now}),
        (
            "subjects",
            {"id": "sub_old", "tenant_id": "ten_old", "name": "sofa", "status": "ready", "progress": 1.0}
            | {"created_at": now, "updated_at": now},
        ),
        (
            "previews",
            {"id": "prv_old", "tenant_id": "ten_old", "subject_id": "sub_old", "status": "succeeded"}
            | {"progress": 1.0, "seed": 1, "width": 64, "height": 48, "room_key": "r", "mask_key": "m"}
            | {"timings": "{}", "created_at": now, "updated_at": now},
        ),
    ]
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for table, values in rows:
                columns = ", ".join(values)
                conn.execute(
                    text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + c for c in values)})"),
                    values,
                )
        upgrade(database_url)
        with Session(engine) as session:
            row = session.get(Preview, "prv_old")
            assert row is not None
            assert (row.requested_mode, row.mode, row.adapter_version) == ("adapter", "adapter", None)
            out = PreviewOut.of(row, retention_days=30)
            assert (out.mode, out.adapter_version) == ("adapter", None)
        downgrade(database_url, "0002")
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT status FROM previews WHERE id = 'prv_old'")).scalar() == "succeeded"
            )
    finally:
        engine.dispose()
