"""`/v1/webhook`: the tenant's one webhook endpoint and its signing secret.

HTTP only; the rules are in `api.services.webhooks`.
"""

from __future__ import annotations

import email.message
import json
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from api.deps import RepoDep, ResolverDep, SecretCaller, SettingsDep
from api.openapi import AUTH, json_body, problems
from api.posts import read_small_body
from api.problems import BAD_REQUEST, validation_failed
from api.schemas import WebhookCreated, WebhookIn, WebhookOut
from api.services import webhooks as service

router = APIRouter(prefix="/v1/webhook", tags=["webhook"])


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule for a JSON body: `application/json` or `application/*+json` (none: not JSON)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _refuse(errors: list[dict[str, Any]]) -> NoReturn:
    raise validation_failed([{**e, "loc": ("body", *e["loc"])} for e in errors])


async def webhook_body(request: Request, _: SecretCaller) -> WebhookIn:
    """The PUT's body, read only once the key is checked (FastAPI reads a declared body before any
    dependency runs) and at most `MAX_SMALL_BODY` bytes (413 `payload_too_large`); refused with the
    problems FastAPI's own body reading answered."""
    raw = await read_small_body(request)
    if not raw:
        _refuse([{"loc": (), "msg": "Field required", "type": "missing"}])
    data: Any = raw  # not JSON: FastAPI hands the bytes on, which no model accepts
    if _is_json(request.headers.get("content-type")):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            _refuse([{"loc": (exc.pos,), "msg": "JSON decode error", "type": "json_invalid"}])
        except (ValueError, RecursionError) as exc:  # not UTF-8, a 5000-digit number, nested too deep
            raise BAD_REQUEST("There was an error parsing the body") from exc
    try:
        return WebhookIn.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        _refuse([dict(e) for e in exc.errors(include_url=False)])


WebhookBody = Annotated[WebhookIn, Depends(webhook_body)]

# alike: the decorators below share a shape with other routes' (jobs, previews): each is that
# route's own OpenAPI entry (summary, answers), which FastAPI wants declared on the route.


@router.put(
    "",
    response_model=WebhookCreated,
    operation_id="set_webhook",
    summary="Set the webhook URL; answers a new signing secret, shown only here",
    responses=problems(*AUTH, 413, 422),
    # The body is read by `webhook_body`, after the key check; the document still shows it.
    openapi_extra=json_body(WebhookIn),
)
def put_webhook(
    _: SecretCaller, body: WebhookBody, repo: RepoDep, settings: SettingsDep, resolve: ResolverDep
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
