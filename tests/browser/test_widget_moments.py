"""The storefront widget (`api/static/widget.js`, as `/widget/v1.js` serves it) in a real headless
Chromium, on a shop page whose `/v1` is a stand-in in the test: the test decides what each answer
says and when it comes (an upload still on its way when the shopper cancels, a DELETE that never
answers, a product changed while its preview paints), which a live service cannot be made to do."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from api.routes.widget import widget_file
from tests.browser.conftest import stand_in_page

expect: Any = pytest.importorskip("playwright.sync_api").expect

SHOP = "http://shop.test"
SHOP_PAGE = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>shop</title></head><body>
<script src="/widget/v1.js"></script>
<roomfit-preview subject="sub_one" key="pk_review" api="{SHOP}"></roomfit-preview>
</body></html>"""
PREVIEW_ID = re.compile(r"^/v1/previews/(prv_[a-z0-9]+)(/events|/result)?$")


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def preview(preview_id: str, subject: str, status: str) -> dict[str, Any]:
    done = status == "succeeded"
    return {
        "id": preview_id,
        "subject_id": subject,
        "status": status,
        "progress": 1.0 if done else 0.0,
        "mode": "adapter",
        "adapter_version": 1,
        "result_url": f"/v1/previews/{preview_id}/result" if done else None,
        "error": None,
        "seed": 1,
        "timings": {},
        "created_at": "2025-01-01T10:00:00Z",
    }


@dataclass
class StandIn:
    """The shop's page, the widget, and `/v1` as the test wants it. `hold(kind)` makes the next
    requests of that kind (`post`, `events`, `delete`) wait in `held` until the test answers them."""

    made: list[tuple[str, str]] = field(default_factory=list)  # (preview id, subject id) per POST
    deleted: list[str] = field(default_factory=list)
    holding: set[str] = field(default_factory=set)
    held: dict[str, list[Any]] = field(default_factory=dict)

    def hold(self, kind: str) -> None:
        self.holding.add(kind)

    def release(self, kind: str) -> None:
        self.holding.discard(kind)

    def handle(self, route: Any, request: Any) -> None:
        path = urlsplit(request.url).path
        if path == "/":
            route.fulfill(status=200, headers={"Content-Type": "text/html"}, body=SHOP_PAGE)
        elif path == "/widget/v1.js":
            route.fulfill(status=200, headers={"Content-Type": "text/javascript"}, body=widget_file()[0])
        elif path == "/v1/previews" and request.method == "POST":
            self.answer_or_hold("post", route, lambda: self.post(route, request))
        elif found := PREVIEW_ID.match(path):
            preview_id, part = found.groups()
            if request.method == "DELETE":
                self.answer_or_hold("delete", route, lambda: self.delete(route, preview_id))
            elif part == "/events":
                self.answer_or_hold("events", route, lambda: self.events(route, preview_id))
            elif part == "/result":
                painted = png(64, 48, (200, 40, 40))
                route.fulfill(status=200, headers={"Content-Type": "image/png"}, body=painted)
            else:
                self.json(route, 200, preview(preview_id, self.subject_of(preview_id), "succeeded"))
        else:
            self.json(route, 404, {"code": "not_found", "detail": "no such thing"})

    def answer_or_hold(self, kind: str, route: Any, answer: Callable[[], None]) -> None:
        if kind in self.holding:
            self.held.setdefault(kind, []).append(answer)
        else:
            answer()

    def post(self, route: Any, request: Any) -> None:
        form = (request.post_data_buffer or b"").decode("latin-1")
        subject = re.search(r'name="subject_id"\r\n\r\n([^\r]*)', form)
        preview_id = f"prv_{len(self.made) + 1}"
        self.made.append((preview_id, subject.group(1) if subject else ""))
        self.json(route, 202, preview(preview_id, self.made[-1][1], "queued"))

    def events(self, route: Any, preview_id: str) -> None:
        done = json.dumps(preview(preview_id, self.subject_of(preview_id), "succeeded"))
        body = f"id: 1\nevent: succeeded\ndata: {done}\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    def delete(self, route: Any, preview_id: str) -> None:
        self.deleted.append(preview_id)
        route.fulfill(status=204, body=b"")

    def subject_of(self, preview_id: str) -> str:
        return next((subject for made, subject in self.made if made == preview_id), "")

    @staticmethod
    def json(route: Any, status: int, body: Any) -> None:
        kind = "application/json" if status < 400 else "application/problem+json"
        route.fulfill(status=status, headers={"Content-Type": kind}, body=json.dumps(body))


def waiting(page: Any, stand_in: StandIn, kind: str, count: int = 1, timeout: float = 20.0) -> None:
    """Until `count` requests of `kind` are held (the page's requests reach the stand-in meanwhile)."""
    deadline = time.monotonic() + timeout
    while len(stand_in.held.get(kind, [])) < count:
        assert time.monotonic() < deadline, f"the widget never sent the {kind} request"
        page.wait_for_timeout(50)


@contextmanager
def shop(browser: Any, stand_in: StandIn, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """The shop page with the widget, a room photo chosen and painted on from the keyboard."""
    room = tmp_path / "room.png"
    room.write_bytes(png(64, 48, (220, 210, 190)))
    with stand_in_page(browser, SHOP, stand_in.handle, "/", height=800) as page:
        widget = page.locator("roomfit-preview")
        widget.get_by_label("Choose a room photo").set_input_files(str(room))
        canvas = widget.locator("canvas.mask")
        expect(canvas).to_be_visible()
        canvas.focus()
        page.keyboard.press("Space")
        expect(widget.get_by_role("button", name="Preview")).to_be_enabled()
        yield page, widget


def result_shown(widget: Any) -> None:
    widget.get_by_role("button", name="Preview").click()
    expect(widget.get_by_role("link", name="Download")).to_be_visible()


def test_delete_my_photos_also_deletes_a_preview_whose_upload_was_cancelled(
    browser: Any, tmp_path: Path
) -> None:
    """The shopper cancels while the photo is still on its way; the service makes that preview all
    the same (it holds a copy of the room photo), so "Delete my photos" must delete it too."""
    stand_in = StandIn()
    with shop(browser, stand_in, tmp_path) as (page, widget):
        stand_in.hold("post")
        widget.get_by_role("button", name="Preview").click()
        waiting(page, stand_in, "post")
        widget.get_by_role("button", name="Cancel").click()
        expect(widget.get_by_role("button", name="Preview")).to_be_enabled()
        stand_in.release("post")
        with page.expect_event("requestfinished"):
            stand_in.held["post"].pop()()  # the service made it: 202 with its id, after the cancel
        result_shown(widget)
        assert [made for made, _ in stand_in.made] == ["prv_1", "prv_2"]
        widget.get_by_role("button", name="Delete my photos").click()
        expect(widget.get_by_text("Your photos were deleted from the service.")).to_be_visible()
        assert sorted(stand_in.deleted) == ["prv_1", "prv_2"], "a preview the shopper cancelled is kept"


def test_a_delete_that_never_answers_can_be_cancelled(browser: Any, tmp_path: Path) -> None:
    """While "Delete my photos" waits, only Cancel is usable, and it is there to use."""
    stand_in = StandIn()
    with shop(browser, stand_in, tmp_path) as (page, widget):
        result_shown(widget)
        stand_in.hold("delete")
        widget.get_by_role("button", name="Delete my photos").click()
        waiting(page, stand_in, "delete")
        cancel = widget.get_by_role("button", name="Cancel")
        expect(cancel).to_be_visible()
        expect(cancel).to_be_enabled()
        cancel.click()
        expect(widget.get_by_role("button", name="Preview")).to_be_enabled()
        expect(widget.get_by_role("button", name="Change photo")).to_be_enabled()


def test_a_product_changed_while_its_preview_paints_does_not_show_the_old_products_result(
    browser: Any, tmp_path: Path
) -> None:
    """A shop page switches the product (`subject`) while a preview of the last one paints: that
    painting is not the new product, so it is dropped and the shopper can ask for the new one."""
    stand_in = StandIn()
    with shop(browser, stand_in, tmp_path) as (page, widget):
        results: list[Any] = []
        page.expose_function("resultShown", lambda subject: results.append(subject))
        widget.evaluate(
            "(w) => w.addEventListener('roomfit:result', (e) => resultShown(e.detail.preview.subject_id))"
        )
        stand_in.hold("events")
        widget.get_by_role("button", name="Preview").click()
        waiting(page, stand_in, "events")
        widget.evaluate("(w) => w.setAttribute('subject', 'sub_two')")
        preview_button = widget.get_by_role("button", name="Preview")
        expect(preview_button).to_be_visible()
        expect(preview_button).to_be_enabled()
        stand_in.release("events")
        result_shown(widget)
        assert stand_in.made == [("prv_1", "sub_one"), ("prv_2", "sub_two")]
        assert results == ["sub_two"], f"the widget showed the results of {results}"


def test_a_photo_the_browser_cannot_prepare_is_said_and_leaves_the_widget_usable(
    browser: Any, tmp_path: Path
) -> None:
    """Reading the painted mask back can fail (a canvas past the browser's memory or size limits,
    as Safari's is at 16.7 MP): the shopper is told, and the widget does not stay "Preparing"."""
    stand_in = StandIn()
    with shop(browser, stand_in, tmp_path) as (page, widget):
        page.evaluate(
            "() => { CanvasRenderingContext2D.prototype.getImageData = () => {"
            " throw new DOMException('out of memory', 'EncodingError'); }; }"
        )
        widget.get_by_role("button", name="Preview").click()
        expect(widget.get_by_role("alert")).to_be_visible()
        expect(widget.get_by_role("button", name="Preview")).to_be_enabled()
        assert stand_in.made == []
