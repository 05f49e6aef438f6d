"""Keys never reach the logs: the access log's request lines are redacted before they are written.

Keys belong in the `Authorization` header, which is never logged; but a client may put one in a
query string (`?key=pk_…`), and uvicorn's access log writes the whole path. Every roomfit key has a
prefix and 43 URL-safe characters (core.api_keys), so a pattern finds them wherever they stand.
"""

from __future__ import annotations

import logging
import re

KEY = re.compile(r"\b(sk|pk|ok)_[A-Za-z0-9_-]{16,}")


def redact(text: str) -> str:
    return KEY.sub(lambda m: f"{m.group(1)}_[redacted]", text)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(str(record.msg))
        return True


def install() -> None:
    """Redact keys from uvicorn's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeys) for f in access.filters):
        access.addFilter(RedactKeys())
