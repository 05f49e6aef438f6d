"""`/widget.js` and `/widget/v1.js`: the storefront widget (`api/static/widget.js`) for shops to embed.

Any shop's page loads it, so it is served to every origin (`Access-Control-Allow-Origin: *`, which
lets a page load it with `crossorigin="anonymous"` and an `integrity=` hash) and may be embedded
cross-origin (`Cross-Origin-Resource-Policy`). Browsers and CDNs cache it for a while and then
revalidate it by its ETag (304). `/widget/v1.js` is the v1 line, which changes only compatibly;
`/widget.js` is the newest, cached for less time. The README's "Storefront widget" section shows
the embedding snippet with the file's SRI hash (a test keeps the two in step).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from fastapi import APIRouter, Request, Response

from api.html_pages import STATIC

router = APIRouter(tags=["widget"])

WIDGET = STATIC / "widget.js"
LATEST_MAX_AGE = 300  # seconds: a fix reaches /widget.js within five minutes
V1_MAX_AGE = 3600


@lru_cache
def widget_file() -> tuple[bytes, str]:
    """The file and its strong ETag (read once per process: it changes only with a release)."""
    body = WIDGET.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _serve(request: Request, max_age: int) -> Response:
    body, etag = widget_file()
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


@router.api_route("/widget.js", methods=["GET", "HEAD"], include_in_schema=False)
def latest(request: Request) -> Response:
    return _serve(request, LATEST_MAX_AGE)


@router.api_route("/widget/v1.js", methods=["GET", "HEAD"], include_in_schema=False)
def v1(request: Request) -> Response:
    return _serve(request, V1_MAX_AGE)
