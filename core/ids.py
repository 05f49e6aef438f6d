"""Public ids: a type prefix and a time-ordered random part (`sub_01JD...`).

Time-ordered so that "newest first" and keyset cursors can sort by id alone, and random enough
(80 bits) that ids cannot be guessed or enumerated.
"""

from __future__ import annotations

import os
import time

# Crockford's base32: no I, L, O, U, so ids survive being read aloud or typed.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`{prefix}_` + 26 characters: 48 bits of milliseconds, then 80 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base32((millis << 80) | rand, 26)}"
