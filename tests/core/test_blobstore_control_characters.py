"""Keys with control characters are refused by both stores, as NUL already was.

S3 stored `a/x\\x01y` and served it back, but DeleteObjects carries keys in XML 1.0, which cannot
hold most control characters: delete_prefix of its folder then failed with MalformedXML every time,
so a tenant or preview holding such a key could never be deleted. The local store took the key
too, so the two stores disagreed only at deletion. roomfit's own keys (core.blob_keys) never hold
control characters; refusing them at `put` keeps every stored blob deletable.
"""

from __future__ import annotations

import pytest

from core.blobstore import BlobStore


@pytest.mark.parametrize("char", ["\x01", "\x08", "\x1f", "\t", "\n", "\r", "\x7f"])
def test_control_characters_are_refused(store: BlobStore, char: str) -> None:
    key = f"a/x{char}y"
    with pytest.raises(ValueError, match="blob key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="blob key"):
        store.delete_prefix(f"a/x{char}")
    store.put("a/ok", b"x")
    assert store.delete_prefix("a") == 1


def test_printable_oddities_are_stored_listed_and_deleted(store: BlobStore) -> None:
    """What stays allowed works alike on both: spaces, URL and shell metacharacters, non-ASCII."""
    keys = ["a/sp ace", "a/plus+x", "a/pct%20x", "a/q?x", "a/hash#x", "a/ü", "a/amp&x", "a/star*"]
    for key in keys:
        store.put(key, key.encode())
    assert store.list("a") == sorted(keys)
    assert all(store.get(key) == key.encode() for key in keys)
    assert store.delete_prefix("a") == len(keys)
    assert store.list("a") == []
