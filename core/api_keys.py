"""API keys: made here, shown once, stored as a SHA-256 hash.

A key carries 256 random bits, so a fast hash is enough: nothing can be brute-forced from it, and
the lookup on every request stays one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

KeyKind = Literal["secret", "publishable", "ops"]
PREFIXES: dict[str, str] = {"secret": "sk_", "publishable": "pk_", "ops": "ok_"}


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    key_hash: str
    display: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key(kind: KeyKind) -> NewKey:
    plaintext = PREFIXES[kind] + secrets.token_urlsafe(32)
    return NewKey(plaintext=plaintext, key_hash=hash_key(plaintext), display=plaintext[:10])


def kind_of(plaintext: str) -> KeyKind | None:
    """The kind a key claims by its prefix; None for anything that is not a roomfit key."""
    for kind, prefix in PREFIXES.items():
        if plaintext.startswith(prefix):
            return kind  # type: ignore[return-value]
    return None
