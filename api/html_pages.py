"""HTML pages served by the API, each with a strict Content-Security-Policy.

A page's inline `<script>` and `<style>` blocks are allowed by their SHA-256 hashes, computed from
the file itself, so nothing injected into a page can run, the page cannot be framed by another site
(`frame-ancestors 'none'`, clickjacking), and it talks only to this service (`connect-src 'self'`).
A page that needs more names exact sources for one directive each (`page(name, more={...})`): a
script by its URL, one more origin to connect to; never a wildcard or `'unsafe-inline'`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from fastapi.responses import HTMLResponse

STATIC = Path(__file__).resolve().parent / "static"
_BLOCK = re.compile(r"<(script|style)(?:\s[^>]*)?>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


# What a source added to a page's policy may be: an http(s) origin, optionally with a path.
_SOURCE = re.compile(r"https?://[a-z0-9.\-\[\]:]+(/[A-Za-z0-9._/\-]*)?")


def _hashes(html: str, tag: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for kind, body in _BLOCK.findall(html)
        if kind.lower() == tag and body.strip()
    ]


def _sources(*sources: str) -> str:
    return " ".join(sources) or "'none'"


def content_security_policy(html: str, more: Mapping[str, Sequence[str]] | None = None) -> str:
    """The page's policy; `more` adds exact sources to `script-src` or `connect-src`."""
    more = more or {}
    if not set(more) <= {"script-src", "connect-src"}:
        raise ValueError("only scripts and connections may be widened")
    if not all(_SOURCE.fullmatch(source) for sources in more.values() for source in sources):
        raise ValueError("exact http(s) sources only")
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sources(*_hashes(html, 'script'), *more.get('script-src', ()))}",
            f"style-src {_sources(*_hashes(html, 'style'))}",
            "connect-src " + _sources("'self'", *more.get("connect-src", ())),
            "img-src 'self' data: blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


@lru_cache
def _html(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _page(name: str, more: Mapping[str, Sequence[str]] | None) -> tuple[str, dict[str, str]]:
    html = _html(name)
    headers = {
        "Content-Security-Policy": content_security_policy(html, more),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return html, headers


def page(name: str, more: Mapping[str, Sequence[str]] | None = None) -> HTMLResponse:
    """The page `api/static/<name>` with its security headers (`more`: see the module's doc)."""
    html, headers = _page(name, more)
    return HTMLResponse(html, headers=headers)
