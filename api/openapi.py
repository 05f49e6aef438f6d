"""The OpenAPI document: the problem responses, the multipart request bodies, and what
`install_document` adds to FastAPI's document.

The upload routes read their body with `api.multipart` (streaming, with limits) rather than
FastAPI's `File()` parameters, so their request bodies are described here by hand. Every error
response refers to the one `Problem` schema (`#/components/schemas/Problem`), whose `code` lists
the registry in `api.problems`; the codes listed per status come from the same registry. Client
generators (clients/python, made by `make client`) read this document, so each operation has a
short, stable `operationId` (set on its route) and every answer it can give is described.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.problems import PROBLEM_JSON, REGISTRY, codes_by_status
from api.schemas import MAX_GUIDANCE, MAX_SEED, MAX_STEPS
from api.schemas import Problem as ProblemBody  # the document's schema; api.problems.Problem is a code
from core.previews import REQUESTED_MODES
from core.settings import Settings

PROBLEM_REF = "#/components/schemas/Problem"
_SECONDS = {"type": "integer", "minimum": 0}
_RETRY_AFTER = {"description": "seconds to wait before sending the request again", "schema": _SECONDS}
# The headers that come with a status's problems (api.deps, api.services.quotas, api.image_budget,
# api.idempotency and the handlers in api.problems send them).
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {"description": 'always `Bearer realm="roomfit"`', "schema": {"type": "string"}}
    },
    409: {
        "Retry-After": {
            **_RETRY_AFTER,
            "description": "with `idempotency_key_in_progress` only: " + _RETRY_AFTER["description"],
        }
    },
    429: {"Retry-After": {**_RETRY_AFTER, "required": True}},
    503: {"Retry-After": {**_RETRY_AFTER, "required": True}},
}
LOCATION = {
    "Location": {"description": "the URL of what was created", "schema": {"type": "string"}, "required": True}
}
REPLAYED = {
    "Idempotency-Replayed": {
        "description": "`true` when this is the kept answer to an earlier request with the same "
        "`Idempotency-Key` (nothing was done again); absent otherwise",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _codes(status: int) -> str:
    return ", ".join(f"`{code}`" for code in codes_by_status().get(status, [])) or "see docs/api.md"


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, each a problem+json document."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": f"{HTTPStatus(status).phrase}. Codes: {_codes(status)}",
            "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
        }
        if status in _PROBLEM_HEADERS:
            out[status]["headers"] = _PROBLEM_HEADERS[status]
    return out


def problem_schemas() -> dict[str, dict[str, Any]]:
    """`Problem` (its `code` an enum of the registry) and the schemas it uses, for `components`."""
    _, top = models_json_schema([(ProblemBody, "validation")], ref_template="#/components/schemas/{model}")
    schemas: dict[str, dict[str, Any]] = top["$defs"]
    schemas["Problem"]["properties"]["code"]["enum"] = list(REGISTRY)
    return schemas


_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


_READ_BODIES: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself, once its key is checked (FastAPI
    reads a declared body before any dependency runs): the body as FastAPI documents a declared one,
    its schema added to the components by `complete`."""
    _READ_BODIES[model.__name__] = model
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI's document lacks: the `Problem` schemas; FastAPI's own 422 answer (never sent:
    api.problems answers `validation_error`) as a problem; `Idempotency-Replayed` on the 2xx
    answers of the operations that take an `Idempotency-Key`."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas.update(problem_schemas())
    for name, model in _READ_BODIES.items():
        schemas.setdefault(name, model.model_json_schema(ref_template="#/components/schemas/{model}"))
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    for item in document.get("paths", {}).values():
        for operation in item.values():
            responses = operation["responses"]
            if "#/components/schemas/HTTPValidationError" in str(responses.get("422")):
                responses["422"] = problems(422)[422]
            if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
                for status, response in responses.items():
                    if status.startswith("2"):
                        response.setdefault("headers", {}).update(REPLAYED)
    return document


def install_document(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) answer the completed document, built once."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


AUTH = (401, 403, 422, 429, 503)
"""Every /v1 route can answer these (422: a bad parameter or Idempotency-Key)."""


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


# The limits every image is held to (defaults shown; each is a setting, `ROOMFIT_<NAME>`).
IMAGE_LIMITS = (
    f"at most {_default('max_upload_bytes') // 2**20} MiB (`ROOMFIT_MAX_UPLOAD_BYTES`) and "
    f"{_default('max_pixels') / 1e6:g} megapixels (`ROOMFIT_MAX_PIXELS`), else 413 `image_too_large`; "
    f"longest side at most {_default('max_side')} px (`ROOMFIT_MAX_SIDE`) and long side / short side "
    f"at most {_default('max_aspect_ratio'):g} (`ROOMFIT_MAX_ASPECT_RATIO`), else 422 "
    "`image_shape_not_allowed`; all the images of the request together at most "
    f"{_default('max_request_pixels') / 1e6:g} megapixels (`ROOMFIT_MAX_REQUEST_PIXELS`), else 413 "
    "`request_too_large`. Checked from the header before decoding. Sides are counted after the EXIF "
    "orientation (a quarter turn swaps them; the limits hold either way)."
)
_IMAGE = {"type": "string", "format": "binary", "description": f"JPEG, PNG or WebP; {IMAGE_LIMITS}"}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retries with the same key and body get the first successful answer again (kept "
    "≥ 24 h), marked `Idempotency-Replayed: true`; the same key with another body answers 409 "
    "`idempotency_key_reused`, while the first request still runs 409 `idempotency_key_in_progress` "
    "with `Retry-After`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _multipart_post(required: list[str], properties: dict[str, Any], images: str) -> dict[str, Any]:
    """`openapi_extra` of an upload route: Idempotency-Key and its multipart form."""
    form = {"type": "object", "required": required, "properties": properties}
    encoding = {images: {"contentType": "image/jpeg, image/png, image/webp"}}
    return {
        "parameters": [_IDEMPOTENCY],
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form, "encoding": encoding}},
        },
    }


# alike: the form fields below are JSON-schema declarations, alike in shape only.
SUBJECT_FORM = _multipart_post(
    ["name", "photos"],
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "example": "Oslo sofa"},
        "photos": {
            "type": "array",
            "items": _IMAGE,
            "minItems": 1,
            "maxItems": 8,
            "description": "1 to 8 product photos (more: 422 `too_many_photos`)",
        },
        "external_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "the shop's SKU; unique per tenant (409 `external_id_taken`)",
        },
        "boxes": {
            "type": "string",
            "description": "JSON list, one entry per photo: [x0, y0, x1, y1] in "
            "pixels of the photo after its EXIF orientation, or null to detect",
            "example": "[[10, 20, 500, 600], null]",
        },
        "label": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "what the product is, a hint for the detector",
            "example": "couch",
        },
    },
    images="photos",
)

PREVIEW_FORM = _multipart_post(
    ["subject_id", "room", "mask"],
    {
        "subject_id": {"type": "string", "minLength": 1, "maxLength": 40},
        "room": _IMAGE,
        "mask": {
            "type": "string",
            "format": "binary",
            "description": "PNG of exactly the room's size after the room's EXIF orientation. Which "
            "pixels paint (docs/api.md, 'Masks: which pixels paint'): with transparency (an alpha "
            "channel or a tRNS chunk, some alpha below 255) those of alpha >= 128; fully opaque, every "
            "pixel that is not black (any channel above 0). One that paints nothing: 422 mask_empty. "
            "The same limits as the room; its pixels count towards the request's.",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEED,
            "description": "default: random, returned in the answer",
        },
        "steps": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_STEPS,
            "description": "sampling steps; default: the service's",
        },
        "guidance_scale": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_GUIDANCE,
            "description": "classifier-free guidance; default: the service's",
        },
        "mode": {
            "type": "string",
            "enum": list(REQUESTED_MODES),
            "default": "auto",
            "description": "what to paint with: `auto` the subject's adapter when it is ready, zero-shot "
            "(the base model and the subject's reference crop) while it trains; `adapter` only the "
            "adapter (409 `subject_not_ready` until ready); `zero_shot` the base model and the reference "
            "crop, also once ready. A subject not yet annotated (queued, annotating), failed or "
            "cancelled: 409 `subject_not_ready`",
        },
    },
    images="room",
)

IDEMPOTENT_POST: dict[str, Any] = {"parameters": [_IDEMPOTENCY]}
