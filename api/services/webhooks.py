"""The tenant's one webhook endpoint: which URLs are allowed, and a new signing secret per PUT."""

from __future__ import annotations

from urllib.parse import urlsplit

from api.problems import INVALID_WEBHOOK_URL, NOT_FOUND
from api.schemas import WebhookCreated, WebhookOut
from core.ids import new_id
from core.repository import TenantRepository
from core.tables import Webhook
from core.webhooks import new_secret

# Plain http only to this machine (a developer's receiver); shops' endpoints must use TLS.
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_url(url: str) -> str:
    """The URL, stripped, if a webhook may point at it; else 422 `invalid_webhook_url`."""
    if any(c.isspace() or not c.isprintable() for c in url.strip()):
        raise INVALID_WEBHOOK_URL("the url must not contain spaces or control characters")
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise INVALID_WEBHOOK_URL("the url cannot be parsed") from exc
    if not host or parts.username or parts.password:
        raise INVALID_WEBHOOK_URL("the url needs a host and no credentials")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK):
        raise INVALID_WEBHOOK_URL("the url must be https:// (http:// only for localhost)")
    return url.strip()


def set_url(repo: TenantRepository, url: str) -> WebhookCreated:
    """Point the webhook at `url` with a new secret: a PUT rotates it, the old one stops signing at
    once. The secret is in this answer only."""
    url = check_url(url)
    secret = new_secret()
    hook = repo.webhook()
    if hook is None:
        hook = repo.add(Webhook(id=new_id("whk"), url=url, secret=secret))
    else:
        hook.url = url
        hook.secret = secret
    repo.session.flush()  # stamps created_at / updated_at for the answer
    return WebhookCreated(**WebhookOut.of(hook).model_dump(), secret=secret)


def current(repo: TenantRepository) -> Webhook:
    hook = repo.webhook()
    if hook is None:
        raise NOT_FOUND("no webhook is set")
    return hook


def remove(repo: TenantRepository) -> None:
    """Remove the webhook if there is one (its pending deliveries then fail)."""
    hook = repo.webhook()
    if hook is not None:
        repo.delete(hook)
