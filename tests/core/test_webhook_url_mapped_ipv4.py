"""An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is exactly as public as the IPv4 address it maps
(core.webhook_urls): the kernel connects to that IPv4 address. Python's own `is_global` of the mapped
form disagrees for some (on 3.11 it calls `::ffff:100.64.0.1`, carrier-grade NAT, and
`::ffff:224.0.0.1`, multicast, global), so the check must read the IPv4 address inside."""

from __future__ import annotations

import pytest

from core.webhook_urls import WebhookUrlRefused, check_webhook_url, is_public

INWARD = ["100.64.0.1", "224.0.0.1", "239.1.2.3", "169.254.169.254", "10.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize("ipv4", INWARD)
def test_a_mapped_address_of_a_non_public_ipv4_is_refused(ipv4: str) -> None:
    mapped = f"::ffff:{ipv4}"
    assert not is_public(ipv4)
    assert not is_public(mapped)
    with pytest.raises(WebhookUrlRefused, match="non-public"):
        check_webhook_url("https://hooks.shop.example/x", resolve=lambda host, port: [mapped])


def test_a_mapped_address_of_a_public_ipv4_is_called_at_that_address() -> None:
    target = check_webhook_url(
        "https://hooks.shop.example/x", resolve=lambda host, port: ["::ffff:93.184.216.34"]
    )
    assert target.address == "::ffff:93.184.216.34" and is_public("93.184.216.34")
