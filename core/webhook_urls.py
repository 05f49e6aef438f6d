"""Which webhook URLs roomfit will call: public https endpoints only, checked where they are used.

A tenant names the URL; roomfit's workers connect to it. Unchecked, that lets anyone with a secret
key aim the workers at the cloud's metadata service, the Redis next door or a private network. So a
URL must be https (http only under the development setting `webhook_allow_private`), carry no
credentials, and its host must resolve only to global addresses (`ipaddress.is_global`) — checked
at registration and again at every delivery, and the delivery connects to the very address that was
checked (`Target.address`), so a name re-pointed between the check and the connection (DNS
rebinding) reaches nothing new. Every spelling of an address (`127.1`, `2130706433`, `0x7f000001`,
`[::ffff:169.254.169.254]`) goes through the resolver, which reads them all as the numbers they are.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]


class WebhookUrlRefused(ValueError):
    """The URL may not be used as a webhook; the message is safe to show the tenant."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to (the host stays for TLS and the Host header)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    def url_for_address(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = literal if parts.port is None else f"{literal}:{self.port}"
        return parts._replace(netloc=netloc).geturl()


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), as the operating system resolves it."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


_RESOLVERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")
RESOLVE_SECONDS = 3.0


def resolve_with_deadline(host: str, port: int) -> list[str]:
    """`system_resolver` that gives up after RESOLVE_SECONDS (getaddrinfo itself has no timeout), so
    a tenant's slow DNS cannot hold an API thread."""
    try:
        return _RESOLVERS.submit(system_resolver, host, port).result(timeout=RESOLVE_SECONDS)
    except FutureTimeout as exc:
        raise OSError(f"resolving {host!r} took longer than {RESOLVE_SECONDS} s") from exc


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return ip.is_global and not ip.is_multicast


def check_webhook_url(
    url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver
) -> Target:
    """The URL's target when it may be called; `WebhookUrlRefused` saying why otherwise."""
    text = url.strip()
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise WebhookUrlRefused("the url must not be empty or contain spaces or control characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefused("the url cannot be parsed") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookUrlRefused("the url must be https://host/...")
    if parts.scheme == "http" and not allow_private:
        raise WebhookUrlRefused("the url must use https://")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("the url must not carry credentials")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise WebhookUrlRefused(f"the host {host!r} cannot be resolved") from exc
    if not addresses:
        raise WebhookUrlRefused(f"the host {host!r} cannot be resolved")
    if not allow_private:
        inward = [a for a in addresses if not is_public(a)]
        if inward:
            raise WebhookUrlRefused(
                f"the host {host!r} resolves to a non-public address; webhooks go to public hosts only"
            )
    return Target(url=text, scheme=parts.scheme, host=host, port=port, address=addresses[0])
