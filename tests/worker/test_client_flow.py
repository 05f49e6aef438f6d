"""A shop's backend through the generated client only (clients/python), against real processes.

`roomfit serve` (tests/api/served.py) on the distributed stack (PostgreSQL, Redis, SeaweedFS), with
train, preview and webhook workers behind it: a subject is created and trained, a preview painted,
its PNG downloaded (a 307 to a presigned S3 URL, followed); the errors a shop meets come back as the
client's `Problem` with their `code`; the webhook deliveries check out with roomfit_webhooks.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image

from tests.api.served import served_api
from tests.worker.conftest import png_bytes, product_photo
from tests.worker.stack import Stack, wait_for
from tests.worker.test_job_control import hook_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
import roomfit_webhooks
from roomfit_client import AuthenticatedClient
from roomfit_client.api.previews import create_preview, get_preview, get_preview_result
from roomfit_client.api.subjects import create_subject, get_subject, list_subjects
from roomfit_client.api.webhook import set_webhook
from roomfit_client.models import (
    CreatePreviewBody,
    CreateSubjectBody,
    FieldError,
    PreviewOut,
    Problem,
    ProblemCode,
    SubjectOut,
    WebhookCreated,
    WebhookIn,
)
from roomfit_client.types import File

pytestmark = pytest.mark.integration
__all__ = ["hook_server"]  # the fixture, shared with test_job_control

T = TypeVar("T")
# served_env sets these itself (the same values); the rest of the stack's settings go to the API.
_SERVED_SETS = {"ROOMFIT_VAR_DIR", "ROOMFIT_RATE_LIMIT", "ROOMFIT_LOG_LEVEL"}


def _png(data: bytes, name: str) -> File:
    return File(payload=io.BytesIO(data), file_name=name, mime_type="image/png")


def _until(read: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    last: list[T] = []

    def check() -> bool:
        last[:] = [read()]
        return done(last[0])

    try:
        wait_for(check, timeout, "the status", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: {last}") from None
    return last[0]


def _problem(answer: Any, status: int, code: ProblemCode) -> Problem:
    assert isinstance(answer, Problem), answer
    assert (answer.status, answer.code) == (status, code), answer
    assert answer.detail and answer.title
    return answer


def test_a_shop_backend_through_the_generated_client(
    distributed_stack: Stack, hook_server: tuple[str, Any]
) -> None:
    stack = distributed_stack
    hook_url, hooks = hook_server
    stack.start_worker("train")
    painter = stack.start_worker("preview,default")
    stack.start_worker("webhooks", ROOMFIT_WEBHOOK_ALLOW_PRIVATE="true")
    settings = {k.removeprefix("ROOMFIT_").lower(): v for k, v in stack.env.items() if k not in _SERVED_SETS}
    with (
        served_api(stack.folder, webhook_allow_private="true", **settings) as served,
        AuthenticatedClient(
            base_url=served.url, token=served.secret, timeout=60.0, raise_on_unexpected_status=True
        ) as client,
        AuthenticatedClient(
            base_url=served.url,
            token=served.secret,
            timeout=60.0,
            follow_redirects=True,
            raise_on_unexpected_status=True,
        ) as following,
    ):
        hook = set_webhook.sync(client=client, body=WebhookIn(url=hook_url))
        assert isinstance(hook, WebhookCreated) and hook.secret.startswith("whsec_"), hook

        photos = [product_photo(i) for i in range(2)]
        body = CreateSubjectBody(
            name="Striped sofa",
            label="couch",
            boxes=json.dumps([box for _, box in photos]),
            photos=[_png(png_bytes(image), f"p{i}.png") for i, (image, _) in enumerate(photos)],
        )
        created = create_subject.sync_detailed(client=client, body=body, idempotency_key="sofa-1")
        assert created.status_code == 202, created.content
        subject = created.parsed
        assert isinstance(subject, SubjectOut) and subject.name == "Striped sofa"
        assert created.headers["Location"] == f"/v1/subjects/{subject.id}"
        assert "Idempotency-Replayed" not in created.headers

        # A retry with the same key and body gets the first answer again; another body is a 409.
        for photo in body.photos:
            photo.payload.seek(0)
        again = create_subject.sync_detailed(client=client, body=body, idempotency_key="sofa-1")
        assert again.status_code == 202 and again.headers["Idempotency-Replayed"] == "true"
        assert isinstance(again.parsed, SubjectOut) and again.parsed.id == subject.id
        other = CreateSubjectBody(name="Another sofa", photos=[_png(png_bytes(photos[0][0]), "p.png")])
        reused = create_subject.sync(client=client, body=other, idempotency_key="sofa-1")
        _problem(reused, 409, ProblemCode.IDEMPOTENCY_KEY_REUSED)

        missing = get_subject.sync("sub_00000000000000000000000000", client=client)
        _problem(missing, 404, ProblemCode.NOT_FOUND)
        invalid = _problem(list_subjects.sync(client=client, limit=1000), 422, ProblemCode.VALIDATION_ERROR)
        assert isinstance(invalid.errors, list) and isinstance(invalid.errors[0], FieldError)
        assert invalid.errors[0].loc == ["query", "limit"]

        ready = _until(
            lambda: get_subject.sync(subject.id, client=client),
            lambda s: isinstance(s, SubjectOut) and s.status in ("ready", "failed"),
            240,
        )
        assert isinstance(ready, SubjectOut) and ready.status == "ready", ready
        assert ready.adapter and ready.adapter.rank == 4

        room, _ = product_photo(42, size=(123, 91))
        mask = np.zeros((room.height, room.width), dtype=np.uint8)
        mask[10:60, 20:90] = 255
        preview = create_preview.sync(
            client=client,
            body=CreatePreviewBody(
                subject_id=subject.id,
                room=_png(png_bytes(room), "room.png"),
                mask=_png(png_bytes(Image.fromarray(mask)), "mask.png"),
                seed=5,
            ),
        )
        assert isinstance(preview, PreviewOut) and preview.seed == 5, preview
        # Not painted yet: 409 `preview_not_ready` (unless the painter was quicker: the 307 below).
        early = get_preview_result.sync(preview.id, client=client)
        if early is not None:
            _problem(early, 409, ProblemCode.PREVIEW_NOT_READY)
        done = _until(
            lambda: get_preview.sync(preview.id, client=client),
            lambda p: isinstance(p, PreviewOut) and p.status in ("succeeded", "failed"),
            120,
        )
        assert isinstance(done, PreviewOut) and done.status == "succeeded", (done, painter.log()[-3000:])
        assert done.result_url == f"/v1/previews/{preview.id}/result"

        # The blob store is S3: a 307 to a presigned URL; the following client fetches the PNG.
        redirect = get_preview_result.sync_detailed(preview.id, client=client)
        assert redirect.status_code == 307 and redirect.headers["Location"].startswith("http")
        result = get_preview_result.sync(preview.id, client=following)
        assert isinstance(result, File), result
        painted = np.asarray(Image.open(result.payload).convert("RGB"))
        assert painted.shape == (room.height, room.width, 3)
        outside = mask == 0
        assert np.array_equal(painted[outside], np.asarray(room)[outside])

    # The webhook pool signed its deliveries as roomfit_webhooks checks them.
    wait_for(
        lambda: {json.loads(b)["type"] for _, b in hooks.received} >= {"subject.ready", "preview.succeeded"},
        120,
        "the webhook deliveries",
    )
    for headers, delivered in hooks.received:
        signature = headers[roomfit_webhooks.HEADER]
        event = roomfit_webhooks.parse_event(hook.secret, signature, delivered)
        assert event["data"]["id"] in (subject.id, preview.id)
        if event["type"] == "preview.succeeded":  # what it was painted with, as GET says
            assert (event["data"]["mode"], event["data"]["adapter_version"]) == ("adapter", 1), event
        assert not roomfit_webhooks.verify("whsec_other", signature, delivered)
        with pytest.raises(roomfit_webhooks.InvalidSignature):
            roomfit_webhooks.parse_event(hook.secret, signature, delivered + b" ")
        with pytest.raises(roomfit_webhooks.InvalidSignature):
            roomfit_webhooks.parse_event(hook.secret, signature, delivered, now=time.time() + 3600)
