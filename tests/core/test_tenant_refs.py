"""A tenant named or with the id `ref`: `roomfit tenants delete REF` and `keys create --tenant REF`
act on exactly one shop, and on the one whose id it is when `ref` is an id. A shop named like
another shop's id made these reach the wrong shop: its keys handed out, or it deleted whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.accounts import AccountError, create_key, create_tenant, tenant_by_name_or_id
from core.blob_keys import tenant_prefix
from core.blobstore import LocalBlobStore
from core.ids import new_id
from core.tables import Tenant
from core.tenant_deletion import delete_tenant


def _named_like(session: Session, other: Tenant) -> Tenant:
    """A tenant whose name is `other`'s id (as a database made before names were checked holds)."""
    twin = Tenant(id=new_id("ten"), name=other.id)
    session.add(twin)
    session.commit()
    return twin


def test_a_tenant_name_shaped_like_a_tenant_id_is_refused(session: Session) -> None:
    shop = create_tenant(session, "shop-a")
    session.commit()
    with pytest.raises(AccountError, match="id"):
        create_tenant(session, shop.id)
    with pytest.raises(AccountError, match="id"):
        create_tenant(session, new_id("ten"))
    assert create_tenant(session, "ten_shop").name == "ten_shop"  # only the id's exact shape is taken


def test_an_id_means_the_tenant_with_that_id(session: Session) -> None:
    shop = create_tenant(session, "shop-a")
    session.commit()
    twin = _named_like(session, shop)
    found = tenant_by_name_or_id(session, shop.id)
    assert found is not None and found.id == shop.id
    found_twin = tenant_by_name_or_id(session, twin.id)
    assert found_twin is not None and found_twin.id == twin.id
    by_name = tenant_by_name_or_id(session, "shop-a")
    assert by_name is not None and by_name.id == shop.id


def test_deleting_by_id_deletes_that_shop_and_keys_go_to_it(session: Session, tmp_path: Path) -> None:
    shop = create_tenant(session, "shop-a")
    session.commit()
    twin = _named_like(session, shop)
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.put(tenant_prefix(twin.id) + "previews/prv_1/room.png", b"the twin's shopper's room")

    owner = tenant_by_name_or_id(session, shop.id)
    assert owner is not None
    key, _ = create_key(session, kind="secret", tenant=owner)
    assert key.tenant_id == shop.id
    session.commit()

    delete_tenant(session, blobs, owner)
    assert session.get(Tenant, shop.id) is None
    assert session.get(Tenant, twin.id) is not None
    assert blobs.list(tenant_prefix(twin.id)) == [tenant_prefix(twin.id) + "previews/prv_1/room.png"]
