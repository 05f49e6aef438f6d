"""The ops console when a refresh goes wrong: the jobs request refused for a new filter, and a pass
that cannot even be sent (a date the browser's `Date` cannot convert). The page and the stand-in
`/v1/ops/*` are tests/browser/test_ops_console_job_panel.py's."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.test_ops_console_job_panel import FAILED, OTHER, StandIn, console

expect: Any = pytest.importorskip("playwright.sync_api").expect

# A datetime-local value the input keeps (years up to 275760) that `new Date(value)` cannot read:
# past year 9999 a date string needs the extended form (+012345-...), so this is an Invalid Date.
FAR_DATE = "12345-06-01T10:00"


class TenantIds(StandIn):
    """As the API: a `tenant_id` filter that is not a tenant id is refused (422); every pass's
    queues request is counted."""

    def __init__(self, queues: Any = None) -> None:
        super().__init__()
        self.passes = 0
        self.queues = queues  # what /v1/ops/queues answers instead, if set

    def handle(self, route: Any, request: Any) -> None:
        url = urlsplit(request.url)
        if url.path == "/v1/ops/queues":
            self.passes += 1
            if self.queues is not None and self.passes > 1:
                return self.json(route, 200, self.queues)
        tenant = parse_qs(url.query).get("tenant_id", [""])[0]
        if url.path == "/v1/ops/jobs" and tenant and not tenant.startswith("ten_"):
            problem = {"code": "validation_error", "detail": "tenant_id: not a tenant id"}
            route.fulfill(
                status=422, headers={"Content-Type": "application/problem+json"}, body=json.dumps(problem)
            )
            return
        super().handle(route, request)


def test_a_refused_jobs_request_does_not_show_the_previous_filters_rows(browser: Any) -> None:
    stand_in = TenantIds()
    with console(browser, stand_in) as page:
        tenant = page.get_by_label("Tenant id")
        tenant.fill("acme")
        tenant.press("Enter")
        expect(page.locator("#message")).to_contain_text("not a tenant id")
        # Rows of the unfiltered list are not the answer for tenant "acme".
        expect(page.locator("#jobs tbody tr")).to_have_count(0)
        expect(page.locator("#jobsNote")).not_to_have_text("")
        for job_id in (FAILED, OTHER):
            expect(page.locator(f'#jobs tr[data-key="{job_id}"]')).to_have_count(0)
        # the queues and workers did refresh: the header says what did not, not "refresh failed"
        expect(page.locator("#updated")).to_have_text(re.compile(r"^updated .+ except jobs$"))


def passes_go_on(page: Any, stand_in: TenantIds) -> None:
    """Later passes still come by themselves (auto-refresh, every 3 s)."""
    seen = stand_in.passes
    for _ in range(300):
        if stand_in.passes >= seen + 2:
            break
        page.wait_for_timeout(50)
    assert stand_in.passes >= seen + 2, "auto-refresh stopped after a pass that failed"


def test_auto_refresh_survives_a_date_the_browser_cannot_convert(browser: Any) -> None:
    stand_in = TenantIds()
    with console(browser, stand_in) as page:
        since = page.get_by_label("Created since")
        since.fill(FAR_DATE)
        since.dispatch_event("change")
        assert since.input_value() == FAR_DATE
        passes_go_on(page, stand_in)
        expect(page.locator("#message")).to_contain_text("since")


def test_auto_refresh_survives_a_pass_that_throws(browser: Any) -> None:
    """An answer the page cannot show (queues that are not a list) throws while it is shown."""
    stand_in = TenantIds(queues={"queues": {"not": "a list"}})
    with console(browser, stand_in) as page:
        passes_go_on(page, stand_in)
        expect(page.locator("#message")).to_contain_text("refresh")
        expect(page.locator("#updated")).to_contain_text("refresh failed")
