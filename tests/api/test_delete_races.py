"""Deletions that land while another request is half way: forced interleavings, on SQLite and
PostgreSQL.

- A display rendition encoded while its preview is deleted (`DELETE`, or the retention sweep) is not
  left behind under the deleted preview's prefix; the GET answers 404 as one after the deletion does.
- A preview created, or a training asked for, while its subject is deleted answers 404 `not_found`
  (not 500), and leaves no row and no blob behind; a preview that commits while the delete waits
  goes with the subject, its blobs too."""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image

import api.renditions as renditions
from api.services import previews as preview_service
from api.services import subjects as subject_service
from core import previews
from core.blob_keys import preview_mask_key, preview_prefix, preview_room_key, subject_prefix
from core.clock import utcnow
from core.ids import new_id
from core.retention import forget_old_previews
from core.tables import Job, Preview, Subject
from tests.api.conftest import ApiEnv, create_preview, image_bytes, mask_bytes, ready_subject, succeed_preview

RENDITION = "format=webp&max_side=32"


def _not_found(response: Any) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


def _finished_preview(env: ApiEnv, finished_days_ago: float | None = None) -> str:
    preview_id: str = create_preview(env, env.a, ready_subject(env, env.a))["id"]
    succeed_preview(env, preview_id)
    if finished_days_ago is not None:
        with env.session() as session:
            preview = session.get(Preview, preview_id)
            assert preview is not None
            preview.updated_at = utcnow() - timedelta(days=finished_days_ago)
            session.commit()
    return preview_id


def _during_encode(monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> None:
    real = renditions.encode

    def encode(data: bytes, wanted: renditions.Rendition, *, budget_bytes: int = 0) -> bytes:
        out = real(data, wanted, budget_bytes=budget_bytes)
        meanwhile()
        return out

    monkeypatch.setattr(renditions, "encode", encode)


# --- renditions -----------------------------------------------------------------------------------


def test_a_rendition_encoded_while_its_preview_is_deleted_is_not_left_behind(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    preview_id = _finished_preview(env)
    deleted: list[int] = []
    # The shopper presses "Delete my photos" while the first rendition is encoded.
    url = f"/v1/previews/{preview_id}"

    def delete() -> None:
        deleted.append(env.client.delete(url, headers=env.a.auth()).status_code)

    _during_encode(monkeypatch, delete)
    _not_found(env.client.get(f"/v1/previews/{preview_id}/result?{RENDITION}", headers=env.a.auth()))
    assert deleted == [204]
    assert env.blobs.list(preview_prefix(env.a.tenant_id, preview_id)) == []
    _not_found(env.client.get(f"/v1/previews/{preview_id}", headers=env.a.auth()))


def test_a_rendition_encoded_while_the_retention_sweep_takes_its_preview_is_not_left_behind(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = env.settings.preview_retention_days
    preview_id = _finished_preview(env, finished_days_ago=days + 1)  # expired, not yet swept

    def sweep() -> None:  # it deletes the blobs first, then the rows
        with env.session() as session:
            assert forget_old_previews(session, env.blobs, utcnow(), days).deleted == 1

    _during_encode(monkeypatch, sweep)
    _not_found(env.client.get(f"/v1/previews/{preview_id}/result?{RENDITION}", headers=env.a.auth()))
    assert env.blobs.list(preview_prefix(env.a.tenant_id, preview_id)) == []


def test_a_rendition_of_a_preview_about_to_expire_is_sent_but_not_kept(env: ApiEnv) -> None:
    preview_id = _finished_preview(env, finished_days_ago=env.settings.preview_retention_days - 0.01)
    response = env.client.get(f"/v1/previews/{preview_id}/result?{RENDITION}", headers=env.a.auth())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(response.content)).size) == 32
    # Nothing kept that the sweep, already deleting blobs, could miss.
    assert [k for k in env.blobs.list(preview_prefix(env.a.tenant_id, preview_id)) if ".r/" in k] == []


# --- a subject deleted under a request that writes rows of it --------------------------------------


def test_a_preview_whose_subject_is_deleted_while_its_images_decode_answers_404(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject_id = ready_subject(env, env.a)
    real = preview_service.decode_mask
    deleted: list[int] = []

    def decode_then_delete(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        deleted.append(env.client.delete(f"/v1/subjects/{subject_id}", headers=env.a.auth()).status_code)
        return out

    monkeypatch.setattr(preview_service, "decode_mask", decode_then_delete)
    # (A 500 raises here: env.client re-raises the app's errors.)
    response = env.client.post(
        "/v1/previews",
        headers=env.a.auth(),
        data={"subject_id": subject_id},
        files=[
            ("room", ("room.png", image_bytes(64, 48), "image/png")),
            ("mask", ("mask.png", mask_bytes(64, 48), "image/png")),
        ],
    )
    assert deleted == [204]
    _not_found(response)
    assert subject_id in response.json()["detail"]
    with env.session() as session:
        assert session.query(Preview).count() == 0
        assert session.query(Job).filter(Job.kind == "preview").count() == 0
    assert [k for k in env.blobs.list(f"tenants/{env.a.tenant_id}") if "/previews/" in k] == []
    assert env.blobs.list(subject_prefix(env.a.tenant_id, subject_id)) == []


def test_training_a_subject_deleted_meanwhile_answers_404(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject_id = ready_subject(env, env.a)
    real = subject_service.check_training_quota
    deleted: list[int] = []

    def quota_then_delete(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        deleted.append(env.client.delete(f"/v1/subjects/{subject_id}", headers=env.a.auth()).status_code)

    monkeypatch.setattr(subject_service, "check_training_quota", quota_then_delete)
    response = env.client.post(f"/v1/subjects/{subject_id}/train", headers=env.a.auth())
    assert deleted == [204]
    _not_found(response)
    with env.session() as session:
        assert session.get(Subject, subject_id) is None
        assert session.query(Job).filter(Job.subject_id == subject_id, Job.kind == "train").count() == 0


def test_a_preview_committed_while_its_subject_is_deleted_leaves_no_room_photo(env: ApiEnv) -> None:
    """A preview's row is flushed (its images already stored) when the subject's DELETE comes; the
    preview commits while the delete waits. The delete's cascade takes the row, and it must take the
    preview's room photo and mask too, not leave them where no row leads."""
    subject_id = ready_subject(env, env.a)
    preview_id = new_id("prv")
    tenant_id = env.a.tenant_id
    room_key = preview_room_key(tenant_id, preview_id, "png")
    env.blobs.put(room_key, image_bytes(8, 8), "image/png")
    env.blobs.put(preview_mask_key(tenant_id, preview_id), mask_bytes(8, 8), "image/png")
    deleted: list[int] = []

    def delete() -> None:
        deleted.append(env.client.delete(f"/v1/subjects/{subject_id}", headers=env.a.auth()).status_code)

    with env.session() as session:
        preview = previews.new_preview(
            id=preview_id, subject_id=subject_id, seed=1, steps=2, guidance_scale=5.0, width=8, height=8,
            room_key=room_key, mask_key=preview_mask_key(tenant_id, preview_id), requested_mode="auto",
        )  # fmt: skip
        preview.tenant_id = tenant_id
        session.add(preview)
        session.flush()  # the preview request is here: its row written, not yet committed
        deleting = threading.Thread(target=delete)
        deleting.start()
        deleting.join(0.5)  # the delete is under way, waiting for this transaction
        session.commit()
    deleting.join(30)
    assert deleted == [204]
    with env.session() as session:
        assert session.get(Preview, preview_id) is None
    assert env.blobs.list(preview_prefix(tenant_id, preview_id)) == []
