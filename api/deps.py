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
from core import logs
from core.accounts import ACTIVE_KEY
from core.api_keys import hash_key
from core.async_db import AsyncReader, first
from core.blobstore import BlobStore
from core.repository import OpsRepository, TenantRepository, key_with_row
from core.settings import Settings
from core.tables import Base
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
# Reads without the thread pool (core.async_db): the key lookup and the status reads.
ReaderDep = Annotated[AsyncReader, Depends(_held("reader"))]
# Seconds to wait for workers to answer a ping (app state, not settings: tests shorten it).
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


def _presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send your key as `Authorization: Bearer <key>`")
    if len(token) > MAX_KEY_CHARS:
        raise _unauthorized("the key is not valid")
    return token


async def _admitted(request: Request, key: Any) -> Caller:
    """The checks on a found key (`key_id`, `key_kind`, `key_tenant_id`, `key_origins`; None: not
    found), in the order every route answers them: 401, 403 origin, 429."""
    if key is None:
        raise _unauthorized("the key is unknown or revoked")
    caller = Caller(
        key_id=key.key_id,
        kind=key.key_kind,
        tenant_id=key.key_tenant_id,
        origins=tuple(key.key_origins or ()),
    )
    logs.bind(tenant_id=caller.tenant_id)  # the request's log lines name it, refused ones too (core.logs)
    if caller.kind == "publishable":
        origin = request.headers.get("origin")
        if origin is None or normalize_origin(origin) not in caller.origins:
            raise ORIGIN_NOT_ALLOWED("a publishable key works only from the origins listed on it")
    limiter: RateLimiter = request.app.state.rate_limiter
    verdict = await limiter.acheck(caller.key_id)
    if not verdict.allowed:
        raise RATE_LIMITED(
            f"more than {verdict.limit} requests in the window; retry after {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    request.state.caller = caller
    return caller


async def get_caller(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Caller:
    """The key behind the request, checked before anything else runs: async, one indexed query and
    one rate-limit round trip, no thread pool (every route pays for this)."""
    token = _presented_key(request)
    return await _admitted(
        request, await first(request.app.state.reader, ACTIVE_KEY, {"key_hash": hash_key(token)})
    )


def read_with_key(model: type[Base], param: str, kinds: tuple[str, ...]) -> Callable[..., Awaitable[Keyed]]:
    """A dependency for the hot status reads: the key and the tenant's row named by the path
    parameter `param` in ONE query (core.repository.key_with_row), then exactly the checks
    `get_caller` and `allow(*kinds)` make, in their order. Answers (caller, row or None)."""
    statement = key_with_row(model)

    async def read(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> Keyed:
        token = _presented_key(request)
        row_id = request.path_params[param]
        values = {"key_hash": hash_key(token), "id": row_id if is_id(row_id) else ""}
        found = await first(request.app.state.reader, statement, values)
        caller = await _admitted(request, found)
        if caller.kind not in kinds:
            raise FORBIDDEN(f"a {caller.kind} key may not do this")
        return Keyed(caller, found if found.id is not None else None)

    return read


@dataclass(frozen=True)
class Keyed:
    """What `read_with_key` found: the caller, and its tenant's row (None: no such row)."""

    caller: Caller
    row: Any


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
