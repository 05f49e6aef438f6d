"""HTML pages served by the API, each with a strict Content-Security-Policy.

A page's inline `<script>` and `<style>` blocks are allowed by their SHA-256 hashes, computed from
the file itself, so nothing injected into a page can run, the page cannot be framed by another site
(`frame-ancestors 'none'`, clickjacking), and it talks only to this service (`connect-src 'self'`).
A page that needs more names exact sources for one directive each (`page(name, more={...})`): a
script by its URL, one more origin to connect to; never a wildcard or `'unsafe-inline'`.
A page that runs a bundle shipped with the service (`/docs`, `/redoc`) names what the bundle needs
(`html_page(html, bundled={...})`): files from this origin (`'self'`), the hashes of the `<style>`
blocks its script inserts, workers it starts from `blob:` URLs; nothing from another origin.
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
# What a bundle shipped with the service may add, per directive.
_BUNDLED = {
    "script-src": re.compile(r"'self'"),
    "style-src": re.compile(r"'self'|'sha256-[A-Za-z0-9+/]{43}='"),
    "worker-src": re.compile(r"blob:"),
}


def sha256_source(text: str) -> str:
    """The CSP hash source that allows an inline block of exactly `text`."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _hashes(html: str, tag: str) -> list[str]:
    return [
        sha256_source(body) for kind, body in _BLOCK.findall(html) if kind.lower() == tag and body.strip()
    ]


def _sources(*sources: str) -> str:
    return " ".join(sources) or "'none'"


def content_security_policy(
    html: str,
    more: Mapping[str, Sequence[str]] | None = None,
    *,
    bundled: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The page's policy; `more` adds exact sources to `script-src` or `connect-src`; `bundled`
    what a shipped bundle needs (see the module's doc)."""
    more, bundled = more or {}, bundled or {}
    if not set(more) <= {"script-src", "connect-src"}:
        raise ValueError("only scripts and connections may be widened")
    if not all(_SOURCE.fullmatch(source) for sources in more.values() for source in sources):
        raise ValueError("exact http(s) sources only")
    if not all(
        directive in _BUNDLED and _BUNDLED[directive].fullmatch(source)
        for directive, sources in bundled.items()
        for source in sources
    ):
        raise ValueError("a bundle may add this origin's files, style hashes and blob: workers only")
    scripts = (*_hashes(html, "script"), *bundled.get("script-src", ()), *more.get("script-src", ()))
    workers = [f"worker-src {_sources(*bundled['worker-src'])}"] if "worker-src" in bundled else []
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sources(*scripts)}",
            f"style-src {_sources(*_hashes(html, 'style'), *bundled.get('style-src', ()))}",
            *workers,
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


def html_page(
    html: str,
    more: Mapping[str, Sequence[str]] | None = None,
    *,
    bundled: Mapping[str, Sequence[str]] | None = None,
) -> HTMLResponse:
    """`html` with its security headers (`more`, `bundled`: see the module's doc)."""
    headers = {
        "Content-Security-Policy": content_security_policy(html, more, bundled=bundled),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, headers=headers)


def page(name: str, more: Mapping[str, Sequence[str]] | None = None) -> HTMLResponse:
    """The page `api/static/<name>` with its security headers (`more`: see the module's doc)."""
    return html_page(_html(name), more)
