"""OpenAPI pieces the routes share: the problem responses and the multipart request bodies.

The upload routes read their body with `api.uploads` (streaming, with limits) rather than FastAPI's
`File()` parameters, so their request bodies are described here by hand.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from api.schemas import MAX_GUIDANCE, MAX_SEED, MAX_STEPS, Problem

PROBLEM_MEDIA = "application/problem+json"

_CODES: dict[int, str] = {
    400: "malformed_multipart, client_disconnected",
    401: "unauthorized",
    403: "forbidden, origin_not_allowed",
    404: "not_found",
    409: "subject_not_ready, external_id_taken, subject_busy, preview_not_ready, idempotency_key_reused, "
    "idempotency_key_in_progress, job_not_retryable, job_not_cancellable",
    413: "image_too_large, payload_too_large, field_too_large",
    415: "unsupported_media_type, unsupported_content_type",
    422: "validation_error, image_unreadable, too_many_photos, invalid_boxes, mask_size_mismatch, "
    "mask_empty, invalid_idempotency_key, invalid_webhook_url",
    429: "rate_limited (with Retry-After)",
    503: "service_unavailable (database, broker or blob store down)",
}


_PROBLEM_SCHEMA = Problem.model_json_schema()


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, each a problem+json document."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": f"{HTTPStatus(status).phrase}. Codes: {_CODES.get(status, 'see API.md')}",
            "content": {PROBLEM_MEDIA: {"schema": _PROBLEM_SCHEMA}},
        }
    return out


AUTH = (401, 403, 422, 429, 503)
"""Every /v1 route can answer these (422: a bad parameter or Idempotency-Key)."""

_IMAGE = {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP; ≤ 20 MB, ≤ 40 megapixels"}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retries with the same key and body get the first answer again (kept ≥ 24 h); "
    "the same key with another body answers 409 `idempotency_key_reused`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

SUBJECT_FORM: dict[str, Any] = {
    "parameters": [_IDEMPOTENCY],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "photos"],
                    "properties": {
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
                },
                "encoding": {"photos": {"contentType": "image/jpeg, image/png, image/webp"}},
            }
        },
    },
}

PREVIEW_FORM: dict[str, Any] = {
    "parameters": [_IDEMPOTENCY],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["subject_id", "room", "mask"],
                    "properties": {
                        "subject_id": {"type": "string", "minLength": 1, "maxLength": 40},
                        "room": _IMAGE,
                        "mask": {
                            "type": "string",
                            "format": "binary",
                            "description": "PNG of exactly the room's size after the room's EXIF "
                            "orientation; a pixel with any non-zero colour channel is painted "
                            "(alpha is ignored)",
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
                },
                "encoding": {"room": {"contentType": "image/jpeg, image/png, image/webp"}},
            }
        },
    },
}

IDEMPOTENT_POST: dict[str, Any] = {"parameters": [_IDEMPOTENCY]}
