"""Tenants and API keys: create, list, revoke, and resolve a presented key to its row."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from core.api_keys import KeyKind, generate_key, hash_key
from core.clock import utcnow
from core.ids import new_id
from core.tables import ApiKey, Preview, Subject, Tenant


class AccountError(ValueError):
    """A tenant or key command that cannot be carried out; the message says why."""


# The shape of a tenant id (core.ids.new_id("ten")): no tenant may be named so, or `tenants delete`
# and `keys create --tenant` given one shop's id could find another shop by its name.
_TENANT_ID = re.compile(r"ten_[0-9A-HJKMNP-TV-Z]{26}")


def create_tenant(session: Session, name: str) -> Tenant:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise AccountError("a tenant name has 1 to 200 characters")
    if _TENANT_ID.fullmatch(name):
        raise AccountError(f"{name!r} has the shape of a tenant id; a tenant name cannot")
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise AccountError(f"tenant {name!r} exists already")
    tenant = Tenant(id=new_id("ten"), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def tenant_by_name_or_id(session: Session, ref: str) -> Tenant | None:
    """The tenant with the id `ref`, else the one named `ref`: an id names one shop, whatever another
    was named before names were checked (create_tenant)."""
    return session.get(Tenant, ref) or session.scalars(select(Tenant).where(Tenant.name == ref)).first()


def rows_per_tenant(
    session: Session, table: type[ApiKey] | type[Subject] | type[Preview], *where: Any
) -> dict[str, int]:
    """How many rows of `table` (matching `where`) each tenant has; tenants with none are absent."""
    rows = session.execute(select(table.tenant_id, func.count()).where(*where).group_by(table.tenant_id))
    return {tenant: count for tenant, count in rows}


def tenant_summaries(session: Session) -> list[dict[str, object]]:
    """Every tenant, oldest first, with its number of keys (active), subjects and previews."""
    keys = rows_per_tenant(session, ApiKey, ApiKey.revoked_at.is_(None))
    subjects, previews = rows_per_tenant(session, Subject), rows_per_tenant(session, Preview)
    tenants = session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)).all()
    return [
        {
            "id": t.id,
            "name": t.name,
            "created_at": t.created_at,
            "active_keys": keys.get(t.id, 0),
            "subjects": subjects.get(t.id, 0),
            "previews": previews.get(t.id, 0),
        }
        for t in tenants
    ]


def list_keys(session: Session, *, tenant: Tenant | None, ops_only: bool, revoked: bool) -> list[ApiKey]:
    """Keys, oldest first: one tenant's, or only ops keys, or all; revoked ones only if asked."""
    if tenant is not None and ops_only:
        raise AccountError("ops keys belong to no tenant: --tenant or --ops, not both")
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant.id)
    if ops_only:
        stmt = stmt.where(ApiKey.kind == "ops")
    if not revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt).all())


def create_key(
    session: Session, *, kind: KeyKind, tenant: Tenant | None, origins: list[str] | None = None
) -> tuple[ApiKey, str]:
    """A new key row and the plaintext, which is returned here once and stored nowhere."""
    if kind == "ops":
        if tenant is not None:
            raise AccountError("an ops key belongs to no tenant")
    elif tenant is None:
        raise AccountError(f"a {kind} key needs --tenant")
    if kind != "publishable" and origins:
        raise AccountError("only publishable keys are limited to origins")
    if kind == "publishable" and not origins:
        raise AccountError("a publishable key needs at least one --origin (e.g. https://shop.example)")
    normalized = [_normalize_origin(o) for o in origins or []]
    new = generate_key(kind)
    row = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id if tenant else None,
        kind=kind,
        key_hash=new.key_hash,
        display=new.display,
        origins=normalized,
    )
    session.add(row)
    session.flush()
    return row, new.plaintext


def _normalize_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/")
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise AccountError(f"origin {origin!r} is not of the form https://host[:port]")
    return f"{scheme}://{rest.lower()}"


def revoke_key(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise AccountError(f"no key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


# The one lookup of a presented key (an indexed equality on its hash; bind `key_hash`): the
# unrevoked row's id, kind, tenant and origins. Run on every request, so a revoked key stops at once.
# Labelled `key_*`, as core.repository.key_with_row labels them beside a row's own columns.
KEY_COLUMNS = (
    ApiKey.id.label("key_id"),
    ApiKey.kind.label("key_kind"),
    ApiKey.tenant_id.label("key_tenant_id"),
    ApiKey.origins.label("key_origins"),
)
KEY_MATCHES = (ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
ACTIVE_KEY = select(*KEY_COLUMNS).where(*KEY_MATCHES)


def find_active_key(session: Session, plaintext: str) -> ApiKey | None:
    """The unrevoked key row matching a presented key, or None."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row
