from http import HTTPStatus
from io import BytesIO
from typing import Any, cast
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.get_preview_result_format import GetPreviewResultFormat
from ...models.problem import Problem
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    preview_id: str,
    *,
    format_: GetPreviewResultFormat | Unset = GetPreviewResultFormat.PNG,
    max_side: int | None | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    json_format_: str | Unset = UNSET
    if not isinstance(format_, Unset):
        json_format_ = format_.value

    params["format"] = json_format_

    json_max_side: int | None | Unset
    if isinstance(max_side, Unset):
        json_max_side = UNSET
    else:
        json_max_side = max_side
    params["max_side"] = json_max_side

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/previews/{preview_id}/result".format(
            preview_id=quote(str(preview_id), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Any | File | Problem | None:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

    if response.status_code == 307:
        response_307 = cast(Any, None)
        return response_307

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 409:
        response_409 = Problem.from_dict(response.json())

        return response_409

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if response.status_code == 429:
        response_429 = Problem.from_dict(response.json())

        return response_429

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Any | File | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    preview_id: str,
    *,
    client: AuthenticatedClient,
    format_: GetPreviewResultFormat | Unset = GetPreviewResultFormat.PNG,
    max_side: int | None | Unset = UNSET,
) -> Response[Any | File | Problem]:
    """The painted result (PNG; or a JPEG, WebP or smaller rendition): streamed, or a 307 to S3

    Args:
        preview_id (str):
        format_ (GetPreviewResultFormat | Unset): `png` (default), `jpeg` or `webp`. PNG at the
            result's own size is the result itself, byte for byte (every pixel the mask keeps equals
            the room's); any other format or a smaller `max_side` is a display rendition: scaled,
            lossy for JPEG (quality 85) and WebP (80), made on the first request and kept. Default:
            GetPreviewResultFormat.PNG.
        max_side (int | None | Unset): the longest side of the rendition, in pixels (16..8192):
            the aspect ratio is kept and the result is never enlarged (a value at or past its longest
            side is its own size); default: its own size. Ask in steps (the widget uses multiples of
            256) so the kept renditions are reused.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | File | Problem]
    """

    kwargs = _get_kwargs(
        preview_id=preview_id,
        format_=format_,
        max_side=max_side,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    preview_id: str,
    *,
    client: AuthenticatedClient,
    format_: GetPreviewResultFormat | Unset = GetPreviewResultFormat.PNG,
    max_side: int | None | Unset = UNSET,
) -> Any | File | Problem | None:
    """The painted result (PNG; or a JPEG, WebP or smaller rendition): streamed, or a 307 to S3

    Args:
        preview_id (str):
        format_ (GetPreviewResultFormat | Unset): `png` (default), `jpeg` or `webp`. PNG at the
            result's own size is the result itself, byte for byte (every pixel the mask keeps equals
            the room's); any other format or a smaller `max_side` is a display rendition: scaled,
            lossy for JPEG (quality 85) and WebP (80), made on the first request and kept. Default:
            GetPreviewResultFormat.PNG.
        max_side (int | None | Unset): the longest side of the rendition, in pixels (16..8192):
            the aspect ratio is kept and the result is never enlarged (a value at or past its longest
            side is its own size); default: its own size. Ask in steps (the widget uses multiples of
            256) so the kept renditions are reused.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | File | Problem
    """

    return sync_detailed(
        preview_id=preview_id,
        client=client,
        format_=format_,
        max_side=max_side,
    ).parsed


async def asyncio_detailed(
    preview_id: str,
    *,
    client: AuthenticatedClient,
    format_: GetPreviewResultFormat | Unset = GetPreviewResultFormat.PNG,
    max_side: int | None | Unset = UNSET,
) -> Response[Any | File | Problem]:
    """The painted result (PNG; or a JPEG, WebP or smaller rendition): streamed, or a 307 to S3

    Args:
        preview_id (str):
        format_ (GetPreviewResultFormat | Unset): `png` (default), `jpeg` or `webp`. PNG at the
            result's own size is the result itself, byte for byte (every pixel the mask keeps equals
            the room's); any other format or a smaller `max_side` is a display rendition: scaled,
            lossy for JPEG (quality 85) and WebP (80), made on the first request and kept. Default:
            GetPreviewResultFormat.PNG.
        max_side (int | None | Unset): the longest side of the rendition, in pixels (16..8192):
            the aspect ratio is kept and the result is never enlarged (a value at or past its longest
            side is its own size); default: its own size. Ask in steps (the widget uses multiples of
            256) so the kept renditions are reused.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any | File | Problem]
    """

    kwargs = _get_kwargs(
        preview_id=preview_id,
        format_=format_,
        max_side=max_side,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    preview_id: str,
    *,
    client: AuthenticatedClient,
    format_: GetPreviewResultFormat | Unset = GetPreviewResultFormat.PNG,
    max_side: int | None | Unset = UNSET,
) -> Any | File | Problem | None:
    """The painted result (PNG; or a JPEG, WebP or smaller rendition): streamed, or a 307 to S3

    Args:
        preview_id (str):
        format_ (GetPreviewResultFormat | Unset): `png` (default), `jpeg` or `webp`. PNG at the
            result's own size is the result itself, byte for byte (every pixel the mask keeps equals
            the room's); any other format or a smaller `max_side` is a display rendition: scaled,
            lossy for JPEG (quality 85) and WebP (80), made on the first request and kept. Default:
            GetPreviewResultFormat.PNG.
        max_side (int | None | Unset): the longest side of the rendition, in pixels (16..8192):
            the aspect ratio is kept and the result is never enlarged (a value at or past its longest
            side is its own size); default: its own size. Ask in steps (the widget uses multiples of
            256) so the kept renditions are reused.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Any | File | Problem
    """

    return (
        await asyncio_detailed(
            preview_id=preview_id,
            client=client,
            format_=format_,
            max_side=max_side,
        )
    ).parsed
