"""`/v1/webhook`: the tenant's one webhook endpoint and its signing secret.

HTTP only; the rules are in `api.services.webhooks`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import RepoDep, ResolverDep, SecretCaller, SettingsDep
from api.openapi import AUTH, problems
from api.schemas import WebhookCreated, WebhookIn, WebhookOut
from api.services import webhooks as service

router = APIRouter(prefix="/v1/webhook", tags=["webhook"])

# alike: the decorators below share a shape with other routes' (jobs, previews): each is that
# route's own OpenAPI entry (summary, answers), which FastAPI wants declared on the route.


@router.put(
    "",
    response_model=WebhookCreated,
    operation_id="set_webhook",
    summary="Set the webhook URL; answers a new signing secret, shown only here",
    responses=problems(*AUTH, 422),
)
def put_webhook(
    body: WebhookIn, _: SecretCaller, repo: RepoDep, settings: SettingsDep, resolve: ResolverDep
) -> WebhookCreated:
    return service.set_url(repo, settings, resolve, body.url)


@router.get(
    "",
    response_model=WebhookOut,
    operation_id="get_webhook",
    summary="The webhook URL (never the secret)",
    responses=problems(*AUTH, 404),
)
def get_webhook(_: SecretCaller, repo: RepoDep) -> WebhookOut:
    return WebhookOut.of(service.current(repo))


@router.delete(
    "",
    status_code=204,
    operation_id="delete_webhook",
    summary="Remove the webhook (pending deliveries fail)",
    responses={204: {"description": "Removed (or there was none)."}, **problems(*AUTH)},
)
def delete_webhook(_: SecretCaller, repo: RepoDep) -> Response:
    service.remove(repo)
    return Response(status_code=204)
