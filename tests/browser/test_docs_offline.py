"""`/docs` (Swagger UI) and `/redoc` (ReDoc) on a machine without internet: a real Chromium opens
each page with every request to another origin aborted and recorded, and finds the operations
listed; without a browser, the pages name no outside URL and the shipped files are served cached."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from core.migrate import upgrade
from tests.api.conftest import make_settings
from tests.browser.conftest import free_port

expect: Any = pytest.importorskip("playwright.sync_api").expect

PAGES = ("/docs", "/redoc")
# The one outside URL in ReDoc's bundle that its page tries: the Redocly logo in the menu's footer,
# an <img> the page's policy (img-src) refuses before any request is made.
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# What the page saw its policy refuse (CSP refusals never reach the network, so `page.route` misses
# them): installed before the page's own scripts run.
WATCH_POLICY = """window.refused = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.refused.push({directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample});
});"""


def _app(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'roomfit.db'}")
    upgrade(settings.resolved_database_url)
    return create_app(settings)


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API alone (SQLite, no workers: the docs need none) on a free port; its origin."""
    app = _app(tmp_path_factory.mktemp("docs"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def document(docs_server: str) -> dict[str, Any]:
    """The OpenAPI document the pages show."""
    with urllib.request.urlopen(f"{docs_server}/openapi.json", timeout=10) as answer:
        return json.load(answer)  # type: ignore[no-any-return]


def _same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == origin


@contextmanager
def offline_page(browser: Any, origin: str, may_refuse: tuple[str, ...] = ()) -> Iterator[Any]:
    """A page on which every request outside `origin` is aborted. When the block ends: no request
    outside `origin` went out (none reached the route that aborts them), every outside URL the page
    tried was refused by its own policy before any request (only those in `may_refuse`), the policy
    refused nothing else (no inline block, worker or file), and no script failed."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    sent: set[str] = set()  # past the page's policy, on their way out: aborted here
    tried: set[str] = set()  # every request the page made to another origin
    refused: set[str] = set()  # those its policy refused before any request ("csp")

    def only_own_origin(route: Any) -> None:
        if _same_origin(route.request.url, origin):
            route.continue_()
        else:
            sent.add(route.request.url)
            route.abort()

    context.route("**/*", only_own_origin)
    context.on("request", lambda r: None if _same_origin(r.url, origin) else tried.add(r.url))
    context.on("requestfailed", lambda r: refused.add(r.url) if r.failure == "csp" else None)
    context.add_init_script(WATCH_POLICY)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        violations = page.evaluate("() => window.refused")
    finally:
        context.close()
    assert sent == set(), f"requests that left for outside {origin}: {sorted(sent)}"
    assert tried <= refused and refused <= set(may_refuse), (sorted(tried), sorted(refused))
    unexpected = [v for v in violations if v["blocked"] not in may_refuse]
    assert unexpected == [], f"the page's policy refused: {unexpected}"
    assert errors == [], errors


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tags: tuple[str, ...]


def _operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation the OpenAPI document lists (the pages must show each one)."""
    return [
        Operation(method, path, operation.get("summary", ""), tuple(operation.get("tags", ())))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


@pytest.mark.slow
def test_swagger_ui_lists_the_operations_offline(browser: Any, docs_server: str, document: Any) -> None:
    operations = _operations(document)
    with offline_page(browser, docs_server) as page:
        page.goto(f"{docs_server}/docs")
        expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
        expect(page.locator(".opblock")).to_have_count(len(operations))
        for op in operations:  # each one's block: its method, path and summary
            path = page.locator(f'.opblock-summary-path[data-path="{op.path}"]')
            block = page.locator(f".opblock-{op.method}").filter(has=path).first
            expect(block).to_be_visible()
            expect(block.locator(".opblock-summary-description")).to_have_text(op.summary)
        expect(page.get_by_text("/v1/subjects", exact=True).first).to_be_visible()


@pytest.mark.slow
def test_redoc_lists_the_operations_offline(browser: Any, docs_server: str, document: Any) -> None:
    operations = _operations(document)
    with offline_page(browser, docs_server, may_refuse=(REDOCLY_LOGO,)) as page:
        page.goto(f"{docs_server}/redoc")
        menu = page.get_by_role("menu").first
        expect(menu).to_be_visible(timeout=30_000)
        for tag in sorted({tag for op in operations for tag in op.tags}):
            expect(menu.get_by_text(tag, exact=True).first).to_be_visible()
        for op in operations:  # each one's own section, headed by its summary
            expect(_heading(page, op.summary or op.path)).to_be_attached()
        listing = next(op for op in operations if (op.method, op.path) == ("get", "/v1/subjects"))
        menu.get_by_text(listing.tags[0], exact=True).first.click()  # the tag opens: its operations
        menu.get_by_text(listing.summary, exact=True).first.click()  # and the page scrolls to one
        expect(_heading(page, listing.summary)).to_be_in_viewport()
        expect(page.get_by_text("/v1/subjects", exact=True).first).to_be_attached()


def _heading(page: Any, text: str) -> Any:
    return page.locator("h2", has_text=re.compile(r"^\s*" + re.escape(text) + r"\s*$")).first


# --- without a browser ---------------------------------------------------------------------------
@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = _app(tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client
    app.state.engine.dispose()


def test_the_pages_name_no_outside_url(client: TestClient) -> None:
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert re.findall(r"https?://[^\s\"'<>]*", answer.text) == [], path
        assert "fonts.googleapis" not in answer.text and "cdn." not in answer.text
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy, policy
        assert re.findall(r"https?://", policy) == [], policy
        assert answer.headers["cache-control"] == "no-store"
        for url in re.findall(r'(?:src|href)="([^"]+)"', answer.text):
            assert url.startswith("/docs-assets/"), url
            assert client.get(url).status_code == 200, url
    assert client.get("/openapi.json").json()["paths"]["/v1/subjects"]


def test_the_shipped_files_are_served_cached_and_revalidated(client: TestClient) -> None:
    for name, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "javascript"),
        ("favicon.png", "image/png"),
    ):
        answer = client.get(f"/docs-assets/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"], name
        assert answer.headers["cache-control"] == "public, max-age=604800"
        assert answer.headers["x-content-type-options"] == "nosniff"
        again = client.get(f"/docs-assets/{name}", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304 and again.content == b"", name
    for missing in ("/docs-assets/nothing.js", "/docs-assets/..%2F__init__.py", "/docs-assets/"):
        assert client.get(missing).status_code == 404, missing
