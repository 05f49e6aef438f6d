"""OpenAPI pieces the routes share: the problem responses and the multipart request bodies.

The upload routes read their body with `api.multipart` (streaming, with limits) rather than
FastAPI's `File()` parameters, so their request bodies are described here by hand. The codes listed
per status come from the registry in `api.problems`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from api.problems import PROBLEM_JSON, codes_by_status
from api.schemas import MAX_GUIDANCE, MAX_SEED, MAX_STEPS
from api.schemas import Problem as ProblemBody  # the document's schema; api.problems.Problem is a code
from core.settings import Settings

_PROBLEM_SCHEMA = ProblemBody.model_json_schema()


def _codes(status: int) -> str:
    return ", ".join(f"`{code}`" for code in codes_by_status().get(status, [])) or "see API.md"


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, each a problem+json document."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": f"{HTTPStatus(status).phrase}. Codes: {_codes(status)}",
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
    return out


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
    "description": "Retries with the same key and body get the first answer again (kept ≥ 24 h); "
    "the same key with another body answers 409 `idempotency_key_reused`.",
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
            "description": "PNG of exactly the room's size after the room's EXIF orientation; "
            "with an alpha channel its opaque pixels are painted, without one its pixels of "
            "non-zero luminance. The same limits as the room; its pixels count towards the request's.",
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
    },
    images="room",
)

IDEMPOTENT_POST: dict[str, Any] = {"parameters": [_IDEMPOTENCY]}
