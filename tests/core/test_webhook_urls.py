"""Webhook URLs cannot be aimed inward: every spelling of a private address is refused, and the
delivery connects to the address that was checked. DNS is the outside world, so names resolve
through a stand-in resolver here; literal addresses go through the operating system's."""

from __future__ import annotations

import pytest

from core.webhook_urls import WebhookUrlRefused, check_webhook_url, system_resolver

INWARD = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "https://172.16.5.4/hook",
    "https://127.0.0.1:6379/",
    "https://[::1]/hook",
    "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:7f00:1]/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://0.0.0.0/",
    "https://100.64.0.1/",
    "https://[fe80::1]/",
    "https://[fd00::1]/",
    "https://224.0.0.1/",
    "https://localhost/hook",
]


@pytest.mark.parametrize("url", INWARD)
def test_every_inward_spelling_is_refused(url: str) -> None:
    with pytest.raises(WebhookUrlRefused, match=r"non-public|cannot be resolved"):
        check_webhook_url(url)


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("localhost.localdomain", ["127.0.0.1"]),
        ("metadata.google.internal", ["169.254.169.254"]),
        ("rebind.example", ["93.184.216.34", "10.0.0.5"]),  # one inward address among public ones
        ("v6.example", ["2606:4700::1111", "::1"]),
    ],
)
def test_names_that_resolve_inward_are_refused(name: str, addresses: list[str]) -> None:
    with pytest.raises(WebhookUrlRefused, match="non-public"):
        check_webhook_url(f"https://{name}/hook", resolve=lambda host, port: addresses)


def test_unresolvable_names_are_refused() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(WebhookUrlRefused, match="cannot be resolved"):
        check_webhook_url("https://hooks.shop.example/x", resolve=nowhere)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.shop.example/x", "https"),
        ("ftp://hooks.shop.example/x", "https"),
        ("https://user:pw@hooks.shop.example/x", "credentials"),
        ("https:///x", "https"),
        ("https://hooks.shop.example:99999/x", "parsed"),
        ("https://hooks.shop .example/x", "spaces"),
        ("", "empty"),
    ],
)
def test_malformed_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(WebhookUrlRefused, match=why):
        check_webhook_url(url, resolve=lambda host, port: ["93.184.216.34"])


def test_a_public_host_is_called_at_the_checked_address() -> None:
    target = check_webhook_url(
        "https://hooks.shop.example/roomfit?x=1", resolve=lambda host, port: ["93.184.216.34"]
    )
    assert (target.host, target.port, target.address) == ("hooks.shop.example", 443, "93.184.216.34")
    assert target.url_for_address() == "https://93.184.216.34/roomfit?x=1"
    v6 = check_webhook_url("https://hooks.shop.example:8443/h", resolve=lambda host, port: ["2606:4700::1"])
    assert v6.url_for_address() == "https://[2606:4700::1]:8443/h"


def test_public_literal_addresses_pass_through_the_system_resolver() -> None:
    assert system_resolver("93.184.216.34", 443) == ["93.184.216.34"]
    assert check_webhook_url("https://93.184.216.34/h").address == "93.184.216.34"


def test_the_development_setting_allows_http_and_loopback() -> None:
    target = check_webhook_url("http://127.0.0.1:8080/h", allow_private=True)
    assert target.url_for_address() == "http://127.0.0.1:8080/h"
