"""Image limits at the API, in-process: shape (longest side, aspect ratio), pixels per request, the
process's image-memory budget (503 `server_busy`), and photos decoded and stored one at a time.
The same attacks against a real `roomfit serve` process are in test_public_limits.py."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from api import image_budget
from api.image_budget import BUDGET, MemoryBudget
from api.problems import ApiError
from api.services import subjects as subject_service
from core.tables import Preview, Subject
from tests.api.conftest import ApiEnv, image_bytes, mask_bytes, photos_files, ready_subject


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, response.text
    return body


def _jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 110, 100)).save(out, "JPEG", exif=exif)
    return out.getvalue()


def _subject(env: ApiEnv, files: list[Any], **data: str) -> Any:
    return env.client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa", **data}, files=files)


def _photos(*images: bytes) -> list[Any]:
    return [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]


def _preview(env: ApiEnv, subject_id: str, room: bytes, mask: bytes) -> Any:
    files = [("room", ("room.jpg", room, "image/jpeg")), ("mask", ("mask.png", mask, "image/png"))]
    return env.client.post("/v1/previews", headers=env.a.auth(), data={"subject_id": subject_id}, files=files)


def _nothing_stored(env: ApiEnv) -> None:
    with env.session() as session:
        assert session.query(Subject).count() == 0
        assert session.query(Preview).count() == 0
    assert [k for k in env.blobs.list("") if "/photos/" in k or "/previews/" in k] == []


# --- shape -------------------------------------------------------------------------------------


def test_a_65000_by_2_room_is_refused_from_its_header(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    room = _jpeg(65000, 2)  # 17 KB, 130 000 pixels: within max_pixels, not a room
    assert len(room) < 20_000
    body = _problem(_subject(env, _photos(room)), 422, "image_shape_not_allowed")
    assert "65000x2" in body["detail"]
    # A preview: refused before the subject is looked at (a queued subject would answer 409).
    queued = _subject(env, _photos(_jpeg(64, 48))).json()["id"]
    _problem(_preview(env, queued, room, mask_bytes(65000, 2)), 422, "image_shape_not_allowed")


@pytest.mark.parametrize(
    ("size", "orientation", "accepted"),
    [
        ((1000, 100), None, True),  # exactly 10:1
        ((1001, 100), None, False),
        ((100, 1001), 6, False),  # turned a quarter: still 10.01:1
        ((1000, 100), 6, True),  # stored 1000x100, shown 100x1000
        ((12000, 1200), None, True),  # the longest side allowed, at 10:1
        ((12001, 1201), None, False),
    ],
)
def test_longest_side_and_aspect_ratio(
    sqlite_env: ApiEnv, size: tuple[int, int], orientation: int | None, accepted: bool
) -> None:
    response = _subject(sqlite_env, _photos(_jpeg(*size, orientation=orientation)))
    if not accepted:
        _problem(response, 422, "image_shape_not_allowed")
        return
    assert response.status_code == 202, response.text
    photo = response.json()["photos"][0]
    shown = size[::-1] if orientation == 6 else size
    assert (photo["width"], photo["height"]) == shown


def test_shape_limits_are_the_settings(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    env.settings.max_side = 63  # settings are read per request; photos_files(1) is 64x48
    body = _problem(_subject(env, photos_files(1)), 422, "image_shape_not_allowed")
    assert "63" in body["detail"]
    env.settings.max_side = 64
    env.settings.max_aspect_ratio = 1.3
    body = _problem(_subject(env, photos_files(1)), 422, "image_shape_not_allowed")  # 64/48 = 1.33
    assert "1.3" in body["detail"]
    env.settings.max_aspect_ratio = 1.4
    assert _subject(env, photos_files(1)).status_code == 202


def test_a_mask_of_a_strange_shape_is_refused_before_its_size_is_compared(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(2000, 20)), 422, "image_shape_not_allowed")


# --- pixels per request ------------------------------------------------------------------------


def test_pixels_of_one_request_together(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    two = 64 * 48 + 65 * 48  # photos_files(2) are 64x48 and 65x48
    env.settings.max_request_pixels = two - 1
    body = _problem(_subject(env, photos_files(2)), 413, "request_too_large")
    assert str(two - 1) in body["detail"]
    _nothing_stored(env)
    env.settings.max_request_pixels = two
    assert _subject(env, photos_files(2)).status_code == 202


def test_a_previews_room_and_mask_count_together(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    env.settings.max_request_pixels = 2 * 64 * 48 - 1
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48)), 413, "request_too_large")
    env.settings.max_request_pixels = 2 * 64 * 48
    assert _preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48)).status_code == 202


# --- one photo at a time -----------------------------------------------------------------------


def test_each_photo_is_stored_before_the_next_is_decoded(sqlite_env: ApiEnv, monkeypatch: Any) -> None:
    env = sqlite_env
    events: list[str] = []
    decode = subject_service.decode_image

    def spy_decode(header: Any) -> Any:
        events.append(f"decode {header.what}")
        return decode(header)

    put = env.blobs.put

    def spy_put(key: str, data: Any, content_type: str | None = None) -> None:
        events.append(f"put {key.rsplit('/', 1)[1]}")
        put(key, data, content_type)

    monkeypatch.setattr(subject_service, "decode_image", spy_decode)
    monkeypatch.setattr(env.blobs, "put", spy_put)
    jpeg = _jpeg(40, 30)
    response = _subject(env, _photos(jpeg, _jpeg(40, 30, orientation=6), image_bytes(30, 20, mode="RGBA")))
    assert response.status_code == 202, response.text
    assert events == [
        "decode photo 0",
        "put 0.jpg",
        "decode photo 1",
        "put 1.png",
        "decode photo 2",
        "put 2.png",
    ]
    assert [(p["width"], p["height"]) for p in response.json()["photos"]] == [(40, 30), (30, 40), (30, 20)]


def test_a_bad_photo_after_good_ones_removes_what_was_stored(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    truncated = image_bytes(64, 48, "JPEG")[:-200]
    response = _subject(env, _photos(image_bytes(64, 48, "JPEG"), image_bytes(40, 30, "PNG"), truncated))
    _problem(response, 422, "image_unreadable")
    _nothing_stored(env)
    assert BUDGET.in_use == 0


def test_boxes_are_checked_against_the_sizes_after_orientation(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    turned = _jpeg(80, 40, orientation=6)  # shown 40x80
    _problem(_subject(env, _photos(turned), boxes="[[0, 0, 70, 10]]"), 422, "invalid_boxes")
    ok = _subject(env, _photos(turned), boxes="[[0, 0, 30, 70]]")
    assert ok.status_code == 202, ok.text


def test_a_png_turned_by_exif_after_its_pixels(sqlite_env: ApiEnv) -> None:
    """PNG may carry eXIf after IDAT, unseen in the header: the boxes wait for the decoded size."""
    env = sqlite_env
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.fromarray(np.full((40, 80, 3), 90, np.uint8))
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif)
    data = out.getvalue()
    head, tail = data[: data.index(b"IDAT") - 4], data[data.index(b"IDAT") - 4 :]
    exif_chunk = head[head.index(b"eXIf") - 4 :]
    exif_length = int.from_bytes(exif_chunk[:4], "big") + 12
    exif_chunk = exif_chunk[:exif_length]
    moved = head.replace(exif_chunk, b"") + tail[:-12] + exif_chunk + tail[-12:]  # before IEND
    response = _subject(env, [("photos", ("t.png", moved, "image/png"))], boxes="[[0, 0, 30, 70]]")
    assert response.status_code == 202, response.text
    photo = response.json()["photos"][0]
    assert (photo["width"], photo["height"]) == (40, 80)


# --- the memory budget -------------------------------------------------------------------------


def test_budget_reserves_and_releases() -> None:
    budget = MemoryBudget()
    with budget.hold(300, capacity=1000) as got:
        assert got == 300 and budget.in_use == 300
        with budget.hold(700, capacity=1000):
            assert budget.in_use == 1000
            with pytest.raises(ApiError) as busy, budget.hold(1, capacity=1000, wait=0.01):
                pass
    assert budget.in_use == 0
    assert busy.value.code == "server_busy" and busy.value.status == 503
    assert busy.value.headers["Retry-After"].isdigit()


def test_budget_releases_on_error() -> None:
    budget = MemoryBudget()
    with pytest.raises(RuntimeError), budget.hold(500, capacity=1000):
        assert budget.in_use == 500
        raise RuntimeError("decoder failed")
    assert budget.in_use == 0


def test_an_image_above_the_whole_budget_runs_alone_never_waits_forever() -> None:
    budget = MemoryBudget()
    with budget.hold(10**12, capacity=1000, wait=0) as got:
        assert got == 1000
    with budget.hold(10**12, capacity=0) as got:  # 0: no budget
        assert got == 0 and budget.in_use == 0


@pytest.fixture
def short_wait(monkeypatch: Any) -> None:
    monkeypatch.setattr(image_budget, "WAIT_SECONDS", 0.2)


class BudgetHolder:
    """Holds `nbytes` of the budget (all of it by default) in another thread until released, as a
    big check would."""

    def __init__(self, capacity: int, nbytes: int | None = None) -> None:
        self.held, self.release = threading.Event(), threading.Event()
        args = (capacity if nbytes is None else nbytes, capacity)
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)

    def _run(self, nbytes: int, capacity: int) -> None:
        with BUDGET.hold(nbytes, capacity=capacity):
            self.held.set()
            self.release.wait(60)

    def __enter__(self) -> BudgetHolder:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(10)


@pytest.fixture
def holder(sqlite_env: ApiEnv) -> Iterator[BudgetHolder]:
    with BudgetHolder(sqlite_env.settings.api_memory_budget_bytes) as held:
        yield held
    assert BUDGET.in_use == 0


def test_a_full_budget_answers_503_then_passes_once_released(
    sqlite_env: ApiEnv, short_wait: None, holder: BudgetHolder
) -> None:
    env = sqlite_env
    response = _subject(env, photos_files(2))
    assert "retry" in _problem(response, 503, "server_busy")["detail"]
    assert response.headers["Retry-After"].isdigit()
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48)), 503, "server_busy")
    _nothing_stored_but(env, sid)
    holder.release.set()
    holder.thread.join(10)
    assert _subject(env, photos_files(2)).status_code == 202
    assert _preview(env, sid, image_bytes(64, 48), mask_bytes(64, 48)).status_code == 202


def _nothing_stored_but(env: ApiEnv, ready_id: str) -> None:
    with env.session() as session:
        assert [s.id for s in session.query(Subject)] == [ready_id]
        assert session.query(Preview).count() == 0
    assert [k for k in env.blobs.list("") if "/photos/" in k or "/previews/" in k] == []


def test_a_request_waiting_for_the_budget_goes_on_when_it_is_released(
    sqlite_env: ApiEnv, monkeypatch: Any
) -> None:
    env = sqlite_env
    monkeypatch.setattr(image_budget, "WAIT_SECONDS", 60.0)
    answers: list[Any] = []
    with BudgetHolder(env.settings.api_memory_budget_bytes) as held:
        request = threading.Thread(target=lambda: answers.append(_subject(env, photos_files(1))))
        request.start()
        deadline = time.monotonic() + 30
        while BUDGET.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert BUDGET.waiting == 1  # the request is waiting, not refused, not grown
        held.release.set()
        request.join(30)
    assert answers and answers[0].status_code == 202, answers and answers[0].text
    assert BUDGET.in_use == 0


@pytest.mark.parametrize(
    ("room", "mask", "code"),
    [
        (image_bytes(64, 48, "JPEG")[:-100], mask_bytes(64, 48), "image_unreadable"),
        (image_bytes(64, 48), mask_bytes(64, 48, None), "mask_empty"),
        (image_bytes(64, 48), mask_bytes(64, 48)[:-30], "image_unreadable"),
    ],
)
def test_the_budget_is_released_on_every_error(
    sqlite_env: ApiEnv, room: bytes, mask: bytes, code: str
) -> None:
    env = sqlite_env
    sid = ready_subject(env, env.a)
    _problem(_preview(env, sid, room, mask), 422, code)
    assert BUDGET.in_use == 0 and BUDGET.waiting == 0
