"""The ops console (`/ops`) in a real headless Chromium, the page as `api.ops_console` serves it (its
own HTML and Content-Security-Policy), its `/v1/ops/*` answered by a stand-in in the test: the test
decides what each answer says and when it comes, which a live service cannot be made to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from api.routes.ops_console import ops_page
from tests.browser.conftest import stand_in_page

expect: Any = pytest.importorskip("playwright.sync_api").expect

ORIGIN = "http://ops.test"
FAILED = "job_01JD6Y2Q4S5T6V7W8X9Y0Z1AAA"  # a training that failed: Retry offered
OTHER = "job_01JD6Y2Q4S5T6V7W8X9Y0Z1BBB"  # a job whose read fails (the service briefly down)
TENANT = "ten_01JD6Y2Q4S5T6V7W8X9Y0Z1A2B"


def job(job_id: str, status: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": "train",
        "status": status,
        "stage": None,
        "progress": 0.0,
        "attempts": 1,
        "subject_id": "sub_01JD6Y2Q4S5T6V7W8X9Y0Z1A2B",
        "preview_id": None,
        "tenant_id": TENANT,
        "error": {"code": "no_object_found", "message": "no product found"} if status == "failed" else None,
        "loss": [],
        "timeline": [],
        "created_at": "2025-01-01T10:00:00Z",
        "started_at": None,
        "finished_at": None,
    }


class StandIn:
    """`/ops` and the `/v1/ops/*` answers; the POSTs the page made, as (path, method)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.jobs = [job(FAILED, "failed"), job(OTHER, "running")]

    def handle(self, route: Any, request: Any) -> None:
        path = urlsplit(request.url).path
        if path == "/ops":
            page = ops_page()
            route.fulfill(status=200, headers=dict(page.headers), body=page.body)
            return
        if request.method == "POST":
            self.posts.append(path)
            return self.json(route, 202, job(path.split("/")[-2], "queued"))
        answers: dict[str, tuple[int, Any]] = {
            "/v1/ops/queues": (200, {"queues": []}),
            "/v1/ops/workers": (200, {"workers": []}),
            "/v1/ops/usage": (200, {"day": "2025-01-01", "tenants": []}),
            "/v1/ops/jobs": (200, {"items": self.jobs, "next_cursor": None}),
            f"/v1/ops/jobs/{FAILED}": (200, job(FAILED, "failed")),
            f"/v1/ops/jobs/{OTHER}": (503, {"code": "service_unavailable", "detail": "the database is down"}),
        }
        status, body = answers.get(path, (404, {"code": "not_found", "detail": "no such thing"}))
        self.json(route, status, body)

    @staticmethod
    def json(route: Any, status: int, body: Any) -> None:
        kind = "application/json" if status < 400 else "application/problem+json"
        route.fulfill(status=status, headers={"Content-Type": kind}, body=json.dumps(body))


@contextmanager
def console(browser: Any, stand_in: StandIn) -> Iterator[Any]:
    with stand_in_page(browser, ORIGIN, stand_in.handle, "/ops") as page:
        page.get_by_label("Ops key").fill("ok_review")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(f'#jobs tr[data-key="{FAILED}"]')).to_be_visible()
        yield page


def test_the_job_panel_never_offers_the_previous_jobs_actions_for_another_job(browser: Any) -> None:
    """Open a failed job (Retry shown), then another whose read fails: the panel is titled with the
    second job, and its Retry must not be the first job's, still wired to retry that one."""
    stand_in = StandIn()
    with console(browser, stand_in) as page:
        page.locator(f'#jobs a[data-job="{FAILED}"]').click()
        expect(page.locator("#jobTitle")).to_have_text(f"Job {FAILED}")
        expect(page.locator("#jobRetry")).to_be_visible()

        page.locator(f'#jobs a[data-job="{OTHER}"]').click()
        expect(page.locator("#jobTitle")).to_have_text(f"Job {OTHER}")
        expect(page.locator("#jobMessage")).to_have_text("the database is down")
        offered = page.locator("#job button[data-action]:visible")
        targets = offered.evaluate_all("(buttons) => buttons.map((b) => b.dataset.job)")
        assert all(target == OTHER for target in targets), f"the panel of {OTHER} acts on {targets}"
        for button in offered.all():
            button.click()
        assert stand_in.posts == [] or all(OTHER in path for path in stand_in.posts), stand_in.posts
