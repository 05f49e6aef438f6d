"""Typed dependencies: a route's signature says what it needs (a session, a caller of some kind, a
tenant-scoped repository), and the checks behind them run before the route body — so an
unauthenticated or forbidden request is refused before a byte of its upload is read."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.problems import ApiError
from api.rate_limit import RateLimiter
from core.accounts import find_active_key
from core.repository import OpsRepository, TenantRepository
from core.settings import Settings

MAX_KEY_CHARS = 200
# roomfit's ids (core.ids): a short prefix and 26 Crockford base32 characters.
_ID = re.compile(r"[a-z]{2,5}_[0-9A-HJKMNP-TV-Z]{26}")


def is_id(value: str) -> bool:
    """Whether `value` could be one of roomfit's ids; anything else names nothing (404, no query)."""
    return bool(_ID.fullmatch(value))


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Caller:
    """The authenticated key behind a request."""

    key_id: str
    kind: str  # secret | publishable | ops
    tenant_id: str | None
    origins: tuple[str, ...]


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="roomfit"'})


# Declared for the OpenAPI document (the "Authorize" button of /docs); the header is parsed below so
# that every failure is our own 401 problem document.
_bearer = HTTPBearer(auto_error=False, description="`sk_…` secret, `pk_…` publishable or `ok_…` ops key")


def get_caller(
    request: Request,
    session: SessionDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send your key as `Authorization: Bearer <key>`")
    if len(token) > MAX_KEY_CHARS:
        raise _unauthorized("the key is not valid")
    # Looked up on every request (one indexed equality on the hash): a revoked key stops at once.
    row = find_active_key(session, token)
    if row is None:
        raise _unauthorized("the key is unknown or revoked")
    caller = Caller(key_id=row.id, kind=row.kind, tenant_id=row.tenant_id, origins=tuple(row.origins or ()))
    if caller.kind == "publishable":
        origin = request.headers.get("origin")
        if origin is None or normalize_origin(origin) not in caller.origins:
            raise ApiError(
                403,
                "origin_not_allowed",
                "a publishable key works only from the origins listed on it",
            )
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = limiter.check(caller.key_id)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"more than {verdict.limit} requests in the window; retry after {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def allow(*kinds: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets only these kinds of key through (403 `forbidden` for the others)."""

    # async: no I/O here, so no hop through the thread pool
    async def check(caller: CallerDep) -> Caller:
        if caller.kind not in kinds:
            raise ApiError(403, "forbidden", f"a {caller.kind} key may not do this")
        return caller

    return check


SecretCaller = Annotated[Caller, Depends(allow("secret"))]
TenantCaller = Annotated[Caller, Depends(allow("secret", "publishable"))]
OpsCaller = Annotated[Caller, Depends(allow("ops"))]
JobReader = Annotated[Caller, Depends(allow("secret", "ops"))]


async def get_repo(session: SessionDep, caller: CallerDep) -> TenantRepository:
    if caller.tenant_id is None:
        raise ApiError(403, "forbidden", "this key belongs to no tenant")
    return TenantRepository(session, caller.tenant_id)


RepoDep = Annotated[TenantRepository, Depends(get_repo)]


async def get_ops_repo(session: SessionDep, _: OpsCaller) -> OpsRepository:
    return OpsRepository(session)


OpsRepoDep = Annotated[OpsRepository, Depends(get_ops_repo)]
