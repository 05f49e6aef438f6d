"""Deleting a shop (`roomfit tenants delete`): its keys, products, photos, adapters, previews (each a
shopper's room photo), jobs, webhook and deliveries, in its database rows and its blob store.

In an order that never leaves a photo nothing leads to, and that can be run again after a crash:
1. revoke its keys (committed): from then on nothing new arrives, and the API refuses it at once;
2. cancel its queued and running jobs (committed): a worker painting or training for it stops at its
   next heartbeat;
3. delete every blob under `tenants/{tenant}/` (core.blob_keys: a tenant's blobs are all there);
4. delete the tenant row: the foreign keys delete every row of it (`ON DELETE CASCADE`);
5. delete under the prefix again: a worker that was finishing between 2 and its next heartbeat may
   have written a result or an adapter there (it finds no row then and drops what it wrote too).
A run that stops half-way leaves the tenant listed, its keys revoked: run it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.accounts import rows_per_tenant
from core.blob_keys import tenant_prefix
from core.blobstore import BlobStore
from core.clock import utcnow
from core.job_state import ACTIVE, request_cancel
from core.tables import ApiKey, Job, Preview, Subject, Tenant


@dataclass
class Deleted:
    """What went with a tenant."""

    # alike: a dataclass of counts (models.training.TrainSummary), declarations only
    tenant_id: str
    name: str
    keys: int
    subjects: int
    previews: int
    jobs_cancelled: int
    blobs: int


def delete_tenant(session: Session, blobs: BlobStore, tenant: Tenant) -> Deleted:
    """Delete `tenant` and everything it owns (steps above); commits as it goes."""

    tenant_id, name = tenant.id, tenant.name
    keys, subjects, previews = (
        rows_per_tenant(session, table, table.tenant_id == tenant_id).get(tenant_id, 0)
        for table in (ApiKey, Subject, Preview)
    )
    session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    active = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))).all()
    for job in active:
        request_cancel(session, job)
    session.commit()
    prefix = tenant_prefix(tenant_id)
    removed = blobs.delete_prefix(prefix)
    session.execute(delete(Tenant).where(Tenant.id == tenant_id))
    session.commit()
    removed += blobs.delete_prefix(prefix)
    return Deleted(tenant_id, name, keys, subjects, previews, len(active), removed)
