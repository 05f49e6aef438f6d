"""Zero-shot previews on real worker processes: a subject is painted from its reference crop while
it trains, with its adapter once ready, and an `auto` preview that waited is decided again when it is
painted (docs/api.md, Previews). The API's answers to every mode: tests/api/test_zero_shot.py."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from api.app import create_app
from core.accounts import create_key, create_tenant
from core.tables import Job, Preview, Subject
from models import read_adapter
from models.augmentation import crop_reference
from tests.worker.conftest import png_bytes, product_photo, submit_subject
from tests.worker.stack import Stack, wait_for
from worker.job_runner import JobFailed
from worker.paint_plan import paint_plan, reference_crop
from worker.runtime import Runtime

pytestmark = pytest.mark.integration
ORIGIN = "https://shop.example"
# Long enough on the tiny model for a preview to be painted, and a preview worker stopped, while it
# trains. The preview worker starting beside the training worker is what varies: on a quiet 2-core
# machine the zero-shot preview was painted 0.6 to 4.2 s into the training, and 40 steps (2 to 6 s
# of training) once left about a second to spare. 200 steps train for about 12 s there.
LONG_TRAINING_STEPS = 200


class Shop:
    def __init__(self, stack: Stack) -> None:
        with stack.session() as session:
            tenant = create_tenant(session, "zero-shot-shop")
            _, secret = create_key(session, kind="secret", tenant=tenant)
            _, publishable = create_key(session, kind="publishable", tenant=tenant, origins=[ORIGIN])
            session.commit()
            self.tenant_id = tenant.id
        self.client = TestClient(create_app(stack.settings))
        self.secret = {"Authorization": f"Bearer {secret}"}
        self.publishable = {"Authorization": f"Bearer {publishable}", "Origin": ORIGIN}
        self.room, _ = product_photo(42, size=(123, 91))
        self.mask = np.zeros((self.room.height, self.room.width), dtype=np.uint8)
        self.mask[10:60, 20:90] = 255

    def post(self, subject_id: str, mode: str | None = None, publishable: bool = False) -> Any:
        data = {"subject_id": subject_id, "seed": "5", **({"mode": mode} if mode else {})}
        return self.client.post(
            "/v1/previews",
            headers=self.publishable if publishable else self.secret,
            data=data,
            files={
                "room": ("room.png", png_bytes(self.room), "image/png"),
                "mask": ("mask.png", png_bytes(Image.fromarray(self.mask)), "image/png"),
            },
        )

    def accepted(self, subject_id: str, mode: str | None = None, publishable: bool = False) -> dict[str, Any]:
        response = self.post(subject_id, mode, publishable)
        assert response.status_code == 202, response.text
        return response.json()  # type: ignore[no-any-return]

    def refused(self, subject_id: str, mode: str | None = None) -> None:
        response = self.post(subject_id, mode)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "subject_not_ready"


def _row(stack: Stack, model: type, id_: str) -> Any:
    with stack.session() as session:
        return session.get(model, id_)


def _painted(stack: Stack, preview_id: str, timeout: float = 120) -> Preview:
    def finished() -> Preview | None:
        row = _row(stack, Preview, preview_id)
        return row if row.status in ("succeeded", "failed", "cancelled") else None

    row: Preview = wait_for(finished, timeout, f"preview {preview_id}")
    return row


def _check_result(stack: Stack, shop: Shop, row: Preview, log: str) -> None:
    assert row.status == "succeeded", (row.error_code, row.error_message, log[-3000:])
    painted = np.asarray(Image.open(io.BytesIO(stack.blobs.get(row.result_key))).convert("RGB"))
    assert painted.shape == (shop.room.height, shop.room.width, 3)
    outside = shop.mask == 0
    assert np.array_equal(painted[outside], np.asarray(shop.room)[outside])  # the room's, byte for byte


@pytest.mark.slow
def test_zero_shot_while_training_then_the_adapter(distributed_stack: Stack) -> None:
    stack = distributed_stack
    shop = Shop(stack)
    timings: dict[str, float] = {}
    started = time.monotonic()
    # Photos of different sizes, so the reference chosen is not simply the first photo's.
    photos = [product_photo(index, size=(96 + 24 * index, 80 + 8 * index)) for index in range(3)]
    subject_id, train_job = submit_subject(stack, shop.tenant_id, steps=LONG_TRAINING_STEPS, photos=photos)

    # Queued (no worker yet): not annotated, nothing to paint from in any mode.
    for mode in (None, "zero_shot", "adapter"):
        shop.refused(subject_id, mode)

    train = stack.start_worker("train")
    paint = stack.start_worker("preview,default")

    def training() -> bool:
        return _row(stack, Subject, subject_id).status == "training"

    wait_for(training, 180, "the subject to be training")
    timings["training_started"] = time.monotonic() - started
    shop.refused(subject_id, "adapter")  # the adapter: only once ready

    # auto, from a publishable key: zero-shot, painted before the subject is ready.
    early = shop.accepted(subject_id, publishable=True)
    assert (early["mode"], early["adapter_version"]) == ("zero_shot", None)
    early_row = _painted(stack, early["id"])
    assert _row(stack, Subject, subject_id).status == "training", "the training ended too soon to tell"
    timings["zero_shot_painted"] = time.monotonic() - started
    _check_result(stack, shop, early_row, paint.log())
    assert (early_row.mode, early_row.adapter_version) == ("zero_shot", None)

    # No preview worker for a while: an auto preview waits, posted as zero-shot; an explicit
    # zero-shot one waits beside it.
    paint.stop()
    waiting = shop.accepted(subject_id)
    explicit = shop.accepted(subject_id, "zero_shot")
    assert waiting["mode"] == explicit["mode"] == "zero_shot"
    assert _row(stack, Subject, subject_id).status == "training"

    def trained() -> Subject | None:
        row: Subject = _row(stack, Subject, subject_id)
        return row if row.status in ("ready", "failed", "cancelled") else None

    subject = wait_for(trained, 600, "the subject to be ready")
    assert subject.status == "ready", (subject.error_code, subject.error_message, train.log()[-3000:])
    timings["ready"] = time.monotonic() - started
    # The zero-shot preview was painted, finished and recorded before the subject became ready.
    p_job, t_job = _row(stack, Job, early_row.job_id), _row(stack, Job, train_job)
    assert p_job.finished_at < t_job.finished_at
    assert early_row.updated_at < subject.updated_at

    painter = stack.start_worker("preview,default")
    # Decided again when painted: the subject is ready now, so the adapter.
    waited = _painted(stack, waiting["id"], timeout=180)
    _check_result(stack, shop, waited, painter.log())
    assert (waited.requested_mode, waited.mode, waited.adapter_version) == ("auto", "adapter", 1)
    got = shop.client.get(f"/v1/previews/{waited.id}", headers=shop.secret).json()
    assert (got["mode"], got["adapter_version"]) == ("adapter", 1)
    # zero_shot stays zero-shot on a ready subject.
    kept = _painted(stack, explicit["id"])
    _check_result(stack, shop, kept, painter.log())
    assert (kept.mode, kept.adapter_version) == ("zero_shot", None)

    # auto after ready: the adapter, at POST and when painted.
    late = shop.accepted(subject_id)
    assert (late["mode"], late["adapter_version"]) == ("adapter", 1)
    late_row = _painted(stack, late["id"])
    _check_result(stack, shop, late_row, painter.log())
    assert (late_row.mode, late_row.adapter_version) == ("adapter", 1)
    timings["total"] = time.monotonic() - started
    print("zero-shot worker test timings (s since the subject was submitted):", timings)
    print("zero-shot preview:", early_row.timings, "training job:", t_job.timings)

    # The crop zero-shot paints from is the one training chose for the adapter (its index counts
    # the photos with a box, in order; here all of them).
    info = read_adapter(stack.blobs.get(subject.adapter_key)).info
    runtime = Runtime(stack.settings)
    with runtime.session() as session:
        row = session.get(Subject, subject_id)
        index, crop = reference_crop(runtime, row)
    assert index == info["reference_photo"]
    image, box = photos[index]
    assert np.array_equal(np.asarray(crop), np.asarray(crop_reference(image, tuple(box))))


def test_paint_plan_decides_again_and_records_it(embedded_stack: Stack) -> None:
    """In process, one step at a time: what `paint_plan` does with each subject status, and what it
    records on the row (the worker commits it with the preview's `running`)."""
    stack = embedded_stack
    shop = Shop(stack)
    photos = [product_photo(index, size=(96 + 24 * index, 80)) for index in range(2)]
    subject_id, _ = submit_subject(stack, shop.tenant_id, photos=photos)  # queued: no worker runs
    runtime = Runtime(stack.settings)

    def set_subject(**values: Any) -> None:
        with stack.session() as session:
            session.execute(update(Subject).where(Subject.id == subject_id).values(**values))
            session.commit()

    def plan(preview_id: str) -> Any:
        with runtime.session() as session:
            preview = session.get(Preview, preview_id)
            result = paint_plan(runtime, preview, session.get(Subject, subject_id))
            session.commit()
        return result

    set_subject(status="training")
    auto = shop.accepted(subject_id)["id"]
    adapter_only = shop.post(subject_id, "adapter")
    assert adapter_only.status_code == 409
    zero = plan(auto)
    assert (zero.mode, zero.adapter_id, zero.adapter_version) == ("zero_shot", None, None)
    assert zero.reference is not None and zero.reference_photo is not None
    image, box = photos[zero.reference_photo]
    assert np.array_equal(np.asarray(zero.reference), np.asarray(crop_reference(image, tuple(box))))
    recorded = _row(stack, Preview, auto)
    assert (recorded.requested_mode, recorded.mode, recorded.adapter_version) == ("auto", "zero_shot", None)

    # Chosen once per subject and boxes: a second preview reads no photo.
    photo_keys = stack.blobs.list(f"tenants/{shop.tenant_id}/subjects/{subject_id}/photos/")
    assert photo_keys
    saved = {key: stack.blobs.get(key) for key in photo_keys}
    for key in photo_keys:
        stack.blobs.delete(key)
    again = shop.accepted(subject_id, "zero_shot")["id"]
    assert plan(again).reference_photo == zero.reference_photo
    # Other boxes (annotated again): chosen again, from the photos.
    with stack.session() as session:
        for photo in session.get(Subject, subject_id).photos:
            photo.box = [float(v) + 1 for v in photo.box]
        session.commit()
    with pytest.raises(JobFailed) as missing:
        plan(again)
    assert missing.value.code == "image_unreadable"
    for key, data in saved.items():
        stack.blobs.put(key, data, content_type="image/png")
    assert plan(again).mode == "zero_shot"

    # The subject became ready while the auto preview waited: the adapter, and its version.
    adapter_key = f"tenants/{shop.tenant_id}/subjects/{subject_id}/adapter/3.safetensors"
    set_subject(status="ready", adapter_key=adapter_key, adapter_version=3)
    ready = plan(auto)
    assert (ready.mode, ready.adapter_id, ready.adapter_version, ready.reference) == (
        "adapter", adapter_key, 3, None
    )  # fmt: skip
    row = _row(stack, Preview, auto)
    assert (row.requested_mode, row.mode, row.adapter_version) == ("auto", "adapter", 3)
    assert plan(again).mode == "zero_shot"  # asked for zero-shot: zero-shot, ready or not

    # Trained again (queued) or failed by the time it is painted: nothing to paint as asked.
    for status in ("queued", "annotating", "failed", "cancelled"):
        set_subject(status=status)
        for preview_id in (auto, again):
            with pytest.raises(JobFailed) as failed:
                plan(preview_id)
            assert failed.value.code == "subject_not_ready"
            assert status in failed.value.message
    with runtime.session() as session, pytest.raises(JobFailed) as gone:
        paint_plan(runtime, session.get(Preview, auto), None)  # the subject was deleted
    assert gone.value.code == "subject_not_ready"
