"""Upload checks: each bad input is a test with its status and code; good but unusual images pass."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.tables import Preview, Subject
from tests.api.conftest import ApiEnv, asgi_request, image_bytes, mask_bytes, photos_files, ready_subject

MB = 1024 * 1024


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code, response.text


def _subject(env: ApiEnv, files: list[Any], **data: str) -> Any:
    return env.client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa", **data}, files=files)


def _preview(env: ApiEnv, subject_id: str, room: bytes, mask: bytes, **data: str) -> Any:
    return env.client.post(
        "/v1/previews",
        headers=env.a.auth(),
        data={"subject_id": subject_id, **data},
        files=[("room", ("room.jpg", room, "image/jpeg")), ("mask", ("mask.png", mask, "image/png"))],
    )


def _nothing_stored(env: ApiEnv) -> None:
    with env.session() as session:
        assert session.query(Subject).filter(Subject.status == "queued").count() == 0
        assert session.query(Preview).count() == 0
    assert env.blobs.list("") == [] or all(
        "/previews/" not in k and "/photos/" not in k for k in env.blobs.list("")
    )


# --- photos ------------------------------------------------------------------------------------


def test_nine_photos(sqlite_env: ApiEnv) -> None:
    _problem(_subject(sqlite_env, photos_files(9)), 422, "too_many_photos")
    _nothing_stored(sqlite_env)


def test_no_photo_and_bad_name(sqlite_env: ApiEnv) -> None:
    _problem(_subject(sqlite_env, [("other", ("x.txt", b"x", "text/plain"))]), 422, "validation_error")
    env = sqlite_env
    response = env.client.post("/v1/subjects", headers=env.a.auth(), data={"name": ""}, files=photos_files(1))
    _problem(response, 422, "validation_error")
    response = env.client.post(
        "/v1/subjects", headers=env.a.auth(), data={"name": "x" * 201}, files=photos_files(1)
    )
    _problem(response, 422, "validation_error")
    response = env.client.post("/v1/subjects", headers=env.a.auth(), files=photos_files(1))
    _problem(response, 422, "validation_error")


def _streamed_multipart(
    field: str, total: int, head: bytes, consumed: list[int]
) -> tuple[Iterator[bytes], str]:
    boundary = "roomfitboundary"
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nsofa\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        for piece in (preamble, head):
            consumed[0] += len(piece)
            yield piece
        sent = len(head)
        block = b"\0" * MB
        while sent < total:
            consumed[0] += len(block)
            sent += len(block)
            yield block
        tail = f"\r\n--{boundary}--\r\n".encode()
        consumed[0] += len(tail)
        yield tail

    return body(), f"multipart/form-data; boundary={boundary}"


def test_thirty_megabytes_refused_before_read_whole(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    consumed = [0]
    body, content_type = _streamed_multipart("photos", 30 * MB, image_bytes(8, 8, "JPEG"), consumed)
    headers = {**env.a.auth(), "Content-Type": content_type}
    status, problem = asgi_request(env, "POST", "/v1/subjects", headers, body)
    assert (status, problem["code"]) == (413, "image_too_large")
    limit = env.settings.max_upload_bytes
    assert consumed[0] <= limit + 2 * MB, f"read {consumed[0]} bytes of a 30 MB upload"
    _nothing_stored(env)


def test_declared_oversized_body_refused_unread(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    consumed = [0]
    body, content_type = _streamed_multipart("room", 60 * MB, b"", consumed)
    headers = {**env.a.auth(), "Content-Type": content_type, "Content-Length": str(60 * MB)}
    status, problem = asgi_request(env, "POST", "/v1/previews", headers, body)
    assert (status, problem["code"]) == (413, "payload_too_large")
    assert consumed[0] == 0


def test_text_file_named_jpg(sqlite_env: ApiEnv) -> None:
    files = [("photos", ("sofa.jpg", b"just some text, honest\n" * 10, "image/jpeg"))]
    _problem(_subject(sqlite_env, files), 415, "unsupported_media_type")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_types_refused(sqlite_env: ApiEnv, fmt: str) -> None:
    files = [("photos", ("sofa.jpg", image_bytes(16, 16, fmt), "image/jpeg"))]
    _problem(_subject(sqlite_env, files), 415, "unsupported_media_type")


def test_truncated_jpeg(sqlite_env: ApiEnv) -> None:
    data = image_bytes(256, 192, "JPEG", quality=95)
    files = [("photos", ("sofa.jpg", data[: len(data) // 2], "image/jpeg"))]
    _problem(_subject(sqlite_env, files), 422, "image_unreadable")


def test_corrupt_png_crc(sqlite_env: ApiEnv) -> None:
    data = bytearray(image_bytes(32, 32, "PNG"))
    data[40] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    _problem(_subject(sqlite_env, [("photos", ("a.png", bytes(data), "image/png"))]), 422, "image_unreadable")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A small file that decodes to width x height (one bit grey, all zero: compresses to nothing)."""
    row = b"\0" + b"\0" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_small_png_decoding_to_20000_square(sqlite_env: ApiEnv) -> None:
    data = bomb_png()
    assert len(data) < 200_000
    _problem(_subject(sqlite_env, [("photos", ("bomb.png", data, "image/png"))]), 413, "image_too_large")


def test_pixel_limit_is_the_setting(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    env.settings.max_pixels = 64 * 48 - 1  # settings are read per request
    _problem(_subject(env, photos_files(1)), 413, "image_too_large")


def test_boxes(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    ok = _subject(env, photos_files(2), boxes=json.dumps([[1, 2, 30, 40], None]))
    assert ok.status_code == 202, ok.text
    photos = ok.json()["photos"]
    assert photos[0]["box"] == [1, 2, 30, 40] and photos[0]["source"] == "given"
    assert photos[1]["box"] is None
    for bad in (
        "not json",
        "[]",
        "[[1,2,3]]",
        "[[0,0,500,10], null]",
        "[[5,5,1,1], null]",
        '[["a",1,2,3], null]',
    ):
        _problem(_subject(env, photos_files(2), boxes=bad), 422, "invalid_boxes")


def test_external_id_unique_per_tenant(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    assert _subject(env, photos_files(1), external_id="SKU-1").status_code == 202
    _problem(_subject(env, photos_files(1), external_id="SKU-1"), 409, "external_id_taken")
    other = env.client.post(
        "/v1/subjects",
        headers=env.b.auth(),
        data={"name": "s", "external_id": "SKU-1"},
        files=photos_files(1),
    )
    assert other.status_code == 202


def test_not_multipart_and_malformed_multipart(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    _problem(
        env.client.post("/v1/subjects", headers=env.a.auth(), json={"name": "x"}),
        415,
        "unsupported_content_type",
    )
    headers = {**env.a.auth(), "Content-Type": "multipart/form-data; boundary=xyz"}
    _problem(env.client.post("/v1/subjects", headers=headers, content=b"garbage"), 400, "malformed_multipart")
    no_boundary = {**env.a.auth(), "Content-Type": "multipart/form-data"}
    _problem(env.client.post("/v1/subjects", headers=no_boundary, content=b"x"), 400, "malformed_multipart")
    bad_part = b"--xyz\r\nContent-Type: text/plain\r\n\r\nhello\r\n--xyz--\r\n"
    _problem(env.client.post("/v1/subjects", headers=headers, content=bad_part), 400, "malformed_multipart")
    many = (
        b"".join(
            f'--xyz\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode() for i in range(50)
        )
        + b"--xyz--\r\n"
    )
    _problem(env.client.post("/v1/subjects", headers=headers, content=many), 422, "validation_error")
    huge_field = (
        b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + b"a" * 200_000 + b"\r\n--xyz--\r\n"
    )
    _problem(env.client.post("/v1/subjects", headers=headers, content=huge_field), 413, "field_too_large")


# --- what is accepted, and how it is normalised -------------------------------------------------


def _stored_photo(env: ApiEnv, subject_id: str, index: int = 0) -> Image.Image:
    with env.session() as session:
        subject = session.get(Subject, subject_id)
        assert subject is not None
        key = subject.photos[index].blob_key
    image = Image.open(io.BytesIO(env.blobs.get(key)))
    image.load()
    return image


def _exif_rotated_jpeg(width: int, height: int) -> bytes:
    image = Image.fromarray(np.full((height, width, 3), 120, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_exif_orientation_applied(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    response = _subject(env, [("photos", ("r.jpg", _exif_rotated_jpeg(80, 40), "image/jpeg"))])
    assert response.status_code == 202, response.text
    photo = response.json()["photos"][0]
    assert (photo["width"], photo["height"]) == (40, 80)
    stored = _stored_photo(env, response.json()["id"])
    assert stored.size == (40, 80) and stored.mode == "RGB"


def test_upright_rgb_stored_as_sent_others_normalised(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    jpeg = image_bytes(40, 30, "JPEG")
    rotated = _exif_rotated_jpeg(40, 30)
    response = _subject(
        env, [("photos", ("a.jpg", jpeg, "image/jpeg")), ("photos", ("b.jpg", rotated, "image/jpeg"))]
    )
    assert response.status_code == 202
    with env.session() as session:
        photos = session.get(Subject, response.json()["id"]).photos  # type: ignore[union-attr]
        keys = [p.blob_key for p in photos]
    assert keys[0].endswith("/photos/0.jpg") and env.blobs.get(keys[0]) == jpeg
    assert keys[1].endswith("/photos/1.png") and Image.open(io.BytesIO(env.blobs.get(keys[1]))).size == (
        30,
        40,
    )


def _palette_png_with_transparency() -> bytes:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 10, 10))
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    return out.getvalue()


def _sixteen_bit_png() -> bytes:
    values = (np.arange(20 * 10, dtype=np.uint16).reshape(10, 20) * 300).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(values).save(out, "PNG")
    return out.getvalue()


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "size"),
    [
        ("cmyk.jpg", image_bytes(30, 20, "JPEG", mode="CMYK"), (30, 20)),
        ("rgba.png", image_bytes(30, 20, "PNG", mode="RGBA"), (30, 20)),
        ("grey.png", image_bytes(30, 20, "PNG", mode="L"), (30, 20)),
        ("palette.png", _palette_png_with_transparency(), (20, 10)),
        ("16bit.png", _sixteen_bit_png(), (20, 10)),
        ("photo.webp", image_bytes(30, 20, "WEBP"), (30, 20)),
        ("anim.webp", _animated("WEBP"), (24, 12)),
        ("anim.png", _animated("PNG"), (24, 12)),
    ],
)
def test_unusual_images_become_rgb(sqlite_env: ApiEnv, name: str, data: bytes, size: tuple[int, int]) -> None:
    env = sqlite_env
    response = _subject(env, [("photos", (name, data, "application/octet-stream"))])
    assert response.status_code == 202, response.text
    stored = _stored_photo(env, response.json()["id"])
    assert stored.mode == "RGB" and stored.size == size
    pixels = np.asarray(stored)
    if name == "palette.png":
        assert tuple(pixels[5, 2]) == (0, 255, 0)  # opaque palette colour kept
        assert tuple(pixels[5, 15]) == (255, 255, 255)  # transparent: composited over white
    if name == "16bit.png":
        assert pixels[..., 0].max() > 200  # scaled down, not clipped to 255 everywhere
        assert pixels[0, 0, 0] == 0
    if name.startswith("anim"):
        red, _, blue = (int(v) for v in pixels[0, 0])
        assert red > 240 and blue < 16  # the first frame (red), within WebP's lossy rounding


# --- previews ----------------------------------------------------------------------------------


def test_mask_of_another_size(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(48, 64)), 422, "mask_size_mismatch")


def test_mask_follows_the_rooms_orientation(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    room = _exif_rotated_jpeg(80, 40)  # displayed 40x80
    _problem(_preview(env, sid, room, mask_bytes(80, 40)), 422, "mask_size_mismatch")
    response = _preview(env, sid, room, mask_bytes(40, 80, (0, 0, 10, 10)))
    assert response.status_code == 202, response.text
    assert (response.json()["width"], response.json()["height"]) == (40, 80)


def test_all_zero_mask(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48, None)), 422, "mask_empty")
    # With alpha, what paints is what is opaque (a drawing on a transparent canvas): colour alone
    # does not.
    rgba = np.full((48, 64, 4), 255, np.uint8)
    rgba[..., 3] = 0
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG")
    _problem(_preview(env, sid, image_bytes(64, 48), out.getvalue()), 422, "mask_empty")


def test_mask_must_be_png(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    jpeg_mask = image_bytes(64, 48, "JPEG")
    _problem(_preview(env, sid, image_bytes(64, 48), jpeg_mask), 415, "unsupported_media_type")


def test_stored_mask_is_binary(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    response = _preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48, (4, 4, 8, 8)))
    assert response.status_code == 202
    with env.session() as session:
        preview = session.get(Preview, response.json()["id"])
        mask = np.asarray(Image.open(io.BytesIO(env.blobs.get(preview.mask_key))))  # type: ignore[union-attr]
    assert set(np.unique(mask)) == {0, 255} and mask[5, 5] == 255 and mask.sum() == 16 * 255


@pytest.mark.parametrize(
    "data",
    [
        {"steps": "0"},
        {"steps": "101"},
        {"steps": "ten"},
        {"guidance_scale": "-1"},
        {"guidance_scale": "20.5"},
        {"guidance_scale": "nan"},
        {"seed": "-1"},
        {"seed": str(2**32)},
    ],
)
def test_parameters_out_of_range(sqlite_env: ApiEnv, data: dict[str, str]) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48), **data), 422, "validation_error")


def test_parameter_bounds_accepted(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    response = _preview(
        env,
        sid,
        image_bytes(64, 48),
        mask_bytes(64, 48),
        steps="100",
        guidance_scale="0",
        seed=str(2**32 - 1),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["steps"], body["guidance_scale"], body["seed"]) == (100, 0.0, 2**32 - 1)


def test_subject_not_ready(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    queued = _subject(env, photos_files(1)).json()["id"]
    _problem(_preview(env, queued, image_bytes(64, 48), mask_bytes(64, 48)), 409, "subject_not_ready")


def test_missing_room_or_mask_or_subject(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    only_room = env.client.post(
        "/v1/previews",
        headers=env.a.auth(),
        data={"subject_id": sid},
        files=[("room", ("r.png", image_bytes(64, 48), "image/png"))],
    )
    _problem(only_room, 422, "validation_error")
    two_rooms = env.client.post(
        "/v1/previews",
        headers=env.a.auth(),
        data={"subject_id": sid},
        files=[("room", ("r.png", image_bytes(64, 48), "image/png"))] * 2,
    )
    _problem(two_rooms, 422, "validation_error")
    _problem(_preview(env, "sub_nope", image_bytes(64, 48), mask_bytes(64, 48)), 404, "not_found")
