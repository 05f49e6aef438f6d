"""IPv6 addresses that carry an IPv4 address are as public as that address: NAT64, 6to4, the
IPv4-translated form and Teredo reach the IPv4 host they name, so one naming 169.254.169.254 or
10.0.0.1 is refused like the address itself, while one naming a public host still passes. Python's
`is_global` calls most of these forms global, whatever they carry. Literal addresses go through the
operating system's resolver, as in tests/core/test_webhook_urls.py."""

from __future__ import annotations

import ipaddress

import pytest

from core.webhook_urls import WebhookUrlRefused, check_webhook_url, is_public

# 169.254.169.254 is a9fe:a9fe, 10.0.0.1 is a00:1, 127.0.0.1 is 7f00:1; 93.184.216.34 (public) is 5db8:d822.
FORMS = [
    # (form, addresses that carry an inward IPv4 address, one that carries a public one)
    ("NAT64 64:ff9b::/96", ["64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b::7f00:1"], "64:ff9b::5db8:d822"),
    ("6to4 2002::/16", ["2002:a9fe:a9fe::1", "2002:a00:1::", "2002:7f00:1:1::5"], "2002:5db8:d822::1"),
    ("IPv4-translated ::ffff:0:0:0/96", ["::ffff:0:a9fe:a9fe", "::ffff:0:a00:1"], "::ffff:0:5db8:d822"),
]


@pytest.mark.parametrize(("form", "inward", "public"), FORMS, ids=[f[0] for f in FORMS])
def test_a_form_carrying_an_ipv4_address_is_as_public_as_it(
    form: str, inward: list[str], public: str
) -> None:
    for address in inward:
        with pytest.raises(WebhookUrlRefused, match="non-public"):
            check_webhook_url(f"https://[{address}]/hook")
        assert not is_public(address), (form, address)
    target = check_webhook_url(f"https://[{public}]/hook")
    assert target.address == public


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use (RFC 8215): the layout is the network's own
        "64:ff9b:1:5db8:d8:2200::",  # ... so even one whose bits could spell a public address
        "::127.0.0.1",  # IPv4-compatible (deprecated): 127.0.0.1
        "::a9fe:a9fe",
        "::93.184.216.34",
        "fec0::1",  # site-local (deprecated): a private network
        "fec0:0:0:1::a9fe:a9fe",
        "feff:ffff::1",
    ],
)
def test_forms_that_never_name_a_public_host_are_refused(address: str) -> None:
    with pytest.raises(WebhookUrlRefused, match="non-public"):
        check_webhook_url(f"https://[{address}]/hook")


def test_a_name_resolving_to_a_carried_inward_address_is_refused() -> None:
    # The DNS answer of a name is checked the same way (AAAA records of NAT64 and 6to4).
    for addresses in (["64:ff9b::a9fe:a9fe"], ["93.184.216.34", "2002:a9fe:a9fe::1"], ["fec0::1"]):
        with pytest.raises(WebhookUrlRefused, match="non-public"):
            check_webhook_url("https://hooks.shop.example/x", resolve=lambda host, port, a=addresses: a)


def test_teredo_carrying_an_inward_client_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2001:0:<server>:<flags>:<port>:<client>, the client XORed: server 93.184.216.34, client
    # 169.254.169.254 and 10.0.0.1. This Python's tables call all of 2001::/23 not global, so stand
    # in for one whose tables call every IPv6 address global: the carried client still decides.
    monkeypatch.setattr(ipaddress.IPv6Address, "is_global", property(lambda self: True))
    for address in ("2001:0:5db8:d822:0:f4ff:5601:5601", "2001:0:5db8:d822:0:f4ff:f5ff:fffe"):
        with pytest.raises(WebhookUrlRefused, match="non-public"):
            check_webhook_url(f"https://[{address}]/hook")
