"""A subject trained again keeps two adapter versions in the blob store: the current one and the one
it replaced (a preview may be painting with it right now); older ones are deleted
(worker.train_job.forget_superseded_adapters)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.accounts import create_key
from core.blob_keys import adapter_key, checkpoint_key, photo_key, subject_prefix
from core.blobstore import BlobStoreUnavailable, LocalBlobStore
from core.tables import Subject, Tenant
from tests.worker.conftest import make_tenant, submit_subject
from tests.worker.stack import Stack, wait_for
from worker.train_job import forget_superseded_adapters

pytestmark = pytest.mark.integration


def _store_with_versions(tmp_path: Path, versions: range) -> LocalBlobStore:
    blobs = LocalBlobStore(tmp_path / "blobs")
    for subject in ("sub_a", "sub_b"):
        for version in versions:
            blobs.put(adapter_key("ten_1", subject, version), b"lora", "application/octet-stream")
    blobs.put(photo_key("ten_1", "sub_a", 0, "png"), b"photo", "image/png")
    blobs.put(checkpoint_key("ten_1", "sub_a", 5), b"state", "application/octet-stream")
    return blobs


def test_versions_older_than_the_replaced_one_go(tmp_path: Path) -> None:
    blobs = _store_with_versions(tmp_path, range(1, 6))
    gone = forget_superseded_adapters(blobs, "ten_1", "sub_a", 4, adapter_key("ten_1", "sub_a", 5))
    assert gone == [adapter_key("ten_1", "sub_a", v) for v in (1, 2, 3)]
    assert blobs.list(subject_prefix("ten_1", "sub_a")) == sorted(
        [
            adapter_key("ten_1", "sub_a", 4),
            adapter_key("ten_1", "sub_a", 5),
            checkpoint_key("ten_1", "sub_a", 5),
            photo_key("ten_1", "sub_a", 0, "png"),
        ]
    )
    assert len(blobs.list(subject_prefix("ten_1", "sub_b"))) == 5  # another subject's: untouched


def test_the_current_version_stays_whatever_its_number(tmp_path: Path) -> None:
    """A training retried from before a later one (ops) may write a lower number than the one it
    replaces: it is current all the same."""
    blobs = _store_with_versions(tmp_path, range(1, 5))
    current = adapter_key("ten_1", "sub_a", 2)
    gone = forget_superseded_adapters(blobs, "ten_1", "sub_a", 4, current)
    assert gone == [adapter_key("ten_1", "sub_a", v) for v in (1, 3)]
    assert blobs.exists(current)


def test_a_store_that_refuses_one_delete_loses_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = _store_with_versions(tmp_path, range(1, 4))
    refuse, other = adapter_key("ten_1", "sub_a", 1), adapter_key("ten_1", "sub_a", 2)
    delete = blobs.delete

    def flaky(key: str) -> None:
        if key == refuse:
            raise BlobStoreUnavailable("the store is down for this one")
        delete(key)

    monkeypatch.setattr(blobs, "delete", flaky)
    current = adapter_key("ten_1", "sub_a", 4)
    assert forget_superseded_adapters(blobs, "ten_1", "sub_a", 3, current) == [other]
    assert not blobs.exists(other)
    assert blobs.exists(refuse)  # the next training tries again


def test_a_subject_trained_three_times_keeps_the_last_two_versions(embedded_stack: Stack) -> None:
    stack = embedded_stack
    tenant_id = make_tenant(stack)
    with stack.session() as session:
        _, secret = create_key(session, kind="secret", tenant=session.get(Tenant, tenant_id))
        session.commit()
    client = TestClient(create_app(stack.settings))
    worker = stack.start_worker("train")
    subject_id, _ = submit_subject(stack, tenant_id)

    def ready_with(version: int) -> Subject | None:
        subject = stack.finished(Subject, subject_id)
        return subject if subject is not None and subject.adapter_version == version else None

    for version in (1, 2, 3):
        if version > 1:
            answer = client.post(
                f"/v1/subjects/{subject_id}/train", headers={"Authorization": f"Bearer {secret}"}
            )
            assert answer.status_code == 202, answer.text
        subject = wait_for(lambda v=version: ready_with(v), 180, f"adapter version {version}")
        assert subject.status == "ready", worker.log()[-3000:]

    adapters = stack.blobs.list(f"{subject_prefix(tenant_id, subject_id)}adapter/")
    assert adapters == [adapter_key(tenant_id, subject_id, v) for v in (2, 3)]
    assert subject.adapter_key == adapter_key(tenant_id, subject_id, 3)
