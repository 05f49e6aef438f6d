"""The whole service, as a shop uses it: REST API in, real worker processes behind it, both ways to run.

Photos are POSTed, the subject trains on the train pool, a preview is POSTed and painted on the
preview pool, and the result has the room's size with every pixel outside the mask unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from core.accounts import create_key, create_tenant
from tests.worker.conftest import png_bytes, product_photo
from tests.worker.stack import Stack

pytestmark = pytest.mark.integration


def _poll(
    client: TestClient, url: str, headers: dict[str, str], done: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, headers=headers).json()
        if body["status"] in done:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{url} not in {done} after {timeout}s: {body}")


@pytest.mark.parametrize("mode", ["distributed", "embedded"])
def test_shop_trains_a_subject_and_gets_a_preview(mode: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(f"{mode}_stack")
    with stack.session() as session:
        tenant = create_tenant(session, "sofa-shop")
        _, secret = create_key(session, kind="secret", tenant=tenant)
        session.commit()
    auth = {"Authorization": f"Bearer {secret}"}
    train = stack.start_worker("train")
    paint = stack.start_worker("preview,default")
    client = TestClient(create_app(stack.settings))

    photos = [product_photo(i) for i in range(2)]
    response = client.post(
        "/v1/subjects",
        headers=auth,
        data={"name": "Striped sofa", "label": "couch", "boxes": json.dumps([box for _, box in photos])},
        files=[
            ("photos", (f"p{i}.png", png_bytes(image), "image/png")) for i, (image, _) in enumerate(photos)
        ],
    )
    assert response.status_code == 202, response.text
    subject_url = response.headers["Location"]
    subject = _poll(client, subject_url, auth, ("ready", "failed"), 240)
    assert subject["status"] == "ready", (subject, train.log()[-3000:])
    assert subject["progress"] == 1.0 and subject["adapter"]["rank"] == 4
    assert [p["source"] for p in subject["photos"]] == ["given", "given"]
    with stack.session() as session:
        from core.tables import Subject

        key = session.get(Subject, subject["id"]).adapter_key
    assert hashlib.sha256(stack.blobs.get(key)).hexdigest() == subject["adapter"]["sha256"]

    room, _ = product_photo(42, size=(123, 91))
    mask = np.zeros((room.height, room.width), dtype=np.uint8)
    mask[10:60, 20:90] = 255
    response = client.post(
        "/v1/previews",
        headers=auth,
        data={"subject_id": subject["id"], "seed": "5"},
        files={
            "room": ("room.png", png_bytes(room), "image/png"),
            "mask": ("mask.png", png_bytes(Image.fromarray(mask)), "image/png"),
        },
    )
    assert response.status_code == 202, response.text
    preview = _poll(client, response.headers["Location"], auth, ("succeeded", "failed"), 120)
    assert preview["status"] == "succeeded", (preview, paint.log()[-3000:])
    result = client.get(preview["result_url"], headers=auth, follow_redirects=False)
    if result.status_code in (302, 307):  # S3: a presigned URL, fetched as a browser would
        import urllib.request

        with urllib.request.urlopen(result.headers["Location"]) as fetched:
            content = fetched.read()
    else:
        assert result.status_code == 200, result.text
        content = result.content
    painted = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    assert painted.shape == (room.height, room.width, 3)
    outside = mask == 0
    assert np.array_equal(painted[outside], np.asarray(room)[outside])
    assert not np.array_equal(painted[~outside], np.asarray(room)[~outside])

    # The rows are the truth: no task left a result behind (a Redis key for each, or in embedded
    # mode a row in a SQLite file that nothing prunes).
    if mode == "distributed":
        import redis

        client_ = redis.Redis.from_url(stack.settings.resolved_broker_url)
        assert client_.keys("celery-task-meta-*") == []
        client_.close()
    assert [p.name for p in stack.settings.var_dir.rglob("*") if p.suffix in (".db", ".sqlite")] == (
        ["roomfit.db"] if mode == "embedded" else []
    )
