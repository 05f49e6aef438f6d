"""What serves the widget and the demo shop, checked without a browser: the file's caching and CORS
headers, its SRI hash in the README, where the demo routes answer and where they refuse, and the
dev key file `roomfit up` writes on its first start."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.html_pages import content_security_policy
from cli.embedded import _bootstrap_dev_tenant
from core.accounts import create_tenant
from core.db import engine_for
from core.migrate import upgrade
from core.settings import Settings
from tests.api.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
WIDGET = ROOT / "api" / "static" / "widget.js"
LOCAL = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}
DEMO_PATHS = ("/", "/demo/subjects", "/demo/api/config", "/demo/api/subjects")


def _client(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'roomfit.db'}", **overrides)
    upgrade(settings.resolved_database_url)
    app = create_app(settings)
    with TestClient(app, **LOCAL) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[TestClient]:
    """Embedded mode, asked from this machine for 127.0.0.1:8000."""
    yield from _client(tmp_path)


def test_the_widget_is_served_to_every_origin_cached_and_revalidated(local: TestClient) -> None:
    body = WIDGET.read_bytes()
    for path, max_age in (("/widget.js", 300), ("/widget/v1.js", 3600)):
        answer = local.get(path, headers={"Origin": "https://any-shop.example"})
        assert answer.status_code == 200 and answer.content == body
        assert answer.headers["content-type"].startswith("text/javascript")
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["cache-control"] == f"public, max-age={max_age}"
        assert answer.headers["x-content-type-options"] == "nosniff"
        etag = answer.headers["etag"]
        again = local.get(path, headers={"If-None-Match": f'W/{etag}, "other"'})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert local.get("/widget/v2.js").status_code == 404


def test_the_readme_embeds_the_file_it_serves_by_its_sri_hash() -> None:
    """Change widget.js and this fails until the README's snippet carries the new hash."""
    digest = base64.b64encode(hashlib.sha384(WIDGET.read_bytes()).digest()).decode()
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Storefront widget", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert f'integrity="sha384-{digest}"' in section, f"README: set integrity to sha384-{digest}"
    assert re.search(r'<script src="https://[^"]+/widget/v1\.js"', section)
    for name in re.findall(r"\(docs/screenshots/([^)]+\.png)\)", section):
        assert (ROOT / "docs" / "screenshots" / name).is_file(), name


def test_the_demo_shop_is_for_embedded_mode_only(tmp_path: Path) -> None:
    for client in _client(tmp_path, broker_url="redis://127.0.0.1:9/0"):  # distributed mode
        for path in DEMO_PATHS:
            answer = client.get(path)
            assert answer.status_code == 404 and answer.json()["code"] == "not_found", path


def test_the_demo_shop_answers_only_its_own_pages_on_this_machine(tmp_path: Path, local: TestClient) -> None:
    page = local.get("/")
    assert page.status_code == 200 and '<script src="/widget/v1.js"></script>' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and " http://127.0.0.1:8000/widget/v1.js;" in csp
    assert "connect-src 'self' http://localhost:8000;" in csp and "unsafe" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp

    away = TestClient(local.app, base_url="http://127.0.0.1:8000", client=("203.0.113.9", 50000))
    rebound = TestClient(local.app, base_url="http://shop.example:8000", client=("127.0.0.1", 50000))
    for path in DEMO_PATHS:
        assert away.get(path).status_code == 404, path  # another machine
        assert rebound.get(path).status_code == 404, path  # a name re-pointed at 127.0.0.1
    # Another site's page may neither read the demo's backend nor post to it.
    assert local.get("/demo/api/subjects", headers={"Origin": "https://evil.example"}).status_code == 403
    assert local.post("/demo/api/subjects", files={"photos": ("a.png", b"x")}).status_code == 403
    sent_by_a_page = {"Origin": "http://127.0.0.1:8000"}  # let through, to find no tenant `dev` here
    assert (
        local.post(
            "/demo/api/subjects", headers=sent_by_a_page, files={"photos": ("a.png", b"x")}
        ).status_code
        == 404
    )


def test_the_demo_backend_acts_as_tenant_dev(local: TestClient) -> None:
    assert local.get("/demo/api/subjects").json()["code"] == "not_found"  # no dev tenant yet
    with local.app.state.sessions() as session:  # type: ignore[attr-defined]
        create_tenant(session, "dev")
        session.commit()
    assert local.get("/demo/api/subjects").json() == {"items": [], "next_cursor": None}
    own = {"Origin": "http://127.0.0.1:8000"}
    refused = local.post(
        "/demo/api/subjects", headers=own, data={"name": "sofa"}, files={"photos": ("a.png", b"x")}
    )
    assert refused.status_code == 415 and refused.json()["code"] == "unsupported_media_type"
    assert local.get("/demo/api/subjects/sub_01J0000000000000000000000").status_code == 404


def test_the_demo_config_gives_the_dev_key_or_says_how_to_make_one(local: TestClient) -> None:
    settings: Settings = local.app.state.settings  # type: ignore[attr-defined]
    config = local.get("/demo/api/config").json()
    assert config["publishable_key"] is None and config["tiny"] is True
    assert config["api"] == "http://localhost:8000"
    assert "--origin http://127.0.0.1:8000 --origin http://localhost:8000" in config["make_key"]
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    key = "pk_" + "A" * 43
    (settings.var_dir / "dev-publishable-key.txt").write_text(key + "\n")
    assert local.get("/demo/api/config").json()["publishable_key"] == key
    (settings.var_dir / "dev-publishable-key.txt").write_text("sk_" + "A" * 43)
    assert local.get("/demo/api/config").json()["publishable_key"] is None  # never anything else


def test_the_first_start_writes_the_publishable_key_and_never_the_secret(embedded_env: Settings) -> None:
    upgrade(embedded_env.resolved_database_url)
    var_dir = embedded_env.var_dir.resolve()
    keys = _bootstrap_dev_tenant("127.0.0.1", 8000, var_dir)
    assert keys is not None
    written = (var_dir / "dev-publishable-key.txt").read_text()
    assert written == keys["publishable"] + "\n" and keys["secret"] not in written
    assert _bootstrap_dev_tenant("127.0.0.1", 8000, var_dir) is None
    assert (var_dir / "dev-publishable-key.txt").read_text() == written
    engine_for(embedded_env.resolved_database_url).dispose()


def test_a_page_policy_is_widened_by_exact_sources_only() -> None:
    html = "<script>go()</script>"
    policy = content_security_policy(html, {"connect-src": ["http://localhost:8000"]})
    assert "connect-src 'self' http://localhost:8000;" in policy
    for bad in (
        {"connect-src": ["*"]},
        {"script-src": ["'unsafe-inline'"]},
        {"style-src": ["http://a.example"]},
    ):
        with pytest.raises(ValueError):
            content_security_policy(html, bad)
