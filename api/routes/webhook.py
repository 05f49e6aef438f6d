"""`/v1/webhook`: the tenant's one webhook endpoint and its signing secret."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from sqlalchemy import select

from api.deps import RepoDep, SecretCaller
from api.openapi import AUTH, problems
from api.problems import ApiError
from api.schemas import WebhookCreated, WebhookIn, WebhookOut
from core.ids import new_id
from core.tables import Webhook
from core.webhooks import new_secret

router = APIRouter(prefix="/v1/webhook", tags=["webhook"])

# Plain http only to this machine (a developer's receiver); shops' endpoints must use TLS.
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _check_url(url: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in url.strip()):
        raise ApiError(422, "invalid_webhook_url", "the url must not contain spaces or control characters")
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ApiError(422, "invalid_webhook_url", "the url cannot be parsed") from exc
    if not host or parts.username or parts.password:
        raise ApiError(422, "invalid_webhook_url", "the url needs a host and no credentials")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK):
        raise ApiError(422, "invalid_webhook_url", "the url must be https:// (http:// only for localhost)")
    return url.strip()


def _hook(repo: RepoDep) -> Webhook | None:
    return repo.session.scalars(select(Webhook).where(Webhook.tenant_id == repo.tenant_id)).first()


@router.put(
    "",
    response_model=WebhookCreated,
    summary="Set the webhook URL; answers a new signing secret, shown only here",
    responses=problems(*AUTH, 422),
)
def put_webhook(body: WebhookIn, _: SecretCaller, repo: RepoDep) -> WebhookCreated:
    url = _check_url(body.url)
    hook = _hook(repo)
    secret = new_secret()
    if hook is None:
        hook = Webhook(id=new_id("whk"), tenant_id=repo.tenant_id, url=url, secret=secret)
        repo.session.add(hook)
    else:
        hook.url = url
        hook.secret = secret  # a PUT rotates the secret: the old one stops signing at once
    repo.session.commit()
    return WebhookCreated(**WebhookOut.of(hook).model_dump(), secret=secret)


@router.get(
    "",
    response_model=WebhookOut,
    summary="The webhook URL (never the secret)",
    responses=problems(*AUTH, 404),
)
def get_webhook(_: SecretCaller, repo: RepoDep) -> WebhookOut:
    hook = _hook(repo)
    if hook is None:
        raise ApiError(404, "not_found", "no webhook is set")
    return WebhookOut.of(hook)


@router.delete(
    "",
    status_code=204,
    summary="Remove the webhook (pending deliveries fail)",
    responses={204: {"description": "Removed (or there was none)."}, **problems(*AUTH)},
)
def delete_webhook(_: SecretCaller, repo: RepoDep) -> Response:
    hook = _hook(repo)
    if hook is not None:
        repo.session.delete(hook)
        repo.session.commit()
    return Response(status_code=204)
