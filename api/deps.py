"""Typed dependencies: a route's signature says everything it needs (the request's transaction, a
caller of some kind, a tenant-scoped repository, the blob store, the broker, the settings), and the
checks behind them run before the route body — so an unauthenticated or forbidden request is
refused before a byte of its upload is read.

Everything the app holds (`create_app` puts it on `app.state`) is read here and nowhere else, at
request time, so a test can swap one (a broken database, a refusing broker) on a running app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.problems import FORBIDDEN, ORIGIN_NOT_ALLOWED, RATE_LIMITED, UNAUTHORIZED, ApiError
from api.rate_limit import RateLimiter
from api.transaction import request_transaction
from core.accounts import find_active_key
from core.blobstore import BlobStore
from core.repository import OpsRepository, TenantRepository
from core.settings import Settings
from core.webhook_urls import Resolver

MAX_KEY_CHARS = 200
# roomfit's ids (core.ids): a short prefix and 26 Crockford base32 characters.
_ID = re.compile(r"[a-z]{2,5}_[0-9A-HJKMNP-TV-Z]{26}")


def is_id(value: str) -> bool:
    """Whether `value` could be one of roomfit's ids; anything else names nothing (404, no query)."""
    return bool(_ID.fullmatch(value))


# --- what the app holds ------------------------------------------------------------------------
def _held(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency answering `app.state.<name>`, which `api.app.create_app` set once."""

    # async: no I/O, so no hop through the thread pool.
    async def held(request: Request) -> Any:
        return getattr(request.app.state, name)

    held.__name__ = f"app_{name}"
    return held


SettingsDep = Annotated[Settings, Depends(_held("settings"))]
BlobsDep = Annotated[BlobStore, Depends(_held("blobs"))]
CeleryDep = Annotated[Celery, Depends(_held("celery"))]
EngineDep = Annotated[Engine, Depends(_held("engine"))]
# Seconds to wait for workers to answer a ping (app state, not settings: tests shorten it).
PingTimeoutDep = Annotated[float, Depends(_held("inspect_timeout"))]
# How webhook hosts are resolved (app state: DNS is the outside world; tests stand in for it).
ResolverDep = Annotated[Resolver, Depends(_held("resolve"))]


def get_session(request: Request) -> Iterator[Session]:
    yield from request_transaction(request.app.state.sessions)


# scope="function": commit (or roll back) after the route returns and before the response is sent
# (see api.transaction). Every dependency and route of a request shares this one session.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# --- who is calling ----------------------------------------------------------------------------
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
    return UNAUTHORIZED(detail, headers={"WWW-Authenticate": 'Bearer realm="roomfit"'})


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
            raise ORIGIN_NOT_ALLOWED("a publishable key works only from the origins listed on it")
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = limiter.check(caller.key_id)
    if not verdict.allowed:
        raise RATE_LIMITED(
            f"more than {verdict.limit} requests in the window; retry after {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def allow(*kinds: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets only these kinds of key through (403 `forbidden` for the others)."""

    async def check(caller: CallerDep) -> Caller:
        if caller.kind not in kinds:
            raise FORBIDDEN(f"a {caller.kind} key may not do this")
        return caller

    return check


SecretCaller = Annotated[Caller, Depends(allow("secret"))]
TenantCaller = Annotated[Caller, Depends(allow("secret", "publishable"))]
OpsCaller = Annotated[Caller, Depends(allow("ops"))]
JobReader = Annotated[Caller, Depends(allow("secret", "ops"))]


# --- repositories: the only way routes and services reach rows ----------------------------------
def _tenant_repo(session: Session, caller: Caller) -> TenantRepository:
    if caller.tenant_id is None:
        raise FORBIDDEN("this key belongs to no tenant")
    return TenantRepository(session, caller.tenant_id)


async def get_repo(session: SessionDep, caller: CallerDep) -> TenantRepository:
    return _tenant_repo(session, caller)


RepoDep = Annotated[TenantRepository, Depends(get_repo)]


async def get_ops_repo(session: SessionDep, _: OpsCaller) -> OpsRepository:
    return OpsRepository(session)


OpsRepoDep = Annotated[OpsRepository, Depends(get_ops_repo)]


async def get_job_repo(session: SessionDep, caller: JobReader) -> TenantRepository | OpsRepository:
    """Where a job reader looks: every tenant's jobs for an ops key, its own tenant's for a secret key."""
    return OpsRepository(session) if caller.kind == "ops" else _tenant_repo(session, caller)


JobRepoDep = Annotated[TenantRepository | OpsRepository, Depends(get_job_repo)]
