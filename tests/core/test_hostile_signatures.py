"""`core.webhooks.verify` on hostile headers: a receiver's check answers False, it never raises.

A receiver calls `verify` on whatever arrived in `Roomfit-Signature`; anyone can send it anything.
An exception there is a 500 (and a stack trace in the shop's logs) instead of a refused delivery.
"""

from __future__ import annotations

import time

import pytest

from core.webhooks import new_secret, sign, verify

BODY = b'{"type":"preview.succeeded"}'


@pytest.mark.parametrize(
    "header",
    [
        "t={now},v1=\u00e9t\u00e9",  # non-ASCII signature: hmac.compare_digest refuses such strings
        "t={now},v1=\ud800",  # a lone surrogate, as a lenient header decoder may hand over
        "t=" + "9" * 400 + ",v1=00",  # a timestamp too large for a float
        "t=-" + "9" * 400 + ",v1=00",
    ],
)
def test_a_hostile_signature_header_is_refused_not_raised(header: str) -> None:
    secret = new_secret()
    assert verify(secret, header.format(now=int(time.time())), BODY) is False


def test_a_good_signature_still_verifies_beside_a_hostile_one() -> None:
    secret = new_secret()
    now = int(time.time())
    good = sign(secret, now, BODY)
    assert verify(secret, f"{good},v1=\u00e9", BODY)
    assert not verify(new_secret(), good, BODY)
