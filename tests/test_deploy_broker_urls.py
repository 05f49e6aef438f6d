"""The data-service URLs that deploy/k8s and docs/deploy.md tell an operator to use work with the
manifests as shipped: every port they name is one the network policies let roomfit's pods reach, a
TLS broker URL (`rediss://`) makes roomfit verify the server's certificate, and the page that
suggests one says that KEDA's triggers need TLS too (they read the same Redis, with their own
settings). tests/test_deploy_config.py checks the ConfigMap's own URL against the KEDA triggers;
this checks every URL the files suggest, comments and the walk-through included."""

from __future__ import annotations

import re
import ssl
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.queue import make_celery
from core.settings import Settings
from tests.test_deploy_config import K8S, ROOT, k8s_objects

DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# A URL as the files write it: up to whitespace, a quote, a backtick or a closing parenthesis, and
# not ending in the punctuation of the sentence around it.
URL = re.compile(r"\b(?:rediss?|postgresql(?:\+\w+)?)://[^\s'\"`)]*[^\s'\"`),.;:]")
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432}
# The pods that use the database and the broker (the migration uses the database only).
BROKER_USERS = ("roomfit-api", "roomfit-worker-train", "roomfit-worker-preview", "roomfit-worker-webhooks")
DATABASE_USERS = (*BROKER_USERS, "roomfit-migrate")


def _cluster_section(text: str) -> str:
    """docs/deploy.md's Kubernetes part (compose runs without network policies)."""
    start = text.index("## A cluster: Kubernetes")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def suggested_urls() -> list[tuple[str, str]]:
    """(where, URL) for every PostgreSQL and Redis URL in deploy/k8s (comments included) and in
    docs/deploy.md's Kubernetes section."""
    sources: list[tuple[str, str]] = [
        (path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(K8S.rglob("*.yaml"))
    ]
    sources.append(("docs/deploy.md", _cluster_section(DEPLOY_DOC.read_text(encoding="utf-8"))))
    return [(where, url) for where, text in sources for url in URL.findall(text)]


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.split("+")[0]


def _port(url: str) -> int:
    return urlsplit(url).port or DEFAULT_PORTS[_scheme(url)]


def _selects(policy: dict[str, Any], app: str) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector:
        return True
    if "matchLabels" in selector:
        return bool(selector["matchLabels"] == {"app": app})
    return any(
        e["key"] == "app" and e["operator"] == "In" and app in e["values"]
        for e in selector["matchExpressions"]
    )


def _to_private_ranges(rule: dict[str, Any]) -> bool:
    """An egress rule to address ranges of the data services: ipBlocks, none of them the whole
    internet (the webhooks' and the download's rules reach public addresses only)."""
    peers = rule.get("to", [])
    return bool(peers) and all(
        "ipBlock" in peer and peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0") for peer in peers
    )


@cache
def _policies() -> list[dict[str, Any]]:
    return [doc for doc in k8s_objects() if doc["kind"] == "NetworkPolicy"]


def egress_ports(app: str) -> set[int]:
    """The TCP ports `app`'s pods may reach at the data services' (private) addresses."""
    ports: set[int] = set()
    for policy in _policies():
        if _selects(policy, app):
            for rule in filter(_to_private_ranges, policy["spec"].get("egress", [])):
                ports |= {p["port"] for p in rule["ports"] if p.get("protocol", "TCP") == "TCP"}
    return ports


def test_the_files_suggest_urls() -> None:
    schemes = {_scheme(url) for _, url in suggested_urls()}
    assert {"redis", "postgresql"} <= schemes, schemes
    assert egress_ports("roomfit-api") >= {5432, 6379}


@pytest.mark.parametrize(("where", "url"), suggested_urls(), ids=lambda v: v)
def test_each_suggested_url_s_port_is_open(where: str, url: str) -> None:
    users = DATABASE_USERS if _scheme(url) == "postgresql" else BROKER_USERS
    for app in users:
        assert _port(url) in egress_ports(app), (
            f"{where}: {url} names port {_port(url)}, which network-policies.yaml closes to {app}"
        )


def _verify_mode(url: str) -> ssl.VerifyMode:
    connection = make_celery(Settings(_env_file=None, broker_url=url)).connection_for_write()  # type: ignore[call-arg]
    return connection.ssl["ssl_cert_reqs"]  # type: ignore[no-any-return]


def test_a_bare_rediss_url_does_not_verify_the_server() -> None:
    """What the check below rests on: kombu takes `rediss://` without `ssl_cert_reqs` as TLS with no
    certificate check (it only logs a warning), and `?ssl_cert_reqs=required` as a checked one."""
    assert _verify_mode("rediss://:pw@redis.example:6379/0") == ssl.CERT_NONE
    assert _verify_mode("rediss://:pw@redis.example:6379/0?ssl_cert_reqs=required") == ssl.CERT_REQUIRED


def test_each_suggested_tls_broker_url_verifies_the_server() -> None:
    tls = [(where, url) for where, url in suggested_urls() if _scheme(url) == "rediss"]
    for where, url in tls:
        assert _verify_mode(url) == ssl.CERT_REQUIRED, (
            f"{where}: {url} makes roomfit's broker connection skip the certificate check"
        )


def test_a_page_that_suggests_a_tls_broker_says_keda_needs_tls_too() -> None:
    """KEDA reads the queues with the trigger's own `address` and TLS setting, not the URL: a page
    that tells the operator to use `rediss://` must tell them to set `enableTLS` too, or KEDA
    cannot read the queue lengths (the train pool then never leaves zero)."""
    pages = {where for where, url in suggested_urls() if _scheme(url) == "rediss"}
    for where in pages:
        text = (ROOT / where).read_text(encoding="utf-8")
        assert "enableTLS" in text, f"{where} suggests rediss:// but not KEDA's enableTLS"
