"""The storefront widget in a real headless Chromium against the real service (`roomfit up`, tiny
models): a product made on the demo page, then a shopper's previews at desktop and phone size, an
over-limit photo, a photo dropped on the widget or taken with the phone's camera, the errors a
shopper can meet (and the widget getting over them), names for every control, the result shown from
a rendition sized for the screen (Download still the exact PNG), and progress pushed by the event
stream (the service's own, and a stand-in in the page that breaks and resumes). With
ROOMFIT_SCREENSHOTS=1 the screenshots of each step refresh docs/screenshots/."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import (
    CAPTURE,
    ROOT,
    Server,
    api_paints,
    check_painted_only_inside,
    drawn_on,
    free_port,
    product_photo,
    room_picture,
    save,
    screenshot_folder,
    sent_requests,
)

pytestmark = pytest.mark.slow
expect: Any = pytest.importorskip("playwright.sync_api").expect

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {
    "viewport": {"width": 360, "height": 740},
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 1,
}
RESULT_TIMEOUT = 120_000  # ms: a preview on a busy two-core machine
POLL_URL = re.compile(r"/v1/previews/prv_[0-9A-Z]+$")  # GET of a preview: what the widget polls


@contextmanager
def opened(browser: Any, **options: Any) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page, and the console's complaints about it (CSP refusals, script errors)."""
    context = browser.new_context(**options)
    page = context.new_page()
    complaints: list[str] = []
    page.on("pageerror", lambda error: complaints.append(f"page error: {error}"))
    page.on(
        "console",
        lambda m: (
            complaints.append(m.text) if "Content Security Policy" in m.text or "Refused" in m.text else None
        ),
    )
    try:
        yield page, complaints
    finally:
        context.close()
    assert complaints == [], complaints


def shoot(page: Any, folder: Path, name: str, top: str = "#try, roomfit-preview") -> None:
    """The viewport, scrolled so that `top` (the widget's card, or the widget) starts at its top."""
    page.locator(top).first.evaluate("(node) => node.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(folder / f"{name}.png"))


def widget_of(page: Any) -> Any:
    widget = page.locator("roomfit-preview")
    expect(widget).to_be_attached()
    widget.evaluate(CAPTURE)
    return widget


def choose_photo(widget: Any, photo: Path) -> Any:
    widget.get_by_label("Choose a room photo").set_input_files(str(photo))
    canvas = widget.locator("canvas.mask")
    expect(canvas).to_be_visible()
    canvas.scroll_into_view_if_needed()
    return canvas


def stroke_points(
    box: dict[str, float], start: tuple[float, float], end: tuple[float, float], n: int = 12
) -> list:
    """`n` points on the screen from `start` to `end`, given as fractions of the canvas box."""
    return [
        (
            box["x"] + box["width"] * (start[0] + (end[0] - start[0]) * i / (n - 1)),
            box["y"] + box["height"] * (start[1] + (end[1] - start[1]) * i / (n - 1)),
        )
        for i in range(n)
    ]


def draw_with_mouse(page: Any, canvas: Any) -> None:
    box = canvas.bounding_box()
    points = stroke_points(box, (0.25, 0.55), (0.6, 0.75))
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point)
    page.mouse.up()


def draw_with_finger(page: Any, canvas: Any) -> None:
    """Real touch input (CDP touch events: the browser makes pointer events with pointerType touch)."""
    cdp = page.context.new_cdp_session(page)
    points = stroke_points(canvas.bounding_box(), (0.2, 0.5), (0.75, 0.8))
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]},
    )
    for x, y in points[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def preview_and_wait(page: Any, widget: Any, shots: Path | None = None, prefix: str = "") -> bytes:
    """Press Preview, (screenshot the progress), wait for the result, download it: its bytes."""
    widget.get_by_role("button", name="Preview").click()
    if shots is not None:
        expect(widget.get_by_text(re.compile(r"Queued|Painting"))).to_be_visible(timeout=20_000)
        shoot(page, shots, f"{prefix}3-progress")
        try:  # better: while it paints, if the painter is not quicker than the screenshot
            expect(widget.get_by_text(re.compile(r"Painting… [1-9]\d*%"))).to_be_visible(timeout=20_000)
            shoot(page, shots, f"{prefix}3-progress")
        except AssertionError:
            pass
    download_link = widget.get_by_role("link", name="Download")
    expect(download_link).to_be_visible(timeout=RESULT_TIMEOUT)
    if shots is not None:
        shoot(page, shots, f"{prefix}4-result")
    with page.expect_download() as info:
        download_link.click()
    return Path(info.value.path()).read_bytes()


def made_previews(seen: list[Any]) -> list[str]:
    """The ids of the previews the widget made, from the answers to its POSTs."""
    return [r.json()["id"] for r in seen if r.request.method == "POST" and r.url.endswith("/v1/previews")]


def stored_blobs(server: Server, preview: str) -> list[Path]:
    """The files the service holds for a preview (room photo, mask, result, renditions)."""
    return sorted((server.folder / "var" / "blobs").glob(f"tenants/*/previews/{preview}/*"))


def read_as_widget(server: Server, preview: str) -> int:
    """The status of GET /v1/previews/{id} with the widget's key, from the demo shop's origin."""
    request = urllib.request.Request(
        f"{server.api}/v1/previews/{preview}",
        headers={"Authorization": f"Bearer {server.publishable_key}", "Origin": server.base},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def named_controls(page: Any) -> list[tuple[str, str]]:
    """(role, name) of every control in the page's accessibility tree, as Chromium computes them."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    roles = {
        "button",
        "link",
        "slider",
        "textbox",
        "checkbox",
        "radio",
        "progressbar",
        "application",
        "combobox",
    }
    found = []
    for node in nodes:
        role = (node.get("role") or {}).get("value")
        if role in roles and not node.get("ignored"):
            found.append((role, ((node.get("name") or {}).get("value") or "").strip()))
    return found


def assert_all_named(page: Any, *expected: tuple[str, str]) -> None:
    controls = named_controls(page)
    assert [c for c in controls if not c[1]] == [], f"controls without an accessible name: {controls}"
    for role, name in expected:
        assert any(r == role and n.startswith(name) for r, n in controls), (role, name, controls)


def answers(page: Any) -> list[Any]:
    """Every response the page gets from now on (Playwright `Response`s, as their headers arrive)."""
    seen: list[Any] = []
    page.on("response", lambda response: seen.append(response))
    return seen


def check_rendition(page: Any, widget: Any, seen: list[Any]) -> tuple[int, int]:
    """The result on screen came from a WebP rendition sized for the stage on this screen (the longest
    side shown × devicePixelRatio, rounded up to 256, at most 2048), and Download got the exact PNG.
    Returns the size of the picture shown."""
    results = [r for r in seen if re.search(r"/v1/previews/prv_[0-9A-Z]+/result", r.url)]
    shown = [r for r in results if "?" in r.url]
    assert len(shown) == 1, [r.url for r in results]
    query = parse_qs(urlsplit(shown[0].url).query)
    side = int(query["max_side"][0])
    assert query["format"] == ["webp"] and shown[0].headers["content-type"] == "image/webp"
    box = widget.locator(".stage").bounding_box()
    needed = max(box["width"], box["height"]) * page.evaluate("devicePixelRatio")
    # A scroll bar coming or going may move the stage a few pixels between then and now.
    steps = {min(2048, max(256, math.ceil((needed + d) / 256) * 256)) for d in (-8, 0, 8)}
    assert side in steps, (side, box)
    saved = [r for r in results if "?" not in r.url]
    assert [r.headers["content-type"] for r in saved] == ["image/png"], "Download is not the exact PNG"
    width, height = widget.locator("img.after").evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    return width, height


# --- a product, made through the demo page ---------------------------------------------------------
@pytest.fixture(scope="module")
def subject(server: Server, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("product")
    photos = [str(save(product_photo(i), folder / f"sofa{i}.png")) for i in range(2)]
    shots = screenshot_folder(folder)
    with opened(browser, **DESKTOP) as (page, _):
        page.goto(server.base + "/demo/subjects")
        expect(page.get_by_text("The tiny model is loaded")).to_be_visible()
        page.get_by_label("Name").fill("Striped sofa")
        page.get_by_label("Photos of the product").set_input_files(photos)
        page.get_by_role("button", name="Create and train").click()
        state = page.locator("#state")
        expect(state).to_have_attribute("data-status", re.compile("ready|failed"), timeout=RESULT_TIMEOUT)
        assert state.get_attribute("data-status") == "ready", state.text_content()
        shoot(page, shots, "desktop-0-train", top="#watch")
        link = page.get_by_role("link", name="Try it in the shop")
        return str(link.get_attribute("href")).split("subject=")[1]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(room_picture(640, 480), tmp_path_factory.mktemp("room") / "room.png")


def shop(page: Any, server: Server, subject: str) -> Any:
    page.goto(f"{server.base}/?subject={subject}")
    expect(page.get_by_text("The tiny model is loaded")).to_be_visible()
    return widget_of(page)


# --- (1) the whole flow at desktop size ------------------------------------------------------------
def test_desktop_preview_paints_only_inside_the_drawn_mask(
    server: Server, browser: Any, subject: str, room: Path, shots: Path
) -> None:
    with opened(browser, **DESKTOP) as (page, _):
        seen = answers(page)
        widget = shop(page, server, subject)
        shoot(page, shots, "desktop-1-pick")
        canvas = choose_photo(widget, room)
        draw_with_mouse(page, canvas)
        drawn = drawn_on(canvas)
        shoot(page, shots, "desktop-2-mask")
        assert_all_named(
            page, ("button", "Brush"), ("button", "Undo"), ("slider", "Size"), ("application", "Your photo")
        )
        result = preview_and_wait(page, widget, shots, "desktop-")
        assert_all_named(
            page, ("slider", "Before and after"), ("link", "Download"), ("button", "Try another")
        )

        # Shown from a rendition (here at least the photo's size: never enlarged, so 640x480).
        assert check_rendition(page, widget, seen) == (640, 480)
        (sent,) = sent_requests(page, 1)
        assert sent["room"] == room.read_bytes(), "a PNG within the limits is sent as it is"
        mask = check_painted_only_inside(result, sent["room"], sent["mask"])
        # The mask is where the mouse went: the middle of the stroke paints, a far corner keeps.
        assert mask[round(480 * 0.65), round(640 * 0.425)] == 255 and mask[10, 10] == 0
        # By the mask rule it paints exactly what was drawn, faint stroke edges included.
        assert np.array_equal(api_paints(sent["mask"]), drawn), "the mask sent paints other pixels than drawn"

        # "Try another": the same room and mask again, with a new seed.
        widget.get_by_role("button", name="Try another").click()
        expect(widget.get_by_role("link", name="Download")).to_be_visible(timeout=RESULT_TIMEOUT)
        first, second = sent_requests(page, 2)
        assert second["mask"] == first["mask"] and second["seed"] != first["seed"]

        # "Delete my photos": both previews, each with its copy of the room photo, are gone.
        made = made_previews(seen)
        assert len(made) == 2 and all(stored_blobs(server, i) for i in made)
        widget.get_by_role("button", name="Delete my photos").click()
        expect(widget.get_by_text("Your photos were deleted from the service.")).to_be_visible()
        expect(widget.get_by_role("link", name="Download")).to_be_hidden()  # back at the start
        for preview in made:
            assert read_as_widget(server, preview) == 404
            assert stored_blobs(server, preview) == []


# --- (2) a photo over the API's limits --------------------------------------------------------------
def test_an_over_limit_photo_is_scaled_down_in_the_browser_and_still_works(
    server: Server, browser: Any, subject: str, tmp_path: Path
) -> None:
    too_long = save(room_picture(13000, 1000), tmp_path / "panorama.jpg", quality=85)
    big = save(room_picture(13000, 2000), tmp_path / "wide.jpg", quality=85)  # 26 MP, side > 12000
    with opened(browser, **DESKTOP) as (page, _):
        widget = shop(page, server, subject)
        # 13:1 is past the aspect limit, which scaling cannot fix: said at once, nothing sent.
        widget.get_by_label("Choose a room photo").set_input_files(str(too_long))
        expect(widget.get_by_role("alert")).to_contain_text("too long and narrow")

        canvas = choose_photo(widget, big)
        expect(widget.get_by_text("scaled down to 12000×1846")).to_be_visible()
        draw_with_mouse(page, canvas)
        result = preview_and_wait(page, widget)
        (sent,) = sent_requests(page, 1)
        assert sent["type"] == "image/jpeg" and (sent["width"], sent["height"]) == (12000, 1846)
        assert Image.open(io.BytesIO(sent["room"])).size == (12000, 1846)
        check_painted_only_inside(result, sent["room"], sent["mask"])


# --- (3) errors: each says what happened, and the widget gets over it ------------------------------
def test_rate_limit_and_a_lost_connection_are_waited_out(
    server: Server, browser: Any, subject: str, room: Path
) -> None:
    with opened(browser, **DESKTOP) as (page, _):
        widget = shop(page, server, subject)
        limited = {"done": False}

        def once_429(route: Any, request: Any) -> None:
            if request.method == "POST" and not limited["done"]:
                limited["done"] = True
                route.fulfill(
                    status=429,
                    headers={
                        "Content-Type": "application/problem+json",
                        "Retry-After": "1",
                        "Access-Control-Allow-Origin": server.base,
                        "Access-Control-Expose-Headers": "Retry-After",
                    },
                    body='{"type":"about:blank","title":"Rate limited","status":429,"detail":"slow down",'
                    '"code":"rate_limited"}',
                )
            else:
                route.fallback()

        outage = {"until": 0.0}

        def flaky_polls(route: Any, request: Any) -> None:
            if not outage["until"]:
                outage["until"] = time.monotonic() + 4  # the service goes away at the first poll
            if time.monotonic() < outage["until"]:
                route.abort("connectionrefused")
            else:
                route.fallback()

        page.route(f"{server.api}/v1/previews", once_429)
        # The outage hits the event stream and the polls alike (the widget polls where it has no stream).
        page.route(re.compile(re.escape(server.api) + r"/v1/previews/prv_[0-9A-Z]+(/events)?$"), flaky_polls)
        draw_with_mouse(page, choose_photo(widget, room))
        widget.get_by_role("button", name="Preview").click()
        expect(widget.get_by_text(re.compile(r"Too many requests.*Trying again in \d s"))).to_be_visible()
        expect(widget.get_by_text(re.compile(r"Connection lost\. Trying again in \d+ s"))).to_be_visible(
            timeout=30_000
        )
        expect(widget.get_by_role("button", name="Cancel")).to_be_enabled()
        expect(widget.get_by_role("button", name="Preview")).to_be_hidden()
        expect(widget.get_by_role("link", name="Download")).to_be_visible(timeout=RESULT_TIMEOUT)
        assert limited["done"] and outage["until"]


class _ShopPage(BaseHTTPRequestHandler):
    """Another shop's page, at another origin, embedding the widget with its SRI hash."""

    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def another_shop(server: Server, subject: str, key: str) -> Iterator[int]:
    widget_js = (ROOT / "api" / "static" / "widget.js").read_bytes()
    sri = "sha384-" + base64.b64encode(hashlib.sha384(widget_js).digest()).decode()
    handler = type("Page", (_ShopPage,), {})
    handler.html = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Another shop</title>'
        f'<h1>Another shop</h1><roomfit-preview subject="{subject}" key="{key}"></roomfit-preview>'
        f'<script src="{server.base}/widget/v1.js" integrity="{sri}" crossorigin="anonymous"></script>'
    ).encode()
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_origin_not_on_the_key_is_explained_and_the_widget_recovers(
    server: Server, browser: Any, subject: str, room: Path, shots: Path
) -> None:
    with another_shop(server, subject, server.publishable_key) as port:
        origin = f"http://127.0.0.1:{port}"
        # A second key of the shop lists this origin; the dev key the page uses does not.
        own_key = server.cli(
            "keys", "create", "--tenant", "dev", "--kind", "publishable", "--origin", origin
        )["key"]
        for options, prefix in ((DESKTOP, "desktop-"), (PHONE, "phone-")):
            with opened(browser, **options) as (page, _):
                page.goto(origin + "/")
                widget = widget_of(page)  # loaded with integrity=: the served file is the one hashed
                draw = draw_with_mouse if prefix == "desktop-" else draw_with_finger
                draw(page, choose_photo(widget, room))
                widget.get_by_role("button", name="Preview").click()
                alert = widget.get_by_role("alert")
                expect(alert).to_contain_text("not enabled for this website", timeout=30_000)
                expect(widget.get_by_role("button", name="Preview")).to_be_enabled()  # never frozen
                shoot(page, shots, f"{prefix}5-error")
        # The shop fixes its page (its own key): the same widget works, without a reload.
        with opened(browser, **DESKTOP) as (page, _):
            page.goto(origin + "/")
            widget = widget_of(page)
            draw_with_mouse(page, choose_photo(widget, room))
            widget.get_by_role("button", name="Preview").click()
            expect(widget.get_by_role("alert")).to_contain_text(
                "not enabled for this website", timeout=30_000
            )
            widget.evaluate("(w, key) => w.setAttribute('key', key)", own_key)
            result = preview_and_wait(page, widget)
            sent = sent_requests(page, 2)[-1]
            check_painted_only_inside(result, sent["room"], sent["mask"])

    # An origin no key lists: the browser refuses the request itself (CORS), so the widget cannot
    # read why; it finds the service reachable and says the page is most likely not allowed.
    with (
        another_shop(server, subject, server.publishable_key) as port,
        opened(browser, **DESKTOP) as (page, _),
    ):
        page.goto(f"http://localhost:{port}/")
        widget = widget_of(page)
        draw_with_mouse(page, choose_photo(widget, room))
        widget.get_by_role("button", name="Preview").click()
        expect(widget.get_by_role("alert")).to_contain_text("refused this page", timeout=30_000)
        expect(widget.get_by_role("button", name="Try again")).to_be_enabled()


# --- (4) a phone: 360 px wide, touch --------------------------------------------------------------
def test_phone_size_touch_flow(server: Server, browser: Any, subject: str, room: Path, shots: Path) -> None:
    with opened(browser, **PHONE) as (page, _):
        seen = answers(page)
        widget = shop(page, server, subject)
        expect(widget.get_by_text("Take a photo")).to_be_visible()  # the camera, on a touch screen
        shoot(page, shots, "phone-1-pick")
        canvas = choose_photo(widget, room)
        draw_with_finger(page, canvas)
        shoot(page, shots, "phone-2-mask")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
        result = preview_and_wait(page, widget, shots, "phone-")
        # About 330 px shown at a pixel ratio of 1: a 512 rendition, not the photo's 640 (the PNG).
        assert check_rendition(page, widget, seen) == (512, 384)
        (sent,) = sent_requests(page, 1)
        mask = check_painted_only_inside(result, sent["room"], sent["mask"])
        assert mask[round(480 * 0.65), round(640 * 0.475)] == 255 and mask[470, 630] == 0

        # "Delete my photos" with the connection lost at the first try: said, and "Try again" finishes.
        (preview,) = made_previews(seen)
        lost = {"once": False}

        def lost_once(route: Any, request: Any) -> None:
            if request.method == "DELETE" and not lost["once"]:
                lost["once"] = True
                route.abort("connectionrefused")
            else:
                route.fallback()

        page.route(f"{server.api}/v1/previews/{preview}", lost_once)
        widget.get_by_role("button", name="Delete my photos").tap()
        expect(widget.get_by_role("alert")).to_contain_text("Cannot reach the preview service")
        assert read_as_widget(server, preview) == 200 and stored_blobs(server, preview)
        widget.get_by_role("button", name="Try again").tap()
        expect(widget.get_by_text("Your photos were deleted from the service.")).to_be_visible()
        assert lost["once"] and read_as_widget(server, preview) == 404 and stored_blobs(server, preview) == []


# --- (4b) the other ways in: a photo dropped on the widget, a photo from the phone's camera ----------
FILES = """([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([bytes], name, { type }));
  return files;
}"""


def dragged(page: Any, content: bytes, name: str, kind: str) -> Any:
    """A DataTransfer holding one file, as the browser hands a drop of it from the desktop."""
    return page.evaluate_handle(FILES, [base64.b64encode(content).decode(), name, kind])


def test_a_dropped_or_camera_photo_opens_as_a_chosen_one(
    server: Server, browser: Any, subject: str, room: Path
) -> None:
    with opened(browser, **DESKTOP) as (page, _):
        widget = shop(page, server, subject)
        pick = widget.locator(".pick")
        # A file that is not a photo: said, and the widget stays where it was.
        notes = dragged(page, b"shopping list", "notes.txt", "text/plain")
        widget.dispatch_event("dragenter", {"dataTransfer": notes})
        expect(pick).to_have_class(re.compile(r"\bover\b"))  # the drop target shows it is one
        widget.dispatch_event("drop", {"dataTransfer": notes})
        expect(widget.get_by_role("alert")).to_contain_text("That file is not a photo")
        expect(pick).not_to_have_class(re.compile(r"\bover\b"))
        expect(widget.locator("canvas.mask")).to_be_hidden()
        # The room photo dropped: it opens at its own size, ready for a mask, the error gone.
        photo = dragged(page, room.read_bytes(), "room.png", "image/png")
        widget.dispatch_event("dragenter", {"dataTransfer": photo})
        widget.dispatch_event("drop", {"dataTransfer": photo})
        canvas = widget.locator("canvas.mask")
        expect(canvas).to_be_visible()
        assert canvas.evaluate("(c) => [c.width, c.height]") == [640, 480]
        expect(widget.get_by_role("alert")).to_be_hidden()

    with opened(browser, **PHONE) as (page, _):
        widget = shop(page, server, subject)
        # What makes a phone open its camera rather than its gallery; the photo it returns is a file.
        camera = widget.get_by_label("Take a photo")
        expect(camera).to_have_attribute("capture", "environment")
        camera.set_input_files(str(room))
        canvas = widget.locator("canvas.mask")
        expect(canvas).to_be_visible()
        assert canvas.evaluate("(c) => [c.width, c.height]") == [640, 480]


# --- (5) keyboard and names -----------------------------------------------------------------------
def test_every_control_is_named_and_the_mask_can_be_drawn_from_the_keyboard(
    server: Server, browser: Any, subject: str, room: Path
) -> None:
    with opened(browser, **DESKTOP) as (page, _):
        widget = shop(page, server, subject)
        assert_all_named(page, ("button", "Choose a room photo"))
        canvas = choose_photo(widget, room)
        preview = widget.get_by_role("button", name="Preview")
        expect(preview).to_be_disabled()  # nothing painted yet
        canvas.focus()
        for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Space"):
            page.keyboard.press(key)
        expect(preview).to_be_enabled()
        page.keyboard.press("Control+z")
        expect(preview).to_be_disabled()
        page.keyboard.press("Control+Shift+z")
        expect(preview).to_be_enabled()
        # A box from the keyboard: Space at one corner, again at the opposite one.
        widget.get_by_role("button", name="Box").click()
        expect(widget.get_by_role("button", name="Box")).to_have_attribute("aria-pressed", "true")
        canvas.focus()
        for key in ("Space", "Shift+ArrowLeft", "Shift+ArrowUp", "Space"):
            page.keyboard.press(key)
        drawn = drawn_on(canvas)
        preview.click()
        expect(widget.get_by_role("button", name="Cancel")).to_be_enabled()
        widget.get_by_role("button", name="Cancel").click()
        (sent,) = sent_requests(page, 1)
        mask = np.asarray(Image.open(io.BytesIO(sent["mask"])))
        assert np.array_equal(api_paints(sent["mask"]), drawn), "the mask sent paints other pixels than drawn"
        # The cursor starts in the middle (320, 240) and moves 12.8 px a press (64 with Shift): the box
        # spans (281.6, 188.8)-(345.6, 252.8).
        assert mask[240, 320] == 255 and mask[195, 290] == 255 and mask[100, 100] == 0 and mask[470, 630] == 0
        assert_all_named(page, ("button", "Preview"), ("button", "Eraser"))


# --- (6) progress pushed: the event stream -----------------------------------------------------------
def test_progress_is_pushed_by_the_services_event_stream(
    server: Server, browser: Any, subject: str, room: Path
) -> None:
    """Against the service's own GET /v1/previews/{id}/events (docs/api.md): the widget follows the
    preview on it, and never polls."""
    with opened(browser, **DESKTOP) as (page, _):
        seen = answers(page)
        widget = shop(page, server, subject)
        draw_with_mouse(page, choose_photo(widget, room))
        result = preview_and_wait(page, widget)
        streams = [r for r in seen if r.url.endswith("/events")]
        assert streams, "the widget opened no event stream"
        assert [r.status for r in streams] == [200] * len(streams)
        assert streams[0].headers["content-type"].startswith("text/event-stream")
        polls = [r.url for r in seen if POLL_URL.search(r.url) and r.request.method == "GET"]
        assert polls == [], "the widget polled although the stream was there"
        (sent,) = sent_requests(page, 1)
        check_painted_only_inside(result, sent["room"], sent["mask"])


# A stand-in for the event stream, in the page (before its scripts): the widget's fetch of
# /v1/previews/{id}/events gets a stream made here, so the test decides every byte and when the
# stream breaks. The first stream sends, in 5-byte pieces (CRLF and a UTF-8 character cut in two):
# a heartbeat comment, a field that means nothing, `retry`, a `status` event with its data on two
# lines, an event of a kind the widget does not know, and an id on its own (no data: no event, but
# the id counts) — and then ends. Later streams follow the real preview (GET, marked `?stand_in`) and
# send `progress` events until the terminal one. Each opening's Last-Event-ID is kept for the test.
FAKE_EVENTS = r"""(() => {
  const real = window.fetch.bind(window);
  const opened = (window.roomfitStreams = []);
  const terminal = ["succeeded", "failed", "cancelled"];
  window.fetch = (input, init = {}) => {
    const url = String(input instanceof Request ? input.url : input);
    if (!/\/v1\/previews\/[^/?]+\/events$/.test(url)) return real(input, init);
    const headers = new Headers(init.headers);
    opened.push({ lastEventId: headers.get("Last-Event-ID"), accept: headers.get("Accept") });
    let id = Number(headers.get("Last-Event-ID") || 0);
    const bytes = (text) => new TextEncoder().encode(text);
    const body = new ReadableStream({
      async start(out) {
        if (opened.length === 1) {
          const first = bytes(
            ": heartbeat\r\nnonsense\r\nretry: 10\r\n\r\n" +
              `id: ${++id}\r\nevent: status\r\ndata: {"id": "x", "status": "queued",\r\n` +
              'data:  "stage": "é", "progress": 0}\r\n\r\n' +
              `id: ${++id}\nevent: gossip\ndata: {}\n\n` +
              `id: ${++id}\r\n\r\n`,
          );
          for (let at = 0; at < first.length; at += 5) out.enqueue(first.slice(at, at + 5));
          out.close(); // ends early: the widget opens it again from id 3
          return;
        }
        for (;;) {
          const answer = await real(url.replace(/\/events$/, "?stand_in=1"), {
            headers: { Authorization: headers.get("Authorization") },
            mode: "cors",
            credentials: "omit",
            cache: "no-store",
          });
          const preview = await answer.json();
          if (terminal.includes(preview.status)) {
            out.enqueue(bytes(`id: ${++id}\nevent: ${preview.status}\ndata: ${JSON.stringify(preview)}\n\n`));
            out.close();
            return;
          }
          const { status, progress } = preview;
          const data = JSON.stringify({ id: preview.id, status, stage: null, progress });
          out.enqueue(bytes(`id: ${++id}\nevent: progress\ndata: ${data}\n\n`));
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
      },
    });
    const answer = new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
    return Promise.resolve(answer);
  };
})();"""


def test_the_event_stream_is_parsed_and_resumed_from_the_last_event_id(
    server: Server, browser: Any, subject: str, room: Path
) -> None:
    with opened(browser, **DESKTOP) as (page, _):
        page.add_init_script(FAKE_EVENTS)
        seen = answers(page)
        widget = shop(page, server, subject)
        draw_with_mouse(page, choose_photo(widget, room))
        result = preview_and_wait(page, widget)
        streams = page.evaluate("() => window.roomfitStreams")
        # The first stream ended after id 3 (an id without data counts): one more, from there, to the end.
        assert streams == [
            {"lastEventId": None, "accept": "text/event-stream"},
            {"lastEventId": "3", "accept": "text/event-stream"},
        ]
        polls = [r.url for r in seen if POLL_URL.search(r.url) and r.request.method == "GET"]
        assert polls == [], "the widget polled although the stream was there"
        (sent,) = sent_requests(page, 1)
        check_painted_only_inside(result, sent["room"], sent["mask"])
