"""HTML pages served by the API, each with a strict Content-Security-Policy.

A page's inline `<script>` and `<style>` blocks are allowed by their SHA-256 hashes, computed from
the file itself, so nothing injected into a page can run, the page cannot be framed by another site
(`frame-ancestors 'none'`, clickjacking), and it talks only to this service (`connect-src 'self'`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi.responses import HTMLResponse

STATIC = Path(__file__).resolve().parent / "static"
_BLOCK = re.compile(r"<(script|style)(?:\s[^>]*)?>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


def _hashes(html: str, tag: str) -> str:
    found = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for kind, body in _BLOCK.findall(html)
        if kind.lower() == tag and body.strip()
    ]
    return " ".join(found) or "'none'"


def content_security_policy(html: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hashes(html, 'script')}",
            f"style-src {_hashes(html, 'style')}",
            "connect-src 'self'",
            "img-src 'self' data: blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


@lru_cache
def _page(name: str) -> tuple[str, dict[str, str]]:
    html = (STATIC / name).read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return html, headers


def page(name: str) -> HTMLResponse:
    """The page `api/static/<name>` with its security headers."""
    html, headers = _page(name)
    return HTMLResponse(html, headers=headers)
