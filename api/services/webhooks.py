"""The tenant's one webhook endpoint: which URLs are allowed, and a new signing secret per PUT."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from api.problems import NOT_FOUND, WEBHOOK_URL_NOT_ALLOWED
from api.schemas import WebhookCreated, WebhookOut
from core.ids import new_id
from core.repository import TenantRepository
from core.settings import Settings
from core.tables import Webhook
from core.webhook_urls import Resolver, WebhookUrlRefused, check_webhook_url
from core.webhooks import new_secret


def check_url(url: str, settings: Settings, resolve: Resolver) -> str:
    """The URL, stripped, if a webhook may point at it (core.webhook_urls: https, public hosts
    only); else 422 `webhook_url_not_allowed`. Deliveries check it again."""
    try:
        return check_webhook_url(url, allow_private=settings.webhook_allow_private, resolve=resolve).url
    except WebhookUrlRefused as exc:
        raise WEBHOOK_URL_NOT_ALLOWED(str(exc)) from exc


def set_url(repo: TenantRepository, settings: Settings, resolve: Resolver, url: str) -> WebhookCreated:
    """Point the webhook at `url` with a new secret: a PUT rotates it, the old one stops signing at
    once. The secret is in this answer only."""
    url = check_url(url, settings, resolve)
    secret = new_secret()
    hook = repo.webhook()
    if hook is None:
        hook = repo.add(Webhook(id=new_id("whk"), url=url, secret=secret))
        try:
            repo.session.flush()
        except IntegrityError:
            # Another PUT of this shop made its one webhook meanwhile. This request's transaction
            # holds nothing else (no savepoint: SQLite's driver would commit at its release), so it
            # starts again, and this PUT, the later, points that webhook here.
            repo.session.rollback()
            hook = repo.webhook()
            if hook is None:
                raise
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
