"""Which webhook URLs roomfit will call: public https endpoints only, checked where they are used.

A tenant names the URL; roomfit's workers connect to it. Unchecked, that lets anyone with a secret
key aim the workers at the cloud's metadata service, the Redis next door or a private network. So a
URL must be https (http only under the development setting `webhook_allow_private`), carry no
credentials, and its host must resolve only to global addresses (`ipaddress.is_global`) — checked
at registration and again at every delivery, and the delivery connects to the very address that was
checked (`Target.address`), so a name re-pointed between the check and the connection (DNS
rebinding) reaches nothing new. Every spelling of an address (`127.1`, `2130706433`, `0x7f000001`,
`[::ffff:169.254.169.254]`) goes through the resolver, which reads them all as the numbers they are,
and an IPv6 address that carries an IPv4 one (NAT64 `64:ff9b::/96`, 6to4, Teredo, the IPv4-mapped and
-translated forms) counts as that IPv4 address; NAT64's local-use prefix, the deprecated
IPv4-compatible form (`::127.0.0.1`) and site-local `fec0::/10` are refused outright.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
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


# The lookup of each (host, port) now queued or running: callers asking for one that is share it.
_IN_FLIGHT: dict[tuple[str, int], Future[list[str]]] = {}
_IN_FLIGHT_LOCK = threading.RLock()  # re-entered: a lookup done already runs _forget at once


def resolve_with_deadline(host: str, port: int) -> list[str]:
    """`system_resolver` that gives up after RESOLVE_SECONDS (getaddrinfo itself has no timeout), so
    a tenant's slow DNS cannot hold an API or webhook thread. A lookup that gives up keeps running
    until the OS ends it, holding one of the pool's threads: so a name being looked up is not looked
    up again beside it. A webhook host whose DNS hangs, asked for by every delivery of its tenant,
    holds one thread, not the whole pool, and every other tenant's lookups go on."""
    key = (host.lower(), port)
    with _IN_FLIGHT_LOCK:
        lookup = _IN_FLIGHT.get(key)
        if lookup is None:
            lookup = _RESOLVERS.submit(system_resolver, host, port)
            _IN_FLIGHT[key] = lookup
            lookup.add_done_callback(partial(_forget, key))
    try:
        return lookup.result(timeout=RESOLVE_SECONDS)
    except (FutureTimeout, CancelledError) as exc:  # cancelled: another caller of it gave up first
        # Still queued behind slow names: drop it. Left there it would run later for nobody, and a
        # tenant whose DNS hangs would leave a backlog that keeps every other tenant's lookups waiting.
        lookup.cancel()
        raise OSError(f"resolving {host!r} took longer than {RESOLVE_SECONDS} s") from exc


def _forget(key: tuple[str, int], lookup: Future[list[str]]) -> None:
    """Done (answered, failed or cancelled): the next caller starts a fresh lookup."""
    with _IN_FLIGHT_LOCK:
        if _IN_FLIGHT.get(key) is lookup:
            del _IN_FLIGHT[key]


# IPv6 forms that carry an IPv4 address in their last 32 bits, which a translator (or the kernel)
# connects to: NAT64's well-known prefix (RFC 6052) and SIIT's IPv4-translated form (RFC 2765).
_CARRY_LAST_32 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
# Never a webhook host: NAT64's local-use prefix (RFC 8215: a network's own translator, with its own
# layout of the IPv4 address) and the deprecated IPv4-compatible form (::127.0.0.1, RFC 4291).
_NEVER_V6 = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("::/96"))


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when packets to it end up there."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:169.254.169.254
    if ip.sixtofour is not None:
        return ip.sixtofour  # 2002:a9fe:a9fe::1, through a 6to4 relay
    if any(ip in net for net in _CARRY_LAST_32):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # 64:ff9b::a9fe:a9fe
    return None


def _is_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public(address: str) -> bool:
    """Whether a webhook may connect to `address`: global unicast, and an IPv6 address that carries
    an IPv4 one is as public as that IPv4 address (Python's `is_global` calls 64:ff9b::a9fe:a9fe,
    2002:a9fe:a9fe::1 or ::127.0.0.1 global, though they reach 169.254.169.254 and 127.0.0.1)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local or any(ip in net for net in _NEVER_V6):
            return False  # fec0::/10 is deprecated site-local: a private network
        carried = _carried_ipv4(ip)
        if carried is not None:
            return _is_global(carried)
        # Teredo (2001::/32) carries its server's and its client's IPv4 addresses: both must be public.
        if ip.teredo is not None and not all(_is_global(v4) for v4 in ip.teredo):
            return False
    return _is_global(ip)


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
