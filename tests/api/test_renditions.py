"""`GET /v1/previews/{id}/result?format=&max_side=`: the exact PNG by default; display renditions
(JPEG, WebP, smaller) made once, kept beside the result and served from there; bad values 422; the
same visibility as the result."""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import api.renditions
from api.renditions import MAX_SIDE, MIN_SIDE, Rendition, memory_needed
from core.blob_keys import preview_result_key
from core.tables import Preview
from tests.api.conftest import ApiEnv, Shop, build_env, create_preview, make_settings, ready_subject
from tests.services import S3Settings


def room_like(width: int, height: int) -> bytes:
    """A PNG of a room's kind of content: smooth gradients (wall, floor) and a little noise."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    noise = np.random.default_rng(width + height).normal(0, 3, (height, width, 1)).astype(np.float32)
    pixels = np.stack([200 - 60 * y + 20 * x, 190 - 50 * y + 0 * x, 170 - 70 * y + 10 * x], axis=-1) + noise
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


def painted(env: ApiEnv, shop: Shop, size: tuple[int, int], kind: str = "secret") -> tuple[str, bytes]:
    """A preview of `shop` (made with its `kind` of key) that succeeded with a result of `size`, as the
    worker leaves it: the PNG under its key, the row at the room's (and so the result's) size."""
    preview_id = create_preview(env, shop, ready_subject(env, shop), kind=kind)["id"]
    png = room_like(*size)
    with env.session() as session:
        preview = session.get(Preview, preview_id)
        assert preview is not None
        key = preview_result_key(preview.tenant_id, preview.id)
        env.blobs.put(key, png, "image/png")
        preview.width, preview.height = size
        preview.status, preview.progress, preview.result_key = "succeeded", 1.0, key
        session.commit()
    return preview_id, png


def fetch(env: ApiEnv, preview_id: str, headers: dict[str, str], **query: Any) -> httpx.Response:
    # Not followed: TestClient would send a presigned S3 URL to the app itself.
    return env.client.get(
        f"/v1/previews/{preview_id}/result", params=query, headers=headers, follow_redirects=False
    )


def picture(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def renditions_of(env: ApiEnv, preview_id: str) -> list[str]:
    """The renditions kept of a preview's result."""
    with env.session() as session:
        preview = session.get(Preview, preview_id)
        assert preview is not None and preview.result_key
        return env.blobs.list(f"{preview.result_key}.r")


def test_a_rendition_fits_max_side_and_keeps_the_aspect_ratio(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    wide, _ = painted(env, env.a, (4000, 3000))
    for fmt, media in (("webp", "image/webp"), ("jpeg", "image/jpeg"), ("png", "image/png")):
        response = fetch(env, wide, env.a.auth(), format=fmt, max_side=800)
        assert response.headers["content-type"] == media
        image = picture(response)
        assert (image.format, image.size) == (fmt.upper(), (800, 600))
    tall, _ = painted(env, env.a, (1200, 3000))
    assert picture(fetch(env, tall, env.a.auth(), format="webp", max_side=1000)).size == (400, 1000)
    # Never enlarged: past the longest side it is the result's own size.
    assert picture(fetch(env, tall, env.a.auth(), format="jpeg", max_side=8192)).size == (1200, 3000)
    assert picture(fetch(env, tall, env.a.auth(), format="webp")).size == (1200, 3000)


def test_the_default_is_the_exact_png_and_makes_no_rendition(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    preview_id, png = painted(env, env.a, (640, 480))
    for query in ({}, {"format": "png"}, {"format": "png", "max_side": 640}, {"max_side": 4096}):
        response = fetch(env, preview_id, env.a.auth(), **query)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", query
        assert response.content == png, f"{query}: not the stored result, byte for byte"
    assert renditions_of(env, preview_id) == []
    # A smaller PNG is a rendition: the same picture, scaled, not the stored bytes.
    smaller = fetch(env, preview_id, env.a.auth(), max_side=320)
    assert picture(smaller).size == (320, 240) and smaller.content != png


def test_a_second_request_is_served_from_the_kept_rendition(
    sqlite_env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    preview_id, _ = painted(env, env.a, (1600, 1200))
    calls: list[Rendition] = []
    real_encode = api.renditions.encode

    def counted(data: bytes, wanted: Rendition, **kwargs: Any) -> bytes:
        calls.append(wanted)
        return real_encode(data, wanted, **kwargs)

    monkeypatch.setattr(api.renditions, "encode", counted)
    first = fetch(env, preview_id, env.a.auth(), format="webp", max_side=1024)
    assert first.status_code == 200 and len(calls) == 1
    (kept,) = renditions_of(env, preview_id)
    assert kept.endswith("/result.png.r/webp-1024.webp") and env.blobs.get(kept) == first.content
    second = fetch(env, preview_id, env.a.auth(), format="webp", max_side=1024)
    assert second.content == first.content and len(calls) == 1, "the second request encoded again"
    # Another size or format is another rendition; max_side past the longest side is the full size.
    fetch(env, preview_id, env.a.auth(), format="jpeg", max_side=1024)
    fetch(env, preview_id, env.a.auth(), format="jpeg", max_side=2048)
    fetch(env, preview_id, env.a.auth(), format="jpeg", max_side=4096)
    assert [(c.image_format, c.side) for c in calls] == [("webp", 1024), ("jpeg", 1024), ("jpeg", None)]
    assert len(renditions_of(env, preview_id)) == 3
    # The renditions go with the preview's other blobs.
    with env.session() as session:
        tenant = session.get(Preview, preview_id).tenant_id  # type: ignore[union-attr]
    env.blobs.delete_prefix(f"tenants/{tenant}/previews/{preview_id}")
    assert renditions_of(env, preview_id) == []


@pytest.mark.parametrize(
    "query",
    [
        {"format": "gif"},
        {"format": "JPEG"},
        {"format": ""},
        {"max_side": "0"},
        {"max_side": str(MIN_SIDE - 1)},
        {"max_side": str(MAX_SIDE + 1)},
        {"max_side": "100000"},
        {"max_side": "abc"},
        {"max_side": "1.5"},
        {"max_side": "-800"},
        {"format": "webp", "max_side": "99999999999999999999999"},
    ],
)
def test_bad_values_are_a_validation_problem(sqlite_env: ApiEnv, query: dict[str, str]) -> None:
    env = sqlite_env
    preview_id, _ = painted(env, env.a, (64, 48))
    response = fetch(env, preview_id, env.a.auth(), **query)
    assert response.status_code == 422, (query, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "validation_error" and body["errors"], body
    assert renditions_of(env, preview_id) == []


def test_publishable_keys_fetch_renditions_of_their_own_previews_only(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    mine, _ = painted(env, env.a, (800, 600), kind="publishable")
    by_secret, _ = painted(env, env.a, (800, 600))
    pk = env.a.auth("publishable")
    assert picture(fetch(env, mine, pk, format="webp", max_side=512)).size == (512, 384)
    for preview_id, headers in ((by_secret, pk), (mine, env.b.auth()), (mine, env.b.auth("publishable"))):
        response = fetch(env, preview_id, headers, format="webp", max_side=512)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    # Another origin than the key's: refused before anything is looked at.
    other_origin = {**pk, "Origin": env.b.origin}
    assert fetch(env, mine, other_origin, format="webp", max_side=512).status_code == 403


def test_a_rendition_of_a_result_not_painted_yet_or_gone(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    queued = create_preview(env, env.a, ready_subject(env, env.a))["id"]
    response = fetch(env, queued, env.a.auth(), format="webp", max_side=512)
    assert response.status_code == 409 and response.json()["code"] == "preview_not_ready"
    gone, _ = painted(env, env.a, (800, 600))
    with env.session() as session:
        env.blobs.delete(session.get(Preview, gone).result_key)  # type: ignore[union-attr,arg-type]
    response = fetch(env, gone, env.a.auth(), format="webp", max_side=512)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_what_a_request_names() -> None:
    size = (4000, 3000)
    assert Rendition.of("png", None, size).is_result and Rendition.of("png", 4000, size).is_result
    assert not Rendition.of("png", 3999, size).is_result and not Rendition.of("webp", None, size).is_result
    assert Rendition.of("webp", 9000, size) == Rendition.of("webp", None, size)
    assert Rendition.of("jpeg", 800, size).key("t/p/result.png") == "t/p/result.png.r/jpeg-800.jpg"
    assert Rendition.of("webp", None, size).key("t/p/result.png") == "t/p/result.png.r/webp-full.webp"
    # The memory an encode reserves covers at least the decoded result (4 bytes a pixel in Pillow).
    assert memory_needed(size, 800, 10) > 4000 * 3000 * 4


# alike: test_contract.py's S3 set-up, which stays as it is (contract tests are not changed).
def test_a_rendition_redirects_to_a_presigned_url_on_s3(tmp_path: Path, s3_settings: S3Settings) -> None:
    bucket = f"roomfit-renditions-{secrets.token_hex(4)}"
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
        preview_id, _ = painted(env, env.a, (1000, 750))
        for _ in range(2):  # made on the first request, kept: the second is the same redirect
            response = fetch(env, preview_id, env.a.auth(), format="jpeg", max_side=400)
            assert response.status_code == 307 and "Expires=60" in response.headers["location"]
            served = httpx.get(response.headers["location"], timeout=10)
            assert served.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(served.content)).size == (400, 300)
        assert len(renditions_of(env, preview_id)) == 1
        env.blobs.delete_prefix("tenants")
