"""The storefront widget when its event stream cannot be opened: a proxy in front of the service that
answers every `GET /v1/previews/{id}/events` with a 502 page (no `Retry-After`). The README promises
that a stream that cannot be opened is tried again after 1 s and 2 s, and then the widget polls
`GET /v1/previews/{id}`; the stand-in's `/v1` (tests/browser/test_widget_moments.py) decides each
answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_widget_moments import StandIn, shop

expect: Any = pytest.importorskip("playwright.sync_api").expect


class BadGatewayStreams(StandIn):
    """Every event stream answers a proxy's 502 page; the preview itself reads as succeeded."""

    def __init__(self) -> None:
        super().__init__()
        self.opens = 0

    def events(self, route: Any, preview_id: str) -> None:
        self.opens += 1
        route.fulfill(status=502, headers={"Content-Type": "text/html"}, body="<h1>502 Bad Gateway</h1>")


def test_a_stream_that_keeps_answering_502_falls_back_to_polling(browser: Any, tmp_path: Path) -> None:
    stand_in = BadGatewayStreams()
    with shop(browser, stand_in, tmp_path) as (_page, widget):
        widget.get_by_role("button", name="Preview").click()
        # Polling reads the preview as succeeded: the result is shown, after three failed opens.
        expect(widget.get_by_role("link", name="Download")).to_be_visible(timeout=30_000)
        assert stand_in.opens == 3, f"the stream was opened {stand_in.opens} times before polling"
