"""The ops console (`/ops`) in a real headless Chromium against the real service (`roomfit up`, tiny
models, its real worker processes): a training that fails for real (the tiny detector finds no
product in photos given without boxes) is listed with its error and its Retry button runs it again;
a training that succeeded has its loss curve drawn from its own points; the queue view follows a
job submitted through the API without the page reloading, the operator's filter and focus kept;
the key stays out of URLs and logs; at 360 px nothing overflows sideways. With ROOMFIT_SCREENSHOTS=1
the console's screenshots (desktop and phone) refresh docs/screenshots/."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Server, product_photo, screenshot_folder

pytestmark = pytest.mark.slow
expect: Any = pytest.importorskip("playwright.sync_api").expect

DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 360, "height": 740},
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 1,
}
FINAL = ("succeeded", "failed", "cancelled")
JOB_TIMEOUT = 180.0  # s: a training on a busy two-core machine
PAGE_TIMEOUT = 60_000  # ms


@dataclass
class World:
    ops_key: str
    secret_key: str
    failed_job: str  # a training that failed: no product found (no boxes, and the tiny detector)
    trained_job: str  # a training that succeeded, with its loss points


def _photos() -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i in range(2):
        out = io.BytesIO()
        product_photo(i, 128).save(out, format="PNG")
        files.append(("photos", (f"p{i}.png", out.getvalue(), "image/png")))
    return files


def create_subject(server: Server, secret_key: str, *, whole_boxes: bool) -> str:
    """A subject of tenant `dev` through the API; with `whole_boxes` each photo is its own box (it
    trains), without them the tiny detector must find the product (it finds none: the job fails)."""
    data = {"name": "ops console " + ("sofa" if whole_boxes else "nothing")}
    if whole_boxes:
        data["boxes"] = json.dumps([[0, 0, 128, 128]] * 2)
    answer = httpx.post(
        server.base + "/v1/subjects",
        data=data,
        files=_photos(),
        headers={"Authorization": f"Bearer {secret_key}"},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def ops_get(server: Server, world: World, path: str) -> Any:
    answer = httpx.get(server.base + path, headers={"Authorization": f"Bearer {world.ops_key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for(what: Callable[[], Any], message: str, timeout: float = JOB_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
    return found


def job_of(server: Server, world: World, subject_id: str) -> dict[str, Any]:
    """The newest training of `subject_id`, once it has finished."""

    def finished() -> dict[str, Any] | None:
        items = ops_get(server, world, "/v1/ops/jobs?kind=train&limit=500")["items"]
        mine = [j for j in items if j["subject_id"] == subject_id]
        return mine[0] if mine and mine[0]["status"] in FINAL else None

    return wait_for(finished, f"the training of {subject_id} never finished")  # type: ignore[no-any-return]


def job_detail(server: Server, world: World, job_id: str) -> dict[str, Any]:
    """The ops job read (with its timeline), or the plain one where the API has no ops read."""
    answer = httpx.get(
        f"{server.base}/v1/ops/jobs/{job_id}",
        headers={"Authorization": f"Bearer {world.ops_key}"},
        timeout=30,
    )
    if answer.status_code in (404, 405):
        return ops_get(server, world, f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    ops_key = server.cli("keys", "create", "--kind", "ops")["key"]
    secret_key = server.cli("keys", "create", "--tenant", "dev", "--kind", "secret")["key"]
    failing = create_subject(server, secret_key, whole_boxes=False)
    training = create_subject(server, secret_key, whole_boxes=True)
    made = World(ops_key, secret_key, "", "")
    failed, trained = job_of(server, made, failing), job_of(server, made, training)
    assert (failed["status"], (failed["error"] or {}).get("code")) == ("failed", "no_object_found"), failed
    assert trained["status"] == "succeeded" and len(trained["loss"]) >= 2, trained
    return World(ops_key, secret_key, failed["id"], trained["id"])


@contextmanager
def console(browser: Any, server: Server, world: World, fragment: str = "", **options: Any) -> Iterator[Any]:
    """The console, signed in through its form; fails on any CSP refusal or script error, and if
    the key ever shows in a URL the page asks for."""
    context = browser.new_context(**options)
    page = context.new_page()
    complaints: list[str] = []
    asked: list[str] = []
    page.on("pageerror", lambda error: complaints.append(f"page error: {error}"))
    page.on("console", lambda m: complaints.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("request", lambda request: asked.append(request.url))
    try:
        page.goto(f"{server.base}/ops{fragment}")
        page.get_by_label("Ops key").fill(world.ops_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#queues tbody tr")).not_to_have_count(0, timeout=PAGE_TIMEOUT)
        yield page
        assert [url for url in asked if world.ops_key in url] == []
    finally:
        context.close()
    assert complaints == [], complaints


def reloads(page: Any) -> list[str]:
    """Every document the page loads from now on (a changed fragment is no load: it is not counted)."""
    seen: list[str] = []
    page.on("domcontentloaded", lambda p: seen.append(p.url))
    page.evaluate("window.stayed = true")  # gone with the document if it is ever replaced
    return seen


def shoot(page: Any, name: str, tmp_path: Any) -> None:
    page.screenshot(path=str(screenshot_folder(tmp_path) / f"{name}.png"), full_page=True)


# --- acceptance 3 --------------------------------------------------------------------------------
def test_a_failed_job_is_listed_with_its_error_and_retry_runs_it_again(
    server: Server, browser: Any, world: World
) -> None:
    before = job_detail(server, world, world.failed_job)
    with console(browser, server, world) as page:
        moved = reloads(page)
        page.get_by_label("Status").select_option("failed")
        row = page.locator(f'#jobs tr[data-key="{world.failed_job}"]')
        expect(row.locator('td[data-col="error"]')).to_contain_text("no_object_found")
        expect(row.locator('td[data-col="status"]')).to_have_text("failed")
        assert "status=failed" in page.url and world.ops_key not in page.url
        assert page.evaluate("sessionStorage.getItem('roomfit-ops-key')") == world.ops_key

        row.get_by_role("button", name=f"Retry {world.failed_job}").click()
        expect(page.locator("#message")).to_have_text(f"Queued again: {world.failed_job}")

        def ran_again() -> dict[str, Any] | None:
            job = job_detail(server, world, world.failed_job)
            started = job["started_at"] or ""
            return job if job["status"] in FINAL and started > before["finished_at"] else None

        again = wait_for(ran_again, "the retried job never ran again")
        assert again["error"]["code"] == "no_object_found"  # it ran for real, and failed the same way
        if "timeline" in before:  # each attempt is a claim of its own
            claims = [e for e in again["timeline"] if e["event"] == "claimed"]
            assert len(claims) == len([e for e in before["timeline"] if e["event"] == "claimed"]) + 1
        # The page, refreshing on its own, lists it again as failed, with its error.
        expect(row.locator('td[data-col="error"]')).to_contain_text("no_object_found", timeout=PAGE_TIMEOUT)
        assert moved == [] and page.evaluate("window.stayed") is True

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Ops key")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('roomfit-ops-key')") is None
        assert page.locator("#jobs tbody tr").count() == 0


def plotted(page: Any) -> list[tuple[float, float]]:
    text = page.locator("#lossLine").get_attribute("points") or ""
    return [(float(x), float(y)) for x, y in (p.split(",") for p in text.split())]


def test_the_job_page_draws_the_loss_curve_from_the_jobs_points(
    server: Server, browser: Any, world: World, tmp_path: Any
) -> None:
    with console(browser, server, world, **DESKTOP) as page:
        page.get_by_label("Kind").select_option("train")
        page.locator(f'#jobs a[data-job="{world.trained_job}"]').click()
        expect(page.locator("#jobTitle")).to_have_text(f"Job {world.trained_job}")
        assert f"job={world.trained_job}" in page.url and "kind=train" in page.url
        loss = job_detail(server, world, world.trained_job)["loss"]
        expect(page.locator("#lossLine")).to_have_attribute("points", re.compile(r"\d"))
        points = plotted(page)
        assert len(points) == len(loss)
        # The plot's box is where its axes are drawn: steps run along the x axis, losses up the y axis.
        left, bottom, right = (
            float(page.locator("#lossChart line").nth(1).get_attribute(a) or 0) for a in ("x1", "y1", "x2")
        )
        top = float(page.locator("#lossChart line").first.get_attribute("y1") or 0)
        steps, losses = [p[0] for p in loss], [p[1] for p in loss]
        for (x, y), (step, value) in zip(points, loss, strict=True):
            want_x = left + (step - min(steps)) / (max(steps) - min(steps)) * (right - left)
            want_y = bottom - (value - min(losses)) / (max(losses) - min(losses)) * (bottom - top)
            assert (x, y) == pytest.approx((want_x, want_y), abs=0.02), (points, loss)
        timeline = page.locator("#timeline li")
        expect(timeline.first).to_be_visible()
        assert timeline.count() >= 3
        shoot(page, "ops-desktop-job", tmp_path)


def test_the_queue_view_updates_without_a_reload_and_keeps_the_operators_place(
    server: Server, browser: Any, world: World, tmp_path: Any
) -> None:
    with console(browser, server, world, **DESKTOP) as page:
        moved = reloads(page)
        page.get_by_label("Kind").select_option("train")
        failed = page.locator('#queues tr[data-key="train"] td[data-col="failed"]')
        expect(failed).to_have_text(re.compile(r"^\d+$"))
        counted = ops_get(server, world, "/v1/ops/queues")
        train = next(q for q in counted["queues"] if q["kind"] == "train")
        expect(failed).to_have_text(str(train["counts"].get("failed", 0)))
        # embedded mode's filesystem broker is counted too: a number, not "–"
        assert isinstance(train["broker_length"], int)
        in_broker = page.locator('#queues tr[data-key="train"] td[data-col="broker"]')
        expect(in_broker).to_have_text(re.compile(r"^\d+$"))
        shoot(page, "ops-desktop", tmp_path)
        # The operator's place: a filter, a row's button in focus, the page scrolled to the jobs.
        page.get_by_role("button", name=f"Retry {world.failed_job}").focus()
        page.locator("#jobs").scroll_into_view_if_needed()
        scrolled = page.evaluate("scrollY")

        create_subject(server, world.secret_key, whole_boxes=False)  # one more failure, made behind its back
        expect(failed).to_have_text(str(train["counts"].get("failed", 0) + 1), timeout=PAGE_TIMEOUT)
        assert moved == [] and page.evaluate("window.stayed") is True
        focused = page.evaluate("[document.activeElement.dataset.action, document.activeElement.dataset.job]")
        assert focused == ["retry", world.failed_job]  # the same button: rows are updated, not rebuilt
        assert page.get_by_label("Kind").input_value() == "train"
        assert page.evaluate("scrollY") == scrolled


def test_the_console_fits_a_phone_and_the_key_stays_out_of_the_log(
    server: Server, browser: Any, world: World, tmp_path: Any
) -> None:
    with console(browser, server, world, f"#job={world.trained_job}", **PHONE) as page:
        expect(page.locator("#lossLine")).to_have_attribute("points", re.compile(r"\d"))
        wide = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert wide[0] <= wide[1] == 360, wide
        shoot(page, "ops-phone-job", tmp_path)
        page.get_by_role("button", name="Close").click()
        expect(page.locator("#job")).to_be_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.evaluate("scrollTo(0, 0)")
        page.screenshot(path=str(screenshot_folder(tmp_path) / "ops-phone.png"))
    assert world.ops_key not in server.log.read_text(errors="replace")
