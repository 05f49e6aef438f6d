"""The demo's "add a product" page (`/demo/subjects`, api/static/demo-subjects.html) following a
product whose reads fail, in a real headless Chromium: the page as the service serves it (its own
HTML and Content-Security-Policy), `/demo/api/*` answered by a stand-in in the test, which decides
what each answer says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from api.html_pages import page as html_page
from tests.browser.conftest import stand_in_page

expect: Any = pytest.importorskip("playwright.sync_api").expect

ORIGIN = "http://demo.test"
GONE = "sub_01JD6Y2Q4S5T6V7W8X9Y0Z1GON"  # deleted: 404
DOWN = "sub_01JD6Y2Q4S5T6V7W8X9Y0Z1DWN"  # its reads fail (the service briefly down): 503
TRAINING = "sub_01JD6Y2Q4S5T6V7W8X9Y0Z1TRN"  # reads fine, training


def subject(subject_id: str) -> dict[str, Any]:
    return {
        "subject": {
            "id": subject_id,
            "name": "Blue sofa",
            "status": "training",
            "stage": "training",
            "progress": 0.25,
            "error": None,
        },
        "job_id": None,
    }


class StandIn:
    """The page and `/demo/api/*`; how many times each product was read."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}

    def handle(self, route: Any, request: Any) -> None:
        path = urlsplit(request.url).path
        if path == "/demo/subjects":
            served = html_page("demo-subjects.html")
            route.fulfill(status=200, headers=dict(served.headers), body=served.body)
        elif path == "/demo/api/config":
            self.json(route, 200, {"tiny": False})
        elif path == "/demo/api/subjects":
            self.json(route, 200, {"items": [], "next_cursor": None})
        elif path.startswith("/demo/api/subjects/"):
            subject_id = path.rsplit("/", 1)[1]
            self.reads[subject_id] = self.reads.get(subject_id, 0) + 1
            if subject_id == GONE:
                self.json(route, 404, {"code": "not_found", "detail": "no such subject"})
            elif subject_id == DOWN:
                self.json(route, 503, {"code": "service_unavailable", "detail": "the database is down"})
            else:
                self.json(route, 200, subject(subject_id))
        else:
            self.json(route, 404, {"code": "not_found", "detail": "no such thing"})

    @staticmethod
    def json(route: Any, status: int, body: Any) -> None:
        kind = "application/json" if status < 400 else "application/problem+json"
        route.fulfill(status=status, headers={"Content-Type": kind}, body=json.dumps(body))


@contextmanager
def watching(browser: Any, stand_in: StandIn, subject_id: str) -> Iterator[Any]:
    with stand_in_page(browser, ORIGIN, stand_in.handle, f"/demo/subjects?watch={subject_id}") as page:
        yield page


def reads_of(page: Any, stand_in: StandIn, subject_id: str, count: int) -> None:
    """Until the page has read `subject_id` `count` times (its requests reach the stand-in meanwhile)."""
    for _ in range(400):
        if stand_in.reads.get(subject_id, 0) >= count:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{subject_id} was read {stand_in.reads.get(subject_id, 0)} times, not {count}")


def test_a_deleted_product_ends_the_watch_and_says_it_is_gone(browser: Any) -> None:
    stand_in = StandIn()
    with watching(browser, stand_in, GONE) as page:
        expect(page.locator("#state")).to_contain_text("gone")
        # A later watch's reads come and go; the deleted product is not read again meanwhile.
        page.evaluate(f"() => {{ watch({json.dumps(TRAINING)}); }}")  # not awaited: it never ends
        reads_of(page, stand_in, TRAINING, 4)
        assert stand_in.reads[GONE] == 1, f"a deleted product was read {stand_in.reads[GONE]} times"


def test_a_product_deleted_while_watched_leaves_no_progress_behind(browser: Any) -> None:
    """The bar and loss curve belong to the product being watched: once it is gone they go too, and
    they come back with the next product's first read."""
    stand_in = StandIn()
    with watching(browser, stand_in, TRAINING) as page:
        bar, curve = page.locator("#bar"), page.locator("#loss")
        expect(bar).to_be_visible()
        expect(bar).to_have_js_property("value", 0.25)
        page.evaluate(f"() => {{ watch({json.dumps(GONE)}); }}")
        expect(page.locator("#state")).to_contain_text("gone")
        expect(bar).to_be_hidden()
        expect(curve).to_be_hidden()
        expect(page.locator("#watchTitle")).to_have_text("Product gone")  # not the previous product's
        page.evaluate(f"() => {{ watch({json.dumps(TRAINING)}); }}")
        expect(bar).to_be_visible()
        expect(curve).to_be_visible()
        expect(page.locator("#watchTitle")).to_contain_text("Blue sofa")


def test_a_watch_replaced_by_a_newer_one_stops(browser: Any) -> None:
    stand_in = StandIn()
    with watching(browser, stand_in, DOWN) as page:
        state = page.locator("#state")
        expect(state).to_contain_text("the database is down")
        reads = stand_in.reads[DOWN]
        page.evaluate(f"() => {{ watch({json.dumps(TRAINING)}); }}")  # not awaited: it never ends
        expect(state).to_contain_text("training")
        # The newer watch reads its product every second; meanwhile the older one has stopped.
        reads_of(page, stand_in, TRAINING, 4)
        assert stand_in.reads[DOWN] == reads, "the replaced watch still reads its product"
        expect(state).to_contain_text("training")
