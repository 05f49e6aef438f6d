"""`/docs` (Swagger UI) and `/redoc` (ReDoc) from files shipped with the service, never a CDN.

Swagger UI and ReDoc come from the `fastapi-offline` package (its `static/` folder: the bundles and
Swagger UI's stylesheet, kept current by its releases), served here under `/docs-assets/`, cached
for a week and then revalidated by their ETag; the pages name them with the package's version, so
an upgrade is fetched at once. The pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`
without Google Fonts) under the HTML pages' Content-Security-Policy, never `'unsafe-inline'`:
scripts and styles from this origin, Swagger UI's inline start-up script by its hash. ReDoc needs
three things more, all its own: the empty `<style>` elements its styled-components fill through the
CSSOM (allowed by the hash of empty text), its scroll bars' stylesheet, which its bundle inserts as
`<style>` text (allowed by that text's hash, rebuilt from the bundle as webpack's style-loader
writes it), and its search's worker, made from a `blob:` URL. The one outside URL left in ReDoc,
the Redocly logo in its menu's footer, is refused by the policy's `img-src` before any request is
made (ReDoc then drops the image). `/openapi.json` stays FastAPI's.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.html_pages import html_page, sha256_source

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs-assets"
ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
MAX_AGE = 7 * 24 * 3600  # seconds; the URLs change with the package's version
# Swagger UI checks the document against validator.swagger.io by default: an outside request
SWAGGER_PARAMETERS = {"validatorUrl": None}
_FILES = StaticFiles(directory=ASSETS)
# A stylesheet in a webpack bundle (css-loader): `x.push([module.id, "<css>", "<media>", {map}])`,
# the source map an object literal of JSON values under bare keys.
_CSS_MODULE = re.compile(r'\.push\(\[\w+\.id,(?=")')
_KEY = re.compile(r"([A-Za-z_$][\w$]*):")
_JSON = json.JSONDecoder()


def _source_map(bundle: str, at: int) -> dict[str, object] | None:
    """The object literal at `bundle[at]` (`{key:value,...}`), or None where there is none."""
    if bundle[at] != "{":
        return None
    found: dict[str, object] = {}
    at += 1
    while bundle[at] != "}":
        key = _KEY.match(bundle, at)
        if key is None:
            return None
        found[key.group(1)], at = _JSON.raw_decode(bundle, key.end())
        at += bundle[at] == ","
    return found


def inserted_styles(bundle: str) -> list[str]:
    """The exact text of each `<style>` the bundle's style-loader inserts: the css, then its source
    map inline (`JSON.stringify`, base64 of UTF-8), as `injectStylesIntoStyleTag` writes it."""
    styles = []
    for match in _CSS_MODULE.finditer(bundle):
        css, at = _JSON.raw_decode(bundle, match.end())
        media, at = _JSON.raw_decode(bundle, at + 1) if bundle[at] == "," else ("", at)
        if media:
            css = f"@media {media} {{{css}}}"
        source_map = _source_map(bundle, at + 1) if bundle[at] == "," else None
        if source_map:
            text = json.dumps(source_map, ensure_ascii=False, separators=(",", ":"))
            encoded = base64.b64encode(text.encode()).decode()
            css += f"\n/*# sourceMappingURL=data:application/json;base64,{encoded} */"
        styles.append(css)
    return styles


SWAGGER_POLICY = {"script-src": ["'self'"], "style-src": ["'self'"]}


@lru_cache
def redoc_policy() -> dict[str, list[str]]:
    bundle = (ASSETS / "redoc.standalone.js").read_text(encoding="utf-8")
    styles = [sha256_source(css) for css in ["", *inserted_styles(bundle)]]
    return {"script-src": ["'self'"], "style-src": ["'self'", *styles], "worker-src": ["blob:"]}


@lru_cache
def _release() -> str:
    return version("fastapi-offline")


def _asset(request: Request, name: str) -> str:
    """The origin-relative URL of one shipped file (under the app's root path, if mounted)."""
    return f"{request.scope.get('root_path', '').rstrip('/')}{ASSETS_PATH}/{name}?v={_release()}"


def _openapi(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + (request.app.openapi_url or "")


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    html = get_swagger_ui_html(
        openapi_url=_openapi(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_asset(request, "favicon.png"),
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )
    return html_page(bytes(html.body).decode(), bundled=SWAGGER_POLICY)


# alike: /docs; FastAPI's other page helper, with ReDoc's own arguments and policy
@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    html = get_redoc_html(
        openapi_url=_openapi(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.png"),
        with_google_fonts=False,
    )
    return html_page(bytes(html.body).decode(), bundled=redoc_policy())


@router.api_route(ASSETS_PATH + "/{name}", methods=["GET", "HEAD"])
async def asset(name: str, request: Request) -> Response:
    """One file of the package's `static/` folder (404 for anything else), 304 when unchanged."""
    answer = await _FILES.get_response(name, request.scope)
    answer.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    answer.headers["X-Content-Type-Options"] = "nosniff"
    return answer
