"""The Python client's webhook helper on hostile headers: `verify` answers False and `parse_event`
raises the helper's own InvalidSignature, never TypeError or OverflowError.

A shop's receiver calls them on whatever arrived in `Roomfit-Signature`, and anyone can send it
anything: an exception the shop's code does not expect is a 500 and a stack trace, not a refused
delivery. The same two cases as `core.webhooks.verify`'s (tests/core/test_hostile_signatures.py).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "python"
BODY = b'{"id":"evt_1","type":"preview.succeeded","data":{}}'
SECRET = "whsec_test"

HOSTILE = [
    "t={now},v1=\u00e9t\u00e9",  # non-ASCII signature: hmac.compare_digest refuses such strings
    "t={now},v1=\ud800",  # a lone surrogate, as a lenient header decoder may hand over
    "t=" + "9" * 400 + ",v1=00",  # a timestamp too large for a float
    "t=-" + "9" * 400 + ",v1=00",
]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(CLIENT))
    return importlib.import_module("roomfit_webhooks")


@pytest.mark.parametrize("header", HOSTILE)
def test_a_hostile_header_is_not_verified(client: ModuleType, header: str) -> None:
    assert client.verify(SECRET, header.format(now=int(time.time())), BODY) is False


@pytest.mark.parametrize("header", HOSTILE)
def test_parse_event_refuses_a_hostile_header_with_invalid_signature(client: ModuleType, header: str) -> None:
    with pytest.raises(client.InvalidSignature):
        client.parse_event(SECRET, header.format(now=int(time.time())), BODY)


def test_a_good_signature_still_parses_beside_a_hostile_one(client: ModuleType) -> None:
    good = client.sign(SECRET, BODY)
    assert client.parse_event(SECRET, f"{good},v1=\u00e9", BODY)["type"] == "preview.succeeded"
    with pytest.raises(client.InvalidSignature):
        client.parse_event("whsec_other", good, BODY)
